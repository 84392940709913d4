"""Params validation: defaults load, unknown keys and out-of-range values are refused with one line."""

import subprocess
import sys

import pytest
import yaml

from audiokd.cli import load_sections
from audiokd.config import SECTIONS, ConfigError, load_params, load_section, read_params


def _params(repo_root):
    return read_params(repo_root / "params.yaml")


def test_default_params_validate(repo_root):
    raw = _params(repo_root)
    assert set(raw) == set(SECTIONS)
    for name in SECTIONS:
        load_section(raw, name)


def test_default_params_comment_every_key(repo_root):
    # every key line inside a section carries a one-line comment
    lines = [
        ln
        for ln in (repo_root / "params.yaml").read_text().splitlines()
        if ln.startswith("  ") and ":" in ln and not ln.strip().startswith("#")
    ]
    assert lines and all("#" in ln for ln in lines)


@pytest.mark.parametrize(
    ("section", "patch", "message"),
    [
        ("distill", {"alpha": 1.5}, "distill.alpha = 1.5 is out of range"),
        ("distill", {"alpha": -0.1}, "distill.alpha = -0.1 is out of range"),
        ("distill", {"temperature": 0}, "distill.temperature = 0.0 is out of range: allowed (0.0"),
        ("distill", {"epochs": 0}, "distill.epochs = 0 is out of range"),
        ("distill", {"temprature": 2}, "distill.temprature: unknown key"),
        ("distill", {"soft_loss": "l1"}, "distill.soft_loss = 'l1' is not allowed"),
        ("distill", {"epochs": "ten"}, "distill.epochs: expected an integer"),
        ("teacher", {"num_heads": 5}, "teacher.hidden_size = 384 must be divisible"),
        (
            "teacher",
            {"arch": "efficientnet"},
            "teacher.arch = 'efficientnet' is not allowed: choose one of vit",
        ),
        (
            "teacher",
            {"arch": "ast", "ast_stride": 20},
            "teacher.ast_stride = 20 must not exceed teacher.patch_size",
        ),
        (
            "teacher",
            {"cnn_depths": [2, 2, 2]},
            "teacher.cnn_depths (3 stages) and teacher.cnn_hidden_sizes (4 widths)",
        ),
        ("teacher", {"cnn_hidden_sizes": [64, 0]}, "teacher.cnn_hidden_sizes = 0 is out of range"),
        ("teacher", {"init_checkpoint": "x"}, "teacher.init_checkpoint: unknown key"),
        (
            "data",
            {"split": {"train": 0.5, "val": 0.1, "test": 0.1}},
            "data.split: train + val + test must sum to 1",
        ),
        ("synthetic", {"clips": 5}, "synthetic.clips = 5 is out of range"),
        ("student", {"hidden_sizes": [64, 80]}, "student.hidden_sizes: expected a list of exactly 3"),
        ("runtime", {"device": "tpu"}, "runtime.device = 'tpu' is not allowed"),
        ("baseline", {"enabled": "yes"}, "baseline.enabled: expected true or false, got 'yes'"),
        ("baseline", {"enable": True}, "baseline.enable: unknown key"),
        ("tracking", {"registered_model": "a b"}, "tracking.registered_model = 'a b': use letters"),
        ("export", {"int8_max_drop": -0.01}, "export.int8_max_drop = -0.01 is out of range: allowed [0.0"),
        ("export", {"int8_max_drops": 0.1}, "export.int8_max_drops: unknown key"),
        ("teacher", {"folds": 3, "outputs": "x.csv"}, "teacher.folds = 3 trains fold teachers but"),
        ("teacher", {"folds": -1}, "teacher.folds = -1 is out of range"),
        ("ensemble", {"members": {"a": {"lr": -1}}}, "ensemble.members.a.lr = -1.0 is out of range"),
        ("ensemble", {"members": {"a": {"hidden": 8}}}, "ensemble.members.a.hidden: unknown key"),
        ("ensemble", {"members": {"a/b": {}}}, "ensemble.members.a/b: a member name uses letters"),
        ("ensemble", {"members": {"a": {"outputs": "x.csv"}}}, "ensemble.members.a.outputs: members train"),
        ("ensemble", {"members": {"a": {}, "b": {}}}, "ensemble.members.b: the same settings as"),
        ("ensemble", {"members": {"a": {"seed": 1, "seed_offset": 2}}}, "ensemble.members.a: give seed"),
        ("ensemble", {"members": {"a": {"seed_offset": -1}}}, "members.a.seed_offset = -1 is out"),
        ("ensemble", {"members": ["a", "b"]}, "ensemble.members: expected a mapping"),
    ],
)
def test_bad_values_name_the_key(repo_root, section, patch, message):
    raw = _params(repo_root)
    raw[section] = {**raw[section], **patch}
    with pytest.raises(ConfigError) as e:
        load_section(raw, section)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_section_is_refused(repo_root):
    raw = _params(repo_root)
    raw["distil"] = {"alpha": 0.5}
    with pytest.raises(ConfigError, match="distil: unknown params section"):
        load_section(raw, "distill")


def test_stage_refuses_bad_params_with_one_line_and_writes_nothing(repo_root, tmp_path):
    raw = _params(repo_root)
    raw["data"]["split"]["val"] = 2
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    out = tmp_path / "prepared"
    proc = subprocess.run(
        [sys.executable, str(repo_root / "stages" / "prepare.py"), "--params", str(bad), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert err_lines == ["error: data.split.val = 2.0 is out of range: allowed (0.0, 1.0]"]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_a_stage_entry_refuses_a_bad_key_in_a_section_it_does_not_read(repo_root, tmp_path, section):
    raw = _params(repo_root)
    raw[section] = {**(raw.get(section) or {}), "misspelled_key": 1}
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    other = "synthetic" if section != "synthetic" else "evaluate"
    with pytest.raises(ConfigError, match=rf"^{section}\.misspelled_key: unknown key"):
        load_sections(str(bad), other)
    raw[section].pop("misspelled_key")
    bad.write_text(yaml.safe_dump(raw))
    assert len(load_sections(str(bad), other)) == 1  # the same file without the key loads


def test_first_stage_script_refuses_a_typo_in_a_later_stage_section(repo_root, tmp_path):
    raw = _params(repo_root)
    raw["distill"]["temprature"] = 2.0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    out = tmp_path / "embedded"
    script = str(repo_root / "stages" / "synthesize.py")
    proc = subprocess.run(
        [sys.executable, script, "--params", str(bad), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(err_lines) == 1 and err_lines[0].startswith("error: distill.temprature: unknown key")
    assert list(tmp_path.iterdir()) == [bad]  # nothing synthesised


def test_teacher_outputs_with_active_members_stop_the_first_stage(repo_root):
    raw = read_params(repo_root / "params.yaml")
    raw["teacher"] = {**raw["teacher"], "outputs": "outputs.csv"}
    raw["ensemble"] = {"members": {"a": {}, "b": {"seed_offset": 1}}}
    with pytest.raises(
        ConfigError, match=r"^teacher.outputs and ensemble.members are both set.*ensemble.enabled"
    ):
        load_params(raw)
    raw["ensemble"]["enabled"] = False
    assert load_params(raw)["ensemble"].active_members == {}
