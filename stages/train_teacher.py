"""DVC stage train_teacher: the teacher and its cached outputs (trained here, ensemble members combined, or
read from teacher.outputs)."""

from audiokd.cli import load_sections, run_stage, stage_args
from audiokd.distributed import relaunch_if_needed
from audiokd.teaching.source import make_teacher, trains_here


def main() -> None:
    """Read ``data``, ``teacher``, ``ensemble``, ``tracking``, ``runtime``, ``augment``; write the teacher."""
    args = stage_args(
        __doc__,
        {
            "features": "features folder (input)",
            "members": "ensemble members' folder (input; holds teacher_member@<name> outputs)",
            "out": "teacher folder to write",
        },
    )
    data, teacher, ensemble, tracking, runtime, augment = load_sections(
        args.params, "data", "teacher", "ensemble", "tracking", "runtime", "augment"
    )
    if trains_here(teacher, ensemble):
        relaunch_if_needed(runtime)  # runtime.nproc_per_node > 1: this script again under torchrun
    make_teacher(
        data,
        teacher,
        ensemble,
        tracking,
        runtime,
        augment,
        args.features,
        args.members,
        args.out,
        args.params,
    )


if __name__ == "__main__":
    run_stage(main)
