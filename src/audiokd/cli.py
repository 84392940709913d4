"""Command-line entry points: the ``audiokd`` console script and the shared wrapper for DVC stage scripts."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from audiokd.config import ConfigError, load_params, load_section, read_params

log = logging.getLogger("audiokd")


def setup_logging() -> None:
    """Log lines as ``time level module: message`` to stderr."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in (
        "mlflow",
        "alembic",
        "urllib3",
        "httpx",
        "transformers",
        "onnxscript",
        "onnx_ir",
        "torch.onnx",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stage_args(description: str, paths: dict[str, str]) -> argparse.Namespace:
    """Parse a stage script's arguments: ``--params`` plus one ``--<name>`` path per entry of ``paths``.

    Paths have no defaults in the scripts: ``dvc.yaml`` is the one place that names them.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    for name, help_text in paths.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, required=True, help=help_text)
    return p.parse_args()


def load_sections(params_file: str, *names: str) -> list:
    """Validated params sections, in the order asked; the whole file is validated first, so a bad key in a
    section this stage does not read still stops it (fail fast, before a later stage would)."""
    sections = load_params(read_params(params_file))
    return [sections[n] for n in names]


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's main: user errors become one ``error:`` line and exit status 2, not a traceback.

    SIGTERM (what ``kill``, schedulers and container runtimes send) is handled like Ctrl-C: the MLflow run
    is marked KILLED, the last epoch checkpoint stays, and the exit status is 128 + the signal number. A
    signal that arrives during a checkpoint or store write takes effect when the write is done
    (:mod:`audiokd.interrupts`).
    """
    from audiokd.checkpoint import CheckpointError
    from audiokd.data.audio import AudioError
    from audiokd.data.manifest import ManifestError
    from audiokd.distill.teacher_cache import StaleCacheError
    from audiokd.export import ExportError
    from audiokd.interrupts import install
    from audiokd.models import WeightsError
    from audiokd.tracking import TrackingError
    from audiokd.training import TrainingError

    setup_logging()
    install()
    errors = (
        ConfigError,
        ManifestError,
        AudioError,
        StaleCacheError,
        TrainingError,
        TrackingError,
        WeightsError,
        CheckpointError,
        ExportError,
    )
    try:
        main()
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        name = str(e) or "SIGINT"
        print(
            f"error: interrupted ({name}); the MLflow run is marked KILLED and a training stage keeps its "
            "last epoch checkpoint under .checkpoints/: rerun to resume",
            file=sys.stderr,
        )
        sys.exit(128 + getattr(signal.Signals, name, signal.SIGINT).value)


def _summary(args: argparse.Namespace) -> int:
    from audiokd.evaluation import summary
    from audiokd.io import read_json

    path = Path(args.metrics)
    if not path.is_file():
        print(f"error: {path}: no metrics yet; run `dvc repro` first", file=sys.stderr)
        return 2
    print(summary(read_json(path)))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from audiokd.data.audio import AudioError
    from audiokd.predict import PredictError, Preprocessor, load_model, predict_file
    from audiokd.predict_io import Output, expand_inputs

    try:
        for flag in ("window", "hop"):
            value = getattr(args, flag)
            if value is not None and not value > 0:
                raise PredictError(f"--{flag} {value:g}: give a positive number of seconds")
        prep = Preprocessor.load(args.features)
        model = load_model(args.model, prep, onnx=args.onnx, int8=args.int8)
    except PredictError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    windowed = args.window is not None or args.hop is not None
    window = args.window if args.window is not None else prep.audio.duration_s
    out = Output(args.format, prep, sys.stdout, windowed)
    status = 0
    for path in expand_inputs(args.paths):
        try:
            windows = predict_file(path, model, prep, window if windowed else None, args.hop)
        except AudioError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 2
            continue
        out.write(path, windows)
    out.close()
    return status


def _promote(args: argparse.Namespace) -> int:
    from audiokd.registry import RegistryError, promote

    try:
        name = args.name or load_section(read_params(args.params), "tracking").registered_model
        if not name:
            raise ConfigError(f"{args.params}: tracking.registered_model is empty; pass --name")
        version, previous = promote(name, args.version, args.from_alias, args.alias)
    except (ConfigError, RegistryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    was = f"was version {previous}" if previous is not None else "new alias"
    print(f"{name} version {version} is now @{args.alias} ({was}); load it as models:/{name}@{args.alias}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``audiokd summary | predict | promote``: the summary, the student on audio files, registry aliases."""
    parser = argparse.ArgumentParser(prog="audiokd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="print the teacher vs student summary")
    s.add_argument("metrics", nargs="?", default="reports/metrics.json")
    s.set_defaults(func=_summary)
    p = sub.add_parser(
        "predict",
        help="predict the targets of audio files with the student",
        description="Predict with the student: one prediction per file (its centre clip), or, with "
        "--window/--hop, one per window of a long recording and their mean.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="audio files (wav, flac, ...: any soundfile reads), folders (their audio files, recursively) "
        "or - (paths on stdin, one a line)",
    )
    p.add_argument(
        "--model",
        default="models/student",
        help="student folder, or an MLflow model URI such as models:/audiokd-student@champion "
        "(default: models/student)",
    )
    p.add_argument(
        "--features", default="data/features", help="features folder with meta.json and stats.json"
    )
    p.add_argument("--onnx", action="store_true", help="run <model folder>/model.onnx with onnxruntime")
    p.add_argument(
        "--int8", action="store_true", help="run <model folder>/model.int8.onnx (quantized) with onnxruntime"
    )
    p.add_argument(
        "--window",
        type=float,
        metavar="S",
        help="slide a window of S seconds over each file (default with --hop: the clip length the student "
        "was trained on); prints each window and the mean",
    )
    p.add_argument("--hop", type=float, metavar="S", help="seconds between windows (default: --window)")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text", help="output format")
    p.set_defaults(func=_predict)
    r = sub.add_parser("promote", help="point a registry alias (champion) at a registered student version")
    r.add_argument("--version", type=int, help="version to promote (default: the one --from-alias names)")
    r.add_argument(
        "--from-alias", default="candidate", help="alias whose version is promoted (default: candidate)"
    )
    r.add_argument("--alias", default="champion", help="alias to set (default: champion)")
    r.add_argument("--name", help="registered model (default: tracking.registered_model of --params)")
    r.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    r.set_defaults(func=_promote)
    args = parser.parse_args(argv)
    if args.command != "summary":
        setup_logging()
        logging.getLogger("audiokd").setLevel(logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
