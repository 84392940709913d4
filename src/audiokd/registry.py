"""The MLflow model registry: register the evaluated student (``@candidate``), promote it (``@champion``)."""

from __future__ import annotations

import logging

import mlflow
from mlflow.exceptions import MlflowException

from audiokd.tracking import tracking_uri

log = logging.getLogger(__name__)

CANDIDATE = "candidate"
CHAMPION = "champion"


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message names the model and alias or version."""


def _client() -> mlflow.MlflowClient:
    uri = tracking_uri()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def register_candidate(
    name: str, model_uri: str, run_id: str, alias: str = CANDIDATE, tags: dict[str, str] | None = None
) -> int:
    """Register ``model_uri`` (logged by run ``run_id``) under ``name`` and point ``alias`` at it; ``tags``
    are set on the version (evaluate names the file to deploy there, :mod:`audiokd.deployable`).

    Idempotent: when a version of ``name`` from the same run and model already exists (evaluate rerun on an
    unchanged student), that version gets the alias instead of a new one. Returns the version number.
    """
    client = _client()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="audiokd students; aliases candidate and champion")
    existing = [
        v
        for v in client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        if v.source == model_uri or getattr(v, "model_id", None) == model_uri.rsplit("/", 1)[-1]
    ]
    if existing:
        version = max(int(v.version) for v in existing)
    else:
        # an MLflow 3 logged model (models:/m-...) must name its model id, or a tracking server refuses it
        model_id = model_uri.rsplit("/", 1)[-1] if model_uri.startswith("models:/m-") else None
        mv = client.create_model_version(
            name, model_uri, run_id=run_id, tags={"source": "audiokd evaluate"}, model_id=model_id
        )
        version = int(mv.version)
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, str(version), key, value)
    client.set_registered_model_alias(name, alias, str(version))
    log.info("registry: %s version %d is @%s (%s)", name, version, alias, model_uri)
    return version


def promote(
    name: str, version: int | None = None, from_alias: str = CANDIDATE, to_alias: str = CHAMPION
) -> tuple[int, int | None]:
    """Point ``to_alias`` at ``version`` (default: the version ``from_alias`` points at).

    Returns ``(new version, previous version of to_alias or None)``. Raises :class:`RegistryError` with one
    line when the model, version or alias does not exist.
    """
    client = _client()
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(
            f"registered model {name!r} not found in {tracking_uri()}; run dvc repro"
        ) from None
    if version is None:
        try:
            version = int(client.get_model_version_by_alias(name, from_alias).version)
        except MlflowException:
            raise RegistryError(f"{name}@{from_alias}: no such alias") from None
    else:
        try:
            client.get_model_version(name, str(version))
        except MlflowException:
            raise RegistryError(f"{name} version {version}: no such version") from None
    try:
        previous: int | None = int(client.get_model_version_by_alias(name, to_alias).version)
    except MlflowException:
        previous = None
    client.set_registered_model_alias(name, to_alias, str(version))
    log.info("registry: %s version %d is now @%s (was %s)", name, version, to_alias, previous)
    return version, previous
