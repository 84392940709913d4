"""Intermediate outputs of teacher and student, without fragile hooks where the model exposes them.

- Teachers: ``output_hidden_states=True`` in the same forward pass that gives their outputs; layer ``i``
  (1-based) is ``hidden_states[i]``: ViT tokens (B, 1 + N, D) with the CLS token first, AST tokens with two
  special tokens first, ResNet/ConvNeXt stage maps (B, C, H, W). Each family (:mod:`audiokd.models.teachers`)
  brings its own to the canonical form.
- MobileViT student: ``output_hidden_states=True`` gives one map (B, C, H, W) per stage.
- Anything else: :class:`ModuleOutputs`, forward hooks by module path that accept a tensor, a tuple or
  list (first tensor), a dict or a ``ModelOutput`` and are always removed, also when the forward raises.
  (The notebook's hooks called ``.clone()`` on the tuple a ViT block returned in transformers 4.x.)

Every feature is brought to one canonical form, a map (B, C, H, W): tokens drop their special tokens and are
laid out on the patch grid.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Inner:
    """Intermediate outputs of one forward pass: canonical maps (B, C, H, W) and, when asked, attentions."""

    maps: list[torch.Tensor]
    attentions: list[torch.Tensor] | None = None

    @property
    def channels(self) -> list[int]:
        """Channel count of each map."""
        return [int(m.shape[1]) for m in self.maps]


def first_tensor(out: object) -> torch.Tensor:
    """The tensor a module produced: itself, or the first tensor of a tuple, list, dict or ``ModelOutput``."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):  # ModelOutput is an OrderedDict
        out = list(out.values())
    if isinstance(out, Sequence) and not isinstance(out, str):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    raise TypeError(f"module output holds no tensor: {type(out).__name__}")


class ModuleOutputs(contextlib.AbstractContextManager):
    """Capture the outputs of submodules named by dotted path during forward passes.

    Use as a context manager; ``self.features[path]`` holds the latest output of each module as a tensor.
    Hooks are removed on exit whatever happened inside.
    """

    def __init__(self, model: torch.nn.Module, paths: Sequence[str], detach: bool = False) -> None:
        modules = dict(model.named_modules())
        missing = [p for p in paths if p not in modules]
        if missing:
            raise KeyError(f"no module named {', '.join(missing)}; e.g. {', '.join(list(modules)[1:6])}")
        self._targets = [(p, modules[p]) for p in paths]
        self._detach = detach
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.features: dict[str, torch.Tensor] = {}

    def __enter__(self) -> ModuleOutputs:
        for path, module in self._targets:
            self._handles.append(module.register_forward_hook(self._hook(path)))
        return self

    def _hook(self, path: str):  # noqa: ANN202 - a torch hook closure
        def hook(_module: torch.nn.Module, _inputs: object, output: object) -> None:
            t = first_tensor(output)
            self.features[path] = t.detach() if self._detach else t

        return hook

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @property
    def active_hooks(self) -> int:
        """How many hooks are still registered (0 after exit)."""
        return len(self._handles)


def select_layers(spec: int | Sequence[int], num_layers: int) -> list[int]:
    """Teacher layers (1-based) from ``distill.teacher_layers``: every k-th for an int, else the list."""
    if isinstance(spec, int):
        return list(range(spec, num_layers + 1, spec))
    bad = [i for i in spec if not 1 <= i <= num_layers]
    if bad:
        from audiokd.config import ConfigError

        raise ConfigError(f"distill.teacher_layers: {bad} outside the teacher's layers 1..{num_layers}")
    return list(spec)


def pair_layers(n_teacher: int, n_student: int) -> list[tuple[int, int]]:
    """Pair teacher and student feature indices by proportional depth.

    The rule: ``k = min(n_teacher, n_student)`` pairs; element ``i`` (0-based) of the shorter list pairs with
    element ``ceil((i + 1) * n_long / k) - 1`` of the longer one, so both lists end together at their deepest
    feature and the pairs spread evenly over the longer list. No feature is used twice; none pairs when
    either list is empty.
    """
    k = min(n_teacher, n_student)
    if k == 0:
        return []
    n_long = max(n_teacher, n_student)
    long_idx = [math.ceil((i + 1) * n_long / k) - 1 for i in range(k)]
    if n_teacher <= n_student:
        return list(zip(range(k), long_idx, strict=True))
    return list(zip(long_idx, range(k), strict=True))


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """ViT tokens (B, 1 + N, D) or (B, N, D) -> a map (B, D, gh, gw) on the patch grid."""
    gh, gw = grid
    if tokens.shape[1] == gh * gw + 1:
        tokens = tokens[:, 1:]
    if tokens.shape[1] != gh * gw:
        raise ValueError(f"{tokens.shape[1]} tokens do not fill a {gh}x{gw} patch grid")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], gh, gw)


def vit_grid(model: torch.nn.Module) -> tuple[int, int]:
    """The patch grid (rows, cols) of a Hugging Face ViT."""
    cfg = model.config
    size = cfg.image_size if isinstance(cfg.image_size, Sequence) else (cfg.image_size, cfg.image_size)
    patch = cfg.patch_size if isinstance(cfg.patch_size, Sequence) else (cfg.patch_size, cfg.patch_size)
    return size[0] // patch[0], size[1] // patch[1]


@contextlib.contextmanager
def no_hooks_left(model: torch.nn.Module) -> Iterator[None]:
    """Assert on exit that ``model`` has no forward hooks registered (for tests and sanity checks)."""
    yield
    left = sum(len(m._forward_hooks) for m in model.modules())
    if left:
        raise RuntimeError(f"{left} forward hook(s) left on the model")


def is_vit(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face ViT (tokens on a patch grid, attention probabilities)."""
    return getattr(getattr(model, "config", None), "model_type", "") == "vit"


def teacher_layer_count(model: torch.nn.Module) -> int:
    """How many layers of this teacher ``distill.teacher_layers`` can pick (ViT/AST: encoder layers;
    ResNet/ConvNeXt: stages)."""
    from audiokd.models.teachers import family_of  # the families use this module's helpers

    return family_of(model).num_layers(model.config)


def teacher_inner(model: torch.nn.Module, out: Any, layers: Sequence[int], with_attentions: bool) -> Inner:
    """Selected layers (1-based) of a teacher forward run with ``output_hidden_states=True``, any family.

    Maps come out canonical (B, C, H, W) and attentions, when asked, in ViT's layout (one special token, then
    the patches): the family of the teacher (:mod:`audiokd.models.teachers`) knows how.
    """
    from audiokd.models.teachers import family_of  # the families use this module's helpers

    fam = family_of(model)
    maps = fam.feature_maps(model, out.hidden_states)
    attn = None
    if with_attentions:
        if not fam.has_attentions or getattr(out, "attentions", None) is None:
            raise ValueError(f"{type(model).__name__} returned no attention probabilities")
        every = fam.attentions(model, out.attentions)
        attn = [every[i - 1] for i in layers]
    return Inner([maps[i - 1] for i in layers], attn)


def student_inner(model: torch.nn.Module, out: Any, with_attentions: bool) -> Inner:
    """Every stage (MobileViT) or layer (ViT) of a student forward run with ``output_hidden_states=True``."""
    if out.hidden_states is None:
        raise ValueError(f"{type(model).__name__} returned no hidden states")
    if is_vit(model):
        grid = vit_grid(model)
        maps = [tokens_to_map(h, grid) for h in out.hidden_states[1:]]
    else:
        maps = [h for h in out.hidden_states if h.dim() == 4]
    attn = None
    if with_attentions:
        if getattr(out, "attentions", None) is None:
            from audiokd.config import ConfigError

            raise ConfigError(
                "distill.attention_loss = attention_map needs a student that exposes attention probabilities "
                f"(a ViT-family student); {type(model).__name__} has none: use attention_loss: activation"
            )
        attn = list(out.attentions)
    return Inner(maps, attn)
