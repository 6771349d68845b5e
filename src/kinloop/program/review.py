"""What an operator reviews before activating a program version: each problem at its line of
the YAML, the text changed line by line, and what changed concept by concept.

Pure functions over text and parsed files; the console and the API call them.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from kinloop.domain.errors import Issue
from kinloop.program.schema import ProgramFile

_STEP = re.compile(r"\[(\d+)\]|\.?([^.\[\]]+)")
_YAML_LINE = re.compile(r"\bline (\d+)\b")


def path_steps(path: str) -> list[str | int]:
    """`rules[3].cap.per_day` as steps: `["rules", 3, "cap", "per_day"]`."""
    steps: list[str | int] = []
    for index, name in _STEP.findall(path):
        steps.append(int(index) if index else name)
    return steps


def line_of(text: str, path: str) -> int | None:
    """The line (1-based) of the YAML `text` where the thing at `path` is written, or where its
    nearest written parent is (a missing field is reported at its parent); None when the text
    is not YAML or the path names nothing in it."""
    try:
        node: yaml.Node | None = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line = None
    for step in path_steps(path):
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == step:
                    line = key.start_mark.line + 1
                    child = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            child = node.value[step]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


@dataclass(frozen=True, slots=True)
class Located:
    """A problem of a program file, with the line it is on when that is known."""

    path: str
    message: str
    line: int | None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


def locate(text: str, issues: list[Issue]) -> list[Located]:
    """Each issue with its line in `text` (YAML syntax errors carry their own)."""
    out = []
    for issue in issues:
        line = line_of(text, issue.path) if issue.path else None
        if line is None and not issue.path:
            found = _YAML_LINE.search(issue.message)
            line = int(found.group(1)) if found else None
        out.append(Located(issue.path, issue.message, line))
    return out


LineKind = Literal["file", "hunk", "add", "del", "same"]


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a unified diff, with what it is (so a page can colour it)."""

    kind: LineKind
    text: str


def unified(old: str, new: str, *, old_name: str, new_name: str, context: int = 3) -> list[DiffLine]:
    """The unified diff of two program files, line by line; empty when they are the same."""
    out: list[DiffLine] = []
    for raw in difflib.unified_diff(
        old.splitlines(), new.splitlines(), fromfile=old_name, tofile=new_name, n=context, lineterm=""
    ):
        kind: LineKind
        if len(out) < 2 and raw.startswith(("---", "+++")):
            kind = "file"
        elif raw.startswith("@@"):
            kind = "hunk"
        elif raw.startswith("+"):
            kind = "add"
        elif raw.startswith("-"):
            kind = "del"
        else:
            kind = "same"
        out.append(DiffLine(kind, raw))
    return out


ChangeKind = Literal["added", "removed", "changed"]


@dataclass(frozen=True, slots=True)
class Change:
    """One concept changed between two versions: `rules` `daily_check_in` changed (limit)."""

    section: str
    key: str | None
    kind: ChangeKind
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        what = f"{self.section} {self.key!r}" if self.key else self.section
        detail = f" ({', '.join(self.fields)})" if self.fields else ""
        return f"{what} {self.kind}{detail}"


def summary(old: ProgramFile, new: ProgramFile) -> list[Change]:
    """What changed from `old` to `new`, by section and key, in the order of the file format."""
    a = old.model_dump(mode="json", exclude_none=True)
    b = new.model_dump(mode="json", exclude_none=True)
    out: list[Change] = []
    for section in ProgramFile.model_fields:
        _compare(section, a.get(section), b.get(section), out)
    return out


def _keyed(value: Any) -> dict[str, Any] | None:
    """A list of mappings that all have a `key`, by key (None for anything else)."""
    if not isinstance(value, list) or not all(isinstance(v, dict) and "key" in v for v in value):
        return None
    return {str(v["key"]): v for v in value}


def _changed_fields(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k))


def _compare(section: str, a: Any, b: Any, out: list[Change]) -> None:
    if a == b:
        return
    if a in (None, [], {}):
        out.append(Change(section, None, "added"))
        return
    if b in (None, [], {}):
        out.append(Change(section, None, "removed"))
        return
    ka, kb = _keyed(a), _keyed(b)
    if ka is not None and kb is not None:
        for key in dict.fromkeys([*ka, *kb]):
            if key not in kb:
                out.append(Change(section, key, "removed"))
            elif key not in ka:
                out.append(Change(section, key, "added"))
            elif ka[key] != kb[key]:
                out.append(Change(section, key, "changed", _changed_fields(ka[key], kb[key])))
        order_a = [k for k in ka if k in kb]
        order_b = [k for k in kb if k in ka]
        if order_a != order_b:
            out.append(Change(section, None, "changed", ("order",)))
        return
    if isinstance(a, dict) and isinstance(b, dict):
        # A section of its own (the ladder): its keyed lists in detail, its other fields by name.
        plain = []
        for name in dict.fromkeys([*a, *b]):
            if a.get(name) == b.get(name):
                continue
            if _keyed(a.get(name)) is not None and _keyed(b.get(name)) is not None:
                _compare(f"{section}.{name}", a[name], b[name], out)
            else:
                plain.append(name)
        if plain:
            out.append(Change(section, None, "changed", tuple(plain)))
        return
    out.append(Change(section, None, "changed"))
