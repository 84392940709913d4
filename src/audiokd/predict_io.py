"""`audiokd predict` inputs and outputs: files, folders or paths on stdin in; text, CSV or JSON out.

Output, per file, is the model's prediction for the centre clip, or, with windows, one row per window and
their mean (regression: the mean of the windows' values; classification: the mean of their class
probabilities and the class that mean ranks first).

- ``text``: ``path  arousal=0.123  valence=-0.456``; windowed: ``path  0.00-2.00s  ...`` per window, then
  ``path  mean of N windows  ...``. Classification shows the most probable class, ``path  happy=0.870``.
- ``csv``: a header, then ``path,window,start_s,end_s,<value columns>``; ``window`` is ``clip`` (no
  windows), the window's index, or ``mean``. Value columns: the targets, or ``label``, ``probability`` and
  one probability column per class.
- ``json``: one array, an object per file: ``{"path", "outputs"}`` or ``{"path", "windows": [{"start_s",
  "end_s", "outputs"}], "mean": outputs}``; outputs are ``{target: value}`` or ``{"label", "probability",
  "probabilities": {class: p}}``.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from audiokd.predict import Preprocessor, Window

FORMATS = ("text", "csv", "json")
# what libsndfile decodes (soundfile.available_formats()), as file suffixes
AUDIO_SUFFIXES = frozenset(
    [
        ".wav",
        ".wave",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".aif",
        ".aiff",
        ".aifc",
        ".au",
        ".snd",
        ".caf",
        ".w64",
        ".rf64",
        ".voc",
        ".htk",
        ".sd2",
    ]
)


def expand_inputs(items: list[str], stdin: TextIO | None = None) -> Iterator[str]:
    """Audio paths from ``items``: files as given, a folder's audio files (recursively, sorted by path),
    ``-`` for paths read from ``stdin``, one a line (blank lines skipped). A folder without audio files is
    passed through, so that it is reported as an error like a missing file."""
    for item in items:
        if item == "-":
            for line in stdin if stdin is not None else sys.stdin:
                if line.strip():
                    yield line.rstrip("\r\n")
            continue
        folder = Path(item)
        if folder.is_dir():
            found = sorted(
                str(p) for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()
            )
            yield from found if found else [item]
            continue
        yield item


class Output:
    """Writes predictions in one of :data:`FORMATS` to ``out`` as they come (JSON: one array at the end)."""

    def __init__(self, fmt: str, prep: Preprocessor, out: TextIO, windowed: bool) -> None:
        self.fmt, self.prep, self.out, self.windowed = fmt, prep, out, windowed
        self.objects: list[dict[str, Any]] = []
        self.csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if self.csv is not None:
            self.csv.writerow(["path", "window", "start_s", "end_s", *self._columns()])

    def _columns(self) -> list[str]:
        if self.prep.classification:
            return ["label", "probability", *self.prep.targets]
        return list(self.prep.targets)

    def _named(self, values: np.ndarray) -> dict[str, Any]:
        """Values in target units (or probabilities) -> the JSON ``outputs`` object."""
        names = self.prep.targets
        if self.prep.classification:
            k = int(np.argmax(values))
            probs = {c: round(float(p), 6) for c, p in zip(names, values, strict=True)}
            return {"label": names[k], "probability": round(float(values[k]), 6), "probabilities": probs}
        return {t: round(float(v), 6) for t, v in zip(names, values, strict=True)}

    def _text(self, values: np.ndarray) -> str:
        if self.prep.classification:
            k = int(np.argmax(values))
            return f"{self.prep.targets[k]}={values[k]:.3f}"
        return "  ".join(f"{t}={v:.3f}" for t, v in zip(self.prep.targets, values, strict=True))

    def _row(self, path: str, window: str, start: float, end: float, values: np.ndarray) -> list[Any]:
        if self.prep.classification:
            k = int(np.argmax(values))
            cells = [self.prep.targets[k], f"{values[k]:.6f}", *(f"{p:.6f}" for p in values)]
        else:
            cells = [f"{v:.6f}" for v in values]
        return [path, window, f"{start:.3f}", f"{end:.3f}", *cells]

    def write(self, path: str, windows: list[Window]) -> None:
        """The prediction for one file: its windows (one, the centre clip, when not windowed)."""
        values = self.prep.values(np.stack([w.outputs for w in windows]))
        mean = values.mean(axis=0)
        if self.fmt == "json":
            if self.windowed:
                spans = [
                    {"start_s": round(w.start_s, 4), "end_s": round(w.end_s, 4), "outputs": self._named(v)}
                    for w, v in zip(windows, values, strict=True)
                ]
                self.objects.append({"path": path, "windows": spans, "mean": self._named(mean)})
            else:
                self.objects.append({"path": path, "outputs": self._named(values[0])})
            return
        if self.csv is not None:
            if not self.windowed:
                self.csv.writerow(self._row(path, "clip", windows[0].start_s, windows[0].end_s, values[0]))
            else:
                for i, (w, v) in enumerate(zip(windows, values, strict=True)):
                    self.csv.writerow(self._row(path, str(i), w.start_s, w.end_s, v))
                self.csv.writerow(self._row(path, "mean", windows[0].start_s, windows[-1].end_s, mean))
        elif not self.windowed:
            print(f"{path}  {self._text(values[0])}", file=self.out)
        else:
            for w, v in zip(windows, values, strict=True):
                print(f"{path}  {w.start_s:.2f}-{w.end_s:.2f}s  {self._text(v)}", file=self.out)
            print(f"{path}  mean of {len(windows)} windows  {self._text(mean)}", file=self.out)
        self.out.flush()

    def close(self) -> None:
        """Finish the output (JSON: write the array)."""
        if self.fmt == "json":
            json.dump(self.objects, self.out, indent=1)
            self.out.write("\n")
        self.out.flush()
