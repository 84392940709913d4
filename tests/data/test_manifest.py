"""Manifest ingestion: real files at mixed rates/channels/formats, splits, and one test per bad-input kind.

Every refusal must name the file and row, report all problems together and write nothing.
"""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from audiokd.config import DataConfig, SplitConfig
from audiokd.data.manifest import ManifestError, assign_splits, prepare

RATES = [8000, 16000, 22050, 44100]


def _tone(sr, seconds, channels=1, amp=0.3):
    t = np.arange(int(sr * seconds)) / sr
    x = amp * np.sin(2 * np.pi * 330 * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def folder(tmp_path):
    """12 real clips: 8/16/22.05/44.1 kHz, mono and stereo, wav and flac, 0.3-2 s; labels and targets."""
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = []
    for i in range(12):
        sr = RATES[i % 4]
        ext = "flac" if i % 3 == 0 else "wav"
        name = f"audio/c{i}.{ext}"
        sf.write(tmp_path / name, _tone(sr, 0.3 + 0.15 * i, channels=1 + i % 2), sr)
        rows.append(
            {
                "path": name,
                "a": i / 12,
                "b": -i / 12,
                "label": ["cat", "dog", "owl"][i % 3],
                "speaker": f"s{i % 6}",
            }
        )
    return tmp_path, pd.DataFrame(rows)


def _write(folder, df, name="m.csv"):
    path = folder / name
    df.to_csv(path, index=False)
    return str(path)


def _cfg(manifest, **kw):
    base = {"manifest": manifest, "targets": ("a", "b"), "split": SplitConfig(0.5, 0.25, 0.25)}
    base.update(kw)
    return DataConfig(**base)


def _refused(cfg, out, *fragments):
    with pytest.raises(ManifestError) as e:
        prepare(cfg, out)
    for f in fragments:
        assert f in str(e.value), str(e.value)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".prepared")]
    return str(e.value)


def test_mixed_real_files_prepare_with_splits(folder):
    root, df = folder
    out = root / "prepared"
    prepared = prepare(_cfg(_write(root, df)), out)
    assert len(prepared) == 12
    m = pd.read_csv(out / "manifest.csv")
    assert set(m.split) == {"train", "val", "test"}
    assert json.loads((out / "summary.json").read_text())["splits"] == {"train": 6, "val": 3, "test": 3}
    assert pd.read_csv(out / "rejected.csv").empty


def test_groups_never_span_two_splits(folder):
    root, df = folder
    prepared = prepare(_cfg(_write(root, df.rename(columns={"speaker": "group"}))), root / "prepared")
    assert (prepared.groupby("group")["split"].nunique() == 1).all()


def test_splits_are_deterministic_and_sized():
    a = assign_splits(100, SplitConfig(0.7, 0.15, 0.15), seed=3)
    assert (a == assign_splits(100, SplitConfig(0.7, 0.15, 0.15), seed=3)).all()
    assert (a == "train").sum() == 70 and (a == "val").sum() == 15 and (a == "test").sum() == 15
    assert not (assign_splits(100, SplitConfig(0.7, 0.15, 0.15), seed=4) == a).all()


def test_missing_file(folder):
    root, df = folder
    df.loc[3, "path"] = "audio/nope.wav"
    _refused(_cfg(_write(root, df)), root / "prepared", "m.csv row 5: audio/nope.wav: audio file not found")


def test_corrupt_audio(folder):
    root, df = folder
    (root / "audio" / "c4.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    _refused(_cfg(_write(root, df)), root / "prepared", "row 6: audio/c4.wav: unreadable or corrupt audio")


def test_zero_length_clip(folder):
    root, df = folder
    sf.write(root / "audio" / "c5.wav", np.zeros((0,)), 16000)
    _refused(_cfg(_write(root, df)), root / "prepared", "row 7: audio/c5.wav: zero-length clip")


def test_all_silent_clip(folder):
    root, df = folder
    sf.write(root / "audio" / "c5.wav", np.zeros(8000), 16000)
    _refused(_cfg(_write(root, df)), root / "prepared", "row 7: audio/c5.wav: all-silent clip")


def test_missing_non_numeric_and_nan_targets(folder):
    root, df = folder
    df["a"] = df["a"].astype(object)
    df.loc[0, "a"] = "high"
    df.loc[1, "b"] = np.nan
    msg = _refused(
        _cfg(_write(root, df)),
        root / "prepared",
        "row 2: audio/c0.flac: target 'a' is missing or not a finite number: 'high'",
        "row 3: audio/c1.wav: target 'b' is missing or not a finite number",
    )
    assert len(msg.splitlines()) == 2  # all problems together, one line each


def test_unknown_label(folder):
    root, df = folder
    cfg = _cfg(_write(root, df), task="classification", labels=("cat", "dog"))
    _refused(cfg, root / "prepared", "row 4: audio/c2.wav: unknown label 'owl'; data.labels allows cat, dog")


def test_label_absent_from_train(folder):
    root, df = folder
    df["split"] = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    df.loc[11, "label"] = "bat"
    _refused(
        _cfg(_write(root, df), task="classification"),
        root / "prepared",
        "audio/c11.wav: unknown label 'bat' (not in the train split)",
    )


def test_unknown_split_value(folder):
    root, df = folder
    df["split"] = ["train"] * 6 + ["val"] * 3 + ["test"] * 2 + ["holdout"]
    _refused(_cfg(_write(root, df)), root / "prepared", "row 13: audio/c11.wav: unknown split 'holdout'")


def test_rows_marked_unlabeled_are_the_pool_and_blank_splits_are_assigned(folder):
    root, df = folder
    df["split"] = [""] * 8 + ["test", "unlabeled", "unlabeled", "unlabeled"]
    df.loc[9:, ["a", "b", "label"]] = np.nan  # the pool needs no targets
    out = prepare(_cfg(_write(root, df), split=SplitConfig(0.5, 0.25, 0.25)), root / "prepared")
    assert len(out) == 9 and set(out.split[:8]) == {"train", "val", "test"} and out.split[8] == "test"
    assert list(out.split[:8]) == list(assign_splits(8, SplitConfig(0.5, 0.25, 0.25), 42))
    pool = pd.read_csv(root / "prepared" / "unlabeled.csv")
    assert [p.rsplit("/", 1)[-1] for p in pool.path] == ["c9.flac", "c10.wav", "c11.wav"]
    summary = json.loads((root / "prepared" / "summary.json").read_text())
    assert summary["unlabeled"] == 3 and summary["clips"] == 9


def test_labelled_rows_still_need_targets_beside_unlabeled_ones(folder):
    root, df = folder
    df["split"] = ["train"] * 6 + ["val"] * 2 + ["test"] * 2 + ["unlabeled"] * 2
    df.loc[10:, "a"] = np.nan
    df.loc[3, "a"] = np.nan
    msg = _refused(_cfg(_write(root, df)), root / "prepared", "row 5: audio/c3.flac: target 'a' is missing")
    assert "c10" not in msg and "c11" not in msg


def test_unknown_split_names_the_pool_value_too(folder):
    root, df = folder
    df["split"] = ["train"] * 6 + ["val"] * 3 + ["test"] * 2 + ["unlabelled"]
    _refused(
        _cfg(_write(root, df)),
        root / "prepared",
        "unknown split 'unlabelled'; use train, val, test, unlabeled",
    )


def test_duplicate_path(folder):
    root, df = folder
    df.loc[7, "path"] = df.loc[2, "path"]
    _refused(
        _cfg(_write(root, df)), root / "prepared", "row 9: audio/c2.wav: duplicate path (first on row 4)"
    )


def test_empty_manifest(folder):
    root, _ = folder
    (root / "empty.csv").write_text("")
    _refused(_cfg(str(root / "empty.csv")), root / "prepared", "empty.csv: the manifest is empty")
    (root / "header.csv").write_text("path,a,b\n")
    _refused(_cfg(str(root / "header.csv")), root / "prepared", "header.csv: the manifest has no rows")


def test_split_left_with_too_few_clips(folder):
    root, df = folder
    df["split"] = ["train"] * 11 + ["val"]
    _refused(_cfg(_write(root, df)), root / "prepared", "a split is left with too few clips", "test has 0")


def test_manifest_without_the_named_columns(folder):
    root, df = folder
    _refused(
        _cfg(_write(root, df), targets=("arousal",)),
        root / "prepared",
        "missing column(s) arousal (see data.targets)",
    )
    _refused(
        _cfg(_write(root, df.drop(columns=["label"])), task="classification"),
        root / "prepared",
        "missing column(s) label (see data.label_column)",
    )


def test_missing_manifest(tmp_path):
    _refused(_cfg(str(tmp_path / "none.csv")), tmp_path / "prepared", "none.csv: manifest not found")


def test_skip_drops_bad_rows_into_rejected_csv(folder):
    root, df = folder
    df.loc[3, "path"] = "audio/nope.wav"
    sf.write(root / "audio" / "c5.wav", np.zeros(8000), 16000)
    prepared = prepare(_cfg(_write(root, df), on_bad_clip="skip"), root / "prepared")
    assert len(prepared) == 10
    rejected = pd.read_csv(root / "prepared" / "rejected.csv")
    assert list(rejected["path"]) == ["audio/nope.wav", "audio/c5.wav"]
    assert rejected["reason"].str.contains("not found|silent").all()
    assert json.loads((root / "prepared" / "summary.json").read_text())["rejected"] == 2


def test_failed_prepare_keeps_the_previous_output(folder):
    root, df = folder
    out = root / "prepared"
    prepare(_cfg(_write(root, df)), out)
    before = (out / "manifest.csv").read_bytes()
    df.loc[0, "path"] = "audio/nope.wav"
    with pytest.raises(ManifestError):
        prepare(_cfg(_write(root, df)), out)
    assert (out / "manifest.csv").read_bytes() == before


def test_classification_maps_sorted_labels(folder):
    root, df = folder
    prepare(_cfg(_write(root, df), task="classification"), root / "prepared")
    summary = json.loads((root / "prepared" / "summary.json").read_text())
    assert summary["classes"] == ["cat", "dog", "owl"] and summary["task"] == "classification"
