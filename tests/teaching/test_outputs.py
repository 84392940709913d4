"""Bring your own teacher outputs: a CSV of predictions per clip becomes the teacher cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from audiokd.config import ConfigError, EnsembleConfig, TeacherConfig
from audiokd.data.features import FeatureSet, clips_table
from audiokd.distill import teacher_cache
from audiokd.io import read_json
from audiokd.teaching.folder import kind, models, runs_live
from audiokd.teaching.outputs import import_outputs
from audiokd.teaching.source import make_teacher
from teacher_helpers import CLASSES, RUNTIME, TARGETS, TRACKING, data_config, make_features

SPLITS = ("train", "val", "test")


def _write_csv(workdir: Path, features: Path, columns: list[str], skip: dict[str, int] | None = None) -> Path:
    """``preds/outputs.csv`` with paths relative to its folder, values 10 * clip number + column number."""
    rows = []
    for split in SPLITS:
        clips = clips_table(features, split)["path"].tolist()
        for i, p in enumerate(clips[(skip or {}).get(split, 0) :]):
            rel = Path("..") / Path(p).relative_to(workdir)
            rows.append({"path": str(rel), **{c: 10.0 * i + k for k, c in enumerate(columns)}})
    csv = workdir / "preds" / "outputs.csv"
    csv.parent.mkdir(exist_ok=True)
    pd.DataFrame(rows).sample(frac=1.0, random_state=0).to_csv(csv, index=False)  # any row order
    return csv


def _expected(features: Path, split: str, columns: list[str]) -> np.ndarray:
    n = len(clips_table(features, split))
    return np.asarray([[10.0 * i + k for k in range(len(columns))] for i in range(n)], np.float32)


def test_regression_outputs_are_standardised_like_the_targets(workdir):
    features = make_features(workdir / "features")
    csv = _write_csv(workdir, features, [*TARGETS, "extra"])
    out = workdir / "teacher"
    meta = import_outputs(data_config(), TeacherConfig(outputs=str(csv)), features, out)
    fs = FeatureSet.load(features)
    got = teacher_cache.load(out, features, fs.meta, SPLITS)
    for split in SPLITS:
        want = fs.normalise_targets(_expected(features, split, list(TARGETS)))
        assert torch.equal(got[split], torch.from_numpy(want)), split
    assert meta["kind"] == "outputs" and kind(out) == "outputs" and not runs_live(out) and models(out) == []
    assert meta["params"] is None and meta["splits"] == {"train": 12, "val": 6, "test": 6}
    assert (out / "outputs.csv").read_bytes() == csv.read_bytes()  # the cache's key is this copy's content


def test_classification_outputs_are_the_logits_by_label(workdir):
    features = make_features(workdir / "features", task="classification")
    csv = _write_csv(workdir, features, list(CLASSES))
    out = workdir / "teacher"
    import_outputs(data_config("classification"), TeacherConfig(outputs=str(csv)), features, out)
    fs = FeatureSet.load(features)
    got = teacher_cache.load(out, features, fs.meta, SPLITS)
    assert torch.equal(got["val"], torch.from_numpy(_expected(features, "val", list(CLASSES))))


def test_missing_train_rows_are_refused_naming_the_first_paths(workdir):
    features = make_features(workdir / "features")
    csv = _write_csv(workdir, features, list(TARGETS), skip={"train": 4})
    out = workdir / "teacher"
    with pytest.raises(ConfigError) as e:
        import_outputs(data_config(), TeacherConfig(outputs=str(csv)), features, out)
    msg = str(e.value)
    first = clips_table(features, "train")["path"].tolist()[:3]
    head = f"teacher.outputs: {csv} has no row for 4 train/val clip(s), e.g. {first[0]} (train);"
    assert msg.startswith(head)
    assert all(p in msg for p in first) and "\n" not in msg
    assert not out.exists()


def test_missing_test_rows_leave_the_test_split_out(workdir):
    features = make_features(workdir / "features")
    csv = _write_csv(workdir, features, list(TARGETS), skip={"test": 1})
    meta = import_outputs(data_config(), TeacherConfig(outputs=str(csv)), features, workdir / "teacher")
    assert meta["splits"] == {"train": 12, "val": 6}
    assert teacher_cache.splits(workdir / "teacher") == ["train", "val"]


def test_paths_re_rooted_in_this_workspace_match(workdir):
    """Features computed in another checkout (e.g. a DVC experiment's temporary copy) hold its paths."""
    features = make_features(workdir / "features")
    for split in SPLITS:
        table = clips_table(features, split)
        table["path"] = [p.replace(str(workdir), "/elsewhere/exp-copy") for p in table["path"]]
        table.to_csv(features / split / "clips.csv", index=False)
    csv = _write_csv(workdir, make_features(workdir / "here"), list(TARGETS))  # paths under workdir/clips
    meta = import_outputs(data_config(), TeacherConfig(outputs=str(csv)), features, workdir / "teacher")
    assert meta["splits"]["train"] == 12


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda df: df.drop(columns=["valence"]), r"lacks column\(s\) valence \(needs path and a column per"),
        (lambda df: df.assign(arousal=["x", *df.arousal[1:]]), r"row 2: arousal = 'x' is not a finite"),
        (lambda df: pd.concat([df, df.iloc[:1]]), r"row 26: \.\./clips/.*\.wav has a row already"),
    ],
)
def test_bad_files_are_refused_in_one_line(workdir, change, message):
    features = make_features(workdir / "features")
    csv = _write_csv(workdir, features, list(TARGETS))
    change(pd.read_csv(csv)).to_csv(csv, index=False)
    with pytest.raises(ConfigError, match=f"^teacher.outputs: {csv} {message}"):
        import_outputs(data_config(), TeacherConfig(outputs=str(csv)), features, workdir / "teacher")


def test_outputs_and_members_together_are_refused(workdir):
    features = make_features(workdir / "features")
    with pytest.raises(ConfigError, match="^teacher.outputs and ensemble.members are both set"):
        make_teacher(
            data_config(),
            TeacherConfig(outputs="x.csv"),
            EnsembleConfig(members={"a": {}}),
            TRACKING,
            RUNTIME,
            None,  # type: ignore[arg-type]  # not reached
            features,
            workdir / "members",
            workdir / "teacher",
        )
    assert read_json(features / "meta.json")["counts"]["train"] == 12


def test_a_disabled_ensemble_gives_way_to_the_outputs(workdir):
    # ensemble.enabled: false keeps the members in params, trains none, and the CSV is the teacher
    features = make_features(workdir / "features")
    csv = _write_csv(workdir, features, list(TARGETS))
    members = EnsembleConfig(members={"a": {}, "b": {"seed_offset": 1}}, enabled=False)
    assert members.active_members == {}
    out = workdir / "teacher"
    meta = make_teacher(
        data_config(),
        TeacherConfig(outputs=str(csv)),
        members,
        TRACKING,
        RUNTIME,
        None,  # type: ignore[arg-type]
        features,
        workdir / "members",
        out,
    )
    assert meta["kind"] == "outputs" and kind(out) == "outputs"
