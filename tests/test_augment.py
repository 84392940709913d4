"""Train-time augmentation: random crop, SpecAugment masks and mixup, reproducible from the seed."""

import pytest
import torch

from audiokd.augment import BatchAugment, ViewBank, center_frames
from audiokd.config import AugmentConfig
from audiokd.tasks import Task

REG = Task("regression", ("a",))
CLS = Task("classification", ("x", "y"))


def test_nothing_on_means_no_augmentation():
    aug = BatchAugment(AugmentConfig(), REG, frames=8, seed=0)
    assert not aug.needed(8) and aug.needed(12)


def test_random_crop_takes_windows_of_the_model_width():
    x = torch.arange(20.0).repeat(4, 1, 2, 1)  # (4, 1, 2, 20): column index as value
    out, _ = BatchAugment(AugmentConfig(), REG, frames=8, seed=0)(x, torch.zeros(4, 1))
    assert out.shape == (4, 1, 2, 8)
    assert all(torch.equal(o[0, 0], torch.arange(o[0, 0, 0].item(), o[0, 0, 0].item() + 8)) for o in out)
    assert len({int(o[0, 0, 0]) for o in out}) > 1  # different offsets per clip
    assert torch.equal(center_frames(x, 8)[0, 0, 0], torch.arange(6.0, 14.0))


def test_spec_augment_masks_are_reproducible():
    cfg = AugmentConfig(freq_mask=3, time_mask=4, num_masks=2)
    x = torch.ones(3, 1, 16, 32)
    a, _ = BatchAugment(cfg, REG, frames=32, seed=5)(x, torch.zeros(3, 1))
    b, _ = BatchAugment(cfg, REG, frames=32, seed=5)(x, torch.zeros(3, 1))
    assert torch.equal(a, b)
    assert (a == 0).any() and (a == 1).any()  # some bins masked, most kept


def test_mixup_mixes_inputs_and_one_hot_labels_alike():
    cfg = AugmentConfig(mixup_alpha=0.4)
    x = torch.stack([torch.zeros(1, 2, 4), torch.ones(1, 2, 4)])
    y = torch.tensor([0, 1])
    mx, my = BatchAugment(cfg, CLS, frames=4, seed=1)(x, y)
    assert my.shape == (2, 2) and torch.allclose(my.sum(1), torch.ones(2))
    # a mixed clip's value equals its share of the "one" clip, and so does its label
    assert torch.allclose(mx[:, 0, 0, 0], my[:, 1])
    lam = float(my[0, 0])
    assert 0.0 <= lam <= 1.0 and mx.shape == x.shape


@pytest.mark.parametrize("task", [REG, CLS])
def test_cfg_active_flags(task):
    assert not AugmentConfig().active
    assert AugmentConfig(freq_mask=2).active and AugmentConfig(mixup_alpha=0.2).active
    assert not AugmentConfig(freq_mask=2, num_masks=0).active
    both = AugmentConfig(freq_mask=2, time_mask=3, mixup_alpha=0.2)
    assert both.for_students() == both  # students: true, the default
    teacher_only = AugmentConfig(freq_mask=2, time_mask=3, mixup_alpha=0.2, students=False)
    assert teacher_only.active and not teacher_only.for_students().active


def test_mix_like_mixes_other_per_row_values_as_the_last_batch_was_mixed():
    """augment.teacher_view clean: cached teacher outputs follow the clips' mixup, as the labels do."""
    x, y = torch.randn(6, 1, 2, 4), torch.randn(6, 2)
    aug = BatchAugment(AugmentConfig(mixup_alpha=0.4), REG, frames=4, seed=3)
    _, my = aug(x, y)
    assert not torch.equal(my, y)  # mixed
    assert torch.allclose(aug.mix_like(y), my)  # the same lam and partners
    masks = BatchAugment(AugmentConfig(freq_mask=1), REG, frames=4, seed=3)
    masks(x, y)
    assert torch.equal(masks.mix_like(y), y)  # masks alone leave the targets as they are


def test_stored_views_are_fixed_masks_within_their_bounds():
    cfg = AugmentConfig(freq_mask=5, time_mask=7, num_masks=2, teacher_view="stored")
    bank = ViewBank(cfg, rows=10, views=4, n_mels=16, frames=32, seed=3)
    x = torch.ones(6, 1, 16, 32)
    rows, k = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([0, 1, 2, 3, 0, 1])
    a, b = bank.apply(x, rows, k), bank.apply(x, rows, k)
    assert torch.equal(a, b)  # view k of row i is one input, whenever it is made
    assert not torch.equal(a[0], a[5])  # row 0's views 0 and 1 differ (the draw makes that all but certain)
    assert torch.equal(ViewBank(cfg, 10, 4, 16, 32, seed=3).apply(x, rows, k), a)  # the seed decides
    for view in a[:, 0]:
        rows_masked = int((view == 0).all(1).sum())  # whole mel bins zeroed by the frequency masks
        cols_masked = int((view == 0).all(0).sum())
        assert rows_masked <= 2 * 4 and cols_masked <= 2 * 6  # two masks, each narrower than its maximum
        assert set(view.unique().tolist()) <= {0.0, 1.0}
    assert (a == 0).any()


def test_a_bank_replaces_fresh_masks_and_says_which_view_each_row_got():
    cfg = AugmentConfig(freq_mask=4, time_mask=4, num_masks=1, teacher_view="stored")
    aug = BatchAugment(cfg, REG, frames=16, seed=0)
    aug.bank = ViewBank(cfg, rows=8, views=3, n_mels=8, frames=16, seed=0)
    x, idx = torch.randn(4, 1, 8, 16), torch.tensor([7, 2, 5, 0])
    out, _ = aug(x, torch.zeros(4, 1), idx)
    assert aug.last_views is not None and aug.last_views.shape == (4,)
    assert torch.equal(out, aug.bank.apply(x, idx, aug.last_views))
    with pytest.raises(ValueError, match="row indices"):
        aug(x, torch.zeros(4, 1))
