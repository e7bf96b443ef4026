"""Reading YAML and JSON input files safely.

Only `yaml.SafeLoader` is used. A hostile file must fail fast, not hang: the loader counts
aliases (an alias bomb expands exponentially once anything walks the result) and nesting depth,
and files are read by `planner.files.read_text` (regular files only, size capped while reading).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent

from planner.files import MAX_BYTES, read_text
from planner.inputs.errors import InputError
MAX_ALIASES = 100
MAX_DEPTH = 64


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader that refuses many aliases and deep nesting."""

    def __init__(self, stream):
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (refusing a possible alias bomb)")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.YAMLError(f"nesting deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; any problem becomes a one-line `InputError` naming `source`."""
    if len(text.encode()) > MAX_BYTES:
        raise InputError(f"{source}: file is larger than {MAX_BYTES // (1024 * 1024)} MiB")
    try:
        return yaml.load(text, Loader=_GuardedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        where = f"line {e.problem_mark.line + 1}: " if e.problem_mark else ""
        raise InputError(f"{source}: not valid YAML: {where}{e.problem}") from None
    except yaml.YAMLError as e:
        raise InputError(f"{source}: not valid YAML: {e}") from None
    except RecursionError:
        raise InputError(f"{source}: not valid YAML: nesting too deep") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits (Python's int conversion limit)
        raise InputError(f"{source}: not valid YAML: {e}") from None


def read_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON file that must hold a mapping at the top level."""
    text = read_text(path)
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON: line {e.lineno}: {e.msg}") from None
        except (ValueError, RecursionError) as e:  # an integer of more than 4300 digits; nesting too deep
            raise InputError(f"{path}: not valid JSON: {e or 'nesting too deep'}") from None
    else:
        data = parse_yaml(text, str(path))
    if data is None:
        raise InputError(f"{path}: file is empty")
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of keys to values at the top level, got {type(data).__name__}")
    return data


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
