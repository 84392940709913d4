"""DVC stage preprocess: log-mel spectrograms per split, normalised with train-split statistics."""

from audiokd.cli import load_sections, run_stage, stage_args
from audiokd.data.features import preprocess


def main() -> None:
    """Read ``data`` and ``audio``, write the features folder."""
    args = stage_args(__doc__, {"prepared": "prepared folder (input)", "out": "features folder to write"})
    data, audio = load_sections(args.params, "data", "audio")
    preprocess(data, audio, args.prepared, args.out)


if __name__ == "__main__":
    run_stage(main)
