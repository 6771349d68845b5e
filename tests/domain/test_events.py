"""Events are checked against the program's declared types before any rule sees them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from kinloop.domain.errors import InvalidAttribute, InvalidInput, UnknownEventType
from kinloop.domain.events import parse_event, parse_timestamp
from tests.domain.factories import program

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

PROGRAM = program(
    """
key: shop
name: Shop
currencies:
  - {key: pts, name: Points, kind: points}
event_types:
  - key: purchase
    attributes:
      amount: decimal
      qty: {type: integer, required: false}
      gift: {type: boolean, required: false}
      channel: {type: string, required: false}
      delivered_at: {type: timestamp, required: false}
  - key: check_in
"""
)


def raw(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "e1",
        "member_id": "m1",
        "type": "purchase",
        "occurred_at": "2026-03-01T10:00:00Z",
        "attributes": {"amount": 12},
    }
    base.update(overrides)
    return base


# --- accepted ---------------------------------------------------------------------------------


def test_a_valid_event_is_parsed_with_typed_attributes() -> None:
    # given
    given = raw(attributes={"amount": "12.50", "qty": 3, "gift": False, "channel": "app"})
    # when
    ev = parse_event(PROGRAM, given, now=NOW)
    # then
    assert ev.event_id == "e1"
    assert ev.member_id == "m1"
    assert ev.type == "purchase"
    assert ev.occurred_at == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert ev.attributes == {"amount": Decimal("12.50"), "qty": 3, "gift": False, "channel": "app"}
    assert isinstance(ev.attributes["amount"], Decimal)


def test_integer_ids_are_read_as_text_and_offsets_are_kept() -> None:
    ev = parse_event(PROGRAM, raw(event_id=17, member_id=42, occurred_at="2026-03-01T10:00:00+01:00"), now=NOW)
    assert (ev.event_id, ev.member_id) == ("17", "42")
    assert ev.occurred_at.utcoffset() == timedelta(hours=1)
    assert ev.occurred_at == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_numbers_given_for_a_decimal_become_exact_decimals() -> None:
    assert parse_event(PROGRAM, raw(attributes={"amount": 7}), now=NOW).attributes["amount"] == Decimal(7)
    assert parse_event(PROGRAM, raw(attributes={"amount": 0.1}), now=NOW).attributes["amount"] == Decimal("0.1")


def test_a_whole_decimal_is_accepted_for_an_integer() -> None:
    ev = parse_event(PROGRAM, raw(attributes={"amount": 1, "qty": Decimal("3")}), now=NOW)
    assert ev.attributes["qty"] == 3
    assert type(ev.attributes["qty"]) is int


def test_timestamp_attributes_are_parsed() -> None:
    ev = parse_event(PROGRAM, raw(attributes={"amount": 1, "delivered_at": "2026-03-02T08:00:00Z"}), now=NOW)
    assert ev.attributes["delivered_at"] == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def test_missing_optional_attributes_are_left_out() -> None:
    ev = parse_event(PROGRAM, raw(attributes={"amount": 5, "qty": None}), now=NOW)
    assert ev.attributes == {"amount": Decimal(5)}


def test_an_event_type_without_attributes_needs_none() -> None:
    ev = parse_event(PROGRAM, raw(type="check_in", attributes=None), now=NOW)
    assert ev.attributes == {}


def test_an_event_up_to_five_minutes_ahead_is_accepted() -> None:
    ev = parse_event(PROGRAM, raw(occurred_at="2026-03-01T12:05:00Z"), now=NOW)
    assert ev.occurred_at == NOW + timedelta(minutes=5)


def test_text_values_are_read_by_their_declared_type() -> None:
    # given CSV cells
    given = raw(attributes={"amount": "9.90", "qty": "3", "gift": "TRUE", "channel": ""})
    # when
    ev = parse_event(PROGRAM, given, now=NOW, text_values=True)
    # then
    assert ev.attributes == {"amount": Decimal("9.90"), "qty": 3, "gift": True}


# --- refused ----------------------------------------------------------------------------------


def test_an_unknown_type_lists_the_known_types() -> None:
    with pytest.raises(UnknownEventType) as info:
        parse_event(PROGRAM, raw(type="refund"), now=NOW)
    assert info.value.detail == "unknown event type 'refund' (this program knows: check_in, purchase)"
    assert info.value.field == "type"
    assert info.value.code == "unknown_event_type"


@pytest.mark.parametrize(
    ("attributes", "field", "detail"),
    [
        ({"amount": "ten"}, "attributes.amount", "attribute 'amount' must be a decimal, got string 'ten'"),
        ({"amount": [1]}, "attributes.amount", "attribute 'amount' must be a decimal, got list"),
        ({"amount": 1, "qty": 1.5}, "attributes.qty", "attribute 'qty' must be an integer, got number 1.5"),
        ({"amount": 1, "qty": "3"}, "attributes.qty", "attribute 'qty' must be an integer, got string '3'"),
        ({"amount": 1, "gift": 1}, "attributes.gift", "attribute 'gift' must be a boolean, got number 1"),
        ({"amount": 1, "channel": 5}, "attributes.channel", "attribute 'channel' must be a string, got number 5"),
    ],
)
def test_an_attribute_of_the_wrong_type_is_refused(attributes: dict[str, Any], field: str, detail: str) -> None:
    with pytest.raises(InvalidAttribute) as info:
        parse_event(PROGRAM, raw(attributes=attributes), now=NOW)
    assert info.value.field == field
    assert info.value.detail == detail
    assert info.value.code == "invalid_attribute"


@pytest.mark.parametrize(
    ("attributes", "field", "detail"),
    [
        ({"amount": True}, "attributes.amount", "attribute 'amount' must be a decimal, got boolean true"),
        ({"amount": 1, "qty": True}, "attributes.qty", "attribute 'qty' must be an integer, got boolean true"),
        ({"amount": 1, "qty": False}, "attributes.qty", "attribute 'qty' must be an integer, got boolean false"),
    ],
)
def test_booleans_are_not_numbers(attributes: dict[str, Any], field: str, detail: str) -> None:
    with pytest.raises(InvalidAttribute) as info:
        parse_event(PROGRAM, raw(attributes=attributes), now=NOW)
    assert (info.value.field, info.value.detail) == (field, detail)


def test_numbers_beyond_what_the_ledger_holds_are_refused() -> None:
    assert parse_event(PROGRAM, raw(attributes={"amount": 10**15}), now=NOW).attributes["amount"] == Decimal(10**15)
    with pytest.raises(InvalidAttribute) as info:
        parse_event(PROGRAM, raw(attributes={"amount": 1, "qty": -(10**15) - 1}), now=NOW)
    assert info.value.field == "attributes.qty"
    assert info.value.detail == "attribute 'qty' is -1000000000000001, larger than kinloop accepts (1e+15)"


def test_a_missing_required_attribute_is_refused() -> None:
    with pytest.raises(InvalidAttribute) as info:
        parse_event(PROGRAM, raw(attributes={"qty": 2}), now=NOW)
    assert info.value.field == "attributes.amount"
    assert info.value.detail == "attribute 'amount' is required for 'purchase' events"


def test_an_empty_text_value_for_a_required_attribute_is_missing() -> None:
    with pytest.raises(InvalidAttribute) as info:
        parse_event(PROGRAM, raw(attributes={"amount": ""}), now=NOW, text_values=True)
    assert info.value.detail == "attribute 'amount' is required for 'purchase' events"


def test_a_timestamp_without_offset_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_event(PROGRAM, raw(occurred_at="2026-03-01T10:00:00"), now=NOW)
    assert info.value.field == "occurred_at"
    assert info.value.detail == "'2026-03-01T10:00:00' has no time zone offset (add Z or +hh:mm)"


def test_a_naive_timestamp_attribute_is_refused_with_its_field() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_event(PROGRAM, raw(attributes={"amount": 1, "delivered_at": "2026-03-02T08:00:00"}), now=NOW)
    assert info.value.field == "attributes.delivered_at"


def test_an_event_more_than_five_minutes_ahead_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_event(PROGRAM, raw(occurred_at="2026-03-01T12:05:01Z"), now=NOW)
    assert info.value.field == "occurred_at"
    assert info.value.detail == "occurred_at 2026-03-01T12:05:01Z is in the future"


def test_the_future_is_judged_by_instant_not_by_local_clock() -> None:
    # 13:00 at +02:00 is 11:00 UTC, an hour before now
    ev = parse_event(PROGRAM, raw(occurred_at="2026-03-01T13:00:00+02:00"), now=NOW)
    assert ev.occurred_at.astimezone(UTC) == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "field", "detail"),
    [
        (raw(occurred_at="yesterday"), "occurred_at", "'yesterday' is not an ISO 8601 timestamp"),
        (raw(occurred_at=1700000000), "occurred_at", "must be an ISO 8601 timestamp string"),
        ({k: v for k, v in raw().items() if k != "occurred_at"}, "occurred_at", "occurred_at is required"),
        (raw(event_id=""), "event_id", "event_id is required and must be a non-empty string"),
        (raw(event_id="   "), "event_id", "event_id is required and must be a non-empty string"),
        (raw(event_id=True), "event_id", "event_id is required and must be a non-empty string"),
        (raw(member_id=None), "member_id", "member_id is required and must be a non-empty string"),
        (raw(member_id="x" * 201), "member_id", "member_id is longer than 200 characters"),
        (raw(type=""), "type", "type is required"),
        (raw(attributes=[1, 2]), "attributes", "attributes must be an object"),
    ],
)
def test_malformed_events_name_the_field(given: dict[str, Any], field: str, detail: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_event(PROGRAM, given, now=NOW)
    assert (info.value.field, info.value.detail) == (field, detail)
    assert info.value.code == "invalid_input"


def test_an_event_must_be_an_object() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_event(PROGRAM, ["e1"], now=NOW)  # type: ignore[arg-type]
    assert info.value.detail == "an event must be a JSON object"


def test_parse_timestamp_accepts_aware_datetimes_as_they_are() -> None:
    ts = datetime(2026, 3, 1, 10, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert parse_timestamp(ts, field="x") is ts
    with pytest.raises(InvalidInput):
        parse_timestamp(datetime(2026, 3, 1, 10, 0), field="x")
