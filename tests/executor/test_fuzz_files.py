"""Issue 25, item 6: a seeded fuzz test of what a run promises about the user's files. Each case is
drawn (by SEED) from one class: output/checkpoint folder relations, look-alike temporaries, flipped
bytes in a checkpoint file, truncated metadata, changed settings, special files, nesting, bad chat
templates, unwritable paths. It calls the run's own checks in-process (one trained checkpoint,
written once by `planner run` on 2 gloo ranks, is copied for each case that needs one) and asserts
the promise: the user's file survives, a refusal is one line, nothing prints a traceback."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from executor_helpers import run_plan, tiny_plan

from planner import files
from planner.executor import checkpoint, dataset, manifest, save
from planner.executor.build import ByteTokenizer
from planner.inputs.errors import InputError

from test_data import _bos_tokenizer

SEED = 25
CASES = 90
CLASSES = ["layout", "look-alike", "flipped", "truncated", "settings", "special", "nesting", "template", "unwritable"]
DEADLINE_S = 90  # the `deadline` fixture: no case may block (the first checkpoint case trains, ~10 s)
ROW = {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello friend"}]}
DRAWN = [(i, random.Random(SEED * 1000 + i).choice(CLASSES)) for i in range(CASES)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """Checkpoints step-2 and step-4 of a tiny replicate-ddp run (each with fingerprint and manifest)."""
    tmp = tmp_path_factory.mktemp("trained")
    plan = tiny_plan(tmp, "replicate-ddp")
    run_plan(plan, tmp / "m.json", 4, "--checkpoint-dir", str(tmp / "ckpt"), "--checkpoint-every", "2")
    return tmp / "ckpt"


def one_line(e) -> str:
    assert len(e.value.lines) == 1 and "\n" not in e.value.lines[0], e.value.lines
    return e.value.lines[0]


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy(trained: Path, tmp: Path) -> tuple[Path, dict]:
    root = tmp / "ckpt"
    shutil.copytree(trained, root, ignore=shutil.ignore_patterns(manifest.LOCK))
    fp = json.loads((root / "step-00000004" / checkpoint.FINGERPRINT).read_text())
    return root, fp


# ---- the classes ------------------------------------------------------------------------------

def case_layout(rng: random.Random, tmp: Path, trained: Path) -> None:
    out = tmp / "out"
    rel = rng.choice(["same", "out-holds", "ckpt-holds", "siblings", "symlink", "dots", "prefix"])
    ckpt = {"same": out, "out-holds": out / "ckpt" / "deep", "ckpt-holds": tmp / "out" / "..", "siblings": tmp / "ckpt",
            "symlink": tmp / "link", "dots": tmp / "x" / ".." / "out" / "sub", "prefix": tmp / "out-ckpt"}[rel]
    if rel == "ckpt-holds":
        out, ckpt = tmp / "c" / "out", tmp / "c"
    out.mkdir(parents=True, exist_ok=True)
    if rel == "symlink":
        ckpt.symlink_to(out)
    overlap = rel not in ("siblings", "prefix")
    for a, b in ((out, ckpt), (str(out) + "/", str(ckpt))):
        if overlap:
            with pytest.raises(InputError) as e:
                save.check_layout(a, b)
            assert "give two separate folders" in one_line(e)
        else:
            save.check_layout(a, b)


def case_look_alike(rng: random.Random, tmp: Path, trained: Path) -> None:
    root, _ = copy(trained, tmp)
    out = tmp / "out"
    names = rng.sample(["step-00000006.tmp", ".step-00000006.tmp", ".step-00000006.abcd1234.tmp", "step-00000002.kept",
                        "step-00000004.old", ".step-00000004.x.old", "step-9", "step-00000008"], 4)
    users = [root / n for n in names] + [tmp / n for n in rng.sample(["out.tmp", ".out.tmp", ".out.abcd1234.tmp", ".out.x.old", "out.old"], 2)]
    for i, p in enumerate(users):
        p.mkdir()
        (p / "mine.txt").write_text(f"user file {i}")
    # a checkpoint of step 6 placed, the old ones pruned; the final save of the output folder
    new = Path(tempfile.mkdtemp(dir=root, prefix=".step-00000006.", suffix=".tmp"))
    for f in (trained / "step-00000004").iterdir():
        shutil.copy(f, new / f.name)
    checkpoint._place(new, root / "step-00000006")
    checkpoint.prune(root, keep=rng.choice([1, 2]))
    made = Path(tempfile.mkdtemp(dir=tmp, prefix=".out.", suffix=".tmp"))
    (made / "config.json").write_text("{}")
    save.replace_folder(made, out)
    for i, p in enumerate(users):  # step-00000008 has a step's name but no .metadata: not a checkpoint, kept
        assert (p / "mine.txt").read_text() == f"user file {i}", p
    assert (out / "config.json").is_file() and (root / "step-00000006" / ".metadata").is_file()


def case_flipped(rng: random.Random, tmp: Path, trained: Path, truncate: bool = False) -> None:
    root, fp = copy(trained, tmp)
    newest = root / "step-00000004"
    victims = [p for p in sorted(newest.iterdir()) if p.name not in (checkpoint.FINGERPRINT, manifest.MANIFEST)]
    victim = newest / ".metadata" if truncate else rng.choice(victims)
    data = bytearray(victim.read_bytes())
    if truncate:
        data = data[:rng.randrange(len(data))]
    else:
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
    victim.write_bytes(bytes(data))
    before = tree(root)
    folders, skipped, error = checkpoint._choose(root, fp)
    assert error is None and folders == [str(root / "step-00000002")], (folders, skipped)
    assert skipped == [f"step-00000004 (damaged: {victim.name} does not match its sha256)"]
    assert tree(root) == before  # the damaged one is skipped, not deleted


def case_truncated(rng: random.Random, tmp: Path, trained: Path) -> None:
    if rng.random() < 0.3:  # the manifest itself cut short: unreadable, skipped
        root, fp = copy(trained, tmp)
        m = root / "step-00000004" / manifest.MANIFEST
        m.write_bytes(m.read_bytes()[:rng.randrange(m.stat().st_size)])
        folders, skipped, error = checkpoint._choose(root, fp)
        assert error is None and folders == [str(root / "step-00000002")] and "unreadable" in skipped[0], skipped
        return
    case_flipped(rng, tmp, trained, truncate=True)


def case_settings(rng: random.Random, tmp: Path, trained: Path) -> None:
    root, fp = copy(trained, tmp)
    section, key, value = rng.choice([("optimizer", "lr", 0.5), ("optimizer", "schedule", "linear"), ("optimizer", "kind", "sgd"),
                                      ("optimizer", "max_grad_norm", 7.0), ("loss", "beta", 0.9), ("loss", "temperature", 3.0),
                                      ("loss", "kind", "forward_kl"), ("precision", "student_dtype", "bf16")])
    fp["settings"][section][key] = value
    folders, _, error = checkpoint._choose(root, fp)
    assert folders == [] and error and "\n" not in error and f"{section}.{key}" in error and "--allow-changed-settings" in error, error
    folders, _, error = checkpoint._choose(root, fp, allow_changed=True)
    assert error is None and folders[0] == str(root / "step-00000004")


def case_special(rng: random.Random, tmp: Path, trained: Path) -> None:
    kind = rng.choice(["fifo", "socket", "null", "zero", "link-to-fifo", "fifo-in-folder", "socket-in-folder"])
    path = tmp / "rows.jsonl"
    if kind in ("fifo", "link-to-fifo"):
        os.mkfifo(tmp / "pipe")
        path.symlink_to(tmp / "pipe") if kind == "link-to-fifo" else os.rename(tmp / "pipe", path)
    elif kind == "socket":
        socket.socket(socket.AF_UNIX).bind(str(path))
    elif kind in ("null", "zero"):
        path = Path(f"/dev/{kind}")
    else:
        from datasets import Dataset

        path = tmp / "saved"
        Dataset.from_list([ROW]).save_to_disk(str(path))
        inner = path / rng.choice(["x", "sub/y.arrow"])
        inner.parent.mkdir(exist_ok=True)
        os.mkfifo(inner) if kind == "fifo-in-folder" else socket.socket(socket.AF_UNIX).bind(str(inner))
    with pytest.raises(InputError) as e:
        dataset.read_rows(path, ByteTokenizer())
    line = one_line(e)
    assert "not a dataset file" in line or "inside the dataset folder" in line, line


def case_nesting(rng: random.Random, tmp: Path, trained: Path) -> None:
    depth = rng.choice([dataset.MAX_DEPTH + 1, 1000, rng.randrange(65, 200_000), 100_000])
    at = rng.randrange(1, 5)
    open_, close = rng.choice([("[", "]"), ('{"a":', "}"), ("[{\"a\":", "}]")])
    rows = [json.dumps({"prompt": "hi" * i, "completion": "there"}) for i in range(1, 5)]
    rows.insert(at - 1, '{"prompt": ' + open_ * depth + "1" + close * depth + ', "completion": "x"}')
    data = tmp / "deep.jsonl"
    data.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError) as e:
        dataset.read_rows(data, ByteTokenizer())
    assert one_line(e).startswith(f"{data}:{at}: nested deeper than")


def case_template(rng: random.Random, tmp: Path, trained: Path, monkeypatch) -> None:
    monkeypatch.setattr(dataset, "TEMPLATE_SECONDS", 0.3)
    template, said = rng.choice([
        ("{% for m in messages %}{{ m.content }", "the chat template failed"),
        ("{{ raise_exception('no system role') }}", "no system role"),
        ("{{ messages[7].content }}", "the chat template failed"),
        ("{{ messages[0].content.upper().nope() }}", "the chat template failed"),
        ("{% for a in range(99999) %}{% for b in range(99999) %}{{ a }}{% endfor %}{% endfor %}", "took longer than 0.3 s"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "the chat template failed"),
    ])
    tok = _bos_tokenizer(True)
    tok.chat_template = template
    data = tmp / "chat.jsonl"
    data.write_text(json.dumps(ROW) + "\n")
    with pytest.raises(InputError) as e:
        dataset.read_rows(data, tok)
    line = one_line(e)
    assert line.startswith(f"{data}:1: messages: ") and said in line, line


def case_unwritable(rng: random.Random, tmp: Path, trained: Path) -> None:
    (tmp / "a-file").write_text("mine")
    where = rng.choice(["/sys/kd-x", "/proc/kd-x", str(tmp / "a-file" / "x"), str(tmp / "a-file")])
    check, flag = rng.choice([(lambda p: files.check_output(Path(p) / "m.json" if rng.random() < 0.5 else p, False, "--metrics-out"), "--metrics-out"),
                              (lambda p: save.check_output_dir(Path(p) / "out", False, "--output-dir"), "--output-dir"),
                              (lambda p: save.check_checkpoint_dir(Path(p) / "ckpt", "--checkpoint-dir"), "--checkpoint-dir")])
    with pytest.raises(InputError) as e:
        check(where)
    assert one_line(e).startswith(flag)
    assert (tmp / "a-file").read_text() == "mine" and sorted(p.name for p in tmp.iterdir()) == ["a-file"]


@pytest.mark.parametrize("case, kind", DRAWN, ids=[f"{i}-{k}" for i, k in DRAWN])
def test_fuzz(case, kind, tmp_path, request, capfd, monkeypatch, deadline):
    rng = random.Random(f"{SEED}:{case}")  # the case's own draws, apart from the draw of its class
    trained = request.getfixturevalue("trained") if kind in ("look-alike", "flipped", "truncated", "settings") else None
    fn = globals()[f"case_{kind.replace('-', '_')}"]
    fn(rng, tmp_path, trained, monkeypatch) if kind == "template" else fn(rng, tmp_path, trained)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, err[-3000:]
    assert all(ln.startswith("warning: ") for ln in err.splitlines() if ln.strip()), err[-3000:]  # what is said is one line each


def test_every_class_is_drawn():
    assert {k for _, k in DRAWN} == set(CLASSES)
