"""DVC stage baseline: the student trained with distill's budget and no teacher (alpha 1), for kd_gain."""

from audiokd.cli import load_sections, run_stage, stage_args
from audiokd.distill.baseline import train_baseline
from audiokd.distributed import relaunch_if_needed


def main() -> None:
    """Read ``data``, ``student``, ``distill``, ``baseline``, ``tracking``, ``runtime``, ``augment``."""
    args = stage_args(
        __doc__, {"features": "features folder (input)", "out": "no-KD student folder to write"}
    )
    sections = load_sections(
        args.params, "data", "student", "distill", "baseline", "tracking", "runtime", "augment"
    )
    relaunch_if_needed(sections[5])  # runtime.nproc_per_node > 1: this script again under torchrun
    train_baseline(*sections, args.features, args.out, params_file=args.params)


if __name__ == "__main__":
    run_stage(main)
