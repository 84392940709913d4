"""A speech regression set made with espeak-ng, for measuring KD on unseen voices (not used by the pipeline).

    python benchmarks/espeak_set.py --out /data/speech_b      # 1,200 wavs + manifest.csv, about 15 s
    dvc exp run -S data.manifest=/data/speech_b/manifest.csv -S 'data.targets=[rate,pitch]'

Twelve espeak-ng voices (the ``group``), 100 clips each of 7-14 random words; targets ``rate`` (words per
minute, 90-260) and ``pitch`` (espeak's ``-p``, 5-95). The pitch target is relative to each voice's own base
pitch, so a model has to place a voice it never heard: with voices as groups, the test split holds two unseen
voices (en-us+m6, en-gb+f5) and validation two others (en-us+m3, en+f3). Needs the ``espeak-ng`` program
(Debian: ``apt-get install espeak-ng``).
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import sys
from pathlib import Path

TEXT = (
    "the a small river runs past old stone houses where children play near quiet gardens every morning "
    "people walk slowly to work while birds sing above bright green trees and the wind carries soft music "
    "from distant windows many travellers stop to rest drink cold water and talk about their long journey "
    "through mountains valleys cities markets bridges trains boats letters stories evening light shadows"
)
VOICES = (
    "en-us+m1", "en-us+m2", "en-us+m3", "en-us+m4", "en-us+m5", "en-us+m6",
    "en+f1", "en+f2", "en+f3", "en+f4", "en-gb+m7", "en-gb+f5",
)  # fmt: skip
VAL, TEST = ("en-us+m3", "en+f3"), ("en-us+m6", "en-gb+f5")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the wavs and manifest.csv (created)")
    ap.add_argument("--clips-per-voice", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    if shutil.which("espeak-ng") is None:
        print("espeak_set.py: the espeak-ng program is not installed (Debian: apt-get install espeak-ng)")
        return 1
    if args.out.exists() and any(args.out.iterdir()):
        print(f"espeak_set.py: {args.out} is not empty; give a new folder")
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    words = TEXT.split()
    rows = []
    for v, voice in enumerate(VOICES):
        split = "val" if voice in VAL else "test" if voice in TEST else "train"
        for k in range(args.clips_per_voice):
            rate, pitch = round(rng.uniform(90, 260)), round(rng.uniform(5, 95))
            text = " ".join(rng.choice(words) for _ in range(rng.randint(7, 14)))
            name = f"v{v:02d}_{k:03d}.wav"
            cmd = [
                "espeak-ng",
                "-v",
                voice,
                "-s",
                str(rate),
                "-p",
                str(pitch),
                "-w",
                str(args.out / name),
                text,
            ]
            subprocess.run(cmd, check=True)
            rows.append({"path": name, "rate": rate, "pitch": pitch, "split": split, "group": voice})
    with open(args.out / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} clips, {len(VOICES)} voices -> {args.out / 'manifest.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
