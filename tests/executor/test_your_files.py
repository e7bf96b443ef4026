"""Issue 25, items 3 and 5: a dataset path that would block or crash a reader is one line before
training (in-process and through `planner run` on 2 gloo ranks, in seconds: under 30 s with the launch), a file rewritten under
the same mtime is read by its new content and its checkpoints are not resumed, a chat template gets a
time bound; and a failed write (checkpoint, metrics) is one `error:` line whichever rank fails first."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from executor_helpers import ROOT, TORCHRUN, tiny_plan

from planner.executor import checkpoint, dataset
from planner.executor.build import ByteTokenizer
from planner.executor.dataset import check_source, read_rows, time_bound
from planner.inputs.errors import InputError
from planner.plan import load_plan

from test_data import _bos_tokenizer

ROW = {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello friend"}]}
_LAUNCHER = re.compile(r'Traceback \(most recent call last\):\n  File "[^"]*torchrun"', re.S)  # torchrun's own ChildFailedError report


def launch(args: list[str], *, env: dict | None = None, fsize: int | None = None, timeout: int = 60) -> tuple[int, str, float]:
    """`planner run` under `torchrun --nproc-per-node 2` (gloo); (exit code, stderr, seconds)."""
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "--max-restarts=0", "-m", "planner", "run", *args, "--no-progress", "--random-init"]
    limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))) if fsize else None
    start = time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True, preexec_fn=limit,
                          env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)} | (env or {})) as p:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
            raise AssertionError(f"timed out after {timeout} s:\n{err[-3000:]}") from None
    return p.returncode, err, time.monotonic() - start


def the_line(err: str) -> str:
    """The workers' one `error:` line; their output (torchrun's own report left out) has no traceback."""
    workers = _LAUNCHER.split(err)[0]
    workers = "\n".join(ln for ln in workers.splitlines() if not re.match(r"^[WEI]\d{4} ", ln))  # torchrun's log lines
    assert "Traceback" not in workers, workers[-3000:]
    lines = [ln for ln in workers.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, workers[-3000:]
    return lines[0]


def one_line(e) -> str:
    assert len(e.value.lines) == 1 and "\n" not in e.value.lines[0], e.value.lines
    return e.value.lines[0]


# ---- item 3: special files, nesting, content, templates (in-process) ---------------------------

def special(tmp: Path, kind: str) -> Path:
    """A FIFO, a listening socket, /dev/zero, or a FIFO inside a saved-dataset folder."""
    if kind == "fifo":
        os.mkfifo(tmp / "rows.jsonl")
        return tmp / "rows.jsonl"
    if kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(tmp / "rows.jsonl"))
        return tmp / "rows.jsonl"
    if kind == "device":
        return Path("/dev/zero")
    from datasets import Dataset

    Dataset.from_list([ROW]).save_to_disk(str(tmp / "saved"))
    os.mkfifo(tmp / "saved" / "data-00001-of-00001.arrow.fifo")
    return tmp / "saved"


@pytest.mark.parametrize("kind, what", [("fifo", "a pipe"), ("socket", "a socket"), ("device", "a character device"),
                                        ("folder", "a pipe (FIFO) inside the dataset folder")])
def test_special_files_are_refused_in_one_line(tmp_path, deadline, kind, what):
    path = special(tmp_path, kind)
    with pytest.raises(InputError) as e:
        read_rows(path, ByteTokenizer())
    assert what in one_line(e)


def test_deep_nesting_names_the_line(tmp_path):
    data = tmp_path / "deep.jsonl"
    data.write_text(json.dumps(ROW) + "\n" + '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + ', "completion": "x"}\n')
    with pytest.raises(InputError) as e:
        read_rows(data, ByteTokenizer())
    assert one_line(e).startswith(f"{data}:2: nested deeper than {dataset.MAX_DEPTH} levels")
    # brackets inside strings are text, not nesting
    data.write_text(json.dumps({"prompt": "[" * 1000, "completion": "{" * 1000}) + "\n")
    assert len(read_rows(data, ByteTokenizer())) == 1


def test_a_file_rewritten_under_the_same_mtime_is_read_by_content(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps({"prompt": "aaaa", "completion": "bbbb"}) + "\n")
    stamp = os.stat(data).st_mtime_ns
    first = read_rows(data, ByteTokenizer())
    plan = load_plan(tiny_plan(tmp_path, "replicate-ddp")).model_copy(update={"dataset": str(data)})
    fp = checkpoint.fingerprint(plan, 0, ByteTokenizer())
    data.write_text(json.dumps({"prompt": "cccc", "completion": "dddd"}) + "\n")  # same size, same mtime
    os.utime(data, ns=(stamp, stamp))
    assert read_rows(data, ByteTokenizer()) != first
    assert checkpoint.fingerprint(plan, 0, ByteTokenizer())["data"] != fp["data"]  # its checkpoints are another run's


def test_a_slow_chat_template_is_stopped_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset, "TEMPLATE_SECONDS", 0.5)
    tok = _bos_tokenizer(True)
    tok.chat_template = "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}"
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps(ROW) + "\n")
    before = signal.getsignal(signal.SIGALRM)
    start = time.monotonic()
    with pytest.raises(InputError) as e:
        read_rows(data, tok)
    assert time.monotonic() - start < 5
    assert one_line(e) == f"{data}:1: messages: the chat template took longer than 0.5 s"
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # no stale handler or timer


def test_the_time_bound_is_cleared_and_only_in_the_main_thread():
    before = signal.getsignal(signal.SIGALRM)
    with time_bound(0.2, "x"):
        pass
    time.sleep(0.3)  # nothing fires after the block (collectives run after the rows are read)
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    seen = []

    def elsewhere():
        with time_bound(0.01, "x"):
            time.sleep(0.05)
        seen.append(signal.getitimer(signal.ITIMER_REAL))

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    assert seen == [(0.0, 0.0)]


# ---- through `planner run` on 2 gloo ranks ------------------------------------------------------

@pytest.mark.parametrize("kind", ["fifo", "socket", "device", "folder"])
def test_a_special_dataset_stops_both_ranks_in_one_line(tmp_path, kind):
    plan, path = tiny_plan(tmp_path, "replicate-ddp"), special(tmp_path, kind)
    rc, err, seconds = launch([str(plan), "--steps", "2", "--dataset", str(path)])
    assert rc == 1 and seconds < 30, (rc, seconds, err[-2000:])  # 6-15 s here, most of it torchrun starting; a blocked rank waits 30 min
    assert "not a dataset file" in the_line(err) or "inside the dataset folder" in the_line(err)


def test_a_checkpoint_past_the_file_size_limit_is_one_line(tmp_path):
    plan, ckpt = tiny_plan(tmp_path, "replicate-ddp"), tmp_path / "ckpt"
    rc, err, _ = launch([str(plan), "--steps", "2", "--checkpoint-dir", str(ckpt), "--checkpoint-every", "1"], fsize=200 * 1024)
    line = the_line(err)
    assert rc == 1 and "step-00000001 could not be written" in line and "ulimit -f" in line, line
    assert [p.name for p in ckpt.iterdir() if not p.name.startswith(".kd-planner")] == []  # its temporary removed


@pytest.mark.parametrize("flag", ["--metrics-out", "--checkpoint-dir", "--output-dir"])
def test_an_unwritable_output_is_one_line_before_training(tmp_path, flag):
    plan = tiny_plan(tmp_path, "replicate-ddp")
    where = "/sys/kd-planner-test.json" if flag == "--metrics-out" else "/sys/kd-planner-test"  # read-only even for root
    rc, err, seconds = launch([str(plan), "--steps", "2", flag, where])
    line = the_line(err)
    assert rc == 1 and flag in line and "/sys" in line, line
    assert not Path(where).exists()


def test_a_silent_rank_says_the_line_itself_when_no_rank_does(tmp_path):
    """Rank 1 alone (its rank 0 never started): it waits for rank 0's line, then prints the line itself."""
    plan = tiny_plan(tmp_path, "replicate-ddp")
    env = os.environ | {"PYTHONPATH": str(ROOT), "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2", "PLANNER_SILENT_RANK_WAIT_S": "0.2"}
    done = subprocess.run([sys.executable, "-m", "planner", "run", str(plan), "--metrics-out", "/sys/m.json"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [ln for ln in done.stderr.splitlines() if ln.startswith("error:")] == [
        "error: --metrics-out: /sys/m.json: cannot write in the folder /sys: permission denied"], done.stderr


def test_a_checkpoint_folder_that_is_a_symlink_to_the_output_folder_is_refused(tmp_path):
    from planner.executor import save

    (tmp_path / "out").mkdir()
    (tmp_path / "ckpt").symlink_to(tmp_path / "out")
    with pytest.raises(InputError) as e:
        save.check_layout(tmp_path / "out", tmp_path / "ckpt" / "runs")
    assert "give two separate folders" in one_line(e)


def test_an_output_folder_filled_while_training_is_not_replaced_without_force(tmp_path):
    from planner.executor import save

    out, made = tmp_path / "out", tmp_path / ".out.abc.tmp"
    out.mkdir()
    (out / "theirs.txt").write_text("another run's student")
    made.mkdir()
    (made / "config.json").write_text("{}")
    with pytest.raises(InputError) as e:
        save.replace_folder(made, out, force=False)
    assert f"the student is kept in {made}" in one_line(e)
    assert (out / "theirs.txt").read_text() == "another run's student" and (made / "config.json").is_file()
    save.replace_folder(made, out, force=True)  # --force: replaced, as asked
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_a_second_run_on_the_same_output_folder_is_refused(tmp_path):
    from planner.executor import manifest

    name = ".out" + manifest.LOCK
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from planner.executor import manifest; "
                               f"manifest.lock(Path({str(tmp_path)!r}), '--output-dir', {name!r}); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError) as e:
            manifest.lock(tmp_path, "--output-dir", name)
        assert one_line(e).startswith(f"--output-dir: {tmp_path}: another run is using this folder")
    finally:
        holder.kill()
        holder.wait()
