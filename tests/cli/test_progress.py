"""Long commands draw a progress bar on stderr, only where stderr is a terminal; stdout stays clean."""

import json

import pytest

from planner.cli import app

INFLECTION = ["inflection", "--between", "best", "--between", "trl-zero3", "--in", "nodes", "-f", "json"]


@pytest.fixture
def no_forcing(monkeypatch):
    for var in ("TTY_COMPATIBLE", "FORCE_COLOR", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)


def test_progress_on_a_terminal_goes_to_stderr(runner, monkeypatch, no_forcing, tmp_path):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich's switch: stderr counts as a terminal
    monkeypatch.setenv("TERM", "xterm-256color")  # one that can redraw (rich draws nothing on TERM=dumb)
    r = runner.invoke(app, INFLECTION)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["crossings"]  # stdout is the JSON alone
    assert "\x1b[?25l" in r.stderr and "\x1b" not in r.stdout  # a live display (cursor hidden) on stderr only
    csv = tmp_path / "grid.csv"
    r = runner.invoke(app, ["sweep", "--points", "2", "--plot", "", "--csv", str(csv)])
    assert r.exit_code == 0, r.output
    assert "\x1b[?25l" in r.stderr and "\x1b" not in r.stdout
    assert len(csv.read_text().splitlines()) == 1 + 4  # header and the 2 x 2 grid


def test_no_progress_when_stderr_is_not_a_terminal(runner, no_forcing):
    r = runner.invoke(app, INFLECTION)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["crossings"]
    assert "\x1b" not in r.stderr  # no display at all into a pipe or a log
