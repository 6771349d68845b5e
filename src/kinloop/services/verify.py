"""`kinloop verify`: recompute balances from entries and lots from their movements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, func, or_, select

from kinloop.domain import ledger as L
from kinloop.services import leaderboards as leaderboard_svc
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import balances, entries, holds, lot_movements, lots, members


@dataclass(frozen=True, slots=True)
class Mismatch:
    check: str
    member_id: str
    currency: str
    expected: int
    found: int
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "member_id": self.member_id,
            "currency": self.currency,
            "expected": self.expected,
            "found": self.found,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Report:
    members: int
    entries: int
    lots: int
    mismatches: list[Mismatch]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _flow(account: str) -> Any:
    return func.coalesce(
        func.sum(case((entries.c.to_account == account, entries.c.amount), else_=0)), 0
    ) - func.coalesce(func.sum(case((entries.c.from_account == account, entries.c.amount), else_=0)), 0)


def verify(conn: Connection, loaded: LoadedProgram) -> Report:
    """Every materialised figure checked against the entries it must equal."""
    pid = loaded.program_id
    names = dict(conn.execute(select(members.c.id, members.c.member_id).where(members.c.program_id == pid)).all())
    out: list[Mismatch] = []
    derived: dict[tuple[int, str], tuple[int, int]] = {}
    for pk, cur, avail, pend in conn.execute(
        select(entries.c.member_pk, entries.c.currency, _flow(L.AVAILABLE), _flow(L.PENDING))
        .where(entries.c.program_id == pid)
        .group_by(entries.c.member_pk, entries.c.currency)
    ):
        derived[(pk, cur)] = (int(avail), int(pend))
    stored: dict[tuple[int, str], tuple[int, int]] = {}
    for pk, cur, avail, pend in conn.execute(
        select(balances.c.member_pk, balances.c.currency, balances.c.available, balances.c.pending)
        .join(members, members.c.id == balances.c.member_pk)
        .where(members.c.program_id == pid)
    ):
        stored[(pk, cur)] = (int(avail), int(pend))
    for key in sorted(set(derived) | set(stored)):
        d = derived.get(key, (0, 0))
        s = stored.get(key, (0, 0))
        for i, what in enumerate(("available", "pending")):
            if d[i] != s[i]:
                out.append(
                    Mismatch(
                        f"balance.{what}",
                        names.get(key[0], str(key[0])),
                        key[1],
                        d[i],
                        s[i],
                        "stored balance differs from the sum of entries",
                    )
                )
    moved = dict(
        conn.execute(
            select(lot_movements.c.lot_id, func.sum(lot_movements.c.amount)).group_by(lot_movements.c.lot_id)
        ).all()
    )
    lot_sums: dict[tuple[int, str, str], int] = {}
    lot_count = 0
    for lot_id, pk, cur, amount, remaining, status in conn.execute(
        select(lots.c.id, lots.c.member_pk, lots.c.currency, lots.c.amount, lots.c.remaining, lots.c.status)
        .join(members, members.c.id == lots.c.member_pk)
        .where(members.c.program_id == pid)
    ):
        lot_count += 1
        expect = amount + int(moved.get(lot_id, 0))
        if expect != remaining:
            out.append(
                Mismatch(
                    "lot.remaining",
                    names.get(pk, str(pk)),
                    cur,
                    expect,
                    remaining,
                    f"lot {lot_id}: amount plus movements differs from remaining",
                )
            )
        if amount >= 0 and not 0 <= remaining <= amount:
            out.append(
                Mismatch(
                    "lot.overspent",
                    names.get(pk, str(pk)),
                    cur,
                    amount,
                    remaining,
                    f"lot {lot_id} consumed beyond its amount",
                )
            )
        lot_sums[(pk, cur, status)] = lot_sums.get((pk, cur, status), 0) + remaining
    program = loaded.program
    for (pk, cur), (avail, pend) in stored.items():
        currency = program.currencies.get(cur)
        if currency is not None and currency.kind == "points":
            in_lots = lot_sums.get((pk, cur, "available"), 0)
            if in_lots != avail:
                out.append(
                    Mismatch(
                        "lots.available",
                        names.get(pk, str(pk)),
                        cur,
                        avail,
                        in_lots,
                        "available lots do not add up to the available balance",
                    )
                )
        in_pending = lot_sums.get((pk, cur, "pending"), 0)
        if in_pending != pend:
            out.append(
                Mismatch(
                    "lots.pending",
                    names.get(pk, str(pk)),
                    cur,
                    pend,
                    in_pending,
                    "pending lots do not add up to the pending balance",
                )
            )
    consumed = conn.execute(
        select(
            entries.c.id, entries.c.amount, func.sum(lot_movements.c.amount), entries.c.member_pk, entries.c.currency
        )
        .join(lot_movements, lot_movements.c.entry_id == entries.c.id)
        .where(
            entries.c.program_id == pid,
            entries.c.kind.in_(("spend", "expire", "hold", "transfer_out", "fee", "donate")),
        )
        .group_by(entries.c.id, entries.c.amount, entries.c.member_pk, entries.c.currency)
    ).all()
    for entry_id, amount, total, pk, cur in consumed:
        if -int(total) != amount:
            out.append(
                Mismatch(
                    "entry.lots",
                    names.get(pk, str(pk)),
                    cur,
                    amount,
                    -int(total),
                    f"entry {entry_id} took a different amount from lots",
                )
            )
    out += _transfers(conn, pid)
    for where, pk, expect, found in leaderboard_svc.mismatches(conn, loaded):
        out.append(
            Mismatch("leaderboard.score", names.get(pk, str(pk)), where, expect, found, "score differs from the ledger")
        )
    out += _held(conn, pid, names)
    n_entries = conn.execute(select(func.count()).select_from(entries).where(entries.c.program_id == pid)).scalar()
    return Report(len(names), int(n_entries or 0), lot_count, out)


def _transfers(conn: Connection, pid: int) -> list[Mismatch]:
    """The `transfer` account holds exactly what open red envelopes have not handed out."""
    from kinloop.services.envelopes import held_in_transfer

    flows: dict[str, int] = dict(
        conn.execute(
            select(entries.c.currency, _flow(L.TRANSFER))
            .where(entries.c.program_id == pid)
            .group_by(entries.c.currency)
        ).all()
    )
    held = held_in_transfer(conn, pid)
    out = []
    for cur in sorted(set(held) | {c for c, v in flows.items() if v}):
        expected, found = held.get(cur, 0), int(flows.get(cur, 0))
        if expected != found:
            detail = "the transfer account differs from what open envelopes hold"
            out.append(Mismatch("transfer.account", "", cur, expected, found, detail))
    return out


def _held(conn: Connection, pid: int, names: dict[int, str]) -> list[Mismatch]:
    """What the ledger holds for each member equals the amounts of their active holds."""
    in_ledger = {
        (pk, cur): int(amount)
        for pk, cur, amount in conn.execute(
            select(entries.c.member_pk, entries.c.currency, _flow(L.HELD))
            .where(entries.c.program_id == pid, or_(entries.c.from_account == L.HELD, entries.c.to_account == L.HELD))
            .group_by(entries.c.member_pk, entries.c.currency)
        )
    }
    in_holds = {
        (pk, cur): int(amount)
        for pk, cur, amount in conn.execute(
            select(holds.c.member_pk, holds.c.currency, func.sum(holds.c.amount))
            .where(holds.c.program_id == pid, holds.c.status == "active")
            .group_by(holds.c.member_pk, holds.c.currency)
        )
    }
    return [
        Mismatch(
            "holds.held",
            names.get(key[0], str(key[0])),
            key[1],
            in_ledger.get(key, 0),
            in_holds.get(key, 0),
            "held entries do not add up to the active holds",
        )
        for key in sorted(set(in_ledger) | set(in_holds))
        if in_ledger.get(key, 0) != in_holds.get(key, 0)
    ]
