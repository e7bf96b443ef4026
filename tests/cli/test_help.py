"""Help and user text reach the terminal as written: rich markup never eats or trips on them."""

import pytest

from planner.cli import app

COMMANDS = ["show", "list", "schema", "estimate", "recommend", "inflection", "sweep", "calibrate", "validate", "run", "export"]


@pytest.mark.parametrize("command", [[]] + [[c] for c in COMMANDS])
def test_every_help_renders(runner, command):
    r = runner.invoke(app, command + ["--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0 and not isinstance(r.exception, Exception), r.exception
    assert "--help" in r.stdout and "<bool>" not in r.stdout  # a flag takes no value: no type to show


def test_help_documents_the_exit_codes(runner):
    r = runner.invoke(app, ["--help"], env={"COLUMNS": "250"})
    assert "Exit status" in r.stdout and "3 done, but the answer is no" in r.stdout
    for command in ("estimate", "recommend", "validate"):
        assert "Exits 3" in runner.invoke(app, [command, "--help"], env={"COLUMNS": "250"}).stdout


def test_inflection_help_shows_the_regime_grammar_literally(runner):
    r = runner.invoke(app, ["inflection", "--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.exception
    assert "TEACHER/STUDENT[/PLACEMENT[/MICRO_BATCH]]" in r.stdout


def test_a_path_that_looks_like_markup_is_printed_as_written(runner, tmp_path):
    folder = tmp_path / "a[/b]" / "[bold]x"
    folder.mkdir(parents=True)
    p = folder / "m.yaml"
    p.write_text("num_layers: 2\nhidden: 64\nnum_heads: 4\nffn: 128\nvocab: 100\nfoo: 1\n")
    r = runner.invoke(app, ["show", str(p)])
    assert r.exit_code == 1 and not isinstance(r.exception, Exception), r.exception
    assert f"{p}: foo: unknown key" in r.stderr


def test_a_job_name_that_looks_like_markup_is_printed_as_written(runner, tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("name: 'demo[/x] [red]'\nteacher: tiny-teacher\nstudent: tiny-student\n"
                   "workload: {global_batch: 8, micro_batch_max: 4, prompt_len: 32, completion_len: 32}\n")
    r = runner.invoke(app, ["estimate", "-m", str(job), "-c", "cpu-local", "--micro-batch", "2"])
    assert r.exit_code == 0 and not isinstance(r.exception, Exception), r.exception
    assert "'demo[/x] [red]'" in r.stdout


def _options():
    """(command, short flag, long flag) of every option of every command."""
    import typer.main
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        for p in cmd.params:
            longs = [o for o in p.opts if o.startswith("--")]
            for short in (o for o in p.opts if not o.startswith("--")):
                yield name, short, longs[0] if longs else p.name


def test_a_short_flag_means_one_thing_everywhere():
    seen: dict[str, set] = {}
    for _, short, long in _options():
        seen.setdefault(short, set()).add(long)
    assert {s: ls for s, ls in seen.items() if len(ls) > 1} == {}
    # -m is the job (teacher + student + workload) of the planning commands; calibrate times a
    # model, so its option has no short form that would read as "the job"
    assert ("calibrate", "-m") not in {(c, s) for c, s, _ in _options()}
    assert all(c in ("recommend", "estimate", "inflection", "sweep") for c, s, _ in _options() if s == "-m")
