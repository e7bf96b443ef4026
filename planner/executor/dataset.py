"""Local dataset files, read with the `datasets` library, as (prompt ids, completion ids) rows.

Formats: a JSONL (or JSON) file (`load_dataset("json")`), a Parquet file (`load_dataset("parquet")`),
or a folder written by `Dataset.save_to_disk` (`load_from_disk`; a `DatasetDict` gives its `train`
split). Columns as TRL's GKD and distillation datasets have them:

- `messages`: a chat, the last message the assistant's completion;
- `prompt` and `completion`: text, token ids, or (conversational) lists of messages.

A chat is rendered as TRL does: the prompt with the chat template and the generation prompt, the
completion as what the template adds after it for the assistant's turn; the template writes its
own BOS, so the rendered text is encoded without special tokens (no second BOS). A plain-text
prompt gets the tokenizer's BOS, a completion none. Without a chat template (the byte-level
tokenizer) a chat is written as `role: content` lines.

Every problem is one `InputError` line naming the file, and the row (`FILE:N` for a JSONL line
N, `FILE: row N` otherwise) and the field.

Before a reader sees a path it is checked (`check_source`): a pipe, device or socket (the file, or
one inside a saved folder) is refused, since a reader would wait on it forever; a JSON line nested
deeper than `MAX_DEPTH` levels is refused, since pyarrow's reader overflows its stack on one (a
segfault at 10,000 levels). The file is read by content: `datasets` builds it in a temporary cache
of its own, removed afterwards (its shared cache is keyed by path and mtime, and served a file
rewritten under the same mtime from the old rows). An exception inside a reader is one line naming
the file, and a chat template gets `TEMPLATE_SECONDS` per row (a template's loops are a program).
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from planner.inputs.errors import InputError

FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
COLUMNS = "`messages` (chat), or `prompt` and `completion`"
MAX_DEPTH = 64  # JSON nesting a row may have (a chat row needs 3, token ids 1)
TEMPLATE_SECONDS = 10.0  # one chat-template rendering (a row)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def _special(path: Path) -> str | None:
    """What a path is when it is not a regular file or folder (following symlinks), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise InputError(f"{path}: cannot read: {(e.strerror or str(e)).lower()}") from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return {stat.S_ISFIFO(mode): "a pipe (FIFO)", stat.S_ISSOCK(mode): "a socket", stat.S_ISCHR(mode): "a character device",
            stat.S_ISBLK(mode): "a block device"}.get(True, "not a regular file")


def check_source(path: Path) -> None:
    """Refuse, in one line naming the file, what would block or crash a reader: a special file
    (also inside a saved folder), and a JSON line nested deeper than MAX_DEPTH."""
    what = _special(path)
    if what:
        raise InputError(f"{path}: is {what}, not a dataset file; give a regular .jsonl or .parquet file, or a folder "
                         "written by `Dataset.save_to_disk`")
    if path.is_dir():
        for inner in sorted(path.rglob("*")):
            what = _special(inner)
            if what:
                raise InputError(f"{inner}: is {what} inside the dataset folder {path}; a saved dataset holds regular files only")
        return
    if FORMATS.get(path.suffix.lower()) == "json":
        check_nesting(path)


def check_nesting(path: Path, limit: int = MAX_DEPTH) -> None:
    """The first line of a JSON(L) file nested deeper than `limit` (brackets outside strings), as one
    line; a line with fewer brackets than that is skipped unparsed."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.count(b"[") + line.count(b"{") <= limit:
                continue
            depth = 0
            for m in _BRACKET.finditer(_STRING.sub(b"", line)):
                depth += 1 if m.group() in (b"[", b"{") else -1
                if depth > limit:
                    raise InputError(f"{path}:{n}: nested deeper than {limit} levels; a row is an object of text, "
                                     "token ids or messages")


@contextmanager
def time_bound(seconds: float, what: str):
    """Raise `InputError(what ...)` in this (main) thread once `seconds` pass (SIGALRM); elsewhere, no
    bound. The previous handler, and an outer alarm with its time left, are restored on the way out,
    so nothing fires later (the collectives run after the rows are read)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _expired(signum, frame):
        raise InputError(f"{what} took longer than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _expired)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)  # an outer alarm's time left (0: none)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if outer:  # the outer alarm goes on, with what was left of it
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


def open_dataset(path: Path):
    """The `datasets.Dataset` of a local file or saved folder; a file it cannot read is one line."""
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    check_source(path)
    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 - FileNotFoundError for a plain folder, others for a damaged one
            raise InputError(f"{path}: not a dataset folder ({_first_line(_cause(e))}); give a folder written by "
                             "`Dataset.save_to_disk`, or a .jsonl or .parquet file") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise InputError(f"{path}: splits: no `train` split in this DatasetDict (it has {', '.join(ds)}); "
                                 "save the split to use with `ds[NAME].save_to_disk(FOLDER)`")
            ds = ds["train"]
        return ds
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown dataset format {path.suffix or '(no suffix)'!r}; give a .jsonl, .json or .parquet "
                         "file, or a folder written by `Dataset.save_to_disk`")
    try:
        with tempfile.TemporaryDirectory(prefix="kd-planner-dataset.") as cache:  # by content: never a stale build
            return datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=cache, keep_in_memory=True)
    except Exception as e:  # noqa: BLE001 - pyarrow and datasets raise many types for one unreadable file
        if kind == "json":
            scan_json_lines(path)  # names the line, where it can
        raise InputError(f"{path}: not a readable {kind} dataset ({_first_line(_cause(e))})") from None


def scan_json_lines(path: Path) -> None:
    """After `datasets` failed on a JSONL file: the first line that is not UTF-8, not JSON or not an
    object (then the caller reports `datasets`' own error)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise InputError(f"{path}: not UTF-8 text (line {line}, byte {e.start})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: not JSON ({e.msg})") from None
        except RecursionError:
            raise InputError(f"{where}: not JSON (nesting too deep)") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object with {COLUMNS}, got {_kind(row)}")
        check_row(row, where)


def check_columns(path: Path, names: list[str]) -> None:
    if "messages" not in names and not {"prompt", "completion"} <= set(names):
        raise InputError(f"{path}: columns: expected {COLUMNS}; found {', '.join(names) or 'none'}")


def check_row(row: dict, where: str) -> None:
    """A row's structure (not yet its tokens); one line naming `where` and the field."""
    if row.get("messages") is not None:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs or not all(is_message(m) for m in msgs):
            raise InputError(f"{where}: messages: expected a list of {{\"role\": ..., \"content\": ...}} objects with text values")
        if msgs[-1]["role"] != "assistant":
            raise InputError(f"{where}: messages: the last message must be the assistant's completion")
        return
    if row.get("prompt") is None or row.get("completion") is None:
        raise InputError(f"{where}: expected {COLUMNS}")
    for key in ("prompt", "completion"):
        value = row[key]
        if not (isinstance(value, str) or _ids_list(value) or is_chat(value)):
            raise InputError(f"{where}: {key}: expected text, a list of token ids or a list of messages, got {_kind(value)}")


def read_rows(path: str | Path, tokenizer, vocab: int | None = None) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) per row of a local dataset file or folder."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: dataset not found; give a local .jsonl or .parquet file, or a folder written by "
                         f"`Dataset.save_to_disk`, with {COLUMNS}")
    ds = open_dataset(path)
    check_columns(path, list(ds.column_names))
    line = path.suffix.lower() in (".jsonl", ".json") and not path.is_dir()
    rows = []
    for i, row in enumerate(_rows(ds, path)):
        where = f"{path}:{i + 1}" if line else f"{path}: row {i + 1}"
        check_row(row, where)
        if row.get("messages") is not None:
            prompt, completion = chat_pair(row["messages"][:-1], row["messages"][-1:], tokenizer, where, "messages")
            rows.append((encode(prompt, tokenizer, where, "messages", vocab, special=not templated(tokenizer)),
                         encode(completion, tokenizer, where, "messages", vocab, special=False)))
            continue
        p, c, special = row["prompt"], row["completion"], True
        if is_chat(p):  # conversational prompt-completion
            if not (isinstance(c, str) or is_chat(c)):
                raise InputError(f"{where}: completion: token ids after a conversational prompt; give text or messages")
            p, c = chat_pair(p, c if is_chat(c) else [{"role": "assistant", "content": c}], tokenizer, where, "prompt")
            special = not templated(tokenizer)
        elif is_chat(c):
            raise InputError(f"{where}: completion: messages after a plain prompt; give the prompt as messages too, or text")
        rows.append((encode(p, tokenizer, where, "prompt", vocab, special=special),
                     encode(c, tokenizer, where, "completion", vocab, special=False)))
    if not rows:
        raise InputError(f"{path}: no samples")
    return rows


def _rows(ds, path: Path):
    """The dataset's rows as dicts; a row Arrow cannot turn into Python (text that is not UTF-8) is one line."""
    try:
        yield from ds
    except UnicodeDecodeError:
        if path.suffix.lower() in (".jsonl", ".json") and path.is_file():
            scan_json_lines(path)
        raise InputError(f"{path}: not UTF-8 text in a text column") from None
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a reader that fails on a row: one line naming the file
        raise InputError(f"{path}: the reader failed ({_first_line(_cause(e))})") from None


def chat_pair(prompt: list[dict], completion: list[dict], tokenizer, where: str, field: str) -> tuple[str, str]:
    """(prompt text, completion text) of a chat: the prompt rendered with the generation prompt, the
    completion what rendering the whole chat adds after it (as TRL's collators split a chat)."""
    prompt, completion = _plain(prompt), _plain(completion)
    try:
        if not templated(tokenizer):
            return "".join(f"{m['role']}: {m['content']}\n" for m in prompt) + "assistant: ", "".join(m["content"] for m in completion)
        with time_bound(TEMPLATE_SECONDS, f"{where}: {field}: the chat template"):
            head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            whole = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a chat template that fails on this row
        raise InputError(f"{where}: {field}: the chat template failed ({_first_line(e)})") from None
    return head, whole[len(head):] if whole.startswith(head) else "".join(m["content"] for m in completion)


def encode(value, tokenizer, where: str, field: str, vocab: int | None, special: bool) -> list[int]:
    """Token ids of text (with the tokenizer's special tokens if `special`) or of a list of ids,
    each checked against `vocab`."""
    if _ids_list(value):
        ids = list(value)
    else:
        try:
            ids = tokenizer.encode(value, add_special_tokens=special) if hasattr(tokenizer, "add_special_tokens") else tokenizer.encode(value)
        except Exception as e:  # noqa: BLE001 - a tokenizer that fails on this row
            raise InputError(f"{where}: {field}: the tokenizer failed on this row ({_first_line(e)})") from None
        ids = list(ids)
    if vocab is not None:
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise InputError(f"{where}: {field}: token id {bad} is outside the models' vocabulary (0 to {vocab - 1})")
    return ids


def _plain(msgs: list[dict]) -> list[dict]:
    """Messages without the empty keys an Arrow struct column adds (a template would print `None`)."""
    return [{k: v for k, v in m.items() if v is not None} for m in msgs]


def templated(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def is_message(m) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)


def is_chat(value) -> bool:
    return isinstance(value, list) and bool(value) and all(is_message(m) for m in value)


def _ids_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(type(value), "a number")


def _cause(e: BaseException) -> BaseException:
    """The innermost cause (`datasets` wraps pyarrow's error in DatasetGenerationError)."""
    while e.__cause__ is not None and e.__cause__ is not e:
        e = e.__cause__
    return e


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__
