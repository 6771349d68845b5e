"""Red envelopes through the service, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select, update

from kinloop.domain.errors import LimitReached, NotTransferable, OutletClosed, SelfTransfer
from kinloop.services import envelopes, ledger
from kinloop.services import members as member_svc
from kinloop.services import verify as verify_svc
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import audit_log, balances, entries, lots, members
from tests.api.conftest import row_counts
from tests.conftest import NOW


def fund(engine: Engine, coffee: LoadedProgram, member_id: str, amount: int) -> None:
    with engine.begin() as conn:
        ledger.adjust(conn, coffee, member_id, "beans", amount, reason="test", actor="t", key=None, now=NOW)


def beans(engine: Engine, member_id: str) -> int:
    with engine.connect() as conn:
        value = conn.execute(
            select(balances.c.available)
            .join(members, members.c.id == balances.c.member_pk)
            .where(members.c.member_id == member_id, balances.c.currency == "beans")
        ).scalar()
    return int(value or 0)


def verified(engine: Engine, coffee: LoadedProgram) -> bool:
    with engine.connect() as conn:
        report = verify_svc.verify(conn, coffee)
    assert report.mismatches == []
    return report.ok


def test_a_transfer_moves_points_with_the_fee_and_keeps_the_ledger_balanced(
    engine: Engine, coffee: LoadedProgram
) -> None:
    fund(engine, coffee, "m1", 300)
    fund(engine, coffee, "m2", 1)
    with engine.begin() as conn:
        view = envelopes.send(conn, coffee, "m1", key="k1", amount=150, to="m2", now=NOW)
    assert (view["status"], view["total"], view["fee"], view["to"]) == ("closed", 150, 2, "m2")
    assert (beans(engine, "m1"), beans(engine, "m2")) == (300 - 152, 151)
    # A repeat of the same key changes nothing.
    with engine.begin() as conn:
        envelopes.send(conn, coffee, "m1", key="k1", amount=150, to="m2", now=NOW)
    assert (beans(engine, "m1"), beans(engine, "m2")) == (148, 151)
    assert verified(engine, coffee)


def test_refused_transfers_change_nothing(engine: Engine, coffee: LoadedProgram) -> None:
    fund(engine, coffee, "m1", 1000)
    fund(engine, coffee, "m2", 1)
    before = row_counts(engine)
    cases = [
        (SelfTransfer, {"to": "m1", "amount": 10}, "a member cannot send an envelope to themselves"),
        (NotTransferable, {"to": "m2", "amount": 10, "currency_key": "stars"}, "Stars cannot be sent"),
        (LimitReached, {"to": "m2", "amount": 201}, "the daily sending limit is 200"),
    ]
    for error, kwargs, message in cases:
        with engine.begin() as conn, pytest.raises(error, match=message):
            envelopes.send(conn, coffee, "m1", key="x", now=NOW, **kwargs)  # type: ignore[arg-type]
    assert row_counts(engine) == before


def test_a_group_envelope_is_claimed_once_per_member_and_the_rest_returns(
    engine: Engine, coffee: LoadedProgram
) -> None:
    fund(engine, coffee, "m1", 200)
    for m in ("m2", "m3", "m4"):
        fund(engine, coffee, m, 1)
    with engine.begin() as conn:
        view = envelopes.send(
            conn, coffee, "m1", key="g1", amount=100, shares=3, mode="random", window=timedelta(hours=2), now=NOW
        )
    assert (view["status"], view["shares"], view["fee"]) == ("open", 3, 1)
    assert beans(engine, "m1") == 99
    with engine.begin() as conn:
        first = envelopes.claim(conn, coffee, "g1", "m2", now=NOW)
    with engine.begin() as conn:
        again = envelopes.claim(conn, coffee, "g1", "m2", now=NOW)
    assert (again.amount, again.replayed) == (first.amount, True)
    assert beans(engine, "m2") == 1 + first.amount
    assert verified(engine, coffee)  # the transfer account holds the two unclaimed shares
    later = NOW + timedelta(hours=3)
    with engine.begin() as conn:
        assert envelopes.close_due(conn, coffee, now=later) == {"closed": 1, "returned": 100 - first.amount}
    assert beans(engine, "m1") == 99 + 100 - first.amount
    with engine.begin() as conn, pytest.raises(OutletClosed):
        envelopes.claim(conn, coffee, "g1", "m3", now=later)
    assert verified(engine, coffee)


def test_a_claim_after_the_window_closes_the_envelope(engine: Engine, coffee: LoadedProgram) -> None:
    fund(engine, coffee, "m1", 100)
    fund(engine, coffee, "m2", 1)
    with engine.begin() as conn:
        envelopes.send(conn, coffee, "m1", key="g", amount=60, shares=2, window=timedelta(hours=1), now=NOW)
    conn = engine.connect()
    with pytest.raises(envelopes.ClosedOnClaim):
        envelopes.claim(conn, coffee, "g", "m2", now=NOW + timedelta(hours=1))
    conn.commit()  # what the API does: the close stands, the claim is refused
    conn.close()
    assert beans(engine, "m1") == 100 - 1
    assert beans(engine, "m2") == 1
    assert verified(engine, coffee)


def test_birthdays_are_sent_once_a_year(engine: Engine, coffee: LoadedProgram) -> None:
    today = NOW.astimezone(coffee.program.timezone).date()
    with engine.begin() as conn:
        member_svc.set_profile(conn, coffee.program_id, "bday", {"birthday": f"1990-{today:%m-%d}"}, now=NOW)
        member_svc.set_profile(conn, coffee.program_id, "other", {"birthday": "1990-01-01"}, now=NOW)
        assert envelopes.birthdays(conn, coffee, now=NOW) == {"sent": 1}
    with engine.begin() as conn:
        assert envelopes.birthdays(conn, coffee, now=NOW + timedelta(hours=1)) == {"sent": 0}
    assert (beans(engine, "bday"), beans(engine, "other")) == (888, 0)
    assert verified(engine, coffee)


def test_daily_envelopes_while_the_condition_holds(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn:
        member_svc.set_profile(conn, coffee.program_id, "late", {"waiting_for_delivery": True}, now=NOW)
        member_svc.set_profile(conn, coffee.program_id, "fine", {"waiting_for_delivery": False}, now=NOW)
        assert envelopes.daily(conn, coffee, now=NOW) == {"sent": 1}
        assert envelopes.daily(conn, coffee, now=NOW) == {"sent": 0}
        assert envelopes.daily(conn, coffee, now=NOW + timedelta(days=1)) == {"sent": 1}
        conn.execute(update(members).where(members.c.member_id == "late").values(profile={}))
        assert envelopes.daily(conn, coffee, now=NOW + timedelta(days=2)) == {"sent": 0}
    assert beans(engine, "late") == 10


def test_compensation_is_audited_and_sent_once(engine: Engine, coffee: LoadedProgram) -> None:
    fund(engine, coffee, "m1", 1)
    for _ in range(2):
        with engine.begin() as conn:
            view = envelopes.compensate(
                conn, coffee, "m1", amount=50, reason="late order #12", key="c12", actor="ops", now=NOW
            )
    assert (view["kind"], view["to"], view["total"], view["reason"]) == ("compensation", "m1", 50, "late order #12")
    assert beans(engine, "m1") == 51
    with engine.connect() as conn:
        actions = conn.execute(select(audit_log.c.action, audit_log.c.reason)).all()
        assert ("envelope.compensation", "late order #12") in actions
        assert conn.execute(select(func.count()).where(entries.c.award_kind == "envelope")).scalar_one() == 1
    with engine.connect() as conn:
        stats = envelopes.stats(conn, coffee)
    assert stats["compensation"]["beans"]["volume"] == 50


def test_received_points_keep_the_expiry_of_the_points_sent(engine: Engine, coffee: LoadedProgram) -> None:
    earned_at = NOW - timedelta(days=180)  # Beans expire 12 months after earning
    with engine.begin() as conn:
        ledger.adjust(conn, coffee, "m1", "beans", 100, reason="old", actor="t", key=None, now=earned_at)
        ledger.adjust(conn, coffee, "m1", "beans", 100, reason="new", actor="t", key=None, now=NOW)
    fund(engine, coffee, "m2", 1)
    fund(engine, coffee, "m3", 1)
    with engine.begin() as conn:
        envelopes.send(conn, coffee, "m1", key="t", amount=50, to="m2", now=NOW)
        envelopes.send(conn, coffee, "m1", key="g", amount=20, shares=2, window=timedelta(hours=1), now=NOW)
    with engine.begin() as conn:
        envelopes.claim(conn, coffee, "g", "m3", now=NOW)
        envelopes.close_due(conn, coffee, now=NOW + timedelta(hours=2))
    with engine.connect() as conn:
        got = conn.execute(
            select(members.c.member_id, entries.c.kind, lots.c.expires_at)
            .join(entries, entries.c.id == lots.c.id)
            .join(members, members.c.id == lots.c.member_pk)
            .where(entries.c.kind.in_(("transfer_in", "transfer_return")))
            .order_by(lots.c.id)
        ).all()
        oldest = conn.execute(select(func.min(lots.c.expires_at))).scalar_one()
    assert [(m, k) for m, k, _ in got] == [("m2", "transfer_in"), ("m3", "transfer_in"), ("m1", "transfer_return")]
    assert oldest < NOW + timedelta(days=200)  # the Beans earned 180 days ago, not a fresh 12 months
    assert [e for _, _, e in got] == [oldest] * 3
    assert verified(engine, coffee)
