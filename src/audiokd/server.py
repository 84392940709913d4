"""A shared MLflow tracking server on PostgreSQL: ``make tracking-server`` (``python -m audiokd.server``).

Foreground ``mlflow server`` bound to 127.0.0.1 with a PostgreSQL backend store and an artifact root the
server itself serves (``--artifacts-destination``), so clients need no storage credentials.

- ``AUDIOKD_POSTGRES_URI`` set: that database is used as it is (a team's shared PostgreSQL).
- Otherwise the local PostgreSQL is started (Debian's ``pg_ctlcluster``; installed with apt-get when
  missing) and a role and database ``audiokd`` are created on first use.
- ``AUDIOKD_ARTIFACTS`` (default ``mlruns/server-artifacts``): a folder or an S3-compatible bucket URI
  (``s3://bucket/prefix``; set ``MLFLOW_S3_ENDPOINT_URL`` and the AWS credentials for MinIO and friends).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCAL_URI = "postgresql+psycopg2://audiokd:audiokd@127.0.0.1:5432/audiokd"


class ServerError(RuntimeError):
    """The tracking server cannot be started; the message says which step failed."""


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def _as_postgres(sql: str) -> subprocess.CompletedProcess:
    runner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else ["sudo", "-u", "postgres"]
    return _run([*runner, "psql", "-v", "ON_ERROR_STOP=1", "-tAc", sql], check=False)


def ensure_local_postgres() -> str:
    """Start the local PostgreSQL (installing it where missing) and create the ``audiokd`` database."""
    if not glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        log.info("PostgreSQL not found: installing it from the system packages (apt-get install postgresql)")
        if shutil.which("apt-get") is None:
            raise ServerError(
                "PostgreSQL is not installed and apt-get is unavailable; set AUDIOKD_POSTGRES_URI"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
            if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
                raise ServerError(f"`{' '.join(cmd)}` failed; install PostgreSQL or set AUDIOKD_POSTGRES_URI")
    clusters = _run(["pg_lsclusters", "-h"], check=False).stdout.split()
    if len(clusters) >= 2:
        version, name = clusters[0], clusters[1]
        if "online" not in _run(["pg_lsclusters", "-h"], check=False).stdout:
            _run(["pg_ctlcluster", version, name, "start"], check=False)
    for _ in range(30):
        if _as_postgres("SELECT 1").returncode == 0:
            break
        time.sleep(0.5)
    else:
        raise ServerError(
            "the local PostgreSQL did not start (pg_ctlcluster); see its log under /var/log/postgresql"
        )
    if _as_postgres("SELECT 1 FROM pg_roles WHERE rolname = 'audiokd'").stdout.strip() != "1":
        _as_postgres("CREATE ROLE audiokd LOGIN PASSWORD 'audiokd'")
    if _as_postgres("SELECT 1 FROM pg_database WHERE datname = 'audiokd'").stdout.strip() != "1":
        res = _as_postgres("CREATE DATABASE audiokd OWNER audiokd")
        if res.returncode != 0:
            raise ServerError(f"cannot create the audiokd database: {res.stderr.strip()}")
    return LOCAL_URI


def server_command(backend: str, artifacts: str, port: int, host: str = "127.0.0.1") -> list[str]:
    """The ``mlflow server`` command line."""
    mlflow = str(Path(sys.executable).parent / "mlflow")
    return [
        mlflow,
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--serve-artifacts",
    ]


def main(argv: list[str] | None = None) -> int:
    """Start the server in the foreground (Ctrl-C stops it)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    p.add_argument(
        "--backend-store-uri",
        default=os.environ.get("AUDIOKD_POSTGRES_URI", ""),
        help="default: the local PostgreSQL, started and set up on demand",
    )
    p.add_argument("--artifacts", default=os.environ.get("AUDIOKD_ARTIFACTS", "mlruns/server-artifacts"))
    args = p.parse_args(argv)
    try:
        backend = args.backend_store_uri or ensure_local_postgres()
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    artifacts = args.artifacts
    if "://" not in artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        artifacts = str(Path(artifacts).resolve())
    cmd = server_command(backend, artifacts, args.port)
    shown = backend.split("@")[-1]
    log.info(
        "MLflow server on http://127.0.0.1:%d (backend postgresql ...@%s, artifacts %s)",
        args.port,
        shown,
        artifacts,
    )
    log.info("point the pipeline at it: MLFLOW_TRACKING_URI=http://127.0.0.1:%d dvc repro", args.port)
    os.execv(cmd[0], cmd)
    return 0  # pragma: no cover - execv does not return


if __name__ == "__main__":
    sys.exit(main())
