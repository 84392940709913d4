"""Intermediate outputs: hooks that survive tuples, the pairing rule, canonical maps from real HF models."""

import pytest
import torch
from transformers import ViTConfig, ViTForImageClassification
from transformers.modeling_outputs import BaseModelOutput

from audiokd.config import ConfigError
from audiokd.models.features import (
    ModuleOutputs,
    first_tensor,
    pair_layers,
    select_layers,
    teacher_inner,
    tokens_to_map,
)


class TupleBlock(torch.nn.Module):
    """A block returning a tuple, as ViT layers did in transformers 4.x."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return (self.lin(x), None)


class Net(torch.nn.Module):
    def __init__(self, fail=False):
        super().__init__()
        self.block = TupleBlock()
        self.fail = fail

    def forward(self, x):
        y = self.block(x)[0]
        if self.fail:
            raise RuntimeError("boom")
        return y


def test_tuple_output_yields_a_tensor_not_the_notebook_error():
    # notebook: hooks did output.clone() on a tuple -> "'tuple' object has no attribute 'clone'"
    net = Net()
    with ModuleOutputs(net, ["block"]) as grab:
        net(torch.randn(2, 4))
    feat = grab.features["block"]
    assert isinstance(feat, torch.Tensor) and feat.shape == (2, 4)
    feat.clone()
    assert grab.active_hooks == 0 and not net.block._forward_hooks


def test_hooks_are_removed_when_the_forward_raises():
    net = Net(fail=True)
    with pytest.raises(RuntimeError, match="boom"), ModuleOutputs(net, ["block"]):
        net(torch.randn(2, 4))
    assert not net.block._forward_hooks


def test_unknown_module_path_names_it():
    with pytest.raises(KeyError, match="no module named blok"):
        ModuleOutputs(Net(), ["blok"])


def test_first_tensor_of_every_container():
    t = torch.ones(1)
    assert first_tensor(t) is t
    assert first_tensor((None, t)) is t
    assert first_tensor([t, torch.zeros(1)]) is t
    assert first_tensor({"a": None, "b": t}) is t
    assert first_tensor(BaseModelOutput(last_hidden_state=t)) is t
    with pytest.raises(TypeError):
        first_tensor((None, "x"))


def test_hooks_on_a_real_transformers_vit_layer():
    vit = ViTForImageClassification(
        ViTConfig(
            image_size=(16, 32),
            patch_size=8,
            num_channels=1,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    with ModuleOutputs(vit, ["vit.layers.1"]) as grab:
        out = vit(pixel_values=torch.randn(3, 1, 16, 32), output_hidden_states=True)
    assert torch.allclose(grab.features["vit.layers.1"], out.hidden_states[2])


@pytest.mark.parametrize(
    ("n_t", "n_s", "pairs"),
    [
        (2, 5, [(0, 2), (1, 4)]),
        (5, 2, [(2, 0), (4, 1)]),
        (3, 3, [(0, 0), (1, 1), (2, 2)]),
        (4, 3, [(1, 0), (2, 1), (3, 2)]),
        (0, 4, []),
        (3, 0, []),
    ],
)
def test_pairing_rule(n_t, n_s, pairs):
    assert pair_layers(n_t, n_s) == pairs


def test_teacher_layer_selection():
    assert select_layers(3, 8) == [3, 6]
    assert select_layers(3, 12) == [3, 6, 9, 12]
    assert select_layers((2, 8), 8) == [2, 8]
    with pytest.raises(ConfigError, match=r"distill.teacher_layers: \[9\] outside the teacher's layers 1..8"):
        select_layers((1, 9), 8)


def test_tokens_lay_out_on_the_patch_grid():
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float).reshape(2, 7, 3)  # CLS + 2x3 patches, width 3
    m = tokens_to_map(tokens, (2, 3))
    assert m.shape == (2, 3, 2, 3)
    assert torch.equal(m[0, :, 0, 1], tokens[0, 2])  # patch (0, 1) is token 2 (after CLS)
    with pytest.raises(ValueError):
        tokens_to_map(tokens, (2, 2))


def test_teacher_inner_from_one_forward_pass():
    vit = ViTForImageClassification(
        ViTConfig(
            image_size=(16, 32),
            patch_size=8,
            num_channels=1,
            hidden_size=16,
            num_hidden_layers=3,
            num_attention_heads=2,
            intermediate_size=32,
            attn_implementation="eager",
        )
    )
    out = vit(pixel_values=torch.randn(2, 1, 16, 32), output_hidden_states=True, output_attentions=True)
    inner = teacher_inner(vit, out, [1, 3], with_attentions=True)
    assert [tuple(m.shape) for m in inner.maps] == [(2, 16, 2, 4), (2, 16, 2, 4)]
    assert [tuple(a.shape) for a in inner.attentions] == [(2, 2, 9, 9), (2, 2, 9, 9)]
    assert inner.channels == [16, 16]
