"""Draws through the service, on SQLite and PostgreSQL: pay, roll, win, stock, limits, reveal, verify."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, select

from kinloop.domain import draws as D
from kinloop.domain.errors import InsufficientBalance, InvalidPrizePool, LimitReached, OutletClosed, OutOfStock
from kinloop.services import draws, ledger
from kinloop.services import verify as verify_svc
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import draw_entries, draw_prizes, entries
from tests.conftest import NOW

OPEN = NOW - timedelta(days=1)
CLOSE = NOW + timedelta(days=7)


def prize(key: str, kind: D.PrizeKind, odds: Any, **extra: Any) -> draws.PrizeIn:
    return draws.PrizeIn(key, key.title(), kind, Decimal(str(odds)), **extra)


def spec(*, key: str = "wheel", prizes: list[draws.PrizeIn] | None = None, **extra: Any) -> draws.DrawIn:
    pool = (
        prizes
        if prizes is not None
        else [
            prize("beans50", "points", 1, amount=Decimal(50), stock=2),
            prize("mug", "reward", 1, reward="mug", value=Decimal(30), stock=1),
            prize("nothing", "nothing", 8),
        ]
    )
    return draws.DrawIn(
        key=key,
        name="Coffee wheel",
        currency="beans",
        cost=Decimal(10),
        opens_at=OPEN,
        closes_at=CLOSE,
        prizes=pool,
        **extra,
    )


def fund(engine: Engine, coffee: LoadedProgram, member_id: str, amount: int) -> None:
    with engine.begin() as conn:
        ledger.adjust(conn, coffee, member_id, "beans", amount, reason="test", actor="t", key=None, now=NOW)


def enter(engine: Engine, coffee: LoadedProgram, member_id: str, key: str, now: Any = NOW) -> draws.EntryResult:
    with engine.begin() as conn:
        return draws.enter(conn, coffee, "wheel", member_id, entry_key=key, now=now)


def test_an_entry_pays_the_cost_and_gives_the_drawn_prize(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn:
        created = draws.create(conn, coffee, spec(), now=NOW, actor="admin")
    assert created["seed"] is None
    assert len(created["commitment"]) == 64
    assert created["expected_cost"]["per_entry"] == 8  # (50 + 30) / 10 Beans
    assert created["expected_cost"]["text"] == "an entry pays out 8 Beans on average for 10 Beans"
    fund(engine, coffee, "m1", 100)
    result = enter(engine, coffee, "m1", "e1")
    won = result.prize.amount if result.prize and result.prize.kind == "points" else 0
    assert result.balance == 100 - 10 + won
    assert (result.seq, result.cost, result.replayed) == (1, 10, False)
    again = enter(engine, coffee, "m1", "e1")
    assert (again.replayed, again.seq, again.balance) == (True, 1, result.balance)
    with engine.connect() as conn:
        assert conn.execute(select(draw_entries.c.seq)).scalars().all() == [1]
        assert verify_svc.verify(conn, coffee).ok


def test_stock_runs_out_and_is_never_given_below_zero(engine: Engine, coffee: LoadedProgram) -> None:
    pool = [prize("mug", "reward", 1, reward="mug", stock=2), prize("cup", "reward", 1, reward="cup", stock=1)]
    with engine.begin() as conn:
        draws.create(conn, coffee, spec(prizes=pool), now=NOW, actor="admin")
    fund(engine, coffee, "m1", 100)
    won = [enter(engine, coffee, "m1", f"e{i}").prize for i in range(3)]
    assert sorted(p.key for p in won if p) == ["cup", "mug", "mug"]
    with pytest.raises(OutOfStock):
        enter(engine, coffee, "m1", "e4")
    with engine.connect() as conn:
        assert dict(conn.execute(select(draw_prizes.c.prize, draw_prizes.c.stock)).all()) == {
            "mug": 0,
            "cup": 0,
        }
        # The refused entry charged nothing.
        assert conn.execute(select(entries.c.amount).where(entries.c.kind == "spend")).scalars().all() == [10] * 3


def test_daily_limit_window_and_balance(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn:
        draws.create(conn, coffee, spec(daily_limit=2), now=NOW, actor="admin")
    fund(engine, coffee, "m1", 25)
    enter(engine, coffee, "m1", "a")
    enter(engine, coffee, "m1", "b")
    with pytest.raises(LimitReached, match="2 entries a day"):
        enter(engine, coffee, "m1", "c")
    with pytest.raises(OutletClosed, match="is closed"):
        enter(engine, coffee, "m1", "d", now=CLOSE)
    fund(engine, coffee, "m2", 5)
    with pytest.raises(InsufficientBalance):
        enter(engine, coffee, "m2", "e")


def test_guarantee_after_n_losses(engine: Engine, coffee: LoadedProgram) -> None:
    pool = [prize("mug", "reward", 1, reward="mug"), prize("nothing", "nothing", 10**9)]
    with engine.begin() as conn:
        draws.create(conn, coffee, spec(prizes=pool, guarantee=D.Guarantee(3, "mug")), now=NOW, actor="admin")
    fund(engine, coffee, "m1", 100)
    got = [enter(engine, coffee, "m1", f"e{i}") for i in range(8)]
    assert [r.prize.key if r.prize else None for r in got] == ["nothing"] * 3 + ["mug"] + ["nothing"] * 3 + ["mug"]
    assert [r.guaranteed for r in got] == [False] * 3 + [True] + [False] * 3 + [True]


def test_the_record_verifies_after_the_reveal_and_catches_tampering(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn:
        draws.create(conn, coffee, spec(guarantee=D.Guarantee(2, "beans50")), now=NOW, actor="admin")
    for m in ("m1", "m2"):
        fund(engine, coffee, m, 100)
    for i in range(6):
        enter(engine, coffee, f"m{1 + i % 2}", f"e{i}")
    with engine.connect() as conn:
        before = draws.record(conn, coffee, "wheel", now=NOW)
    assert before["seed"] is None
    with pytest.raises(Exception, match="revealed when the draw closes"):
        draws.verify_record(before)
    with engine.begin() as conn:
        draws.close(conn, coffee, "wheel", now=NOW, actor="admin")
        record = draws.record(conn, coffee, "wheel", now=NOW)
    assert D.commitment(bytes.fromhex(record["seed"])) == record["commitment"]
    assert draws.verify_record(record) == []
    assert len(record["entries"]) == 6
    recorded = record["entries"][2]["prize"]
    record["entries"][2]["prize"] = "mug" if recorded != "mug" else "nothing"
    assert draws.verify_record(record) == [
        f"entry 3: recorded prize {record['entries'][2]['prize']!r}, recomputed {recorded!r}"
    ]
    record["seed"] = "00" * 32
    assert "the revealed seed does not match the published commitment" in draws.verify_record(record)


def test_a_new_odds_table_applies_from_the_next_entry(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn:
        draws.create(conn, coffee, spec(), now=NOW, actor="admin")
    fund(engine, coffee, "m1", 100)
    enter(engine, coffee, "m1", "e1")
    with engine.begin() as conn:
        view = draws.replace_odds(
            conn, coffee, "wheel", [prize("cup", "reward", 1, reward="cup", stock=5)], now=NOW, actor="admin"
        )
    assert (view["odds_version"], [p["key"] for p in view["prizes"]]) == (2, ["cup"])
    second = enter(engine, coffee, "m1", "e2")
    assert (second.odds_version, second.prize.key if second.prize else None) == (2, "cup")
    with engine.begin() as conn:
        draws.close(conn, coffee, "wheel", now=NOW, actor="admin")
        assert draws.verify_record(draws.record(conn, coffee, "wheel", now=NOW)) == []


@pytest.mark.parametrize(
    ("pool", "total", "message"),
    [
        ([], None, "prizes: a draw needs at least one prize"),
        (
            [prize("a", "nothing", "0.5"), prize("b", "nothing", "0.4")],
            None,
            "prizes: the odds sum to 0.9, not 1 as declared",
        ),
        ([prize("a", "nothing", 3)], Decimal(100), "prizes: the odds sum to 3, not 100 as declared"),
        ([prize("a", "points", 1)], None, "prizes[0].amount: a points prize needs an amount"),
        ([prize("a", "nothing", -1)], None, "prizes[0].odds: odds must not be negative, got -1"),
    ],
)
def test_bad_pools_are_refused_with_their_path(
    engine: Engine, coffee: LoadedProgram, pool: list[draws.PrizeIn], total: Decimal | None, message: str
) -> None:
    with engine.begin() as conn, pytest.raises(InvalidPrizePool) as caught:
        draws.create(conn, coffee, spec(prizes=pool, odds_total=total), now=NOW, actor="admin")
    assert message in [str(i) for i in caught.value.issues]
