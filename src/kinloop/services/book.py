"""The Book: one transaction's view of the ledger.

It loads the balances and lots it needs once, records entries, lots and lot movements in
memory, keeps materialised balances in step, and writes everything in bulk on `flush()`.
Every ledger change in kinloop goes through it, so the rules of the ledger live in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, select

from kinloop.domain import ledger as L
from kinloop.domain.errors import InsufficientBalance, NotSpendable, Refused
from kinloop.domain.ledger import Clawback, Lot, plan_clawback, settle_debts
from kinloop.domain.periods import expires_at as expiry_for
from kinloop.domain.periods import pending_until
from kinloop.domain.program import Currency, Pending
from kinloop.store.bulk import Part, insert_rows, part_in, select_in, update_rows, upsert_rows
from kinloop.store.db import reserve_ids, reserve_ids_sql, reserved_ids
from kinloop.store.tables import balances, entries, lot_movements, lots

_BALANCE_COLUMNS = ("member_pk", "currency", "available", "pending")
# Ids per IN / ANY query: one query per batch of members in practice; SQLite >= 3.32 allows
# 32,766 parameters, far above this.
CHUNK = 5000


def chunks(items: list[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def lock_members(conn: Connection, pks: Iterable[int]) -> None:
    """Lock member rows in primary-key order (a fixed order, so two writers cannot deadlock)."""
    ordered = sorted(set(pks))
    if conn.dialect.name == "sqlite" or not ordered:
        return  # SQLite: BEGIN IMMEDIATE already serialises writers.
    conn.exec_driver_sql("SELECT id FROM members WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (ordered,)).fetchall()


class _Ids:
    """Primary keys reserved in blocks for one table."""

    def __init__(self, conn: Connection, table: Table) -> None:
        self.conn = conn
        self.table = table
        self.pool: list[int] = []
        self.top = 0
        self.block = 16

    def take(self, hint: int = 1) -> int:
        if not self.pool:
            # Each refill of a transaction asks for twice the last: a batch that needs more ids
            # than foreseen costs a few round trips, not one per 16 rows (unused ids are gaps).
            self.pool = reserve_ids(self.conn, self.table, max(hint, self.block), above=self.top)
            self.block = min(2 * self.block, 1 << 16)
            self.pool.reverse()
            self.top = max(self.top, self.pool[0])
        return self.pool.pop()

    def reserve(self, n: int) -> None:
        """Make sure at least `n` ids are ready, in one round trip."""
        if len(self.pool) < n:
            self.fill(reserve_ids(self.conn, self.table, n - len(self.pool), above=self.top))

    def reserve_part(self, n: int) -> tuple[Part | None, int]:
        """`reserve(n)` as a part of a joint read (None: enough are ready), and how many it asks;
        hand its rows to `reserved`."""
        want = n - len(self.pool)
        if want <= 0:
            return None, 0
        column, rest, params = reserve_ids_sql(self.conn, self.table, want)
        return Part((column,), rest, params), want

    def reserved(self, rows: list[tuple[Any, ...]], want: int) -> None:
        if want:
            self.fill(reserved_ids(self.conn, rows[0][0], want, above=self.top))

    def fill(self, more: list[int]) -> None:
        if more:
            self.top = max(self.top, more[-1])
            self.pool = list(reversed(more)) + self.pool
            self.block = max(self.block, len(more) // 4)  # a foreseen need that falls short falls short by more


@dataclass(slots=True)
class Balance:
    available: int = 0
    pending: int = 0


class AvailableView(Mapping[str, int]):
    """A member's available balances, live: what rule conditions and tiers look at."""

    __slots__ = ("_balances",)

    def __init__(self, balances: dict[str, Balance]) -> None:
        self._balances = balances

    def __getitem__(self, currency: str) -> int:
        return self._balances[currency].available

    def __iter__(self) -> Iterator[str]:
        return iter(self._balances)

    def __len__(self) -> int:
        return len(self._balances)


class Book:
    """Ledger changes of one transaction, written in bulk by `flush()`."""

    def __init__(self, conn: Connection, program_id: int, version_id: int | None, now: datetime) -> None:
        self.conn = conn
        self.program_id = program_id
        self.version_id = version_id
        self.now = now
        self.entry_ids = _Ids(conn, entries)
        self.movement_ids = _Ids(conn, lot_movements)
        self.balances: dict[tuple[int, str], Balance] = {}
        self._by_member: dict[int, dict[str, Balance]] = {}
        self._loaded_balances: set[int] = set()
        self._existing_balances: set[tuple[int, str]] = set()
        self._touched: set[tuple[int, str]] = set()
        self._lots: dict[tuple[int, str], list[Lot]] = {}
        self._new_lots: list[Lot] = []
        self._lot_extra: dict[int, dict[str, Any]] = {}
        self._release_keys: dict[int, str] = {}
        self._dirty_lots: dict[int, Lot] = {}
        self.entries: list[dict[str, Any]] = []
        self.movements: list[dict[str, Any]] = []
        # Qualification for tiers: changes of the available balance of the ladder's currency, per
        # member and local day (see `track_qualification`); off unless a ladder asks for it.
        self._qualifying: tuple[str, Any] | None = None
        self.qualification: dict[int, dict[int, int]] = {}

    def track_qualification(self, currency: str, tz: Any) -> None:
        """Record every change of `currency`'s available balances as qualification on the local
        day (in `tz`) it takes effect; written to `tier_qualification` by `flush()`."""
        self._qualifying = (currency, tz)

    # --- balances -------------------------------------------------------------------------
    def load_balances(self, member_pks: Iterable[int]) -> None:
        """Read the balances of these members in bulk."""
        todo = sorted(set(member_pks) - self._loaded_balances)
        for part in chunks(todo):
            rows = select_in(self.conn, balances, _BALANCE_COLUMNS, "member_pk", part)
            self.use_balances(part, rows)

    def balances_part(self, member_pks: list[int]) -> Part | None:
        """`load_balances` as a part of a joint read (at most `CHUNK` members); hand its rows to
        `use_balances`."""
        return part_in(self.conn, balances, _BALANCE_COLUMNS, "member_pk", member_pks)

    def use_balances(self, member_pks: Iterable[int], rows: Iterable[tuple[Any, ...]]) -> None:
        """Take these members' balances from their rows (member_pk, currency, available, pending)."""
        for pk, cur, avail, pend in rows:
            if pk in self._loaded_balances:
                continue
            b = self.balances[(pk, cur)] = Balance(avail, pend)
            self._by_member.setdefault(pk, {})[cur] = b
            self._existing_balances.add((pk, cur))
        self._loaded_balances.update(member_pks)

    def balance(self, member_pk: int, currency: str) -> Balance:
        if member_pk not in self._loaded_balances:
            self.load_balances([member_pk])
        key = (member_pk, currency)
        b = self.balances.get(key)
        if b is None:
            b = self.balances[key] = Balance()
            self._by_member.setdefault(member_pk, {})[currency] = b
        return b

    def available(self, member_pk: int) -> AvailableView:
        """Available balances per currency (for rule conditions and tiers), kept up to date."""
        if member_pk not in self._loaded_balances:
            self.load_balances([member_pk])
        return AvailableView(self._by_member.setdefault(member_pk, {}))

    # --- lots -----------------------------------------------------------------------------
    def lots(self, member_pk: int, currency: str) -> list[Lot]:
        """The member's lots in this currency that are not used up (debts included)."""
        key = (member_pk, currency)
        found = self._lots.get(key)
        if found is None:
            rows = self.conn.execute(
                select(
                    lots.c.id,
                    lots.c.amount,
                    lots.c.remaining,
                    lots.c.earned_at,
                    lots.c.expires_at,
                    lots.c.status,
                    lots.c.event_pk,
                    lots.c.release_key,
                ).where(lots.c.member_pk == member_pk, lots.c.currency == currency, lots.c.remaining != 0)
            ).all()
            found = [
                Lot(r.id, currency, r.amount, r.remaining, r.earned_at, r.expires_at, r.status, r.event_pk)
                for r in rows
            ]
            self._release_keys.update((r.id, r.release_key) for r in rows if r.release_key)
            found += [
                lot
                for lot in self._new_lots
                if self._lot_extra[lot.id]["member_pk"] == member_pk and lot.currency == currency
            ]
            self._lots[key] = found
        return found

    def _add_lot(self, lot: Lot, member_pk: int, **extra: Any) -> None:
        self._new_lots.append(lot)
        self._lot_extra[lot.id] = {"member_pk": member_pk, **extra}
        if extra.get("release_key"):
            self._release_keys[lot.id] = extra["release_key"]
        cached = self._lots.get((member_pk, lot.currency))
        if cached is not None:
            cached.append(lot)

    def _move(self, entry_id: int, lot: Lot, amount: int) -> None:
        lot.remaining += amount
        if lot.id not in self._lot_extra:
            self._dirty_lots[lot.id] = lot
        self.movements.append(
            {"id": self.movement_ids.take(), "entry_id": entry_id, "lot_id": lot.id, "amount": amount}
        )

    def _find_lot(self, member_pk: int, currency: str, lot_id: int) -> Lot:
        for lot in self.lots(member_pk, currency):
            if lot.id == lot_id:
                return lot
        raise LookupError(lot_id)

    # --- entries --------------------------------------------------------------------------
    def _entry(
        self,
        member_pk: int,
        currency: str,
        amount: int,
        src: str,
        dst: str,
        kind: str,
        effective_at: datetime,
        *,
        qualifies: bool = True,
        **extra: Any,
    ) -> int:
        entry_id = self.entry_ids.take()
        row = {
            "id": entry_id,
            "program_id": self.program_id,
            "member_pk": member_pk,
            "currency": currency,
            "amount": amount,
            "from_account": src,
            "to_account": dst,
            "kind": kind,
            "event_pk": None,
            "rule": None,
            "award_kind": None,
            "program_version_id": self.version_id,
            "reverses": None,
            "idempotency_key": None,
            "actor": None,
            "reason": None,
            "effective_at": effective_at,
            "created_at": self.now,
        }
        row.update(extra)
        self.entries.append(row)
        self._touched.add((member_pk, currency))
        q = self._qualifying
        if q is not None and currency == q[0] and qualifies:
            # The change of the available balance: releases count, pending earnings do not yet.
            delta = ((dst == L.AVAILABLE) - (src == L.AVAILABLE)) * amount
            if delta:
                days = self.qualification.setdefault(member_pk, {})
                day = effective_at.astimezone(q[1]).toordinal()
                days[day] = days.get(day, 0) + delta
        return entry_id

    def earn(
        self,
        member_pk: int,
        currency: Currency,
        amount: int,
        *,
        earned_at: datetime,
        pending: Pending | None = None,
        release_key: str | None = None,
        tz: Any = None,
        kind: str = "earn",
        src: str = L.ISSUANCE,
        qualifies: bool = True,
        expires_at: datetime | None = None,
        **extra: Any,
    ) -> int:
        """Credit a member: to pending when held, else available, paying off debts first.
        `qualifies=False` keeps a growth award out of tier qualification; `expires_at` overrides
        the currency's expiry (points moved between members keep theirs)."""
        dst = L.PENDING if pending else L.AVAILABLE
        entry_id = self._entry(member_pk, currency.key, amount, src, dst, kind, earned_at, qualifies=qualifies, **extra)
        bal = self.balance(member_pk, currency.key)
        if pending:
            bal.pending += amount
        else:
            bal.available += amount
        if currency.kind == "points" or pending:
            expires = expires_at or (expiry_for(currency.expiry, earned_at, tz) if tz is not None else None)
            lot = Lot(
                entry_id,
                currency.key,
                amount,
                amount,
                earned_at,
                expires,
                "pending" if pending else "available",
                extra.get("event_pk"),
            )
            self._add_lot(
                lot,
                member_pk,
                pending_until=pending_until(pending, earned_at) if pending else None,
                release_key=release_key,
            )
            if not pending and bal.available - amount < 0 and currency.kind == "points":
                self._settle(member_pk, currency.key, entry_id, lot)
        return entry_id

    def _settle(self, member_pk: int, currency: str, entry_id: int, lot: Lot) -> None:
        debts = [d for d in self.lots(member_pk, currency) if d.is_debt]
        for debt_id, pay in settle_debts(debts, lot.remaining):
            self._move(entry_id, lot, -pay)
            self._move(entry_id, self._find_lot(member_pk, currency, debt_id), pay)

    def debit(
        self,
        member_pk: int,
        currency: Currency,
        amount: int,
        *,
        kind: str,
        dst: str,
        effective_at: datetime,
        **extra: Any,
    ) -> int:
        """Take an amount from the available lots, soonest-expiring first (spend, adjustment)."""
        if not currency.spendable:
            raise NotSpendable(f"{currency.name} is a growth currency: it qualifies for tiers and is never spent")
        bal = self.balance(member_pk, currency.key)
        takes, short = L.allocate(self.lots(member_pk, currency.key), amount)
        if short or amount > bal.available:
            raise InsufficientBalance(
                f"available balance is {currency.display(max(bal.available, 0))}, {currency.display(amount)} asked",
                field="amount",
            )
        entry_id = self._entry(member_pk, currency.key, amount, L.AVAILABLE, dst, kind, effective_at, **extra)
        for lot_id, take in takes:
            self._move(entry_id, self._find_lot(member_pk, currency.key, lot_id), -take)
        bal.available -= amount
        return entry_id

    def soonest_expiry(self, entry_id: int, member_pk: int, currency: str) -> datetime | None:
        """The soonest expiry among the lots an entry of this transaction took from (None: none expire)."""
        taken = {m["lot_id"] for m in self.movements if m["entry_id"] == entry_id and m["amount"] < 0}
        found = [lot.expires_at for lot in self.lots(member_pk, currency) if lot.id in taken and lot.expires_at]
        return min(found, default=None)

    def restore(
        self,
        member_pk: int,
        currency: Currency,
        into_lots: Iterable[tuple[int, int]],
        lapsed: int,
        *,
        src: str,
        effective_at: datetime,
        **extra: Any,
    ) -> int | None:
        """Give back what a spend or a hold took: each amount into the lot it came from (so it
        keeps its expiry); `lapsed` (taken from lots that have expired since) goes to expiry.
        Entries are only added, never edited. Returns the restoring entry's id."""
        moves = [(lot_id, amount) for lot_id, amount in into_lots if amount > 0]
        total = sum(a for _, a in moves)
        entry_id = None
        if total:
            bal = self.balance(member_pk, currency.key)
            in_debt = bal.available < 0
            entry_id = self._entry(member_pk, currency.key, total, src, L.AVAILABLE, "restore", effective_at, **extra)
            restored = [self._lot_by_id(member_pk, currency.key, lot_id) for lot_id, _ in moves]
            for lot, (_, amount) in zip(restored, moves, strict=True):
                self._move(entry_id, lot, amount)
            bal.available += total
            if in_debt:
                for lot in restored:
                    self._settle(member_pk, currency.key, entry_id, lot)
        if lapsed > 0:
            self._entry(member_pk, currency.key, lapsed, src, L.EXPIRY, "lapse", effective_at, **extra)
        return entry_id

    def capture(self, member_pk: int, currency: Currency, amount: int, *, effective_at: datetime, **extra: Any) -> int:
        """Spend held points: held -> redemption (their lots were consumed when held)."""
        self.balance(member_pk, currency.key)  # unchanged, but written back with the others
        return self._entry(member_pk, currency.key, amount, L.HELD, L.REDEMPTION, "capture", effective_at, **extra)

    def _lot_by_id(self, member_pk: int, currency: str, lot_id: int) -> Lot:
        """A lot of the member, used up or not (a restore refills used-up lots)."""
        cached = self.lots(member_pk, currency)
        for lot in cached:
            if lot.id == lot_id:
                return lot
        r = self.conn.execute(
            select(
                lots.c.id,
                lots.c.amount,
                lots.c.remaining,
                lots.c.earned_at,
                lots.c.expires_at,
                lots.c.status,
                lots.c.event_pk,
            ).where(lots.c.id == lot_id, lots.c.member_pk == member_pk, lots.c.currency == currency)
        ).one()
        lot = Lot(r.id, currency, r.amount, r.remaining, r.earned_at, r.expires_at, r.status, r.event_pk)
        cached.append(lot)
        return lot

    def lower_growth(
        self, member_pk: int, currency: Currency, amount: int, *, effective_at: datetime, **extra: Any
    ) -> int:
        """A manual debit of a growth currency (which has no lots to take from)."""
        bal = self.balance(member_pk, currency.key)
        if bal.available - amount < 0 and not currency.allow_negative:
            raise Refused(
                f"{currency.name} balance is {currency.display(bal.available)}; it cannot go below 0", field="amount"
            )
        entry_id = self._entry(
            member_pk, currency.key, amount, L.AVAILABLE, L.ADJUSTMENT, "adjustment", effective_at, **extra
        )
        bal.available -= amount
        return entry_id

    def expire_lot(self, member_pk: int, currency: Currency, lot: Lot, at: datetime) -> int | None:
        """Expire what is left of a lot, exactly once (the entry's key names the lot)."""
        if lot.remaining <= 0:
            return None
        src = L.PENDING if lot.status == "pending" else L.AVAILABLE
        amount = lot.remaining
        entry_id = self._entry(
            member_pk,
            currency.key,
            amount,
            src,
            L.EXPIRY,
            "expire",
            at,
            idempotency_key=f"expire:{lot.id}",
            event_pk=lot.event_id,
        )
        self._move(entry_id, lot, -amount)
        bal = self.balance(member_pk, currency.key)
        if src == L.PENDING:
            bal.pending -= amount
        else:
            bal.available -= amount
        return entry_id

    def release_lot(self, member_pk: int, currency: Currency, lot: Lot, at: datetime) -> int | None:
        """Make a pending lot spendable."""
        if lot.status != "pending":
            return None
        amount = lot.remaining
        lot.status = "available"
        if lot.id not in self._lot_extra:
            self._dirty_lots[lot.id] = lot
        if amount <= 0:
            return None
        entry_id = self._entry(
            member_pk, currency.key, amount, L.PENDING, L.AVAILABLE, "release", at, event_pk=lot.event_id
        )
        bal = self.balance(member_pk, currency.key)
        bal.pending -= amount
        bal.available += amount
        if currency.kind == "points" and bal.available - amount < 0:
            self._settle(member_pk, currency.key, entry_id, lot)
        return entry_id

    def release_matching(self, member_pk: int, currency: Currency, keys: set[str], at: datetime) -> None:
        """Release the member's pending lots whose release key is one of `keys`."""
        for lot in list(self.lots(member_pk, currency.key)):
            if lot.status == "pending" and self._release_keys.get(lot.id) in keys:
                self.release_lot(member_pk, currency, lot, at)

    def claw_back(
        self,
        member_pk: int,
        currency: Currency,
        amount: int,
        *,
        own_lot_ids: list[int],
        effective_at: datetime,
        **extra: Any,
    ) -> tuple[int, int]:
        """Take back an award: pending lots are cancelled, then available lots are taken
        (the award's own first); a shortfall becomes debt only where the currency allows it,
        and is otherwise written off, so that the reversal is complete and never repeated.
        Returns (recovered, unrecovered)."""
        recovered, unrecovered = self._take_back(
            member_pk, currency, amount, own_lot_ids=own_lot_ids, effective_at=effective_at, **extra
        )
        if unrecovered:
            self._entry(
                member_pk, currency.key, unrecovered, L.WRITE_OFF, L.ISSUANCE, "write_off", effective_at, **extra
            )
        return recovered, unrecovered

    def _take_back(
        self,
        member_pk: int,
        currency: Currency,
        amount: int,
        *,
        own_lot_ids: list[int],
        effective_at: datetime,
        **extra: Any,
    ) -> tuple[int, int]:
        left = amount
        recovered = 0
        bal = self.balance(member_pk, currency.key)
        has_lots = bool(own_lot_ids) or currency.kind == "points"
        all_lots = self.lots(member_pk, currency.key) if has_lots else []
        own = [lot for lot in all_lots if lot.id in own_lot_ids]
        for lot in own:
            if lot.status == "pending" and lot.remaining > 0 and left > 0:
                take = min(lot.remaining, left)
                entry_id = self._entry(
                    member_pk, currency.key, take, L.PENDING, L.ISSUANCE, "reversal", effective_at, **extra
                )
                self._move(entry_id, lot, -take)
                bal.pending -= take
                left -= take
                recovered += take
        if left == 0:
            return recovered, 0
        if currency.kind == "points":
            plan = plan_clawback(own, all_lots, left, currency.allow_negative)
        else:
            # Growth is never spent, so it has no lots to take from: only the balance.
            room = left if currency.allow_negative else max(0, min(left, bal.available))
            plan = Clawback([], 0, left - room)
            recovered += room
            if room:
                self._entry(member_pk, currency.key, room, L.AVAILABLE, L.ISSUANCE, "reversal", effective_at, **extra)
                bal.available -= room
            return recovered, plan.unrecovered
        if plan.recovered:
            entry_id = self._entry(
                member_pk, currency.key, plan.recovered, L.AVAILABLE, L.ISSUANCE, "reversal", effective_at, **extra
            )
            for lot_id, take in plan.takes:
                self._move(entry_id, self._find_lot(member_pk, currency.key, lot_id), -take)
            if plan.debt:
                debt = Lot(entry_id, currency.key, -plan.debt, -plan.debt, effective_at, None, "available", None)
                self._add_lot(debt, member_pk, pending_until=None, release_key=None)
            bal.available -= plan.recovered
            recovered += plan.recovered
        return recovered, plan.unrecovered

    # --- writing --------------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything recorded so far, in foreign-key order."""
        conn = self.conn
        if self.entries:
            insert_rows(conn, entries, self.entries)
        if self._new_lots:
            insert_rows(
                conn,
                lots,
                [
                    {
                        "id": lot.id,
                        "member_pk": self._lot_extra[lot.id]["member_pk"],
                        "currency": lot.currency,
                        "amount": lot.amount,
                        "remaining": lot.remaining,
                        "status": lot.status,
                        "earned_at": lot.earned_at,
                        "expires_at": lot.expires_at,
                        "event_pk": lot.event_id,
                        "pending_until": self._lot_extra[lot.id]["pending_until"],
                        "release_key": self._lot_extra[lot.id]["release_key"],
                    }
                    for lot in self._new_lots
                ],
            )
        if self.movements:
            insert_rows(conn, lot_movements, self.movements)
        if self._dirty_lots:
            update_rows(
                conn,
                lots,
                [
                    {"id": lot.id, "remaining": lot.remaining, "status": lot.status}
                    for lot in sorted(self._dirty_lots.values(), key=lambda lot: lot.id)
                ],
                "id",
            )
        if self._touched:
            upsert_rows(
                conn,
                balances,
                [
                    {
                        "member_pk": pk,
                        "currency": cur,
                        "available": self.balances[(pk, cur)].available,
                        "pending": self.balances[(pk, cur)].pending,
                    }
                    for pk, cur in sorted(self._touched)
                ],
                ("member_pk", "currency"),
            )
        if self.qualification:
            from kinloop.store.tables import tier_qualification

            assert self._qualifying is not None
            cur = self._qualifying[0]
            rows = [
                {"member_pk": pk, "currency": cur, "day": day, "amount": amount}
                for pk, days in sorted(self.qualification.items())
                for day, amount in sorted(days.items())
                if amount
            ]
            upsert_rows(conn, tier_qualification, rows, ("member_pk", "currency", "day"), add=("amount",))
            self.qualification = {}
        self._existing_balances |= self._touched
        self.entries = []
        self.movements = []
        self._new_lots = []
        self._lot_extra = {}
        self._dirty_lots = {}
        self._touched = set()
        for key in list(self._lots):
            self._lots[key] = [lot for lot in self._lots[key] if lot.remaining != 0]
