"""The model registry on a real MLflow sqlite store: candidate on evaluate, champion on promote."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch

from audiokd.registry import RegistryError, promote, register_candidate

pytestmark = pytest.mark.slow  # logs real MLflow models (torch.export), seconds each


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[tuple[mlflow.MlflowClient, list[tuple[str, str]]]]:
    """A fresh sqlite store (via ``MLFLOW_TRACKING_URI``) holding two logged students: (model URI, run id)."""
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        exp = mlflow.create_experiment("registry-test", artifact_location=(tmp / "artifacts").as_uri())
        logged = []
        for _ in range(2):
            with mlflow.start_run(experiment_id=exp) as run:
                model = torch.nn.Linear(3, 2)
                info = mlflow.pytorch.log_model(model, name="student", input_example=np.zeros((1, 3), "f4"))
            logged.append((info.model_uri, run.info.run_id))
        yield mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri), logged
    mlflow.set_tracking_uri("")


def test_register_is_idempotent_and_candidate_follows_the_latest_student(store):
    client, [(uri1, run1), (uri2, run2)] = store
    assert register_candidate("kd", uri1, run1) == 1
    assert register_candidate("kd", uri1, run1) == 1  # evaluate rerun on the same student: no new version
    assert register_candidate("kd", uri2, run2) == 2
    assert client.get_model_version_by_alias("kd", "candidate").run_id == run2

    assert promote("kd") == (2, None)
    assert promote("kd", version=1) == (1, 2)
    assert int(client.get_model_version_by_alias("kd", "champion").version) == 1
    assert int(client.get_model_version_by_alias("kd", "candidate").version) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "nope"}, "registered model 'nope' not found"),
        ({"name": "kd-errors", "version": 7}, "kd-errors version 7: no such version"),
        ({"name": "kd-errors", "from_alias": "staging"}, "kd-errors@staging: no such alias"),
    ],
)
def test_promote_names_what_is_missing(store, kwargs, message):
    _, [(uri, run), _] = store
    register_candidate("kd-errors", uri, run)
    with pytest.raises(RegistryError, match=message) as e:
        promote(**kwargs)
    assert "\n" not in str(e.value)


def test_version_tags_name_the_file_to_deploy(store):
    client, [(uri, run), _] = store
    tags = {"deploy.file": f"runs:/{run}/onnx/model.onnx", "deploy.int8": "failed: drop 0.0200, max 0.01"}
    version = register_candidate("kd-deploy", uri, run, tags=tags)
    source = {"source": "audiokd evaluate"}
    assert client.get_model_version("kd-deploy", str(version)).tags == {**source, **tags}
    # rerun with the gate passed (another int8 file): the same version, its tags updated
    passed = {"deploy.file": f"runs:/{run}/onnx/model.int8.onnx", "deploy.int8": "passed: drop 0.001"}
    assert register_candidate("kd-deploy", uri, run, tags=passed) == version
    assert client.get_model_version("kd-deploy", str(version)).tags == {**source, **passed}
