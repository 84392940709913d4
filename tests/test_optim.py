"""AdamW without weight decay on biases, norms, position embeddings, CLS token; grad_clip as a params key."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from audiokd.checkpoint import Checkpointer
from audiokd.config import ConfigError, StudentConfig, load_section
from audiokd.distill.losses import hard_mse
from audiokd.distributed import Dist
from audiokd.models.student import build_student
from audiokd.optim import param_groups
from audiokd.training import fit, seed_everything, settings_from
from fit_helpers import SETTINGS, SHAPE, TASK, TINY, tiny_data

VIT = StudentConfig(arch="vit", vit_hidden_size=32, vit_layers=1, vit_intermediate_size=64)


def _names(model: torch.nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_vit_embeddings_norms_and_biases_are_not_decayed_weight_matrices_are():
    model = build_student(VIT, SHAPE, TASK)
    decay, other = param_groups([model], 0.05)
    assert (decay["weight_decay"], other["weight_decay"]) == (0.05, 0.0)
    kept, decayed = _names(model, other), _names(model, decay)
    assert {"vit.embeddings.cls_token", "vit.embeddings.position_embeddings"} <= kept
    assert "vit.embeddings.patch_embeddings.projection.bias" in kept
    assert any("layernorm" in n and n.endswith("weight") for n in kept)
    assert "vit.embeddings.patch_embeddings.projection.weight" in decayed
    assert any("attention.q_proj.weight" in n for n in decayed) and "classifier.weight" in decayed
    assert kept | decayed == {n for n, _ in model.named_parameters()} and not kept & decayed


def test_the_training_loop_uses_the_groups_with_batch_norm_exempt(tmp_path):
    seed_everything(0)
    model = build_student(TINY, SHAPE, TASK)  # MobileViT: convolutions, batch norm, layer norm
    train, val = tiny_data()
    ckpt = Checkpointer("distill", {"params": "p"}, tmp_path)

    def objective(net, x, y, idx):
        hard = hard_mse(net(pixel_values=x).logits, y)
        return {"hard": hard, "total": hard}

    fit(model, objective, train, val, TASK, dataclasses.replace(SETTINGS, epochs=1), checkpoint=ckpt)
    groups = torch.load(ckpt.path, weights_only=True)["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    expected = param_groups([model], 0.01)
    assert [len(g["params"]) for g in groups] == [len(g["params"]) for g in expected]
    exempt = _names(model, expected[1])
    assert any("normalization" in n or "bn" in n.split(".")[-2] for n in exempt)  # batch-norm scales
    assert all(p.ndim > 1 for p in expected[0]["params"])


@pytest.mark.parametrize("section", ["teacher", "distill"])
def test_grad_clip_is_a_validated_key_that_reaches_the_loop(section):
    cfg = load_section({section: {"grad_clip": 0.5}}, section)
    assert cfg.grad_clip == 0.5 and load_section({section: {}}, section).grad_clip == 1.0
    s = settings_from(
        load_section({}, "runtime"),
        torch.device("cpu"),
        Dist(),
        epochs=1,
        batch_size=2,
        lr=1e-3,
        weight_decay=0,
        desc="t",
        grad_clip=cfg.grad_clip,
    )
    assert s.grad_clip == 0.5
    with pytest.raises(ConfigError, match=rf"{section}\.grad_clip"):
        load_section({section: {"grad_clip": -1}}, section)
