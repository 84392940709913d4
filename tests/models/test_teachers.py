"""Every teacher family: built from the teacher section, called the same way, trains, saves and loads back."""

from __future__ import annotations

import pytest
import torch

from audiokd.config import ConfigError, TeacherConfig, build_section
from audiokd.models.features import teacher_inner, teacher_layer_count, tokens_to_map
from audiokd.models.teacher import build_teacher, load_teacher, teacher_arch
from audiokd.models.teachers import FAMILIES
from audiokd.models.teachers.ast import merge_special
from audiokd.tasks import Task

SHAPE = (1, 32, 64)
TASK = Task("regression", ("a", "b"))
ARCHS = ["vit", "ast", "resnet", "convnext", "mobilevit"]


def tiny(arch: str, **kw) -> TeacherConfig:
    """A teacher section shrunk to test size for ``arch``."""
    base = dict(
        arch=arch,
        hidden_size=32,
        num_layers=3,
        num_heads=2,
        intermediate_size=64,
        patch_size=8,
        ast_stride=6,
        cnn_depths=(1, 1, 1),
        cnn_hidden_sizes=(8, 16, 32),
        mobilevit_hidden_sizes=(8, 16, 16),
        mobilevit_neck_hidden_sizes=(8, 8, 16, 16, 16, 16, 32),
    )
    return TeacherConfig(**{**base, **kw})


def test_every_arch_is_registered():
    assert sorted(FAMILIES) == sorted(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_each_arch_builds_trains_a_step_and_round_trips(arch, tmp_path):
    torch.manual_seed(0)
    model = build_teacher(tiny(arch), SHAPE, TASK)
    x, y = torch.randn(4, *SHAPE), torch.randn(4, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    loss = TASK.hard_loss(model(pixel_values=x).logits, y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [
        k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])
    ]
    assert len(changed) > len(before) // 2  # the whole network learns, not just the head

    model.eval()
    model.save_pretrained(tmp_path)
    assert teacher_arch(tmp_path) == arch
    loaded = load_teacher(tmp_path)
    assert not loaded.training and type(loaded) is type(model)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=x).logits, model(pixel_values=x).logits)


@pytest.mark.parametrize(
    ("arch", "maps"),
    [
        ("vit", [(32, 4, 8)] * 3),  # 32 x 64 input, patch 8: a 4 x 8 grid of 32-wide tokens
        ("ast", [(32, 5, 10)] * 3),  # patch 8, stride 6: (32 - 8) // 6 + 1 = 5 by (64 - 8) // 6 + 1 = 10
        ("resnet", [(8, 8, 16), (16, 4, 8), (32, 2, 4)]),  # stem /4, then stages /1, /2, /2
        ("convnext", [(8, 8, 16), (16, 4, 8), (32, 2, 4)]),  # 4 x 4 patchify stem, then /2 per stage
    ],
)
def test_hidden_states_become_canonical_maps(arch, maps):
    model = build_teacher(tiny(arch), SHAPE, TASK).eval()
    attn = arch in ("vit", "ast")
    out = model(pixel_values=torch.randn(2, *SHAPE), output_hidden_states=True, output_attentions=attn)
    assert teacher_layer_count(model) == 3
    inner = teacher_inner(model, out, [1, 2, 3], with_attentions=attn)
    assert [tuple(m.shape[1:]) for m in inner.maps] == maps
    assert all(m.shape[0] == 2 for m in inner.maps)
    if attn:
        n = maps[0][1] * maps[0][2]
        assert [tuple(a.shape) for a in inner.attentions] == [(2, 2, 1 + n, 1 + n)] * 3
        assert torch.allclose(inner.attentions[0].sum(-1), torch.ones(2, 2, 1 + n), atol=1e-5)


def test_mobilevit_teacher_gives_five_stage_maps_and_unit_batchnorm_scales():
    model = build_teacher(tiny("mobilevit"), SHAPE, TASK).eval()
    out = model(pixel_values=torch.randn(2, *SHAPE), output_hidden_states=True)
    assert teacher_layer_count(model) == 5
    inner = teacher_inner(model, out, [1, 3, 5], with_attentions=False)
    # stem /2, then stages /1, /2, /2, /2, /2; channels are the neck widths of the five stages
    assert [tuple(m.shape[1:]) for m in inner.maps] == [(8, 16, 32), (16, 4, 8), (16, 1, 2)]
    scales = [m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert scales and all(torch.equal(w, torch.ones_like(w)) for w in scales)


def test_mobilevit_widths_must_divide_into_heads():
    raw = {"arch": "mobilevit", "num_heads": 6, "mobilevit_hidden_sizes": [64, 80, 96]}
    with pytest.raises(ConfigError, match=r"teacher.mobilevit_hidden_sizes = \[64, 80, 96\] must all be"):
        build_section(TeacherConfig, raw, "teacher")


def test_ast_patch_tokens_land_where_their_patch_is():
    # a spectrogram that is zero but for one patch: only that patch's token differs from the empty ones
    model = build_teacher(tiny("ast", ast_stride=8, num_layers=1), SHAPE, TASK).eval()
    x = torch.zeros(1, *SHAPE)
    x[0, 0, 8:16, 24:32] = 1.0  # frequency row 1, time column 3 of a 4 x 8 grid
    emb = model.audio_spectrogram_transformer.embeddings
    tokens = emb(x[:, 0].transpose(1, 2)) - emb.position_embeddings
    grid = tokens_to_map(tokens[:, 2:], (4, 8))
    differs = (grid - grid[:, :, 0:1, 0:1]).abs().sum(1)[0] > 1e-6
    assert differs.nonzero().tolist() == [[1, 3]]


def test_ast_special_tokens_merge_into_one_that_keeps_rows_distributions():
    a = torch.softmax(torch.randn(2, 3, 6, 6), dim=-1)  # CLS, distillation and 4 patches
    m = merge_special(a)
    assert m.shape == (2, 3, 5, 5)
    assert torch.allclose(m.sum(-1), torch.ones(2, 3, 5))
    assert torch.allclose(m[:, :, 1:, 1:], a[:, :, 2:, 2:])  # patch-to-patch attention unchanged
    assert torch.allclose(m[:, :, 1:, 0], a[:, :, 2:, 0] + a[:, :, 2:, 1])


@pytest.mark.parametrize("arch", ["vit", "ast"])
def test_a_patch_larger_than_the_input_is_named(arch):
    with pytest.raises(ConfigError, match=r"teacher.patch_size = 16 is larger than the input \(8 mels"):
        build_teacher(tiny(arch, patch_size=16, ast_stride=16), (1, 8, 64), TASK)


def test_a_folder_of_another_model_type_is_named(tmp_path):
    from audiokd.models import WeightsError

    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(WeightsError, match="model_type 'bert' is not a teacher family"):
        load_teacher(tmp_path)
