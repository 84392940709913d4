"""DVC stage evaluate: teacher vs student on the test split; metrics.json and plot data."""

from audiokd.cli import load_sections, run_stage, stage_args
from audiokd.evaluation import evaluate, summary


def main() -> None:
    """Read ``data``, ``evaluate``, ``tracking``; write metrics and plots; print the summary."""
    args = stage_args(
        __doc__,
        {
            "features": "features folder (input)",
            "teacher": "teacher folder (input)",
            "student": "student folder (input)",
            "metrics": "metrics.json to write",
            "plots": "plots folder to write",
        },
    )
    data, cfg, tracking = load_sections(args.params, "data", "evaluate", "tracking")
    metrics = evaluate(
        data, cfg, tracking, args.features, args.teacher, args.student, args.metrics, args.plots
    )
    print(summary(metrics))


if __name__ == "__main__":
    run_stage(main)
