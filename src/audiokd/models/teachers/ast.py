"""``teacher.arch: ast``: the Audio Spectrogram Transformer (Gong, Chung & Glass 2021, arXiv:2104.01778).

AST cuts the spectrogram into overlapping square patches (``teacher.patch_size``, stride
``teacher.ast_stride`` along both axes) and prepends two special tokens, CLS and distillation; its output
is the mean of the two. transformers' ``ASTForAudioClassification`` takes ``input_values``
(B, frames, n_mels); :class:`ASTTeacher` accepts our ``pixel_values`` (B, 1, n_mels, frames) like every other
teacher, so nothing downstream knows it is an AST.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.functional import interpolate
from transformers import ASTConfig, ASTForAudioClassification, PretrainedConfig

from audiokd.config import ConfigError, TeacherConfig
from audiokd.models import head_kwargs
from audiokd.models.features import tokens_to_map
from audiokd.models.teachers.registry import Family, Shape, register
from audiokd.models.teachers.vit import check_fits, set_head
from audiokd.tasks import Task

SPECIAL_TOKENS = 2  # CLS and distillation
# what AST's own feature extractor (kaldi fbank) uses when the checkpoint does not say: 16 kHz, 10 ms shift
DEFAULT_SAMPLE_RATE = 16000
HOP_S = 0.010


class ASTTeacher(ASTForAudioClassification):
    """``ASTForAudioClassification`` called as ``model(pixel_values=x)`` with x (B, 1, n_mels, frames)."""

    main_input_name = "pixel_values"

    def forward(  # type: ignore[override]
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """AST's forward on ``pixel_values`` transposed to its (B, frames, n_mels) ``input_values``."""
        if pixel_values is not None:
            input_values = pixel_values[:, 0].transpose(1, 2)
        return super().forward(input_values=input_values, labels=labels, **kwargs)


def grid(config: PretrainedConfig) -> tuple[int, int]:
    """Patch grid (frequency rows, time columns), as ``ASTEmbeddings.get_shape`` computes it."""
    f = (config.num_mel_bins - config.patch_size) // config.frequency_stride + 1
    t = (config.max_length - config.patch_size) // config.time_stride + 1
    return f, t


def build(cfg: TeacherConfig, shape: Shape, task: Task) -> ASTTeacher:
    """An AST built from ``cfg`` for our features: ``num_mel_bins`` = n_mels, ``max_length`` = frames."""
    check_fits(cfg, shape)
    _, n_mels, frames = shape
    config = ASTConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
        patch_size=cfg.patch_size,
        frequency_stride=cfg.ast_stride,
        time_stride=cfg.ast_stride,
        num_mel_bins=n_mels,
        max_length=frames,
        attn_implementation="eager",
        **head_kwargs(task),
    )
    return ASTTeacher(config)


def adapt_config(config: PretrainedConfig, cfg: TeacherConfig, shape: Shape, task: Task) -> None:
    """An AST checkpoint's config for our frames, head and dropout (mel bins were checked to match)."""
    _, n_mels, frames = shape
    config.num_mel_bins = n_mels
    config.max_length = frames
    config.hidden_dropout_prob = cfg.dropout
    config.attention_probs_dropout_prob = cfg.dropout
    set_head(config, task)


def resize_positions(pos: torch.Tensor, old: tuple[int, int], new: tuple[int, int]) -> torch.Tensor:
    """AST's rule for carrying position embeddings to another patch grid, per axis (time, then frequency).

    Fewer patches: cut the middle ones; more: bilinear interpolation (ast_models.py of the AST authors,
    Gong et al. 2021, where an AudioSet model of 10.24 s is fine-tuned on shorter clips). The CLS and
    distillation tokens' embeddings are kept.
    """
    head, body = pos[:, :SPECIAL_TOKENS], pos[:, SPECIAL_TOKENS:]
    dim = body.shape[-1]
    g = body.reshape(1, *old, dim).permute(0, 3, 1, 2).float()
    (f0, t0), (f, t) = old, new
    if t < t0:
        g = g[:, :, :, t0 // 2 - t // 2 : t0 // 2 - t // 2 + t]
    elif t > t0:
        g = interpolate(g, size=(f0, t), mode="bilinear", align_corners=False)
    if f < f0:
        g = g[:, :, f0 // 2 - f // 2 : f0 // 2 - f // 2 + f, :]
    elif f > f0:
        g = interpolate(g, size=(f, t), mode="bilinear", align_corners=False)
    body = g.permute(0, 2, 3, 1).reshape(1, f * t, dim).to(pos.dtype)
    return torch.cat([head, body], dim=1)


def resize(
    key: str, tensor: torch.Tensor, source: PretrainedConfig, target: PretrainedConfig
) -> torch.Tensor | None:
    """The checkpoint's position embeddings, carried to our patch grid rather than re-initialised."""
    if not key.endswith("embeddings.position_embeddings"):
        return None
    return resize_positions(tensor, grid(source), grid(target))


def check_source(
    config: PretrainedConfig, folder: Path, shape: Shape, audio: Mapping[str, Any] | None
) -> None:
    """Refuse features an AST checkpoint was not trained on: sample rate, mel bins and a 10 ms hop.

    The rate comes from the checkpoint's ``preprocessor_config.json`` when it has one (16 kHz otherwise),
    the mel bins from its ``config.json``. ``audio`` is the ``audio`` record of the features' ``meta.json``;
    without it only the mel bins (the input height) are checked.
    """
    extractor = folder / "preprocessor_config.json"
    rate = DEFAULT_SAMPLE_RATE
    if extractor.is_file():
        rate = int(json.loads(extractor.read_text()).get("sampling_rate", DEFAULT_SAMPLE_RATE))
    needs = {"n_mels": int(config.num_mel_bins)}
    have = {"n_mels": shape[1]}
    if audio is not None:
        needs.update(sample_rate=rate, hop_length=round(rate * HOP_S))
        have.update(sample_rate=int(audio["sample_rate"]), hop_length=int(audio["hop_length"]))
    wrong = [f"audio.{k} = {have[k]} (needs {v})" for k, v in needs.items() if have[k] != v]
    if wrong:
        raise ConfigError(
            f"teacher.pretrained: the AST checkpoint {folder} was trained on {rate} Hz audio, "
            f"{config.num_mel_bins} mel bins and a {HOP_S * 1000:g} ms hop; the features differ: "
            f"{', '.join(wrong)}; set these in params.yaml (preprocess reruns)"
        )


def feature_maps(model: torch.nn.Module, hidden_states: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Encoder layers 1..L: patch tokens on the (frequency, time) grid, the special tokens dropped."""
    g = grid(model.config)
    return [tokens_to_map(h[:, SPECIAL_TOKENS:], g) for h in hidden_states[1:]]


def merge_special(attn: torch.Tensor) -> torch.Tensor:
    """(B, heads, 2 + N, 2 + N) -> ViT's layout (B, heads, 1 + N, 1 + N): CLS and distillation as one token.

    Their query rows are averaged and their key columns summed, so every row stays a distribution.
    """
    rows = torch.cat([attn[:, :, :SPECIAL_TOKENS].mean(2, keepdim=True), attn[:, :, SPECIAL_TOKENS:]], dim=2)
    return torch.cat([rows[..., :SPECIAL_TOKENS].sum(-1, keepdim=True), rows[..., SPECIAL_TOKENS:]], dim=-1)


def attentions(model: torch.nn.Module, attn: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, attention probabilities in ViT's layout (see :func:`merge_special`)."""
    return [merge_special(a) for a in attn]


FAMILY = register(
    Family(
        arch="ast",
        model_type="audio-spectrogram-transformer",
        model_class=ASTTeacher,
        build=build,
        adapt_config=adapt_config,
        feature_maps=feature_maps,
        num_layers=lambda config: int(config.num_hidden_layers),
        head="classifier.dense.",
        has_attentions=True,
        attentions=attentions,
        resize=resize,
        check_source=check_source,
        load_kwargs={"attn_implementation": "eager"},
    )
)
