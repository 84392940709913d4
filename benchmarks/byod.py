"""Bring your own data, end to end: a folder of a few hundred real audio files -> `dvc exp run`.

Writes ``--clips`` audio files to ``--out`` at mixed sample rates (8 to 48 kHz), mono and stereo, 0.4 to
6 s long, as wav (16-bit and float), flac and ogg/vorbis, with a ``group`` column (no group spans two
splits), plus a handful of broken files (corrupt, empty, silent, missing) that ``data.on_bad_clip=skip``
must set aside. Two manifests share the audio: ``regression.csv`` (arousal, valence) and
``classification.csv`` (the arousal/valence quadrant as a string label). Then, unless ``--no-run``, it runs

    dvc exp run --temp -S data.manifest=<out>/regression.csv -S data.on_bad_clip=skip
    dvc exp run --temp -S data.manifest=<out>/classification.csv -S data.task=classification ...

from the repository root and writes what each run reported to ``reports/byod.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from audiokd.data.synthetic import synth_clip

RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000)
FORMATS = (("wav", "PCM_16"), ("wav", "FLOAT"), ("flac", "PCM_16"), ("ogg", "VORBIS"))
ROOT = Path(__file__).resolve().parents[1]


def quadrant(arousal: float, valence: float) -> str:
    """The emotion-wheel quadrant of (arousal, valence)."""
    if arousal >= 0:
        return "happy" if valence >= 0 else "angry"
    return "calm" if valence >= 0 else "sad"


def write_set(out: Path, clips: int, seed: int) -> dict:
    """Write the audio and both manifests; return what was written."""
    rng = np.random.default_rng(seed)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(clips):
        arousal, valence = rng.uniform(-1, 1, size=2)
        sr = int(RATES[i % len(RATES)])
        ext, subtype = FORMATS[int(rng.integers(len(FORMATS)))]
        wave = synth_clip(rng, arousal, valence, sr, float(rng.uniform(0.4, 6.0)), 0.3)
        if rng.random() < 1 / 3:
            pan = rng.uniform(0.6, 1.0)
            wave = np.stack([wave * pan, wave * (1.6 - pan)], axis=1)
        rel = f"audio/spk{i % 40:02d}/clip_{i:04d}.{ext}"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(out / rel, wave, sr, subtype=subtype, format=ext.upper())
        rows.append((rel, round(float(arousal), 4), round(float(valence), 4), f"spk{i % 40:02d}"))
    # what real folders contain too
    (out / "audio" / "broken").mkdir(exist_ok=True)
    (out / "audio" / "broken" / "corrupt.wav").write_bytes(b"RIFF\x00\x00not really audio" * 10)
    sf.write(out / "audio" / "broken" / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(out / "audio" / "broken" / "silent.flac", np.zeros(16000, np.float32), 16000)
    for j, rel in enumerate(
        ["audio/broken/corrupt.wav", "audio/broken/empty.wav", "audio/broken/silent.flac", "audio/gone.wav"]
    ):
        rows.append((rel, 0.0, 0.0, f"spk{j:02d}"))
    df = pd.DataFrame(rows, columns=["path", "arousal", "valence", "group"])
    df.to_csv(out / "regression.csv", index=False)
    labels = [quadrant(a, v) for a, v in zip(df.arousal, df.valence, strict=True)]
    df.assign(label=labels)[["path", "label", "group"]].to_csv(out / "classification.csv", index=False)
    files = [p for p in (out / "audio").rglob("*") if p.is_file()]
    return {
        "clips": clips,
        "broken_rows": 4,
        "rates_hz": sorted({sf.info(p).samplerate for p in files if "broken" not in p.parts}),
        "stereo": sum(sf.info(p).channels == 2 for p in files if "broken" not in p.parts),
        "formats": sorted({p.suffix for p in files}),
        "bytes": sum(p.stat().st_size for p in files),
    }


def run_exp(name: str, args: list[str]) -> dict:
    """``dvc exp run --temp`` with ``args``; the metrics it wrote come back through ``dvc exp show``."""
    start = time.perf_counter()
    proc = subprocess.run(
        ["dvc", "exp", "run", "--temp", "-n", name, *args], cwd=ROOT, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"byod: dvc exp run {name} failed ({proc.returncode})")
    shown = subprocess.run(
        ["dvc", "exp", "show", "--json", "--no-fetch"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    metrics = _metrics_of(json.loads(shown.stdout), name)
    skipped = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "skipped" in ln or "rejected" in ln]
    return {
        "command": "dvc exp run --temp " + " ".join(args),
        "wall_s": round(wall, 1),
        "log": skipped,
        "metrics": metrics,
    }


def _metrics_of(shown: list, name: str) -> dict:
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp.get("revs") or []:
                if rev.get("name") == name:
                    files = rev["data"].get("metrics", {})
                    return files.get("reports/metrics.json", {}).get("data", {})
    return {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/audiokd-byod", help="folder for the audio and manifests")
    p.add_argument("--clips", type=int, default=360)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--no-run", action="store_true", help="only write the data")
    a = p.parse_args()
    out = Path(a.out).resolve()
    written = write_set(out, a.clips, a.seed)
    print(json.dumps(written))
    if a.no_run:
        return
    stamp = time.strftime("%H%M%S")
    common = ["-S", "data.on_bad_clip=skip"]
    result = {
        "data": written,
        "regression": run_exp(
            f"byod-regression-{stamp}", ["-S", f"data.manifest={out / 'regression.csv'}", *common]
        ),
        "classification": run_exp(
            f"byod-classification-{stamp}",
            [
                "-S",
                f"data.manifest={out / 'classification.csv'}",
                "-S",
                "data.task=classification",
                "-S",
                "data.label_column=label",
                *common,
            ],
        ),
    }
    (ROOT / "reports").mkdir(exist_ok=True)
    (ROOT / "reports" / "byod.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
