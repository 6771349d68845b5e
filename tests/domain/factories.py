"""Keyword-only factories for domain tests: programs from small YAML strings, events, members."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kinloop.domain.events import Event
from kinloop.domain.program import Program
from kinloop.domain.rules import MemberState
from kinloop.program.loader import compile_program, parse_program


def program(text: str) -> Program:
    """Compile a program file given as YAML text."""
    return compile_program(parse_program(text))


def event(
    *,
    event_id: str = "e1",
    member_id: str = "m1",
    type: str = "purchase",
    at: datetime = datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
    attributes: Mapping[str, Any] | None = None,
) -> Event:
    """An already validated event (the engine's input)."""
    return Event(event_id, member_id, type, at, dict(attributes or {}))


def member(*, member_id: str = "m1", **fields: Any) -> MemberState:
    return MemberState(member_id, **fields)
