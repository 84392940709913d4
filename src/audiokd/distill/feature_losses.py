"""Feature distillation (beta) and attention transfer (gamma) between paired teacher and student layers.

Inputs are :class:`audiokd.models.features.Inner`: intermediate maps in canonical form (B, C, H, W), ViT
tokens laid out on their patch grid, and optionally attention probabilities (B, heads, N, N). Layers are
paired by :func:`audiokd.models.features.pair_layers`; each loss is averaged over the pairs actually compared
and is 0 (never a division by zero) when there are none.

- ``fitnet`` (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets", arXiv:1412.6550): per pair, the student
  map is average-pooled to the common size (min height, min width of the two maps), projected to the teacher
  width by a learned 1x1 convolution (trained with the student, not part of the exported student), and
  compared by MSE with the teacher map pooled the same way and layer-normalised over channels
  (parameter-free, so the target's scale does not depend on the depth of the teacher layer):
  ``L_feat = mean_pairs MSE(W * pool(F_s), LN(pool(F_t)))``.
- ``activation`` (Zagoruyko & Komodakis 2017, "Paying More Attention to Attention", arXiv:1612.03928, eq. 2):
  per pair, the spatial map ``Q = sum_c |F_c|^p`` is pooled to the common size, flattened and L2-normalised,
  then ``L_at = mean_pairs mean_batch || Q_s / ||Q_s|| - Q_t / ||Q_t|| ||_2``. Pooling comes before
  normalising so both vectors are unit length when compared. Works across ViT tokens and MobileViT maps.
- ``attention_map``: where both models expose attention probabilities (a ViT-family student, the teacher
  loaded with ``attn_implementation="eager"``): per pair, head-averaged attention rows A (B, N, N),
  ``L_attn = mean_pairs KL(A_t || A_s)`` summed over keys and averaged over batch and query tokens.
"""

from __future__ import annotations

import torch
from torch.nn.functional import adaptive_avg_pool2d, layer_norm, mse_loss, normalize

from audiokd.distill.registry import lookup, register
from audiokd.models.features import Inner


def _common(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    return min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])


def _zero(inner: Inner) -> torch.Tensor:
    return torch.zeros((), device=inner.maps[0].device if inner.maps else None)


class PairedTerm(torch.nn.Module):
    """A loss over paired layers: the mean of :meth:`pair_loss` over the pairs, 0 when there are none."""

    def __init__(
        self,
        student_channels: list[int],
        teacher_channels: list[int],
        pairs: list[tuple[int, int]],
        p: float = 2.0,
    ) -> None:
        super().__init__()
        self.pairs, self.p = list(pairs), p

    def pair_loss(self, student: Inner, teacher: Inner, k: int) -> torch.Tensor:
        """The loss of pair ``k``."""
        raise NotImplementedError

    def forward(self, student: Inner, teacher: Inner) -> torch.Tensor:
        """Mean over the pairs actually compared."""
        if not self.pairs:
            return _zero(student)
        return torch.stack([self.pair_loss(student, teacher, k) for k in range(len(self.pairs))]).mean()


@register("feature", "fitnet")
class FitNetLoss(PairedTerm):
    """FitNets hint loss with learned 1x1 projections; see the module docstring for the formula."""

    def __init__(
        self,
        student_channels: list[int],
        teacher_channels: list[int],
        pairs: list[tuple[int, int]],
        p: float = 2.0,
    ) -> None:
        super().__init__(student_channels, teacher_channels, pairs, p)
        self.proj = torch.nn.ModuleList(
            torch.nn.Conv2d(student_channels[s], teacher_channels[t], kernel_size=1) for t, s in self.pairs
        )

    def pair_loss(self, student: Inner, teacher: Inner, k: int) -> torch.Tensor:
        """Projected-student vs layer-normalised-teacher MSE at the common size."""
        ti, si = self.pairs[k]
        s, t = student.maps[si], teacher.maps[ti]
        size = _common(s, t)
        s = self.proj[k](adaptive_avg_pool2d(s, size))
        t = adaptive_avg_pool2d(t, size).permute(0, 2, 3, 1)
        t = layer_norm(t, t.shape[-1:]).permute(0, 3, 1, 2)
        return mse_loss(s, t)


def spatial_attention(f: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Activation-based attention map ``sum_c |F_c|^p`` of a (B, C, H, W) map, (B, H, W)."""
    return f.abs().pow(p).sum(dim=1)


@register("attention", "activation")
class ActivationAttentionLoss(PairedTerm):
    """Attention transfer on activation maps (Zagoruyko & Komodakis 2017); no parameters."""

    def pair_loss(self, student: Inner, teacher: Inner, k: int) -> torch.Tensor:
        """Mean over the batch of the distance between L2-normalised, pooled attention maps."""
        ti, si = self.pairs[k]
        a_s = spatial_attention(student.maps[si], self.p).unsqueeze(1)
        a_t = spatial_attention(teacher.maps[ti], self.p).unsqueeze(1)
        size = _common(a_s, a_t)
        a_s = normalize(adaptive_avg_pool2d(a_s, size).flatten(1), dim=1)
        a_t = normalize(adaptive_avg_pool2d(a_t, size).flatten(1), dim=1)
        return (a_s - a_t).norm(dim=1).mean()


@register("attention", "attention_map")
class AttentionMapLoss(PairedTerm):
    """KL between head-averaged attention probabilities of paired transformer layers."""

    def pair_loss(self, student: Inner, teacher: Inner, k: int) -> torch.Tensor:
        """KL(A_t || A_s) per query row, averaged over batch and rows."""
        if student.attentions is None or teacher.attentions is None:
            raise ValueError("attention_map transfer needs attention probabilities from both models")
        ti, si = self.pairs[k]
        a_t = teacher.attentions[ti].mean(dim=1)
        a_s = student.attentions[si].mean(dim=1)
        if a_t.shape != a_s.shape:
            raise ValueError(
                f"attention maps differ in size: teacher {tuple(a_t.shape)}, student {tuple(a_s.shape)}; "
                "use the same patch grid"
            )
        return (a_t * (a_t.clamp_min(1e-12).log() - a_s.clamp_min(1e-12).log())).sum(-1).mean()


def build_term(
    kind: str,
    name: str,
    student_channels: list[int],
    teacher_channels: list[int],
    pairs: list[tuple[int, int]],
    p: float,
) -> torch.nn.Module:
    """The ``kind`` term (``feature`` or ``attention``) registered as ``name``, for these layer pairs."""
    return lookup(kind, name)(student_channels, teacher_channels, pairs, p)
