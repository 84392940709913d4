"""The MLflow store location, also from inside DVC's temporary experiment workspaces."""

from pathlib import Path

from audiokd.tracking import project_root


def test_project_root_is_the_cwd_normally(tmp_path):
    assert project_root(tmp_path) == tmp_path.resolve()


def test_queued_experiments_log_to_the_repository_store(tmp_path):
    temp_ws = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    temp_ws.mkdir(parents=True)
    assert project_root(temp_ws) == (tmp_path / "repo").resolve()
    assert project_root(temp_ws / "sub") == Path(tmp_path / "repo").resolve()
