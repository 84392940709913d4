"""Regression vs classification: hard losses, metrics and mixing on hand-computed cases."""

import numpy as np
import pytest
import torch

from audiokd.tasks import Task, accuracy, macro_f1

CLS = Task("classification", ("cat", "dog", "owl"))
REG = Task("regression", ("arousal", "valence"))


def test_accuracy_and_macro_f1_by_hand():
    true = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    assert accuracy(pred, true) == pytest.approx(3 / 5)
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp0 fp0 fn1 -> 0
    assert macro_f1(pred, true, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_classification_quality_and_primary():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    q = CLS.quality(logits, np.array([0, 1, 2, 2]))
    assert q["accuracy"] == pytest.approx(0.75) and CLS.primary == "accuracy"
    assert CLS.problem_type == "single_label_classification" and CLS.num_outputs == 3


def test_hard_losses():
    logits = torch.tensor([[0.0, 0.0, 0.0]])
    assert float(CLS.hard_loss(logits, torch.tensor([1]))) == pytest.approx(np.log(3))
    soft = torch.tensor([[0.5, 0.5, 0.0]])  # mixed targets are probability rows
    assert float(CLS.hard_loss(logits, soft)) == pytest.approx(np.log(3))
    assert float(REG.hard_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]))) == pytest.approx(0.5)


def test_mixable_targets():
    assert CLS.as_mixable(torch.tensor([2, 0])).tolist() == [[0, 0, 1], [1, 0, 0]]
    y = torch.tensor([[0.1, 0.2]])
    assert REG.as_mixable(y) is y


def test_regression_quality_keys():
    y = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    q = REG.quality(y, y)
    assert q["ccc_mean"] == pytest.approx(1.0) and set(q["ccc"]) == {"arousal", "valence"}
    assert REG.flat_quality(y, y)["ccc_valence"] == pytest.approx(1.0)
