"""The pure core stays pure: src/kinloop/domain imports only the standard library, the CEL
binding and itself, and never reads the clock. A layering rule holds only where a check enforces it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parent.parent / "src" / "kinloop" / "domain"
ALLOWED_THIRD_PARTY = {"cel"}
# Calls that read the wall clock; time is passed in as `now`.
CLOCK_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
    ("time", "localtime"),
    ("time", "gmtime"),
}
CLOCK_NAMES = {"time", "time_ns", "monotonic", "perf_counter", "localtime", "gmtime"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(DOMAIN.parent.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _allowed(name: str) -> bool:
    top = name.split(".")[0]
    if top == "kinloop":
        return name == "kinloop.domain" or name.startswith("kinloop.domain.")
    return top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Every forbidden import or clock read in one module's source, as `line: what`."""
    tree = ast.parse(source)
    found: list[str] = []
    clock_imports: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _allowed(alias.name):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module, is_package)
            names = [f"{target}.{a.name}" for a in node.names] if target == "kinloop" else [target]
            for name in names:
                if not _allowed(name):
                    found.append(f"{node.lineno}: from {target} import ...")
            if target == "time":
                clock_imports |= {a.asname or a.name for a in node.names if a.name in CLOCK_NAMES}
        elif isinstance(node, ast.Call):
            dotted = _dotted(node.func)
            if dotted is None:
                continue
            parts = dotted.split(".")
            if len(parts) >= 2 and (parts[-2], parts[-1]) in CLOCK_CALLS:
                found.append(f"{node.lineno}: calls {dotted}()")
            elif len(parts) == 1 and parts[0] in clock_imports:
                found.append(f"{node.lineno}: calls {dotted}() from time")
    return found


def domain_modules() -> list[Path]:
    return sorted(DOMAIN.rglob("*.py"))


def test_the_check_sees_the_whole_domain() -> None:
    names = {_module_name(p) for p in domain_modules()}
    assert {
        "kinloop.domain",
        "kinloop.domain.amounts",
        "kinloop.domain.errors",
        "kinloop.domain.events",
        "kinloop.domain.ledger",
        "kinloop.domain.periods",
        "kinloop.domain.program",
        "kinloop.domain.rules",
        "kinloop.domain.tiers",
    } <= names


@pytest.mark.parametrize("path", domain_modules(), ids=lambda p: p.name)
def test_domain_imports_only_stdlib_cel_and_itself_and_never_reads_the_clock(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert violations(source, _module_name(path), is_package=path.name == "__init__.py") == []


# The checker itself must be able to fail: each of these is one violation.
@pytest.mark.parametrize(
    "source",
    [
        "import sqlalchemy",
        "from sqlalchemy import select",
        "from pydantic import BaseModel",
        "import yaml",
        "import typer",
        "from fastapi import FastAPI",
        "import kinloop.store.tables",
        "from kinloop.services import ledger",
        "from kinloop import cli",
        "from kinloop.program.loader import parse_program",
        "from ..services import book",
        "from datetime import datetime\nx = datetime.now()",
        "import datetime\nx = datetime.datetime.now(datetime.UTC)",
        "from datetime import date\nx = date.today()",
        "import time\nx = time.time()",
        "from time import time\nx = time()",
        "from time import monotonic as tick\nx = tick()",
    ],
)
def test_the_checker_catches_forbidden_imports_and_clock_reads(source: str) -> None:
    assert len(violations(source, "kinloop.domain.example")) == 1


@pytest.mark.parametrize(
    "source",
    [
        "from __future__ import annotations",
        "import cel",
        "from datetime import UTC, datetime, timedelta\nx = datetime(2026, 1, 1, tzinfo=UTC)",
        "from kinloop.domain.amounts import to_minor",
        "from . import amounts",
        "from .ledger import Lot",
        "import zoneinfo, decimal, dataclasses",
        "def f(now):\n    return now.date()",
    ],
)
def test_the_checker_allows_the_standard_library_cel_and_the_domain(source: str) -> None:
    assert violations(source, "kinloop.domain.example") == []
