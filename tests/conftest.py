"""Shared fixtures: the repository root and a CLI runner."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def root() -> Path:
    return ROOT
