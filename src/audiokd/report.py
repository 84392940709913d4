"""The evaluation report: ``report.md`` with PNG figures (losses, validation CCC, predicted vs true).

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state).
``report.md`` links them by relative path, so the report folder can be opened, copied or logged as is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from audiokd import groups
from audiokd.metrics import gain_verdict

log = logging.getLogger(__name__)

# display names, in the order they appear in tables and figure panels
MODELS = {
    "teacher": "teacher",
    "student": "student (KD)",
    "student_no_kd": "student without KD",
    "student_int8": "student int8 (ONNX Runtime)",
}
_LOSS_TERMS = ("hard", "soft", "feature", "attention", "total")


def display_name(name: str) -> str:
    """Display name of a model; ``teacher_<name>`` is an ensemble member or fold teacher."""
    if name in MODELS:
        return MODELS[name]
    return name.replace("teacher_", "teacher ", 1) if name.startswith("teacher_") else name


def _fmt(value: float | None, spec: str) -> str:
    """A table cell; a teacher read from a file has no size or latency (and maybe no test quality)."""
    return "unknown" if value is None else format(value, spec)


def plot_losses(histories: dict[str, pd.DataFrame], path: Path) -> Path:
    """One panel per model: train hard, soft, total (and feature/attention) loss and val loss per epoch.

    A loss column that is zero at every epoch (the soft loss of a run without a teacher) is left out.
    """
    fig = Figure(figsize=(4.2 * len(histories), 3.4), layout="constrained")
    axes = fig.subplots(1, len(histories), squeeze=False)[0]
    for ax, (name, h) in zip(axes, histories.items(), strict=True):
        for term in _LOSS_TERMS:
            col = f"train_{term}_loss"
            if col in h and np.any(h[col].to_numpy() != 0):
                ax.plot(h["epoch"], h[col], marker=".", label=f"train {term}")
        ax.plot(h["epoch"], h["val_loss"], "k--", marker=".", label="val (MSE)")
        ax.set(title=display_name(name), xlabel="epoch", ylabel="loss")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Loss per epoch (train: mean over steps)")
    fig.savefig(path, dpi=110)
    return path


def quality_key(metrics: dict[str, Any]) -> str:
    """``ccc_mean`` for regression, ``accuracy`` for classification."""
    return "ccc_mean" if "ccc_mean" in metrics["student"] else "accuracy"


QUALITY_LABEL = {"ccc_mean": "CCC", "accuracy": "accuracy"}


def plot_val_ccc(histories: dict[str, pd.DataFrame], path: Path, key: str = "ccc_mean") -> Path:
    """Validation quality (mean CCC, or accuracy) per epoch, every model on one axis."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for name, h in histories.items():
        ax.plot(h["epoch"], h[f"val_{key}"], marker=".", label=display_name(name))
    label = QUALITY_LABEL[key]
    ax.set(title=f"Validation {label} per epoch", xlabel="epoch", ylabel=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def plot_scatter(
    preds: dict[str, np.ndarray],
    y_true: np.ndarray,
    targets: list[str],
    ccc: dict[str, dict[str, float]],
    path: Path,
) -> Path:
    """Predicted vs true on the test split: a row per target, a column per model, the identity line dashed."""
    fig = Figure(figsize=(3.4 * len(preds), 3.2 * len(targets)), layout="constrained")
    axes = fig.subplots(len(targets), len(preds), squeeze=False)
    lo, hi = float(np.min(y_true)), float(np.max(y_true))
    pad = 0.05 * (hi - lo or 1.0)
    for r, target in enumerate(targets):
        for c, (name, pred) in enumerate(preds.items()):
            ax = axes[r][c]
            ax.scatter(y_true[:, r], pred[:, r], s=10, alpha=0.6)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1)
            ax.set(
                title=f"{display_name(name)}: {target}\nCCC {ccc[name][target]:.3f}",
                xlabel=f"true {target}",
                ylabel=f"predicted {target}",
                xlim=(lo - pad, hi + pad),
                aspect="equal",
            )
            ax.grid(alpha=0.3)
    fig.suptitle("Test split: predicted vs true")
    fig.savefig(path, dpi=110)
    return path


def plot_confusion(preds: dict[str, np.ndarray], y_true: np.ndarray, classes: list[str], path: Path) -> Path:
    """Confusion matrices on the test split (rows true, columns predicted), a panel per model."""
    fig = Figure(figsize=(3.6 * len(preds), 3.4), layout="constrained")
    axes = fig.subplots(1, len(preds), squeeze=False)[0]
    k = len(classes)
    for ax, (name, pred) in zip(axes, preds.items(), strict=True):
        cm = np.zeros((k, k), dtype=int)
        for t, p in zip(y_true.astype(int), pred.argmax(1), strict=True):
            cm[t, p] += 1
        ax.imshow(cm, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8)
        ax.set(title=display_name(name), xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true")
        ax.set_xticklabels(classes, rotation=45, fontsize=7)
        ax.set_yticklabels(classes, fontsize=7)
    fig.suptitle("Test split: confusion matrices")
    fig.savefig(path, dpi=110)
    return path


def _table(metrics: dict[str, Any], models: list[str], targets: list[str]) -> list[str]:
    head = "| | " + " | ".join(MODELS[m] for m in models) + " |"
    rows = [head, "|---|" + "---:|" * len(models)]

    def row(label: str, cells: list[str]) -> None:
        """Append one table row."""
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    key = quality_key(metrics)
    if key == "ccc_mean":
        for t in targets:
            row(f"CCC {t}", [_fmt((metrics[m]["ccc"] or {}).get(t), ".4f") for m in models])
        row("**CCC mean**", [f"**{_fmt(metrics[m]['ccc_mean'], '.4f')}**" for m in models])
    else:
        row("**accuracy**", [f"**{_fmt(metrics[m]['accuracy'], '.4f')}**" for m in models])
        row("macro F1", [_fmt(metrics[m]["macro_f1"], ".4f") for m in models])
    teacher = metrics["teacher"][key]
    retention = [f"{metrics[m][key] / teacher:.3f}" if teacher else "n/a" for m in models]
    row(f"retention (of the teacher's {QUALITY_LABEL[key]})", retention)
    row("parameters", [_fmt(metrics[m]["params"], ",") for m in models])
    row("size MB", [_fmt(metrics[m]["size_mb"], ".2f") for m in models])
    row("latency ms (CPU, batch 1)", [_fmt(metrics[m]["latency_ms"], ".2f") for m in models])
    t_lat, t_par = metrics["teacher"]["latency_ms"], metrics["teacher"]["params"]
    speedup = [f"{t_lat / metrics[m]['latency_ms']:.2f}x" if t_lat else "n/a" for m in models]
    row("speedup vs teacher", speedup)
    compression = [f"{t_par / metrics[m]['params']:.1f}x" if t_par else "n/a" for m in models]
    row("compression vs teacher", compression)
    return rows


def _members_table(metrics: dict[str, Any]) -> list[str]:
    """Each ensemble member (or fold teacher) scored alone on the test split; none when there are none."""
    members = metrics.get("teacher_members") or {}
    if not members:
        return []
    key = quality_key(metrics)
    rows = [
        "",
        "### The teacher's members, each alone",
        "",
        f"| member | {QUALITY_LABEL[key]} | parameters | size MB | latency ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in members.items():
        rows.append(
            f"| {name} | {_fmt(m[key], '.4f')} | {_fmt(m['params'], ',')} | {_fmt(m['size_mb'], '.2f')} "
            f"| {_fmt(m['latency_ms'], '.2f')} |"
        )
    rows.append(f"| **the teacher (all together)** | **{_fmt(metrics['teacher'][key], '.4f')}** | | | |")
    return rows


def _verdict(metrics: dict[str, Any]) -> str:
    if "kd_gain" not in metrics:
        return (
            "No no-KD baseline in this run (`baseline.enabled: false`): whether the teacher helps is "
            "unknown. Turn it on before shipping the student."
        )
    gain = metrics["kd_gain"]
    unit = QUALITY_LABEL[quality_key(metrics)]
    if "kd_gain_ci95" in metrics:
        lo, hi = metrics["kd_gain_ci95"]
        head = f"**KD gain {gain:+.4f} {unit}, 95% CI [{lo:+.4f}, {hi:+.4f}]: {gain_verdict((lo, hi))}.**"
        return head + " " + _WHY[gain_verdict((lo, hi))]
    if gain > 0:
        return (
            f"**KD gain {gain:+.4f} {unit}**: the distilled student beats the same student trained with the "
            "same budget and no teacher."
        )
    return (
        f"**KD gain {gain:+.4f} {unit}: distillation did not help here.** The same student trained without a "
        "teacher is as good or better; ship that one, or improve the teacher before distilling."
    )


_WHY = {
    "KD helps": "The distilled student beats the same student trained without a teacher for as many steps, "
    "and the paired bootstrap over the test clips puts the whole interval above 0.",
    "KD hurts": "The same student trained without a teacher is better, across the whole interval; ship "
    "that one, or improve the teacher before distilling.",
    "cannot tell on this test set": "The interval (paired bootstrap over the test clips) holds 0: the "
    "difference is within what another draw of test clips could give. More test clips, or seeds run as a "
    "grid (README), can settle it.",
}


def budget_lines(metrics: dict[str, Any]) -> list[str]:
    """One line on what each student trained on (``metrics["budget"]``: clips, epochs, optimizer steps)."""
    if "budget" not in metrics:
        return []
    parts = []
    for name, b in metrics["budget"].items():
        clips = f"{b['labelled_clips']} labelled" + (
            f" + {b['unlabeled_clips']} unlabelled" if b["unlabeled_clips"] else ""
        )
        epochs = f"{b['epochs']} epochs" + (f" of {b['passes']} passes" if b.get("passes", 1) > 1 else "")
        parts.append(f"{MODELS.get(name, name)} {clips} clips, {epochs}, {b['steps']} steps")
    return ["Training: " + "; ".join(parts) + "."]


def _int8_verdict(metrics: dict[str, Any]) -> str:
    q, unit = metrics["student_int8"], QUALITY_LABEL[quality_key(metrics)]
    head = (
        f"int8 student (`model.int8.onnx`): {unit} drop {q['drop']:+.4f} against fp32 (gate "
        f"`export.int8_max_drop` {q['max_drop']:g}), {q['size_mb']:.2f} MB against "
        f"{q['fp32_onnx_size_mb']:.2f} MB and {q['latency_ms']:.2f} ms against "
        f"{q['fp32_onnx_latency_ms']:.2f} ms for the fp32 ONNX file."
    )
    if q["deployable"]:
        return head + " **The int8 file is the deployable artifact.**"
    return head + " **Past the gate: the int8 file is not deployable; ship the fp32 ONNX file.**"


def _student_ratios(metrics: dict[str, Any]) -> str:
    """The student's retention, compression and speedup, those that are known (a file teacher has no size)."""
    parts = {
        "retention": f"retention {{:.3f}} of the teacher's {QUALITY_LABEL[quality_key(metrics)]}",
        "compression": "compression {:.1f}x",
        "speedup": "speedup {:.2f}x",
    }
    known = [f.format(metrics[k]) for k, f in parts.items() if metrics[k] is not None]
    return f"Student: {', '.join(known) or 'retention, compression and speedup unknown'}."


def render_markdown(
    metrics: dict[str, Any],
    targets: list[str],
    figures: dict[str, str],
    registry: str | None = None,
    teacher_note: str | None = None,
    by_group: pd.DataFrame | None = None,
) -> str:
    """``report.md`` text: verdict, teacher vs student table, figures (``figures``: caption -> path)."""
    models = [m for m in MODELS if m in metrics]
    lines = [
        "# audiokd: teacher vs student",
        "",
        (
            f"Test split, {len(targets)} regression target(s) scored by CCC."
            if quality_key(metrics) == "ccc_mean"
            else f"Test split, {len(targets)} classes scored by accuracy and macro F1."
        )
        + " Generated by the evaluate stage.",
        "",
        _verdict(metrics),
        "",
        *_table(metrics, models, targets),
        *_members_table(metrics),
        *(
            groups.markdown(by_group, quality_key(metrics), QUALITY_LABEL[quality_key(metrics)], MODELS)
            if by_group is not None
            else []
        ),
        "",
        _student_ratios(metrics),
    ]
    if budget_lines(metrics):
        lines += ["", *budget_lines(metrics)]
    if "student_int8" in metrics:
        lines += ["", _int8_verdict(metrics)]
    if teacher_note:
        lines += ["", teacher_note]
    if registry:
        lines += ["", f"Registered in MLflow as {registry}."]
    for caption, rel in figures.items():
        lines += ["", f"## {caption}", "", f"![{caption}]({rel})"]
    return "\n".join(lines) + "\n"


def write_report(
    metrics: dict[str, Any],
    targets: list[str],
    histories: dict[str, pd.DataFrame],
    preds: dict[str, np.ndarray],
    y_true: np.ndarray,
    report_path: str | Path,
    figures_dir: str | Path,
    registry: str | None = None,
    teacher_note: str | None = None,
    by_group: pd.DataFrame | None = None,
) -> list[Path]:
    """Draw the figures into ``figures_dir`` and write ``report_path``; returns the figure paths."""
    report_path, figures_dir = Path(report_path), Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    key = quality_key(metrics)
    drawn = {
        "Loss per epoch": plot_losses(histories, figures_dir / "losses.png"),
        f"Validation {QUALITY_LABEL[key]} per epoch": plot_val_ccc(
            histories, figures_dir / "val_ccc.png", key
        ),
    }
    if key == "ccc_mean":
        ccc = {m: metrics[m]["ccc"] for m in preds}
        drawn["Predicted vs true (test split)"] = plot_scatter(
            preds, y_true, targets, ccc, figures_dir / "scatter.png"
        )
    else:
        drawn["Confusion matrices (test split)"] = plot_confusion(
            preds, y_true, targets, figures_dir / "confusion.png"
        )
    rel = {k: Path(os.path.relpath(p, report_path.parent)).as_posix() for k, p in drawn.items()}
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(render_markdown(metrics, targets, rel, registry, teacher_note, by_group))
    log.info("report: %s with %d figures in %s", report_path, len(drawn), figures_dir)
    return list(drawn.values())
