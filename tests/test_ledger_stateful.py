"""A stateful model of the ledger: random earn, spend, adjust, reverse and expire operations run
against the real services on a real SQLite database, beside a tiny in-memory model of what every
balance and lot must be. After every step the books must balance (`kinloop verify`), agree with
the model, never go negative where the currency forbids it, and expire each lot at most once.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import Connection, Engine, func, select

from kinloop.domain.errors import (
    AlreadyReversed,
    IdempotencyConflict,
    InsufficientBalance,
    InvalidAmount,
    KinloopError,
    NotSpendable,
    Refused,
    UnknownMember,
)
from kinloop.domain.tiers import tier_for
from kinloop.program.loader import parse_program
from kinloop.services import ingest as ingest_svc
from kinloop.services import ledger as ledger_svc
from kinloop.services import programs
from kinloop.services.programs import LoadedProgram
from kinloop.services.verify import verify
from kinloop.store import migrate
from kinloop.store.db import connect
from kinloop.store.tables import balances, entries, events, lot_movements, lots, members

PROGRAM = """
key: stateful
name: Stateful ledger
timezone: Europe/Paris
currencies:
  - {key: coins, name: Coins, kind: points, expiry: {days: 10}}
  - {key: credit, name: Credit, kind: points, allow_negative: true}
  - {key: xp, name: XP, kind: growth}
event_types:
  - key: purchase
    attributes: {amount: integer}
rules:
  - {key: coins_rate, event: purchase, currency: coins, rate: {attribute: amount, per: 10, amount: 1}}
  - {key: credit_rate, event: purchase, currency: credit, rate: {attribute: amount, per: 25, amount: 2}}
  - {key: xp_rate, event: purchase, currency: xp, rate: {attribute: amount, per: 20, amount: 1}}
ladder:
  currency: xp
  tiers:
    - {key: bronze, name: Bronze, threshold: 0}
    - {key: silver, name: Silver, threshold: 10}
    - {key: gold, name: Gold, threshold: 30}
"""
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
EXPIRY = timedelta(days=10)
MEMBERS = ("alice", "bob")
CURRENCIES = ("coins", "credit", "xp")
# What each rule gives for an `amount` (all three round `full`: whole blocks only).
AWARD: dict[str, Callable[[int], int]] = {
    "coins": lambda amount: amount // 10,
    "credit": lambda amount: (amount // 25) * 2,
    "xp": lambda amount: amount // 20,
}


def load_program(engine: Engine, now: datetime) -> LoadedProgram:
    with engine.begin() as conn:
        return programs.load(conn, parse_program(PROGRAM), PROGRAM, now=now).loaded


def ledger_snapshot(conn: Connection) -> tuple[Any, ...]:
    """Everything a refused or repeated operation must leave as it was."""
    return (
        conn.execute(select(func.count()).select_from(entries)).scalar(),
        conn.execute(select(func.count()).select_from(lot_movements)).scalar(),
        sorted(
            conn.execute(select(balances.c.member_pk, balances.c.currency, balances.c.available, balances.c.pending))
        ),
        sorted(conn.execute(select(lots.c.id, lots.c.remaining, lots.c.status))),
        sorted(conn.execute(select(events.c.event_id, events.c.refunded))),
        sorted(conn.execute(select(members.c.member_id, members.c.tier))),
    )


@dataclass
class ModelLot:
    id: int
    member: str
    remaining: int
    earned_at: datetime
    expires_at: datetime


@dataclass
class ModelAward:
    amount: int
    taken: int = 0  # clawed back or written off


@dataclass
class ModelEvent:
    raw: dict[str, Any]
    member: str
    amount: int
    awards: dict[str, ModelAward]
    lot_id: int | None
    refunded: int = 0


@dataclass
class Model:
    members: set[str] = field(default_factory=set)
    balance: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    lots: dict[int, ModelLot] = field(default_factory=dict)
    events: dict[str, ModelEvent] = field(default_factory=dict)
    spends: list[tuple[str, str, str, int, int]] = field(default_factory=list)  # key, member, cur, amount, entry
    expired: set[int] = field(default_factory=set)
    written_off: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))

    def spendable(self, member: str) -> list[ModelLot]:
        """The member's coin lots with something left, in the order a spend consumes them."""
        mine = [lot for lot in self.lots.values() if lot.member == member and lot.remaining > 0]
        return sorted(mine, key=lambda lot: (lot.expires_at, lot.earned_at, lot.id))

    def take_coins(self, member: str, amount: int, first: int | None = None) -> int:
        """Consume up to `amount` coins (lot `first` before the others); return what was taken."""
        order = self.spendable(member)
        if first is not None:
            order = [lot for lot in order if lot.id == first] + [lot for lot in order if lot.id != first]
        left = amount
        for lot in order:
            take = min(lot.remaining, left)
            lot.remaining -= take
            left -= take
        taken = amount - left
        self.balance[(member, "coins")] -= taken
        return taken


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="kinloop-stateful-")
        url = f"sqlite:///{self.dir}/k.db"
        migrate.upgrade(connect(url))
        self.engine = connect(url)
        self.now = START
        self.loaded = load_program(self.engine, self.now)
        self.model = Model()
        self.counter = 0

    def teardown(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    @contextmanager
    def refused(self, expected: type[KinloopError], *, creates_member: bool = False) -> Iterator[Connection]:
        """Run a call that must be refused with `expected` and must not have written anything.

        An adjustment creates an unknown member before it looks at the amount; the caller's
        rollback removes it, so only the ledger is compared then.
        """
        with self.engine.connect() as conn, conn.begin() as tx:
            before = ledger_snapshot(conn)
            with pytest.raises(KinloopError) as info:
                yield conn
            assert type(info.value) is expected, f"{type(info.value).__name__}: {info.value}"
            event(f"refused: {expected.__name__}")
            after = ledger_snapshot(conn)
            if creates_member:
                before, after = before[:-1], after[:-1]
            assert after == before
            tx.rollback()

    # --- earning ------------------------------------------------------------------------------

    @initialize(amounts=st.lists(st.integers(0, 300), min_size=2, max_size=4))
    def first_purchases(self, amounts: list[int]) -> None:
        # Every run starts with members who have something to spend, reverse and expire.
        for i, amount in enumerate(amounts):
            self.earn(MEMBERS[i % 2], amount, 60 * i)

    @rule(member=st.sampled_from(MEMBERS), amount=st.integers(0, 300), minutes_ago=st.integers(-5, 3 * 24 * 60))
    def earn(self, member: str, amount: int, minutes_ago: int) -> None:
        event_id = self.next_id("e")
        occurred = self.now - timedelta(minutes=minutes_ago)
        raw = {
            "event_id": event_id,
            "member_id": member,
            "type": "purchase",
            "occurred_at": occurred.isoformat(),
            "attributes": {"amount": amount},
        }
        with self.engine.begin() as conn:
            [result] = ingest_svc.ingest(conn, self.loaded, [raw], now=self.now)
            assert result.status == "accepted", result.error
            earned = conn.execute(
                select(entries.c.id, entries.c.currency, entries.c.amount)
                .join(events, events.c.id == entries.c.event_pk)
                .where(events.c.event_id == event_id, entries.c.kind == "earn")
            ).all()
        expected = {cur: AWARD[cur](amount) for cur in CURRENCIES if AWARD[cur](amount) > 0}
        assert {cur: amt for _, cur, amt in earned} == expected
        assert len(earned) == len(expected)
        m = self.model
        m.members.add(member)
        lot_id = None
        for entry_id, cur, amt in earned:
            m.balance[(member, cur)] += amt
            if cur == "coins":
                lot_id = entry_id
                m.lots[entry_id] = ModelLot(entry_id, member, amt, occurred, occurred + EXPIRY)
        m.events[event_id] = ModelEvent(
            raw, member, amount, {cur: ModelAward(amt) for cur, amt in expected.items()}, lot_id
        )

    @precondition(lambda self: bool(self.model.events))
    @rule(data=st.data())
    def ingest_again(self, data: st.DataObject) -> None:
        event_id = data.draw(st.sampled_from(sorted(self.model.events)), label="event")
        with self.engine.begin() as conn:
            before = ledger_snapshot(conn)
            [result] = ingest_svc.ingest(conn, self.loaded, [self.model.events[event_id].raw], now=self.now)
            assert result.status == "duplicate"
            assert ledger_snapshot(conn) == before

    # --- spending -----------------------------------------------------------------------------

    @rule(member=st.sampled_from(MEMBERS), currency=st.sampled_from(CURRENCIES), amount=st.integers(1, 40))
    def spend(self, member: str, currency: str, amount: int) -> None:
        m = self.model
        key = self.next_id("s")
        call = {"reason": "order", "key": key, "now": self.now}
        expected: type[KinloopError] | None = None
        if member not in m.members:
            expected = UnknownMember
        elif currency == "xp":
            expected = NotSpendable
        elif amount > m.balance[(member, currency)]:
            expected = InsufficientBalance
        if expected is not None:
            with self.refused(expected) as conn:
                ledger_svc.spend(conn, self.loaded, member, currency, amount, **call)
            return
        with self.engine.begin() as conn:
            moved = ledger_svc.spend(conn, self.loaded, member, currency, amount, **call)
        if currency == "coins":
            assert m.take_coins(member, amount) == amount
        else:
            m.balance[(member, currency)] -= amount
        assert (moved.amount, moved.balance, moved.replayed) == (amount, m.balance[(member, currency)], False)
        m.spends.append((key, member, currency, amount, moved.entry_id))

    @rule(member=st.sampled_from(MEMBERS), currency=st.sampled_from(("coins", "credit")))
    def spend_everything(self, member: str, currency: str) -> None:
        # Members who spend all they have are the ones reversals cannot fully take back from.
        balance = self.model.balance[(member, currency)]
        if balance > 0:
            self.spend(member, currency, balance)

    @precondition(lambda self: bool(self.model.spends))
    @rule(data=st.data(), conflicting=st.booleans())
    def spend_again_with_the_same_key(self, data: st.DataObject, conflicting: bool) -> None:
        key, member, currency, amount, entry_id = data.draw(st.sampled_from(self.model.spends), label="spend")
        call = {"reason": "order", "key": key, "now": self.now}
        if conflicting:
            with self.refused(IdempotencyConflict) as conn:
                ledger_svc.spend(conn, self.loaded, member, currency, amount + 1, **call)
            return
        with self.engine.begin() as conn:
            before = ledger_snapshot(conn)
            moved = ledger_svc.spend(conn, self.loaded, member, currency, amount, **call)
            assert ledger_snapshot(conn) == before
        assert moved.replayed
        assert (moved.entry_id, moved.amount, moved.balance) == (
            entry_id,
            amount,
            self.model.balance[(member, currency)],
        )

    # --- manual adjustments -------------------------------------------------------------------

    @rule(
        member=st.sampled_from(MEMBERS),
        currency=st.sampled_from(CURRENCIES),
        amount=st.integers(-30, 30).filter(bool),
    )
    def adjust(self, member: str, currency: str, amount: int) -> None:
        m = self.model
        call = {"reason": "support ticket", "actor": "ops@example.com", "key": self.next_id("a"), "now": self.now}
        balance = m.balance[(member, currency)]
        if amount < 0 and balance + amount < 0:
            # Points come from lots (InsufficientBalance); growth refuses to go below zero.
            with self.refused(InsufficientBalance if currency != "xp" else Refused, creates_member=True) as conn:
                ledger_svc.adjust(conn, self.loaded, member, currency, amount, **call)
            return
        with self.engine.begin() as conn:
            moved = ledger_svc.adjust(conn, self.loaded, member, currency, amount, **call)
        m.members.add(member)
        if currency == "coins" and amount < 0:
            assert m.take_coins(member, -amount) == -amount
        else:
            m.balance[(member, currency)] += amount
        if currency == "coins" and amount > 0:
            m.lots[moved.entry_id] = ModelLot(moved.entry_id, member, amount, self.now, self.now + EXPIRY)
        assert (moved.amount, moved.balance) == (abs(amount), m.balance[(member, currency)])

    # --- reversals ----------------------------------------------------------------------------

    @precondition(lambda self: bool(self.model.events))
    @rule(data=st.data(), partial=st.booleans())
    def reverse(self, data: st.DataObject, partial: bool) -> None:
        m = self.model
        event_id = data.draw(st.sampled_from(sorted(m.events)), label="event")
        ev = m.events[event_id]
        refund: int | None = None
        if partial:
            # Sometimes more than is left, which must be refused.
            refund = data.draw(st.integers(1, max(1, ev.amount - ev.refunded) + 3), label="refund")
        call = {"amount": refund, "reason": "refund", "actor": "ops@example.com", "now": self.now}
        if all(a.amount - a.taken <= 0 for a in ev.awards.values()):
            with self.refused(AlreadyReversed) as conn:
                ledger_svc.reverse(conn, self.loaded, event_id, **call)
            return
        left = 0 if refund is None else ev.amount - ev.refunded - refund
        if left < 0:
            with self.refused(InvalidAmount) as conn:
                ledger_svc.reverse(conn, self.loaded, event_id, **call)
            return
        with self.engine.begin() as conn:
            result = ledger_svc.reverse(conn, self.loaded, event_id, **call)
        clawed: dict[str, int] = {}
        lost: dict[str, int] = {}
        for cur, award in ev.awards.items():
            target = min(award.amount, AWARD[cur](left))
            claw = award.amount - award.taken - target
            if claw <= 0:
                continue
            balance = m.balance[(ev.member, cur)]
            if cur == "coins":
                got = m.take_coins(ev.member, claw, first=ev.lot_id)
            elif cur == "credit":  # allow_negative: a shortfall becomes debt
                got = claw
                m.balance[(ev.member, cur)] -= got
            else:
                got = max(0, min(claw, balance))
                m.balance[(ev.member, cur)] -= got
            # What cannot be taken back is written off: the award is settled either way.
            award.taken += claw
            clawed[cur] = got
            if got < claw:
                lost[cur] = claw - got
                m.written_off[(ev.member, cur)] += claw - got
        ev.refunded = ev.amount - left
        event(f"reversed {'in part' if partial else 'in full'}{', with a write-off' if lost else ''}")
        if m.balance[(ev.member, "credit")] < 0:
            event("credit in debt")
        assert result.clawed == clawed
        assert result.unrecovered == lost

    # --- time and expiry ----------------------------------------------------------------------

    @rule(days=st.integers(0, 11), hours=st.integers(0, 23))
    def advance_clock(self, days: int, hours: int) -> None:
        self.now += timedelta(days=days, hours=hours)

    @rule(days=st.integers(0, 12))
    def expire(self, days: int) -> None:
        # The expiry job runs some days later (0: right now).
        self.now += timedelta(days=days)
        m = self.model
        due = [lot for lot in m.lots.values() if lot.expires_at <= self.now and lot.remaining > 0]
        expected = {"coins": sum(lot.remaining for lot in due)} if due else {}
        with self.engine.begin() as conn:
            got = ledger_svc.expire(conn, self.loaded, now=self.now)
        assert got == expected
        event("expired something" if due else "expired nothing")
        for lot in due:
            m.balance[(lot.member, "coins")] -= lot.remaining
            lot.remaining = 0
            m.expired.add(lot.id)
        # A second run at the same moment finds nothing left to expire.
        with self.engine.begin() as conn:
            before = ledger_snapshot(conn)
            assert ledger_svc.expire(conn, self.loaded, now=self.now) == {}
            assert ledger_snapshot(conn) == before

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def books_balance(self) -> None:
        with self.engine.connect() as conn:
            report = verify(conn, self.loaded)
        assert report.ok, [m.as_json() for m in report.mismatches]

    @invariant()
    def balances_match_the_model(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(members.c.member_id, balances.c.currency, balances.c.available, balances.c.pending).join(
                    members, members.c.id == balances.c.member_pk
                )
            ).all()
        # A missing row and a row at 0 both mean a zero balance.
        found = {(member, cur): avail for member, cur, avail, _ in rows if avail != 0}
        assert found == {key: value for key, value in self.model.balance.items() if value != 0}
        assert all(pending == 0 for *_, pending in rows)

    @invariant()
    def write_offs_match_the_model(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(members.c.member_id, entries.c.currency, func.sum(entries.c.amount))
                .join(members, members.c.id == entries.c.member_pk)
                .where(entries.c.kind == "write_off")
                .group_by(members.c.member_id, entries.c.currency)
            ).all()
        assert {(member, cur): int(total) for member, cur, total in rows} == {
            key: value for key, value in self.model.written_off.items() if value
        }

    @invariant()
    def no_negative_balance_where_forbidden(self) -> None:
        with self.engine.connect() as conn:
            negative = conn.execute(
                select(balances.c.member_pk, balances.c.currency, balances.c.available).where(
                    balances.c.currency.in_(("coins", "xp")), balances.c.available < 0
                )
            ).all()
        assert negative == []

    @invariant()
    def coin_lots_match_the_model(self) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(lots.c.id, lots.c.remaining, lots.c.expires_at).where(lots.c.currency == "coins")
            ).all()
        assert {i: rem for i, rem, _ in rows} == {i: lot.remaining for i, lot in self.model.lots.items()}
        assert {i: at for i, _, at in rows} == {i: lot.expires_at for i, lot in self.model.lots.items()}

    @invariant()
    def every_lot_expires_at_most_once(self) -> None:
        with self.engine.connect() as conn:
            per_key = conn.execute(
                select(entries.c.idempotency_key, func.count())
                .where(entries.c.kind == "expire")
                .group_by(entries.c.idempotency_key)
            ).all()
            per_lot = conn.execute(
                select(lot_movements.c.lot_id, func.count(), func.min(entries.c.idempotency_key))
                .join(entries, entries.c.id == lot_movements.c.entry_id)
                .where(entries.c.kind == "expire")
                .group_by(lot_movements.c.lot_id)
            ).all()
        assert all(n == 1 for _, n in per_key)
        assert all(n == 1 for _, n, _ in per_lot)
        assert all(key == f"expire:{lot_id}" for lot_id, _, key in per_lot)
        assert {lot_id for lot_id, _, _ in per_lot} == self.model.expired
        # and each expires at the lot's expiry date, not when the job happened to run
        with self.engine.connect() as conn:
            late = conn.execute(
                select(lots.c.id, lots.c.expires_at, entries.c.effective_at)
                .join(lot_movements, lot_movements.c.lot_id == lots.c.id)
                .join(entries, entries.c.id == lot_movements.c.entry_id)
                .where(entries.c.kind == "expire", entries.c.effective_at != lots.c.expires_at)
            ).all()
        assert late == []

    @invariant()
    def debts_are_paid_before_anything_else_is_held(self) -> None:
        # A debt lot is repaid from the next earnings, so it never sits beside spendable lots.
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(lots.c.member_pk, lots.c.currency, lots.c.remaining).where(
                    lots.c.status == "available", lots.c.remaining != 0
                )
            ).all()
        signs: dict[tuple[int, str], set[bool]] = defaultdict(set)
        for pk, cur, remaining in rows:
            signs[(pk, cur)].add(remaining > 0)
        assert [key for key, seen in signs.items() if seen == {True, False}] == []

    @invariant()
    def members_hold_the_tier_their_growth_reaches(self) -> None:
        ladder = self.loaded.program.ladder
        assert ladder is not None
        with self.engine.connect() as conn:
            tiers = dict(conn.execute(select(members.c.member_id, members.c.tier)).all())
        assert set(tiers) == self.model.members
        for member, tier in tiers.items():
            reached = tier_for(ladder, self.model.balance[(member, "xp")])
            assert tier == (reached.key if reached else None), member


LedgerMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=35,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerStateful = LedgerMachine.TestCase


# --- regressions ------------------------------------------------------------------------------


def test_a_reversal_writes_off_what_it_cannot_take_back_and_is_not_repeated(engine: Engine) -> None:
    """A reversal that cannot take everything back (the member has spent it) writes the rest
    off. Reversing the same event again, a retry say, must not take that rest from points the
    member earned since."""
    # given an event that awarded 10 coins, 8 credit and 5 xp; the coins all spent
    loaded = load_program(engine, START)
    raw = {
        "event_id": "e1",
        "member_id": "m1",
        "type": "purchase",
        "occurred_at": START.isoformat(),
        "attributes": {"amount": 100},
    }
    with engine.begin() as conn:
        ingest_svc.ingest(conn, loaded, [raw], now=START)
        ledger_svc.spend(conn, loaded, "m1", "coins", 10, reason="order", key=None, now=START)
    # when it is reversed in full
    with engine.begin() as conn:
        first = ledger_svc.reverse(conn, loaded, "e1", amount=None, reason="fraud", actor="ops", now=START)
    # then credit and xp come back, and the spent coins are written off
    assert first.clawed == {"coins": 0, "credit": 8, "xp": 5}
    assert first.unrecovered == {"coins": 10}
    with engine.connect() as conn:
        written_off = conn.execute(
            select(entries.c.currency, entries.c.amount, entries.c.from_account, entries.c.to_account).where(
                entries.c.kind == "write_off"
            )
        ).all()
    assert [tuple(r) for r in written_off] == [("coins", 10, "write_off", "issuance")]
    # and when the member later gets 7 coins and the reversal is repeated
    with engine.begin() as conn:
        ledger_svc.adjust(conn, loaded, "m1", "coins", 7, reason="goodwill", actor="ops", key=None, now=START)
    with engine.connect() as conn, conn.begin():
        before = ledger_snapshot(conn)
        with pytest.raises(AlreadyReversed):
            ledger_svc.reverse(conn, loaded, "e1", amount=None, reason="fraud", actor="ops", now=START)
        # then nothing is taken: the goodwill coins stay
        assert ledger_snapshot(conn) == before
    with engine.connect() as conn:
        coins = conn.execute(select(balances.c.available).where(balances.c.currency == "coins")).scalar()
        assert verify(conn, loaded).ok
    assert coins == 7
