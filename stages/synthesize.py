"""DVC stage synthesize: the embedded synthetic set (clips + manifest.csv), the default data."""

from audiokd.cli import load_sections, run_stage, stage_args
from audiokd.data.synthetic import generate


def main() -> None:
    """Read ``synthetic``, write the embedded set's folder."""
    args = stage_args(__doc__, {"out": "folder to write (clips and manifest.csv)"})
    (cfg,) = load_sections(args.params, "synthetic")
    generate(cfg, args.out)


if __name__ == "__main__":
    run_stage(main)
