"""DVC stage train_teacher: the ViT teacher, its best epoch and its cached predictions."""

from audiokd.cli import load_sections, run_stage, stage_args
from audiokd.distributed import relaunch_if_needed
from audiokd.teacher_training import train_teacher


def main() -> None:
    """Read ``data``, ``teacher``, ``tracking``, ``runtime``; write the teacher folder."""
    args = stage_args(__doc__, {"features": "features folder (input)", "out": "teacher folder to write"})
    sections = load_sections(args.params, "data", "teacher", "tracking", "runtime", "augment")
    relaunch_if_needed(sections[3])  # runtime.nproc_per_node > 1: this script again under torchrun
    train_teacher(*sections, args.features, args.out, params_file=args.params)


if __name__ == "__main__":
    run_stage(main)
