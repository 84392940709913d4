"""teacher.pretrained: tiny random checkpoints (save_pretrained) of every family come back with a new head,
their weights carried to our input; unsuitable features and an unreachable hub are refused in one line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest
import torch
from torch.nn.functional import interpolate
from transformers import (
    ASTConfig,
    ASTForAudioClassification,
    ConvNextConfig,
    ConvNextForImageClassification,
    MobileViTConfig,
    MobileViTForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from audiokd.config import ConfigError, TeacherConfig
from audiokd.models.teacher import build_teacher, load_teacher
from audiokd.models.teachers import family
from audiokd.models.teachers.pretrained import warn_if_untracked
from audiokd.tasks import Task

SHAPE = (1, 32, 64)
TASK = Task("regression", ("a", "b"))
AUDIO = {"sample_rate": 16000, "hop_length": 160, "n_mels": 32}  # what an AST checkpoint needs
LABELS = {"num_labels": 5, "problem_type": "single_label_classification"}  # a head unlike ours


def foreign_checkpoint(arch: str, folder):
    """A tiny random checkpoint as another project would publish it: plain transformers classes, an RGB
    stem where the family has one, another input size and another head."""
    torch.manual_seed(1)
    if arch == "vit":
        model = ViTForImageClassification(
            ViTConfig(
                image_size=48,
                patch_size=8,
                num_channels=3,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                **LABELS,
            )
        )
    elif arch == "ast":
        model = ASTForAudioClassification(
            ASTConfig(
                num_mel_bins=32,
                max_length=100,
                patch_size=8,
                frequency_stride=6,
                time_stride=6,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                **LABELS,
            )
        )
        torch.nn.init.normal_(model.audio_spectrogram_transformer.embeddings.position_embeddings)
    elif arch == "resnet":
        model = ResNetForImageClassification(
            ResNetConfig(
                num_channels=3,
                embedding_size=8,
                hidden_sizes=[8, 16],
                depths=[1, 1],
                layer_type="basic",
                **LABELS,
            )
        )
    elif arch == "mobilevit":
        model = MobileViTForImageClassification(
            MobileViTConfig(
                num_channels=3,
                image_size=48,
                hidden_sizes=[16, 16, 16],
                neck_hidden_sizes=[8, 8, 8, 8, 8, 8, 16],
                num_attention_heads=2,
                **LABELS,
            )
        )
    else:
        model = ConvNextForImageClassification(
            ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], **LABELS)
        )
    model.save_pretrained(folder)
    return model


@pytest.mark.parametrize("arch", ["vit", "ast", "resnet", "convnext", "mobilevit"])
def test_pretrained_gets_a_new_head_and_keeps_its_body(arch, tmp_path):
    source = foreign_checkpoint(arch, tmp_path / "ckpt")
    teacher = build_teacher(TeacherConfig(arch=arch, pretrained=str(tmp_path / "ckpt")), SHAPE, TASK, AUDIO)
    assert teacher.config.num_labels == 2 and teacher.config.problem_type == "regression"
    fam = family(arch)
    src, got = source.state_dict(), teacher.state_dict()
    head = [k for k in got if k.startswith(fam.head)]
    assert head and all(got[k].shape[0] == 2 for k in head if k.endswith("weight"))
    kept = [k for k in got if not k.startswith(fam.head) and got[k].shape == src[k].shape]
    assert len(kept) > 10 and all(torch.equal(got[k], src[k]) for k in kept)
    # the RGB stem becomes one channel, the sum of the three
    stem = {
        "vit": "vit.embeddings.patch_embeddings.projection.weight",
        "resnet": "resnet.embedder.embedder.convolution.weight",
        "convnext": "convnext.embeddings.patch_embeddings.weight",
        "mobilevit": "mobilevit.conv_stem.convolution.weight",
    }.get(arch)
    if stem:
        assert torch.equal(got[stem], src[stem].sum(1, keepdim=True))
    teacher.eval()
    out = teacher(pixel_values=torch.randn(3, *SHAPE), output_hidden_states=True)
    assert out.logits.shape == (3, 2) and len(out.hidden_states) == (5 if arch == "mobilevit" else 3)


def test_vit_positions_are_resampled_to_our_grid_not_reinitialised(tmp_path):
    source = foreign_checkpoint("vit", tmp_path / "ckpt")
    teacher = build_teacher(TeacherConfig(arch="vit", pretrained=str(tmp_path / "ckpt")), SHAPE, TASK)
    pos = source.vit.embeddings.position_embeddings.detach()  # CLS + a 6 x 6 grid
    grid = pos[:, 1:].reshape(1, 6, 6, 32).permute(0, 3, 1, 2)
    want = interpolate(grid, size=(4, 8), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    got = teacher.vit.embeddings.position_embeddings.detach()
    assert torch.equal(got[:, :1], pos[:, :1])
    assert torch.allclose(got[:, 1:], want.reshape(1, 32, 32))


@pytest.mark.parametrize(("frames", "t_grid"), [(64, 10), (160, 26)])
def test_ast_positions_are_cut_or_interpolated_as_ast_does(tmp_path, frames, t_grid):
    source = foreign_checkpoint("ast", tmp_path / "ckpt")
    cfg = TeacherConfig(arch="ast", pretrained=str(tmp_path / "ckpt"))
    teacher = build_teacher(cfg, (1, 32, frames), TASK, AUDIO)
    pos = source.audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    grid = pos[:, 2:].reshape(1, 5, 16, 32).permute(0, 3, 1, 2)  # (32 - 8) // 6 + 1 by (100 - 8) // 6 + 1
    if t_grid < 16:  # fewer patches: the middle ones
        want = grid[:, :, :, 8 - t_grid // 2 : 8 - t_grid // 2 + t_grid]
    else:
        want = interpolate(grid, size=(5, t_grid), mode="bilinear", align_corners=False)
    got = teacher.audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    assert got.shape == (1, 2 + 5 * t_grid, 32)
    assert torch.equal(got[:, :2], pos[:, :2])
    assert torch.allclose(got[:, 2:], want.permute(0, 2, 3, 1).reshape(1, 5 * t_grid, 32))
    assert teacher(pixel_values=torch.randn(2, 1, 32, frames)).logits.shape == (2, 2)


def test_a_fine_tuned_pretrained_teacher_saves_and_loads_as_itself(tmp_path):
    foreign_checkpoint("ast", tmp_path / "ckpt")
    teacher = build_teacher(TeacherConfig(arch="ast", pretrained=str(tmp_path / "ckpt")), SHAPE, TASK, AUDIO)
    teacher.eval().save_pretrained(tmp_path / "out")
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(
            load_teacher(tmp_path / "out")(pixel_values=x).logits, teacher(pixel_values=x).logits
        )


@pytest.mark.parametrize(
    ("audio", "shape", "named"),
    [
        (
            {"sample_rate": 22050, "hop_length": 250, "n_mels": 32},
            SHAPE,
            "audio.sample_rate = 22050 (needs 16000), audio.hop_length = 250 (needs 160)",
        ),
        (
            {"sample_rate": 16000, "hop_length": 160, "n_mels": 64},
            (1, 64, 64),
            "audio.n_mels = 64 (needs 32)",
        ),
    ],
)
def test_ast_checkpoint_refuses_other_audio_settings_in_one_line(tmp_path, audio, shape, named):
    foreign_checkpoint("ast", tmp_path / "ckpt")
    cfg = TeacherConfig(arch="ast", pretrained=str(tmp_path / "ckpt"))
    with pytest.raises(ConfigError) as err:
        build_teacher(cfg, shape, TASK, audio)
    msg = str(err.value)
    assert msg.startswith("teacher.pretrained: the AST checkpoint") and named in msg and "\n" not in msg
    assert "audio.n_mels" not in msg or "n_mels" in named


def test_ast_rate_comes_from_the_checkpoints_feature_extractor(tmp_path):
    foreign_checkpoint("ast", tmp_path / "ckpt")
    (tmp_path / "ckpt" / "preprocessor_config.json").write_text(json.dumps({"sampling_rate": 8000}))
    cfg = TeacherConfig(arch="ast", pretrained=str(tmp_path / "ckpt"))
    with pytest.raises(
        ConfigError, match=r"audio.sample_rate = 16000 \(needs 8000\), audio.hop_length = 160 \(needs 80\)"
    ):
        build_teacher(cfg, SHAPE, TASK, AUDIO)


def test_a_checkpoint_of_another_family_names_the_arch_to_set(tmp_path):
    foreign_checkpoint("resnet", tmp_path / "ckpt")
    with pytest.raises(
        ConfigError, match="holds a resnet checkpoint but teacher.arch is vit: set teacher.arch: resnet"
    ):
        build_teacher(TeacherConfig(arch="vit", pretrained=str(tmp_path / "ckpt")), SHAPE, TASK)


def test_a_checkpoint_missing_a_tensor_is_refused_not_filled_with_noise(tmp_path):
    from safetensors.torch import load_file, save_file

    from audiokd.models import WeightsError

    foreign_checkpoint("vit", tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    state = load_file(weights)
    del state["vit.layernorm.weight"]  # the final norm: loading would silently leave it at its init
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=r"lacks 1 tensor\(s\) of a vit model: vit.layernorm.weight"):
        build_teacher(TeacherConfig(arch="vit", pretrained=str(tmp_path / "ckpt")), SHAPE, TASK)


def test_a_folder_without_config_or_a_missing_path_is_named(tmp_path):
    with pytest.raises(ConfigError, match="is not a folder with a config.json"):
        build_teacher(TeacherConfig(pretrained=str(tmp_path)), SHAPE, TASK)
    with pytest.raises(ConfigError, match=r"teacher.pretrained: \./nowhere: no such folder"):
        build_teacher(TeacherConfig(pretrained="./nowhere"), SHAPE, TASK)


def test_a_checkpoint_outside_pretrained_is_warned_about(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pretrained" / "ast").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    with caplog.at_level(logging.WARNING):
        warn_if_untracked("pretrained/ast", tmp_path / "pretrained" / "ast")
        assert not caplog.records
        warn_if_untracked("elsewhere", tmp_path / "elsewhere")
    assert "is outside pretrained/" in caplog.text


HUB_PROBE = """
from audiokd.config import ConfigError
from audiokd.models.teacher import resolve_pretrained
try:
    resolve_pretrained("MIT/ast-finetuned-audioset-10-10-0.4593")
except ConfigError as e:
    print(e)
"""


@pytest.mark.parametrize(
    "no_network", [{"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}]
)
def test_a_hub_id_without_network_fails_fast_in_one_line(tmp_path, no_network):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), **no_network}
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", HUB_PROBE], env=env, capture_output=True, text=True, timeout=120
    ).stdout.strip()
    took = time.monotonic() - start
    assert out.startswith(
        "teacher.pretrained = 'MIT/ast-finetuned-audioset-10-10-0.4593' is not a local folder"
    )
    assert "pass a local folder" in out and "\n" not in out
    assert took < 60  # an import of transformers, then an immediate refusal: no retries, no long timeouts
