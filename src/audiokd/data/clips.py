"""Checks shared by every CSV list of audio clips (the labelled and the unlabelled manifest).

Each check names the file and the row (as a spreadsheet numbers it: the header is row 1), so that a problem
can be found and fixed from its one line.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

SILENCE_PEAK = 1e-4  # -80 dBFS: a clip whose peak stays below this carries no signal


class ManifestError(ValueError):
    """Bad manifest content; the message lists every problem, one per line, naming file and row."""


def check_audio(path: str) -> str | None:
    """Why ``path`` is not a usable clip (missing, unreadable, empty, silent), or None when it is."""
    p = Path(path)
    if not p.is_file():
        return "audio file not found"
    try:
        data, _sr = sf.read(str(p), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        return f"unreadable or corrupt audio ({str(e).strip() or type(e).__name__})"
    if data.shape[0] == 0:
        return "zero-length clip (no samples)"
    if not np.isfinite(data).all():
        return "audio holds NaN or infinite samples"
    peak = float(np.abs(data).max())
    if peak < SILENCE_PEAK:
        return f"all-silent clip (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS)"
    return None


def read_csv_manifest(mpath: Path, wanted: list[str], manifest_key: str, columns_key: str) -> pd.DataFrame:
    """Read manifest CSV ``mpath``: it must exist, parse, have rows and the columns ``path`` and ``wanted``.

    Each refusal is a :class:`ManifestError` of one line naming the file and the params key to look at
    (``manifest_key`` for the file, ``columns_key`` for the columns).
    """
    if not mpath.is_file():
        raise ManifestError(f"{mpath}: manifest not found ({manifest_key})")
    try:
        df = pd.read_csv(mpath, dtype={"path": str})
    except pd.errors.EmptyDataError:
        raise ManifestError(f"{mpath}: the manifest is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise ManifestError(f"{mpath}: not a readable CSV ({e})") from None
    missing = [c for c in ["path", *wanted] if c not in df.columns]
    if missing:
        raise ManifestError(
            f"{mpath}: missing column(s) {', '.join(missing)} (see {columns_key}); "
            f"the manifest has {', '.join(map(str, df.columns))}"
        )
    if df.empty:
        raise ManifestError(f"{mpath}: the manifest has no rows")
    return df


def resolve_paths(df: pd.DataFrame, mpath: Path) -> list[str]:
    """Absolute paths of the ``path`` column (relative ones are under the manifest's folder; "" if empty)."""
    root = mpath.resolve().parent
    return [
        str(Path(p) if Path(str(p)).is_absolute() else (root / str(p)).resolve()) if not pd.isna(p) else ""
        for p in df["path"]
    ]


def path_problems(df: pd.DataFrame, resolved: list[str]) -> dict[int, list[str]]:
    """Per row: empty path, duplicate path, and whatever :func:`check_audio` finds wrong with the file."""
    problems: dict[int, list[str]] = {i: [] for i in range(len(df))}
    with ThreadPoolExecutor(max_workers=2) as pool:
        audio = list(pool.map(check_audio, resolved))
    seen: dict[str, int] = {}
    for i, raw in enumerate(df["path"]):
        if pd.isna(raw) or not str(raw).strip():
            problems[i].append("empty path")
            continue
        if resolved[i] in seen:
            problems[i].append(f"duplicate path (first on row {seen[resolved[i]] + 2})")
        seen.setdefault(resolved[i], i)
        if audio[i]:
            problems[i].append(audio[i])
    return problems


def portable(path: Path) -> str:
    """A path relative to the working directory when under it (portable across clones), else absolute."""
    try:
        return os.path.relpath(path, Path.cwd()) if path.is_relative_to(Path.cwd()) else str(path)
    except ValueError:
        return str(path)


def rejected_rows(df: pd.DataFrame, problems: dict[int, list[str]], mpath: Path) -> pd.DataFrame:
    """The rejected rows of manifest ``mpath``: its file, row number, path and reasons."""
    return pd.DataFrame(
        {
            "manifest": str(mpath),
            "row": [i + 2 for i in problems],
            "path": [df["path"].iloc[i] for i in problems],
            "reason": ["; ".join(m) for m in problems.values()],
        },
        columns=["manifest", "row", "path", "reason"],
    )


def lines(df: pd.DataFrame, problems: dict[int, list[str]], mpath: Path) -> list[str]:
    """One line per problem: ``<manifest> row <n>: <path>: <problem>``."""
    return [
        f"{mpath} row {i + 2}: {df['path'].iloc[i]}: {msg}" for i, msgs in problems.items() for msg in msgs
    ]
