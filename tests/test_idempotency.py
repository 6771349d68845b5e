"""Idempotency: a repeated event returns the first result and awards nothing; a repeated
spend or adjustment key does nothing, and a key reused for another request is refused."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from kinloop.domain.errors import IdempotencyConflict
from kinloop.services import ingest, ledger, member_view
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import audit_log, balances, entries, events, lots
from kinloop.store.tables import members as members_table
from tests.conftest import NOW


def purchase(event_id: str, member_id: str, amount: Any, at: str = "2026-01-05T10:00:00Z") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "member_id": member_id,
        "type": "purchase",
        "occurred_at": at,
        "attributes": {"amount": amount},
    }


def submit(engine: Engine, coffee: LoadedProgram, *raws: dict[str, Any]) -> list[ingest.IngestResult]:
    with engine.begin() as conn:
        return ingest.ingest(conn, coffee, list(raws), now=NOW)


def state(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        counts = {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (members_table, events, entries, lots, audit_log)
        }
        counts["balances"] = sorted(
            tuple(r)
            for r in conn.execute(
                select(members_table.c.member_id, balances.c.currency, balances.c.available, balances.c.pending).join(
                    members_table, members_table.c.id == balances.c.member_pk
                )
            )
        )
    return counts


def balances_of(engine: Engine, coffee: LoadedProgram, member_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(member_view.show(conn, coffee, member_id, now=NOW).balances)


# --- events --------------------------------------------------------------------------------


def test_a_repeat_in_the_same_batch_returns_the_first_result(engine: Engine, coffee: LoadedProgram) -> None:
    first, repeat = submit(engine, coffee, purchase("e1", "m1", 120), purchase("e1", "m1", 120))

    assert (first.index, first.status, repeat.index, repeat.status) == (0, "accepted", 1, "duplicate")
    assert repeat.outcome == first.outcome
    assert first.outcome["awards"] == [
        ["purchase_stars", "stars", 2, "rule", False],
        ["purchase_beans", "beans", 12, "rule", False],
    ]
    assert balances_of(engine, coffee, "m1") == {"stars": 2, "beans": 12}
    after = state(engine)
    assert (after["events"], after["entries"], after["lots"]) == (1, 2, 1)


def test_a_repeat_with_other_attributes_in_the_same_batch_is_the_duplicate(
    engine: Engine, coffee: LoadedProgram
) -> None:
    first, repeat = submit(engine, coffee, purchase("e1", "m1", 120), purchase("e1", "m1", 1000))

    assert (first.status, repeat.status) == ("accepted", "duplicate")
    assert repeat.outcome == first.outcome
    assert balances_of(engine, coffee, "m1") == {"stars": 2, "beans": 12}


def test_the_first_submitted_copy_wins_in_a_batch_even_when_a_repeat_says_it_happened_earlier(
    engine: Engine, coffee: LoadedProgram
) -> None:
    """Whichever copy comes first is the event; the outcome must not depend on how a file
    happens to be cut into batches (with one event per batch, the first line would win)."""
    first, repeat = submit(
        engine,
        coffee,
        purchase("e1", "m1", 100, at="2026-01-05T10:00:00Z"),
        purchase("e1", "m1", 500, at="2026-01-04T10:00:00Z"),
    )

    assert (first.status, repeat.status) == ("accepted", "duplicate")
    assert repeat.outcome == first.outcome
    assert balances_of(engine, coffee, "m1") == {"stars": 2, "beans": 10}


def test_a_repeat_in_a_later_batch_returns_the_stored_result_and_awards_nothing(
    engine: Engine, coffee: LoadedProgram
) -> None:
    [first] = submit(engine, coffee, purchase("e1", "m1", 120))
    before = state(engine)

    [same] = submit(engine, coffee, purchase("e1", "m1", 120))
    [other_amount] = submit(engine, coffee, purchase("e1", "m1", 5000))
    [other_type] = submit(
        engine,
        coffee,
        {"event_id": "e1", "member_id": "m1", "type": "check_in", "occurred_at": "2026-01-06T10:00:00Z"},
    )

    for repeat in (same, other_amount, other_type):
        assert (repeat.event_id, repeat.status, repeat.error) == ("e1", "duplicate", None)
        assert repeat.outcome == first.outcome
    assert state(engine) == before
    assert balances_of(engine, coffee, "m1") == {"stars": 2, "beans": 12}


def test_a_repeat_next_to_new_events_only_the_new_ones_count(engine: Engine, coffee: LoadedProgram) -> None:
    submit(engine, coffee, purchase("e1", "m1", 120))
    results = submit(engine, coffee, purchase("e2", "m1", 50), purchase("e1", "m1", 120), purchase("e3", "m2", 10))

    assert [(r.event_id, r.status) for r in results] == [("e2", "accepted"), ("e1", "duplicate"), ("e3", "accepted")]
    assert balances_of(engine, coffee, "m1") == {"stars": 3, "beans": 17}
    assert balances_of(engine, coffee, "m2") == {"stars": 0, "beans": 1}
    assert state(engine)["events"] == 3


def test_a_rejected_event_does_not_take_its_id(engine: Engine, coffee: LoadedProgram) -> None:
    [bad] = submit(engine, coffee, purchase("e1", "m1", "lots"))
    assert (bad.status, bad.error.code if bad.error else None) == ("rejected", "invalid_attribute")

    [good] = submit(engine, coffee, purchase("e1", "m1", 120))
    assert good.status == "accepted"
    assert balances_of(engine, coffee, "m1") == {"stars": 2, "beans": 12}


# --- spend and adjust keys -----------------------------------------------------------------


@pytest.fixture
def funded(engine: Engine, coffee: LoadedProgram) -> LoadedProgram:
    """m1 with 2 ★ and 12 Beans."""
    submit(engine, coffee, purchase("e1", "m1", 120))
    return coffee


def spend(engine: Engine, loaded: LoadedProgram, amount: Any, key: str | None, member_id: str = "m1") -> Any:
    with engine.begin() as conn:
        return ledger.spend(conn, loaded, member_id, "beans", amount, reason="latte", key=key, now=NOW)


def test_a_repeated_spend_key_does_nothing_the_second_time(engine: Engine, funded: LoadedProgram) -> None:
    first = spend(engine, funded, 5, "order-1")
    after_first = state(engine)
    again = spend(engine, funded, 5, "order-1")

    assert (first.amount, first.balance, first.replayed) == (5, 7, False)
    assert (again.entry_id, again.amount, again.balance, again.replayed) == (first.entry_id, 5, 7, True)
    assert state(engine) == after_first
    assert balances_of(engine, funded, "m1") == {"stars": 2, "beans": 7}


@pytest.mark.parametrize(
    ("amount", "member_id"),
    [(6, "m1"), (5, "m2")],
    ids=["other amount", "other member"],
)
def test_a_spend_key_reused_for_another_request_is_a_conflict(
    engine: Engine, funded: LoadedProgram, amount: int, member_id: str
) -> None:
    submit(engine, funded, purchase("e2", "m2", 120))
    spend(engine, funded, 5, "order-1")
    before = state(engine)

    with pytest.raises(IdempotencyConflict) as caught:
        spend(engine, funded, amount, "order-1", member_id=member_id)

    assert caught.value.code == "idempotency_conflict"
    assert caught.value.field == "id"
    assert state(engine) == before


def test_an_adjustment_key_cannot_be_replayed_as_a_spend(engine: Engine, funded: LoadedProgram) -> None:
    with engine.begin() as conn:
        ledger.adjust(conn, funded, "m1", "beans", 5, reason="goodwill", actor="alice", key="k-1", now=NOW)
    before = state(engine)

    with pytest.raises(IdempotencyConflict):
        spend(engine, funded, 5, "k-1")
    assert state(engine) == before


def test_a_repeated_adjustment_key_adds_nothing_and_no_audit_row(engine: Engine, funded: LoadedProgram) -> None:
    with engine.begin() as conn:
        first = ledger.adjust(conn, funded, "m1", "beans", 5, reason="goodwill", actor="alice", key="k-1", now=NOW)
    after_first = state(engine)
    with engine.begin() as conn:
        again = ledger.adjust(conn, funded, "m1", "beans", 5, reason="goodwill", actor="alice", key="k-1", now=NOW)

    assert (first.balance, again.balance, again.replayed, again.entry_id) == (17, 17, True, first.entry_id)
    assert state(engine) == after_first
    assert after_first["audit_log"] == 1
