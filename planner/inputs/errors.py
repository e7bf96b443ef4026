"""One exception type for every bad input, printed by the CLI as `file: key.path: message` lines."""

from __future__ import annotations

from pydantic import ValidationError


class InputError(Exception):
    """A user input (file, flag or name) that cannot be used.

    `lines` are complete, user-facing lines; the CLI prints them one per line and exits 1.
    """

    def __init__(self, lines: list[str] | str):
        self.lines = [lines] if isinstance(lines, str) else list(lines)
        super().__init__("\n".join(self.lines))


def said_elsewhere(lines: list[str] | str) -> InputError:
    """An `InputError` another rank prints: no lines of its own, `held` keeps them; `planner run`
    waits for that rank (torchrun stops this one once it exits) and prints them itself only if it
    is still running then, so that a failure is never without its line."""
    e = InputError([])
    e.held = InputError(lines).lines
    return e


def _loc(loc: tuple, prefix: str) -> str:
    parts = [prefix] if prefix else []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        else:
            parts.append(str(item))
    return ".".join(parts) or "(top level)"


def from_validation(err: ValidationError, source: str, prefix: str = "") -> InputError:
    """Turn a pydantic error into one `source: key.path: message` line per problem."""
    lines = []
    for e in err.errors(include_url=False):
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        elif msg.startswith("Assertion failed, "):
            msg = msg[len("Assertion failed, "):]
        lines.append(f"{source}: {_loc(tuple(e['loc']), prefix)}: {msg}")
    return InputError(lines)
