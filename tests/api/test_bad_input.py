"""Bad requests: always a 4xx problem (`application/problem+json` with a `code`), never a 5xx,
never a partial write (every table has as many rows after as before).

Each case runs on SQLite and PostgreSQL, where some inputs (NUL characters, ids longer than
their column, numbers past 64 bits) used to reach the database and fail there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.conftest import PROBLEM, Api, assert_problem, event, row_counts

Case = tuple[str, str, dict[str, Any], int, str, str | None]  # method, url, request options, status, code, field

JSON = {"Content-Type": "application/json"}
SPEND = {"currency": "beans", "amount": 1, "reason": "x"}
ADJUST = {"currency": "beans", "amount": 1, "reason": "x"}
ORDER = event("order-2", "m1", 100)
EVENTS = "/v1/events"
SPENDS = "/v1/members/m1/spends"
ADJUSTS = "/v1/members/m1/adjustments"
TOKENS = "/v1/members/m1/tokens"
VERSIONS = "/v1/program/versions"


def raw(body: bytes | str, content_type: str | None = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"Content-Type": content_type} if content_type else {}}


def body(value: Any) -> dict[str, Any]:
    return {"json": value}


def batch(n: int) -> dict[str, Any]:
    return body({"events": [event(f"b-{i}", f"m{i % 7}", 10) for i in range(n)]})


CASES: dict[str, Case] = {
    # Not JSON at all.
    "truncated json": ("POST", EVENTS, raw("{bad"), 400, "malformed_json", None),
    "trailing comma": ("POST", SPENDS, raw('{"currency": "beans",}'), 400, "malformed_json", None),
    "not utf-8": ("PUT", "/v1/members/m1", raw(b'{"display_name": "\xff\xfe"}'), 400, "malformed_json", None),
    "nested too deep": ("POST", EVENTS, raw("[" * 100_000), 400, "malformed_json", None),
    "json in a form": ("POST", SPENDS, raw(json.dumps(SPEND), None), 415, "unsupported_media_type", None),
    "text/plain": ("POST", EVENTS, raw(json.dumps(ORDER), "text/plain"), 415, "unsupported_media_type", None),
    "form-encoded": (
        "POST",
        ADJUSTS,
        raw("currency=beans&amount=1", "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
        None,
    ),
    # JSON, but not what the endpoint takes.
    "empty body": ("POST", EVENTS, raw(""), 422, "invalid_request", None),
    "a list": ("POST", EVENTS, body([ORDER]), 422, "invalid_request", None),
    "event id a number": ("POST", EVENTS, body({**ORDER, "event_id": 7}), 422, "invalid_request", "EventIn.event_id"),
    "attributes a list": ("POST", EVENTS, body({**ORDER, "attributes": [1]}), 422, "invalid_request", None),
    "unknown field": ("POST", EVENTS, body({**ORDER, "colour": "red"}), 422, "invalid_request", None),
    "missing member": (
        "POST",
        EVENTS,
        body({k: v for k, v in ORDER.items() if k != "member_id"}),
        422,
        "invalid_request",
        "EventIn.member_id",
    ),
    "amount true": ("POST", SPENDS, body({**SPEND, "amount": True}), 422, "invalid_request", "amount"),
    "amount a float": ("POST", SPENDS, body({**SPEND, "amount": 1.5}), 422, "invalid_request", "amount"),
    "amount words": ("POST", SPENDS, body({**SPEND, "amount": "ten"}), 422, "invalid_amount", "amount"),
    "amount zero": ("POST", SPENDS, body({**SPEND, "amount": 0}), 422, "invalid_amount", "amount"),
    "amount negative": ("POST", SPENDS, body({**SPEND, "amount": -3}), 422, "invalid_amount", "amount"),
    "amount too fine": ("POST", SPENDS, body({**SPEND, "amount": "0.5"}), 422, "invalid_amount", "amount"),
    "no currency": (
        "POST",
        SPENDS,
        body({"amount": 1, "reason": "x"}),
        422,
        "invalid_request",
        "currency",
    ),
    "unknown currency": (
        "POST",
        ADJUSTS,
        body({**ADJUST, "currency": "bolts"}),
        422,
        "unknown_currency",
        "currency",
    ),
    "adjustment of 0": ("POST", ADJUSTS, body({**ADJUST, "amount": "0"}), 422, "invalid_amount", "amount"),
    "ttl a string": ("POST", TOKENS, body({"ttl_seconds": "60"}), 422, "invalid_request", "ttl_seconds"),
    "ttl too long": ("POST", TOKENS, body({"ttl_seconds": 86401}), 422, "invalid_request", "ttl_seconds"),
    "activate a string": (
        "POST",
        VERSIONS,
        body({"source": "key: coffee", "activate": "yes"}),
        422,
        "invalid_request",
        "activate",
    ),
    "no source": ("POST", VERSIONS, body({}), 422, "invalid_request", "source"),
    "not a program": ("POST", VERSIONS, body({"source": "- 1\n- 2\n"}), 422, "program_invalid", None),
    "limit 0": ("GET", "/v1/members/m1/ledger?limit=0", {}, 422, "invalid_request", "limit"),
    "cursor words": ("GET", "/v1/members/m1/ledger?cursor=abc", {}, 422, "invalid_request", "cursor"),
    "version words": ("GET", "/v1/program/versions/one", {}, 422, "invalid_request", "version"),
    # The program says no.
    "unknown event type": ("POST", EVENTS, body({**ORDER, "type": "refund"}), 422, "unknown_event_type", "type"),
    "attribute of the wrong type": (
        "POST",
        EVENTS,
        body(event("order-2", "m1", "lots")),
        422,
        "invalid_attribute",
        "attributes.amount",
    ),
    "no time zone": (
        "POST",
        EVENTS,
        body({**ORDER, "occurred_at": "2026-02-10T09:00:00"}),
        422,
        "invalid_input",
        "occurred_at",
    ),
    "not a time": ("POST", EVENTS, body({**ORDER, "occurred_at": "yesterday"}), 422, "invalid_input", "occurred_at"),
    "blank member": ("POST", EVENTS, body({**ORDER, "member_id": "   "}), 422, "invalid_input", "member_id"),
    # Nothing by that name.
    "unknown member": ("GET", "/v1/members/nobody", {}, 404, "unknown_member", "member_id"),
    "unknown member's ledger": ("GET", "/v1/members/nobody/ledger", {}, 404, "unknown_member", "member_id"),
    "spend of an unknown member": (
        "POST",
        "/v1/members/nobody/spends",
        body(SPEND),
        404,
        "unknown_member",
        "member_id",
    ),
    "token of an unknown member": ("POST", "/v1/members/nobody/tokens", body({}), 404, "unknown_member", "member_id"),
    "unknown event": ("GET", "/v1/events/nothing", {}, 404, "unknown_event", "event_id"),
    "reversal of an unknown event": ("POST", "/v1/events/nothing/reversal", body({}), 404, "unknown_event", "event_id"),
    "unknown path": ("GET", "/v1/nothing", {}, 404, "not_found", None),
    "wrong method": ("DELETE", "/v1/members/m1", {}, 405, "method_not_allowed", None),
    # Huge numbers.
    "attribute past the ledger": (
        "POST",
        EVENTS,
        body(event("order-2", "m1", 10**30)),
        422,
        "invalid_attribute",
        "attributes.amount",
    ),
    "attribute past 10^300": (
        "POST",
        EVENTS,
        body(event("order-2", "m1", 10**400)),
        422,
        "invalid_attribute",
        "attributes.amount",
    ),
    "NaN attribute": (
        "POST",
        EVENTS,
        raw(json.dumps(event("order-2", "m1", float("nan")))),
        422,
        "invalid_request",
        None,
    ),
    "Infinity in a profile": (
        "PUT",
        "/v1/members/m1",
        raw('{"attributes": {"score": Infinity}}'),
        422,
        "invalid_request",
        None,
    ),
    "spend past the ledger": ("POST", SPENDS, body({**SPEND, "amount": 10**30}), 422, "invalid_amount", "amount"),
    "spend of 1e999999999": (
        "POST",
        SPENDS,
        body({**SPEND, "amount": "1e999999999"}),
        422,
        "invalid_amount",
        "amount",
    ),
    "adjustment of -1e999999999": (
        "POST",
        ADJUSTS,
        body({**ADJUST, "amount": "-1e999999999"}),
        422,
        "invalid_amount",
        "amount",
    ),
    "adjustment of NaN": ("POST", ADJUSTS, body({**ADJUST, "amount": "NaN"}), 422, "invalid_amount", "amount"),
    "refund of 1e999999999": (
        "POST",
        "/v1/events/order-1/reversal",
        body({"amount": "1e999999999"}),
        422,
        "invalid_amount",
        "amount",
    ),
    "refund of Infinity": (
        "POST",
        "/v1/events/order-1/reversal",
        body({"amount": "Infinity"}),
        422,
        "invalid_amount",
        "amount",
    ),
    "limit 10^30": ("GET", f"/v1/members/m1/ledger?limit={10**30}", {}, 422, "invalid_request", "limit"),
    "cursor of 20 digits": ("GET", f"/v1/members/m1/ledger?cursor={10**19}", {}, 422, "invalid_request", "cursor"),
    "version 10^30": ("GET", f"/v1/program/versions/{10**30}", {}, 404, "not_found", "version"),
    "ttl 10^30": ("POST", TOKENS, body({"ttl_seconds": 10**30}), 422, "invalid_request", "ttl_seconds"),
    "year 1 east of UTC": (
        "POST",
        EVENTS,
        body({**ORDER, "occurred_at": "0001-01-01T00:00:00+23:59"}),
        422,
        "invalid_request",
        "EventIn.occurred_at",
    ),
    # What the database could not store.
    "NUL in an event id": ("POST", EVENTS, body({**ORDER, "event_id": "a\x00b"}), 422, "invalid_request", None),
    "NUL in a member id": ("POST", EVENTS, body({**ORDER, "member_id": "m\x001"}), 422, "invalid_request", None),
    "NUL in a path": ("PUT", "/v1/members/m%001", body({}), 422, "invalid_request", "member_id"),
    "NUL in a reason": ("POST", ADJUSTS, body({**ADJUST, "reason": "\x00"}), 422, "invalid_request", "reason"),
    "NUL in a key": (
        "POST",
        SPENDS,
        body({**SPEND, "idempotency_key": "k\x00"}),
        422,
        "invalid_request",
        "idempotency_key",
    ),
    "lone surrogate": ("POST", EVENTS, raw('{"event_id": "\\ud800"}'), 422, "invalid_request", None),
    "member id of 201": ("PUT", "/v1/members/" + "m" * 201, body({}), 422, "invalid_request", "member_id"),
    "adjusting a member id of 201": (
        "POST",
        "/v1/members/" + "m" * 201 + "/adjustments",
        body(ADJUST),
        422,
        "invalid_request",
        "member_id",
    ),
    "event id of 201": ("POST", EVENTS, body({**ORDER, "event_id": "e" * 201}), 422, "invalid_request", None),
    # Batches.
    "empty batch": ("POST", EVENTS, body({"events": []}), 422, "invalid_request", None),
    "batch of 1001": ("POST", EVENTS, batch(1001), 422, "invalid_request", None),
    "batch with a wrong type": (
        "POST",
        EVENTS,
        body({"events": [ORDER, {**ORDER, "event_id": ["x"]}]}),
        422,
        "invalid_request",
        None,
    ),
    "batch not a list": ("POST", EVENTS, body({"events": ORDER}), 422, "invalid_request", None),
}


@pytest.fixture
def seeded(api: Api) -> Api:
    api.post_event(event("order-1", "m1", 250))
    return api


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_a_4xx_problem_and_writes_nothing(seeded: Api, name: str) -> None:
    method, url, options, status, code, field = CASES[name]
    headers = {**seeded.auth("admin"), **options.get("headers", {})}
    before = row_counts(seeded.engine)
    r = seeded.client.request(method, url, **{**options, "headers": headers})
    problem = assert_problem(r, status, code)
    if field is not None:
        assert problem["field"] == field, problem
    assert row_counts(seeded.engine) == before


def test_a_1000_event_batch_is_the_largest_accepted(seeded: Api) -> None:
    r = seeded.client.request("POST", "/v1/events", headers=seeded.auth("ingest"), **batch(1000))
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["duplicates"], r.json()["rejected"]) == (1000, 0, 0)
    assert len(r.json()["results"]) == 1000


def test_a_rejected_item_in_a_batch_changes_nothing_for_it(seeded: Api) -> None:
    """Per-item failures: the good events are written, the bad ones leave no trace."""
    before = row_counts(seeded.engine)
    events = [
        {**event("x-1", "fresh-1", 100), "type": "refund"},
        {**event("x-2", "fresh-2", 100), "occurred_at": "not a time"},
        event("x-3", "fresh-3", 100),
    ]
    r = seeded.client.post("/v1/events", json={"events": events}, headers=seeded.auth("ingest"))
    assert r.status_code == 200, r.text
    assert [x["status"] for x in r.json()["results"]] == ["rejected", "rejected", "accepted"]
    after = row_counts(seeded.engine)
    assert after["events"] == before["events"] + 1
    assert after["members"] == before["members"] + 1
    for m in ("fresh-1", "fresh-2"):
        assert seeded.client.get(f"/v1/members/{m}", headers=seeded.auth("read")).status_code == 404


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "streamed"])
def test_an_oversized_body_is_413_and_writes_nothing(seeded: Api, streamed: bool) -> None:
    filler = "x" * 1000
    events = [event(f"big-{i}", "m1", 10, note=filler) for i in range(2500)]  # about 2.7 MB
    data = json.dumps({"events": events}).encode()
    assert len(data) > 2 * 1024 * 1024
    before = row_counts(seeded.engine)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    content: Any = chunks() if streamed else data
    r = seeded.client.post("/v1/events", content=content, headers={**seeded.auth("ingest"), **JSON})
    assert_problem(r, 413, "payload_too_large")
    assert r.headers["content-type"] == PROBLEM
    assert row_counts(seeded.engine) == before
