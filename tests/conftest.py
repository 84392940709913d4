"""Shared fixtures: the repository root and the tiny params file."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_root() -> Path:
    """The repository under test."""
    return ROOT


@pytest.fixture
def tiny_params() -> Path:
    """params.yaml shrunk to smoke size."""
    return ROOT / "tests" / "e2e" / "params_tiny.yaml"
