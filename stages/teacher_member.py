"""DVC stage teacher_member@<name>: one member of the teacher ensemble (ensemble.members.<name>)."""

from audiokd.cli import load_sections, run_stage, stage_args
from audiokd.distributed import relaunch_if_needed
from audiokd.teacher_training import train_teacher
from audiokd.teaching.ensemble import member_settings, skip_member


def main() -> None:
    """Read ``data``, ``teacher``, ``ensemble``, ``tracking``, ``runtime``, ``augment``; write the member."""
    args = stage_args(
        __doc__,
        {
            "member": "member name (a key of ensemble.members)",
            "features": "features folder (input)",
            "out": "member folder to write",
        },
    )
    data, teacher, ensemble, tracking, runtime, augment = load_sections(
        args.params, "data", "teacher", "ensemble", "tracking", "runtime", "augment"
    )
    teacher, runtime = member_settings(teacher, ensemble, runtime, args.member)
    if not ensemble.enabled:
        skip_member(args.member, args.out)
        return
    relaunch_if_needed(runtime)  # runtime.nproc_per_node > 1: this script again under torchrun
    train_teacher(
        data, teacher, tracking, runtime, augment, args.features, args.out, args.params, member=args.member
    )


if __name__ == "__main__":
    run_stage(main)
