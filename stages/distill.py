"""DVC stage distill: the MobileViT student trained with knowledge distillation from the teacher."""

from audiokd.cli import load_sections, run_stage, stage_args
from audiokd.distill.run import distill
from audiokd.distributed import relaunch_if_needed


def main() -> None:
    """Read ``data``, ``student``, ``distill``, ``tracking``, ``runtime``; write the student folder."""
    args = stage_args(
        __doc__,
        {
            "features": "features folder (input)",
            "teacher": "teacher folder (input)",
            "out": "student folder to write",
        },
    )
    sections = load_sections(args.params, "data", "student", "distill", "tracking", "runtime", "augment")
    relaunch_if_needed(sections[4])  # runtime.nproc_per_node > 1: this script again under torchrun
    distill(*sections, args.features, args.teacher, args.out, params_file=args.params)


if __name__ == "__main__":
    run_stage(main)
