"""Events: facts from outside, checked against the program's declared event types."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from kinloop.domain.amounts import MAX_MINOR
from kinloop.domain.errors import InvalidAttribute, InvalidInput, UnknownEventType
from kinloop.domain.program import AttributeSpec, Program

MAX_ID_LENGTH = 200
_EARLIEST = datetime(2, 1, 1, tzinfo=UTC)
_LATEST = datetime(9998, 12, 31, tzinfo=UTC)
# Clocks of senders drift; an event a little in the future is accepted, a day ahead is not.
FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event; `occurred_at` is when it happened, always timezone-aware."""

    event_id: str
    member_id: str
    type: str
    occurred_at: datetime
    attributes: Mapping[str, Any]


def parse_timestamp(value: Any, *, field: str) -> datetime:
    """An ISO 8601 timestamp with an offset (`Z` allowed)."""
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidInput(f"{value!r} is not an ISO 8601 timestamp", field=field) from exc
    else:
        raise InvalidInput("must be an ISO 8601 timestamp string", field=field)
    if ts.tzinfo is None:
        raise InvalidInput(f"{value!r} has no time zone offset (add Z or +hh:mm)", field=field)
    if not _EARLIEST <= ts <= _LATEST:
        # Keeps every later time zone conversion within the calendar.
        raise InvalidInput(f"{value!r} is outside the supported years 0002 to 9998", field=field)
    return ts


def _identifier(raw: Mapping[str, Any], name: str) -> str:
    value = raw.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} is required and must be a non-empty string", field=name)
    if len(value) > MAX_ID_LENGTH:
        raise InvalidInput(f"{name} is longer than {MAX_ID_LENGTH} characters", field=name)
    return value


def _from_text(spec: AttributeSpec, value: str) -> Any:
    # CSV cells are text: read integers and booleans from their usual spellings.
    if spec.type == "integer" and value.strip().lstrip("+-").isdigit():
        return int(value)
    if spec.type == "boolean" and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _coerce(spec: AttributeSpec, value: Any, text_values: bool = False) -> Any:
    field = f"attributes.{spec.name}"
    t = spec.type
    if text_values and isinstance(value, str):
        value = _from_text(spec, value)
    if t == "string":
        if isinstance(value, str):
            return value
    elif t == "boolean":
        if isinstance(value, bool):
            return value
    elif t == "integer":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, Decimal) and value == value.to_integral_value():
            return int(value)
    elif t == "decimal":
        if isinstance(value, Decimal) and value.is_finite():
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return Decimal(value)
        if isinstance(value, float) and math.isfinite(value):
            return Decimal(repr(value))
        if isinstance(value, str):
            try:
                d = Decimal(value)
            except InvalidOperation:
                pass
            else:
                if d.is_finite():
                    return d
    elif t == "timestamp":
        return parse_timestamp(value, field=field)
    raise InvalidAttribute(f"attribute {spec.name!r} must be {_ARTICLE[t]} {t}, got {_describe(value)}", field=field)


_ARTICLE = {"integer": "an", "decimal": "a", "string": "a", "boolean": "a", "timestamp": "a"}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, int | float | Decimal):
        return f"number {value}"
    return type(value).__name__


def _too_large(value: int | Decimal) -> bool:
    if isinstance(value, Decimal) and value.adjusted() > 30:
        return True  # compared without arithmetic, which would overflow
    return bool(value > MAX_MINOR or value < -MAX_MINOR)


def parse_event(program: Program, raw: Mapping[str, Any], *, now: datetime, text_values: bool = False) -> Event:
    """Validate a raw event (as decoded from JSON) against the program's event types.

    With `text_values`, attribute values may be text (CSV) and are read by their declared type.
    """
    if not isinstance(raw, Mapping):
        raise InvalidInput("an event must be a JSON object")
    event_id = _identifier(raw, "event_id")
    member_id = _identifier(raw, "member_id")
    type_key = raw.get("type")
    if not isinstance(type_key, str) or not type_key:
        raise InvalidInput("type is required", field="type")
    event_type = program.event_types.get(type_key)
    if event_type is None:
        known = ", ".join(sorted(program.event_types))
        raise UnknownEventType(f"unknown event type {type_key!r} (this program knows: {known})", field="type")
    if "occurred_at" not in raw:
        raise InvalidInput("occurred_at is required", field="occurred_at")
    occurred_at = parse_timestamp(raw["occurred_at"], field="occurred_at")
    if occurred_at > now + FUTURE_SKEW:
        raise InvalidInput(f"occurred_at {raw['occurred_at']} is in the future", field="occurred_at")
    given = raw.get("attributes") or {}
    if not isinstance(given, Mapping):
        raise InvalidInput("attributes must be an object", field="attributes")
    attributes = dict(given)
    for name, spec in event_type.attributes.items():
        value = given.get(name)
        if value is None or (text_values and value == ""):
            if spec.required:
                raise InvalidAttribute(
                    f"attribute {name!r} is required for {type_key!r} events",
                    field=f"attributes.{name}",
                )
            attributes.pop(name, None)
            continue
        coerced = _coerce(spec, value, text_values)
        if spec.type in ("integer", "decimal") and _too_large(coerced):
            raise InvalidAttribute(
                f"attribute {name!r} is {value}, larger than kinloop accepts ({MAX_MINOR:.0e})",
                field=f"attributes.{name}",
            )
        attributes[name] = coerced
    return Event(event_id, member_id, type_key, occurred_at, attributes)
