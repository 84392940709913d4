"""``teacher.pretrained``: find the checkpoint (a local folder or a hub id), carry it to our input and head.

A checkpoint is loaded exactly as it was saved (through :func:`audiokd.models.load_pretrained`: safetensors
only, checked), then copied tensor by tensor into a model of the same architecture built for our input:

- the output layer (the family's ``head``) is always new, sized for our targets or labels;
- position embeddings trained on another input size are resampled (the family's ``resize``), not
  re-initialised;
- a first convolution trained on RGB images gets one input channel, the sum of its colour channels (what AST
  did with its ImageNet weights, and timm's ``adapt_input_conv`` for ``in_chans=1``);
- any other tensor must match in shape, or the checkpoint is refused naming the tensor.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from audiokd.config import ConfigError, TeacherConfig
from audiokd.models import WeightsError, load_pretrained
from audiokd.models.teachers.registry import Family, Shape, family, family_of_type
from audiokd.tasks import Task

log = logging.getLogger(__name__)

# owner/name as the hub spells it (a bare name is an official model); anything else is meant as a path
# train_teacher's DVC dependency for local checkpoints (relative to the repository, where stages run)
DVC_TRACKED = Path("pretrained")
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?")


def resolve_pretrained(ref: str) -> Path | None:
    """The local folder ``teacher.pretrained`` names: itself, or a hub id's snapshot; None when empty.

    A path that exists must hold a ``config.json``. Anything else shaped like ``owner/name`` is fetched from
    the Hugging Face hub (``*.json`` and ``*.safetensors`` only) or taken from its local cache; without
    network (``HF_HUB_OFFLINE=1``, or a hub that cannot be reached) this fails at once, in one line.
    """
    if not ref:
        return None
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"teacher.pretrained: {path} is not a folder with a config.json (save_pretrained output)"
            )
        return path
    if ref.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(ref):
        raise ConfigError(f"teacher.pretrained: {ref}: no such folder")
    return _from_hub(ref)


def warn_if_untracked(ref: str, folder: Path) -> None:
    """Warn when a local checkpoint lies outside ``pretrained/``, which train_teacher's DVC stage depends on.

    DVC cannot depend on a path that only some params name, so it tracks the folder ``pretrained/`` (and the
    value of ``teacher.pretrained``); a checkpoint elsewhere whose files change in place does not rerun the
    stage. A hub id is tracked by the id itself.
    """
    if not Path(ref).expanduser().exists():
        return
    try:
        folder.resolve().relative_to(DVC_TRACKED.resolve())
    except ValueError:
        log.warning(
            "teacher.pretrained: %s is outside %s/: DVC reruns train_teacher when the path changes, not when "
            "the files in it do; keep checkpoints under %s/ to have their content tracked",
            folder,
            DVC_TRACKED,
            DVC_TRACKED,
        )


@functools.lru_cache(maxsize=8)
def _from_hub(repo_id: str) -> Path:
    """A hub model's files in the local cache (downloaded when the hub can be reached)."""
    from huggingface_hub import constants, snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"]))
    except (OSError, ValueError) as e:  # offline, unreachable, unknown repo, invalid id: all land here
        if constants.HF_HUB_OFFLINE:
            reason = "HF_HUB_OFFLINE is set and the model is not in the local cache"
        else:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            reason = first if len(first) <= 120 else f"{first[:117]}..."
        raise ConfigError(
            f"teacher.pretrained = {repo_id!r} is not a local folder and the Hugging Face hub cannot provide "
            f"it ({reason}); without network, pass a local folder written by save_pretrained (fetch it where "
            f"there is network: hf download {repo_id} --local-dir pretrained/<name>)"
        ) from None
    log.info("teacher.pretrained %s: hub snapshot %s", repo_id, folder)
    return folder


def _adapt_tensor(
    key: str, tensor: torch.Tensor, want: torch.Tensor, fam: Family, source: Any, target: Any
) -> torch.Tensor | None:
    """``tensor`` brought to ``want``'s shape by the rules in the module docstring; None if none applies."""
    resized = fam.resize(key, tensor, source, target)
    if resized is not None:
        return resized
    rgb_conv = tensor.dim() == 4 and want.shape[1] == 1 and tensor.shape[1] > 1
    if rgb_conv and tensor.shape[:1] + tensor.shape[2:] == want.shape[:1] + want.shape[2:]:
        return tensor.sum(dim=1, keepdim=True)
    return None


def carry_weights(
    source: PreTrainedModel, target: PreTrainedModel, fam: Family, folder: Path
) -> dict[str, list[str]]:
    """Copy ``source``'s tensors into ``target`` (see the module docstring); what was kept new or adapted."""
    src = source.state_dict()
    state = target.state_dict()
    report: dict[str, list[str]] = {"new": [], "adapted": []}
    for key, want in state.items():
        if key.startswith(fam.head):
            report["new"].append(key)
            continue
        if key not in src:
            raise WeightsError(f"{folder}: the checkpoint lacks {key}, which a {fam.arch} teacher needs")
        tensor = src[key]
        if tensor.shape != want.shape:
            adapted = _adapt_tensor(key, tensor, want, fam, source.config, target.config)
            if adapted is None or adapted.shape != want.shape:
                raise WeightsError(
                    f"{folder}: tensor {key} has shape {tuple(tensor.shape)}, the teacher for these features "
                    f"needs {tuple(want.shape)}, and no rule adapts it"
                )
            tensor = adapted
            report["adapted"].append(key)
        state[key] = tensor
    target.load_state_dict(state)
    return report


def _family_in(folder: Path) -> Family:
    """The teacher family of the checkpoint in ``folder``, from the ``model_type`` of its config.json."""
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type", "")
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"teacher.pretrained: {folder / 'config.json'}: unreadable ({e})") from None
    try:
        return family_of_type(str(model_type))
    except ValueError as e:
        raise ConfigError(f"teacher.pretrained: {folder}: {e}") from None


def load_pretrained_teacher(
    cfg: TeacherConfig, folder: Path, shape: Shape, task: Task, audio: Mapping[str, Any] | None = None
) -> PreTrainedModel:
    """The checkpoint in ``folder`` as a teacher for ``shape`` inputs and ``task``'s outputs.

    Its family (``model_type`` in its config.json) must be ``teacher.arch``; the family may refuse features
    it was not trained on (AST: sample rate, mel bins, hop). ``audio``: the features' audio settings.
    """
    fam = family(cfg.arch)
    found = _family_in(folder)
    if found is not fam:
        raise ConfigError(
            f"teacher.pretrained: {folder} holds a {found.arch} checkpoint but teacher.arch is {cfg.arch}: "
            f"set teacher.arch: {found.arch}"
        )
    # refuse unsuitable features before reading any weights
    fam.check_source(fam.model_class.config_class.from_pretrained(folder), folder, shape, audio)
    # exactly as saved (its own input size and head); a tensor the file lacks would be silently random
    source, info = load_pretrained(fam.model_class, folder, output_loading_info=True, **fam.load_kwargs)
    missing = sorted(k for k in info.get("missing_keys") or [] if not k.endswith("num_batches_tracked"))
    if missing:
        raise WeightsError(
            f"{folder}: the checkpoint lacks {len(missing)} tensor(s) of a {fam.arch} model: {missing[0]} ..."
        )
    config = copy.deepcopy(source.config)
    fam.adapt_config(config, cfg, shape, task)
    target = fam.model_class(config)
    report = carry_weights(source, target, fam, folder)
    log.info(
        "teacher: %s from %s, new head (%s), adapted to these features: %s",
        fam.arch,
        folder,
        ", ".join(report["new"]),
        ", ".join(report["adapted"]) or "nothing",
    )
    return target
