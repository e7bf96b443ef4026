"""Shared fixtures: the repository root, a CLI runner and a deadline."""

import signal
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


@pytest.fixture
def deadline(request):
    """Fail (not hang) if the test takes longer than its module's DEADLINE_S (default 10 s): a FIFO
    that blocks must not stall the suite."""
    seconds = getattr(request.module, "DEADLINE_S", 10)

    def boom(*_):
        raise TimeoutError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
