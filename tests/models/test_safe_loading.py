"""Weights load through safetensors only; a truncated, changed or pickled file is refused in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification

from audiokd.config import TeacherConfig
from audiokd.io import file_sha256
from audiokd.models import WeightsError
from audiokd.models.teacher import build_teacher, load_teacher
from audiokd.tasks import Task

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def teacher_dir(tmp_path) -> Path:
    """A tiny teacher folder as train_teacher writes it: save_pretrained files and meta.json with the hash."""
    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=(32, 64),
        patch_size=16,
        num_channels=1,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=2,
        problem_type="regression",
    )
    folder = tmp_path / "teacher"
    ViTForImageClassification(cfg).save_pretrained(folder)
    (folder / "meta.json").write_text(
        json.dumps({"weights_sha256": file_sha256(folder / "model.safetensors")})
    )
    return folder


def test_an_intact_teacher_loads(teacher_dir):
    model = load_teacher(teacher_dir)
    assert not model.training and model.config.hidden_size == 32


def test_a_truncated_weights_file_is_named_in_one_line(teacher_dir):
    weights = teacher_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(WeightsError) as err:
        load_teacher(teacher_dir)
    msg = str(err.value)
    assert msg.startswith(f"{weights}: not a valid safetensors file") and "\n" not in msg


def test_a_changed_byte_is_caught_by_the_recorded_hash(teacher_dir):
    weights = teacher_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # inside a tensor: the header still parses, the weights would silently differ
    weights.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=re.escape(f"{weights}: content differs from the sha256")):
        load_teacher(teacher_dir)


def test_pickle_based_weights_are_never_loaded(teacher_dir):
    model = load_teacher(teacher_dir)
    (teacher_dir / "model.safetensors").unlink()
    torch.save(model.state_dict(), teacher_dir / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="pytorch_model.bin is pickle-based and is never loaded"):
        load_teacher(teacher_dir)


def test_a_damaged_pretrained_checkpoint_is_refused_before_training(teacher_dir):
    weights = teacher_dir / "model.safetensors"
    weights.write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match=re.escape(str(weights))):
        build_teacher(TeacherConfig(pretrained=str(teacher_dir)), (1, 32, 64), Task("regression", ("a", "b")))


def test_source_loads_nothing_through_pickle():
    """Every ``torch.load`` passes ``weights_only=True``; no pickle, joblib or ``allow_pickle=True`` load."""
    calls, unsafe = 0, []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            calls += 1
            if "weights_only=True" not in m.group(1):
                unsafe.append(f"{path}: {m.group(0)}")
        unsafe += [
            f"{path}: {s}" for s in re.findall(r"pickle\.loads?\(|joblib\.load\(|allow_pickle=True", text)
        ]
    assert calls >= 1 and unsafe == []
