"""DVC stage prepare: the manifest validated (every bad row reported), with a split column."""

from audiokd.cli import load_sections, run_stage, stage_args
from audiokd.data.manifest import prepare


def main() -> None:
    """Read ``data``, write the prepared folder."""
    args = stage_args(__doc__, {"out": "prepared folder to write"})
    (data,) = load_sections(args.params, "data")
    prepare(data, args.out)


if __name__ == "__main__":
    run_stage(main)
