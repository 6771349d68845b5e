"""Program-wide figures: members per tier and each currency's issued, spent, expired and
outstanding amounts (what `kinloop demo` prints, and later the console's dashboard)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, func, select

from kinloop.domain import ledger as L
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import balances, entries, events, members


@dataclass(frozen=True, slots=True)
class CurrencyFigures:
    issued: int  # earned through rules, plus manual credits
    reversed: int  # taken back by reversals
    spent: int
    expired: int
    adjusted_out: int  # manual debits
    available: int
    pending: int

    @property
    def outstanding(self) -> int:
        return self.available + self.pending


@dataclass(frozen=True, slots=True)
class Summary:
    members: int
    events: int
    tiers: list[tuple[str, str, int]]  # key, name, members
    currencies: dict[str, CurrencyFigures]

    def as_json(self, loaded: LoadedProgram) -> dict[str, Any]:
        program = loaded.program
        return {
            "program": program.key,
            "members": self.members,
            "events": self.events,
            "tiers": [{"key": k, "name": n, "members": c} for k, n, c in self.tiers],
            "currencies": {
                key: {
                    "issued": f.issued,
                    "reversed": f.reversed,
                    "spent": f.spent,
                    "expired": f.expired,
                    "adjusted_out": f.adjusted_out,
                    "outstanding": f.outstanding,
                    "pending": f.pending,
                    "unit": program.currencies[key].unit,
                }
                for key, f in self.currencies.items()
            },
        }


def summarise(conn: Connection, loaded: LoadedProgram) -> Summary:
    """Aggregate the whole program from its entries and balances."""
    pid = loaded.program_id
    program = loaded.program
    n_members = conn.execute(select(func.count()).select_from(members).where(members.c.program_id == pid)).scalar()
    n_events = conn.execute(select(func.count()).select_from(events).where(events.c.program_id == pid)).scalar()
    by_tier: dict[str | None, int] = dict(
        conn.execute(
            select(members.c.tier, func.count()).where(members.c.program_id == pid).group_by(members.c.tier)
        ).all()
    )
    tiers = [(t.key, t.name, int(by_tier.get(t.key, 0))) for t in program.ladder.tiers] if program.ladder else []

    def total(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, entries.c.amount), else_=0)), 0)

    member_accounts = entries.c.to_account.in_(L.MEMBER_ACCOUNTS)
    rows = conn.execute(
        select(
            entries.c.currency,
            total(entries.c.from_account.in_((L.ISSUANCE, L.ADJUSTMENT)) & member_accounts),
            total((entries.c.kind == "reversal") & (entries.c.to_account == L.ISSUANCE)),
            total(entries.c.kind == "spend"),
            total(entries.c.kind == "expire"),
            total((entries.c.kind == "adjustment") & (entries.c.to_account == L.ADJUSTMENT)),
        )
        .where(entries.c.program_id == pid)
        .group_by(entries.c.currency)
    ).all()
    held = {
        cur: (int(a), int(p))
        for cur, a, p in conn.execute(
            select(balances.c.currency, func.sum(balances.c.available), func.sum(balances.c.pending))
            .join(members, members.c.id == balances.c.member_pk)
            .where(members.c.program_id == pid)
            .group_by(balances.c.currency)
        )
    }
    figures = {key: CurrencyFigures(0, 0, 0, 0, 0, *held.get(key, (0, 0))) for key in program.currencies}
    for cur, issued, rev, spent, expired, adj_out in rows:
        if cur in figures:
            figures[cur] = CurrencyFigures(
                int(issued), int(rev), int(spent), int(expired), int(adj_out), *held.get(cur, (0, 0))
            )
    return Summary(int(n_members or 0), int(n_events or 0), tiers, figures)
