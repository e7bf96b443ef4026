"""One safe way to read and write the files a command is given.

Reading (`read_bytes`, `read_text`): regular files only (a FIFO would block and /dev/zero would
never end), at most `limit` bytes, counted while reading (not after), and text decoded as UTF-8
with a one-line error.

Writing (`check_outputs`, `write_files`, `write_text`): every command that writes
1. checks all its outputs before the work starts (`check_outputs`): an existing path or a dangling
   symlink is refused unless `force`; a directory, a missing parent folder or a folder it cannot
   write in (probed by creating and removing a temporary file there) is refused outright; two
   outputs may not be the same file;
2. writes each file to a temporary file in the same folder (flushed and fsynced) and renames it
   into place, so a full disk or a crash leaves the old file or none, never a truncated one; the
   rename is `os.link` (refuses atomically if the path appeared meanwhile) unless `force`;
3. on any failure removes its temporary files and the files it had already put in place, and
   raises one `InputError` line.

A symlink given as an output is replaced by the new file (with `force`), never written through.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from planner.inputs.errors import InputError

MAX_BYTES = 4 * 1024 * 1024  # plans, topologies, jobs, model configs, metrics


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


def read_bytes(path: str | Path, limit: int = MAX_BYTES) -> bytes:
    """The bytes of the regular file at `path`, refused past `limit` bytes."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {(e.strerror or str(e)).lower()}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InputError(f"{path}: is a directory, expected a file")
        if not stat.S_ISREG(mode):
            raise InputError(f"{path}: not a regular file (a FIFO, device or socket); give a file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read: {(e.strerror or str(e)).lower()}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputError(f"{path}: file is larger than {_mib(limit)}")
    return data


def read_text(path: str | Path, limit: int = MAX_BYTES) -> str:
    """The UTF-8 text of the regular file at `path` (a leading byte-order mark is dropped)."""
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise InputError(f"{path}: not UTF-8 text (line {line}, byte {e.start}); is it the right file?") from None


def _flagged(flag: str | None, path: Path | str) -> str:
    return f"{flag}: {path}" if flag else str(path)


def check_output(path: str | Path, force: bool = False, flag: str | None = None) -> Path:
    """Refuse `path` as an output, with one line, unless a new file can be put there."""
    where = _flagged(flag, path)
    if str(path).endswith(("/", os.sep)):
        raise InputError(f"{where}: names a folder; give a file name")
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise InputError(f"{where}: is a directory; give a file name")
    if path.is_dir():
        raise InputError(f"{where}: is a directory; give a file name")
    if path.is_symlink() and not path.exists():
        if not force:
            raise InputError(f"{where}: is a symlink to a missing file; pass --force to replace the link")
    elif path.exists():
        if not path.is_file():
            raise InputError(f"{where}: exists and is not a regular file")
        if not force:
            raise InputError(f"{where}: exists; pass --force to overwrite it")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"{where}: the folder {parent} does not exist" if not parent.exists() else f"{where}: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=f".{path.name[:100]}.", suffix=".check")
    except OSError as e:
        raise InputError(f"{where}: cannot write in the folder {parent}: {_why(e)}") from None
    os.close(fd)
    os.unlink(probe)
    return path


def check_outputs(outputs: dict[str, str | Path | None], force: bool = False) -> dict[str, Path]:
    """`check_output` for each `{flag: path}` given (None: not asked for); no two may be one file."""
    seen: dict[Path, str] = {}
    done = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        done[flag] = check_output(path, force, flag)
        key = Path(os.path.abspath(path))
        if key.parent.is_dir():
            key = key.parent.resolve() / key.name
        if key in seen:
            raise InputError(f"{flag} and {seen[key]} name the same file ({path}); give two different paths")
        seen[key] = flag
    return done


def _why(e: OSError) -> str:
    if e.errno == errno.EROFS:
        return "read-only file system"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return (e.strerror or str(e)).lower()


def _mode(executable: bool) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if executable else 0o666) & ~umask


def write_files(files: Iterable[tuple[str | Path, bytes | str, bool]], force: bool = False) -> list[Path]:
    """Write each `(path, content, executable)` all-or-nothing: every content goes to a temporary
    file in its path's folder first; only when all are written are they renamed into place."""
    files = [(Path(p), c.encode() if isinstance(c, str) else c, x) for p, c, x in files]
    for path, _, _ in files:  # again: the work may have taken a while
        check_output(path, force)
    staged: list[tuple[Path, str]] = []
    placed: list[Path] = []  # put in place by this call where there was no file before
    current = files[0][0] if files else None
    try:
        for current, content, executable in files:
            fd, tmp = tempfile.mkstemp(dir=current.parent, prefix=f".{current.name[:100]}.", suffix=".tmp")
            staged.append((current, tmp))
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _mode(executable))
        for current, tmp in staged:
            new = not os.path.lexists(current)
            _place(tmp, current, force)
            if new:
                placed.append(current)
    except BaseException as e:
        for _, tmp in staged:
            if os.path.lexists(tmp):
                os.unlink(tmp)
        for path in placed:  # a file this call overwrote (--force) stays, whole, with its new content
            path.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise InputError(f"{current}: cannot write: {_why(e)}; nothing was written") from None
        raise
    return [p for p, _, _ in files]


def _place(tmp: str, path: Path, force: bool) -> None:
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if `path` appeared since the check: no clobbering, even in a race
    except FileExistsError:
        raise InputError(f"{path}: appeared while this command ran; pass --force to overwrite it") from None
    except OSError:  # a file system without hard links
        if os.path.lexists(path):
            raise InputError(f"{path}: appeared while this command ran; pass --force to overwrite it") from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def write_text(path: str | Path, text: str, force: bool = False, executable: bool = False) -> Path:
    """`write_files` for one file."""
    return write_files([(path, text, executable)], force)[0]
