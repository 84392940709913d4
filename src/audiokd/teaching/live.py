"""Running a teacher folder live beside the student (augmentation, feature or attention terms).

Distill runs the teacher on every batch when the batch is augmented (its cached outputs are for the clean
clips) or when ``distill.beta``/``gamma`` compare hidden layers. What can run live:

- one trained teacher: always;
- an ensemble of single teachers: for augmentation only, as :class:`MeanTeacher` (its members' combined
  output, as in the cache); hidden layers of several models have no one meaning, so beta/gamma are refused;
- fold teachers (or an ensemble with fold members): never; their point is out-of-fold targets, which exist
  only as cached outputs (run live, each fold teacher would see clips it trained on);
- a file of outputs: never; there is no model.

:func:`check_live` refuses the rest up front, in one line naming the keys that asked for a live teacher.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.modeling_outputs import ImageClassifierOutput

from audiokd.augment import ViewBank
from audiokd.config import AugmentConfig, ConfigError
from audiokd.models import predict
from audiokd.models.teacher import load_teacher
from audiokd.tasks import Task
from audiokd.teaching.combine import mean_outputs
from audiokd.teaching.folder import describe, kind, parts, runs_live


class MeanTeacher(torch.nn.Module):
    """Several trained teachers as one: ``forward`` returns their combined outputs as ``.logits``."""

    def __init__(self, members: list[torch.nn.Module], task: Task) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.task = task

    def forward(self, pixel_values: torch.Tensor) -> ImageClassifierOutput:
        """The members' mean output (log mean probabilities for classification)."""
        outs = [m(pixel_values=pixel_values).logits for m in self.members]
        return ImageClassifierOutput(logits=mean_outputs(outs, self.task))


def augment_keys(augment: AugmentConfig, random_crop: bool) -> list[str]:
    """The params keys that make training batches differ from the cached clips."""
    keys = []
    if augment.num_masks > 0:
        keys += [f"augment.{k}" for k in ("freq_mask", "time_mask") if getattr(augment, k) > 0]
    keys += ["augment.mixup_alpha"] if augment.mixup_alpha > 0 else []
    return keys + (["audio.random_crop"] if random_crop else [])


def check_live(teacher_dir: str | Path, hidden: bool, aug_keys: list[str]) -> None:
    """Refuse (one line, naming the keys) a live teacher that the folder cannot provide."""
    root = Path(teacher_dir)
    if runs_live(root):
        return
    what = f"{root} holds {describe(root)}"
    if hidden:
        raise ConfigError(
            f"distill.beta/distill.gamma > 0 compare hidden layers, which needs one trained teacher, "
            f"but {what}: set distill.beta and distill.gamma to 0"
        )
    if kind(root) == "ensemble" and all(runs_live(p) for p in parts(root).values()):
        return
    why = (
        "no model to run"
        if kind(root) == "outputs"
        else "out-of-fold targets that exist only as cached outputs"
    )
    raise ConfigError(
        f"{', '.join(aug_keys)}: augmented batches need the teacher run live, but {what} ({why}): "
        f"turn {', '.join(aug_keys)} off"
    )


def load_live(teacher_dir: str | Path, task: Task) -> torch.nn.Module:
    """The teacher to run beside the student: one model, or an ensemble's :class:`MeanTeacher` (eval mode)."""
    root = Path(teacher_dir)
    if runs_live(root):
        return load_teacher(root)
    return MeanTeacher([load_teacher(p) for p in parts(root).values()], task).eval()


def score_views(
    teacher_dir: str | Path,
    task: Task,
    x: torch.Tensor,
    bank: ViewBank,
    device: torch.device,
    batch_size: int = 32,
) -> torch.Tensor:
    """The teacher's outputs on every stored view of every row of ``x`` (its training clips, in row order):
    a (rows, views, outputs) tensor on the CPU, in the cache's space (standardised targets, or logits).
    Batches of 32: on a 2-core CPU three MobileViT-XS scored a clip in 7 ms at 32 and 17 ms at 128."""
    live = load_live(teacher_dir, task).to(device)
    rows = torch.arange(len(x))
    chunk = 4096  # clips masked at a time, so a large training set is not copied whole for each view
    per_view = []
    for k in range(bank.views):
        view = torch.full((len(x),), k)
        outs = [
            predict(
                live,
                bank.apply(x[i : i + chunk], rows[i : i + chunk], view[i : i + chunk]),
                batch_size,
                device,
            )
            for i in range(0, len(x), chunk)
        ]
        per_view.append(torch.cat(outs))
    return torch.stack(per_view, 1)
