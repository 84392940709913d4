"""DVC stage evaluate: teacher vs student (and no-KD student) on the test split; metrics, plots, report."""

from audiokd.cli import load_sections, run_stage, stage_args
from audiokd.evaluation import evaluate, summary


def main() -> None:
    """Read ``data``, ``evaluate``, ``tracking``, ``export``; write metrics, plot data, the report; print the
    summary."""
    args = stage_args(
        __doc__,
        {
            "features": "features folder (input)",
            "teacher": "teacher folder (input)",
            "student": "student folder (input)",
            "baseline": "no-KD student folder (input; a marker when baseline.enabled is false)",
            "metrics": "metrics.json to write",
            "plots": "plot data folder to write",
            "report": "report.md to write",
            "figures": "report figures folder to write",
        },
    )
    data, cfg, tracking, export = load_sections(args.params, "data", "evaluate", "tracking", "export")
    metrics = evaluate(
        data,
        cfg,
        tracking,
        args.features,
        args.teacher,
        args.student,
        args.metrics,
        args.plots,
        baseline_dir=args.baseline,
        report_path=args.report,
        figures_dir=args.figures,
        export=export,
    )
    print(summary(metrics))


if __name__ == "__main__":
    run_stage(main)
