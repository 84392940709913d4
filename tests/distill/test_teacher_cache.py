"""The teacher cache is keyed by the teacher's weights and the features, by content: never stale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiokd.distill import teacher_cache
from audiokd.distill.teacher_cache import StaleCacheError

META = {"counts": {"train": 3, "val": 2}}


@pytest.fixture
def made(tmp_path):
    teacher, features = tmp_path / "teacher", tmp_path / "features"
    teacher.mkdir()
    (features / "train").mkdir(parents=True)
    (teacher / "model.safetensors").write_bytes(b"weights v1")
    np.save(features / "train" / "x.npy", np.zeros((3, 1, 4, 4), np.float32))
    outputs = {"train": torch.arange(6.0).reshape(3, 2), "val": torch.ones(2, 2)}
    key = teacher_cache.cache_key(teacher, features)
    teacher_cache.save(teacher / "predictions", outputs, META, key)
    return teacher, features


def test_the_same_teacher_and_features_reuse_the_cache(made):
    teacher, features = made
    out = teacher_cache.load(teacher, features, META)
    assert torch.equal(out["train"], torch.arange(6.0).reshape(3, 2)) and out["val"].shape == (2, 2)


def test_other_teacher_weights_are_refused(made):
    teacher, features = made
    (teacher / "model.safetensors").write_bytes(b"weights v2")
    with pytest.raises(StaleCacheError, match=r"predictions: computed for other teacher weights"):
        teacher_cache.load(teacher, features, META)


def test_other_features_are_refused_even_with_the_same_shapes(made):
    teacher, features = made
    np.save(features / "train" / "x.npy", np.ones((3, 1, 4, 4), np.float32))
    with pytest.raises(StaleCacheError, match=r"computed for other features \(features_sha256"):
        teacher_cache.load(teacher, features, META)


def test_a_cache_without_predictions_says_to_rerun_the_teacher(tmp_path):
    with pytest.raises(StaleCacheError, match="no teacher predictions; rerun the train_teacher stage"):
        teacher_cache.load(tmp_path, tmp_path, META)
