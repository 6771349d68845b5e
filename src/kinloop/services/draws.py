"""Draws: create a prize pool, enter (pay, roll, win), close and reveal, verify, report.

An entry runs in the caller's transaction: the member's row is locked (as every ledger change
does, so one balance is never spent twice), then the draw's row (so entries are numbered one
by one and stock is counted under the lock), in that order everywhere.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, func, select, update

from kinloop.domain import draws as D
from kinloop.domain import ledger as L
from kinloop.domain.amounts import to_minor
from kinloop.domain.errors import (
    IdempotencyConflict,
    InvalidAmount,
    InvalidInput,
    InvalidPrizePool,
    Issue,
    LimitReached,
    NotFound,
    OutletClosed,
    OutOfStock,
    Refused,
)
from kinloop.domain.program import Program
from kinloop.services import members as member_svc
from kinloop.services.book import Book
from kinloop.services.ledger import _audit, currency_of
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import draw_entries, draw_odds, draw_prizes, draws, members


@dataclass(frozen=True, slots=True)
class PrizeIn:
    """A prize as an operator gives it (amounts in units, odds as a weight or a probability)."""

    key: str
    name: str
    kind: D.PrizeKind
    odds: Decimal
    stock: int | None = None
    amount: Decimal | None = None
    currency: str | None = None
    reward: str | None = None
    value: Decimal | None = None


@dataclass(frozen=True, slots=True)
class DrawIn:
    key: str
    name: str
    currency: str
    cost: Decimal
    opens_at: datetime
    closes_at: datetime
    prizes: Sequence[PrizeIn]
    odds_total: Decimal | None = None
    daily_limit: int | None = None
    guarantee: D.Guarantee | None = None


def _pool(
    program: Program,
    draw_currency_key: str,
    prizes: Sequence[PrizeIn],
    odds_total: Decimal | None,
    guarantee: D.Guarantee | None,
) -> list[D.Prize]:
    """The prize pool in engine terms, or InvalidPrizePool with every problem."""
    issues: list[Issue] = []
    weights, odd = D.weights_from([p.odds for p in prizes], declared=odds_total, path="prizes")
    issues += odd
    draw_currency = program.currencies.get(draw_currency_key)
    out: list[D.Prize] = []
    for i, p in enumerate(prizes):
        path = f"prizes[{i}]"
        amount = 0
        currency = p.currency or draw_currency_key
        if p.kind == "points":
            cur = program.currencies.get(currency)
            if cur is None or not cur.spendable:
                issues.append(Issue(f"{path}.currency", f"{currency!r} is not a points currency of this program"))
            elif p.amount is None:
                issues.append(Issue(f"{path}.amount", "a points prize needs an amount"))
            else:
                amount = _minor(p.amount, cur.decimals, f"{path}.amount", issues)
        elif p.kind in ("reward", "coupon") and not p.reward:
            issues.append(Issue(f"{path}.reward", f"a {p.kind} prize needs the key of what is given"))
        value = 0
        if p.value is not None and draw_currency is not None:
            value = _minor(p.value, draw_currency.decimals, f"{path}.value", issues)
        weight = weights[i] if weights else 0
        out.append(
            D.Prize(
                p.key,
                p.name,
                p.kind,
                weight,
                p.stock,
                amount,
                currency if p.kind == "points" else None,
                p.reward,
                value,
            )
        )
    issues += D.check_pool(out, guarantee, "prizes")
    if issues:
        raise InvalidPrizePool(issues)
    return out


def _minor(value: Decimal, decimals: int, path: str, issues: list[Issue]) -> int:
    try:
        minor = to_minor(value, decimals)
    except InvalidAmount:
        issues.append(Issue(path, f"{value} has more than {decimals} decimal places"))
        return 0
    if minor < 0:
        issues.append(Issue(path, "must not be negative"))
    return minor


def _prize_json(p: D.Prize) -> dict[str, Any]:
    return {
        "key": p.key,
        "name": p.name,
        "kind": p.kind,
        "weight": p.weight,
        "stock": p.stock,
        "amount": p.amount,
        "currency": p.currency,
        "reward": p.reward,
        "value": p.value,
    }


def _prize_from(d: dict[str, Any]) -> D.Prize:
    return D.Prize(
        d["key"], d["name"], d["kind"], d["weight"], d["stock"], d["amount"], d["currency"], d["reward"], d["value"]
    )


def create(conn: Connection, loaded: LoadedProgram, spec: DrawIn, *, now: datetime, actor: str) -> dict[str, Any]:
    """A new draw with its secret seed (only its sha256 is shown until it closes)."""
    program = loaded.program
    currency = currency_of(program, spec.currency)
    if not currency.spendable:
        raise InvalidInput(f"{currency.name} is a growth currency; a draw costs points", field="currency")
    cost = to_minor(spec.cost, currency.decimals)
    if cost <= 0:
        raise InvalidAmount(f"the cost of an entry must be greater than 0, got {spec.cost}", field="cost")
    if spec.closes_at <= spec.opens_at:
        raise InvalidInput("closes_at must be after opens_at", field="closes_at")
    pool = _pool(program, currency.key, spec.prizes, spec.odds_total, spec.guarantee)
    if _draw_row(conn, loaded.program_id, spec.key, missing_ok=True) is not None:
        raise Refused(f"a draw {spec.key!r} already exists", field="key")
    seed = secrets.token_bytes(32)
    draw_id = conn.execute(
        draws.insert()
        .values(
            program_id=loaded.program_id,
            key=spec.key,
            name=spec.name,
            currency=currency.key,
            cost=cost,
            daily_limit=spec.daily_limit,
            guarantee_after=spec.guarantee.after if spec.guarantee else None,
            guarantee_prize=spec.guarantee.prize if spec.guarantee else None,
            seed=seed.hex(),
            commitment=D.commitment(seed),
            odds_version=1,
            entries=0,
            opens_at=spec.opens_at,
            closes_at=spec.closes_at,
            created_at=now,
        )
        .returning(draws.c.id)
    ).scalar_one()
    _put_odds(conn, draw_id, 1, pool, now)
    _audit(conn, loaded.program_id, now, actor, "draw.create", spec.key, None, {"cost": cost})
    return show(conn, loaded, spec.key, now=now)


def _put_odds(conn: Connection, draw_id: int, version: int, pool: list[D.Prize], now: datetime) -> None:
    conn.execute(
        draw_odds.insert().values(
            draw_id=draw_id, version=version, prizes=[_prize_json(p) for p in pool], created_at=now
        )
    )
    conn.execute(draw_prizes.delete().where(draw_prizes.c.draw_id == draw_id))
    conn.execute(
        draw_prizes.insert(), [{"draw_id": draw_id, "prize": p.key, "stock": p.stock, "given": 0} for p in pool]
    )


def replace_odds(
    conn: Connection,
    loaded: LoadedProgram,
    key: str,
    prizes: Sequence[PrizeIn],
    *,
    odds_total: Decimal | None = None,
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    """Put a new odds table (with its stock) in force from the next entry; earlier entries keep theirs."""
    row = _draw(conn, loaded.program_id, key, lock=True)
    guarantee = D.Guarantee(row.guarantee_after, row.guarantee_prize) if row.guarantee_after else None
    pool = _pool(loaded.program, row.currency, prizes, odds_total, guarantee)
    version = row.odds_version + 1
    _put_odds(conn, row.id, version, pool, now)
    conn.execute(update(draws).where(draws.c.id == row.id).values(odds_version=version))
    _audit(conn, loaded.program_id, now, actor, "draw.odds", key, None, {"version": version})
    return show(conn, loaded, key, now=now)


def _draw_row(
    conn: Connection, program_id: int, key: str, *, lock: bool = False, missing_ok: bool = False
) -> Row[Any] | None:
    stmt = select(draws).where(draws.c.program_id == program_id, draws.c.key == key)
    row = conn.execute(stmt.with_for_update() if lock else stmt).first()
    if row is None and not missing_ok:
        raise NotFound(f"no draw {key!r} in this program", field="draw")
    return row


def _draw(conn: Connection, program_id: int, key: str, *, lock: bool = False) -> Row[Any]:
    row = _draw_row(conn, program_id, key, lock=lock)
    assert row is not None
    return row


def _odds(conn: Connection, draw_id: int) -> dict[int, list[D.Prize]]:
    rows = conn.execute(select(draw_odds.c.version, draw_odds.c.prizes).where(draw_odds.c.draw_id == draw_id))
    return {v: [_prize_from(p) for p in _json(prizes)] for v, prizes in rows}


def _json(value: Any) -> Any:
    import json

    return json.loads(value) if isinstance(value, str) else value


def _stock(conn: Connection, draw_id: int) -> dict[str, int | None]:
    rows = conn.execute(select(draw_prizes.c.prize, draw_prizes.c.stock).where(draw_prizes.c.draw_id == draw_id))
    return {str(k): v for k, v in rows}


def handle(draw_key: str, member_id: str) -> str:
    """The opaque name a member's entries carry in a draw's public record."""
    return hashlib.sha256(f"{draw_key}\x1f{member_id}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class EntryResult:
    draw: str
    entry_key: str
    seq: int
    member_id: str
    prize: D.Prize | None
    guaranteed: bool
    roll: int
    odds_version: int
    cost: int
    currency: str
    balance: int
    replayed: bool = False

    def as_json(self, program: Program) -> dict[str, Any]:
        c = program.currencies[self.currency]
        p = self.prize
        won = "nothing this time" if p is None or p.is_loss else p.name
        if p is not None and p.kind == "points" and p.currency:
            won = f"{p.name} ({program.currencies[p.currency].display(p.amount)})"
        return {
            "draw": self.draw,
            "entry_key": self.entry_key,
            "seq": self.seq,
            "member_id": self.member_id,
            "prize": None if p is None else {"key": p.key, "name": p.name, "kind": p.kind, "reward": p.reward},
            "won": p is not None and not p.is_loss,
            "guaranteed": self.guaranteed,
            "roll": str(self.roll),
            "odds_version": self.odds_version,
            "cost": self.cost,
            "balance": self.balance,
            "replayed": self.replayed,
            "text": f"paid {c.display(self.cost)}; won {won}; balance {c.display(self.balance)}",
        }


def enter(
    conn: Connection,
    loaded: LoadedProgram,
    key: str,
    member_id: str,
    *,
    entry_key: str,
    now: datetime,
    actor: str = "api",
) -> EntryResult:
    """Pay one entry and draw its prize; idempotent on `entry_key` (a repeat returns the first result)."""
    program = loaded.program
    member = member_svc.get(conn, loaded.program_id, member_id, lock=True)
    row = _draw(conn, loaded.program_id, key, lock=True)
    currency = program.currencies[row.currency]
    previous = conn.execute(
        select(draw_entries).where(draw_entries.c.draw_id == row.id, draw_entries.c.entry_key == entry_key)
    ).first()
    if previous is not None:
        return _replayed(conn, loaded, row, previous, member.pk, member_id)
    if not row.opens_at <= now < row.closes_at:
        when = "has not opened yet" if now < row.opens_at else "is closed"
        raise OutletClosed(f"the draw {row.name!r} {when}", field="draw")
    day = now.astimezone(program.timezone).date().toordinal()
    if row.daily_limit is not None:
        today = conn.execute(
            select(func.count())
            .select_from(draw_entries)
            .where(draw_entries.c.draw_id == row.id, draw_entries.c.member_pk == member.pk, draw_entries.c.day == day)
        ).scalar_one()
        if today >= row.daily_limit:
            raise LimitReached(f"{row.daily_limit} entries a day in {row.name!r}; try again tomorrow", field="draw")
    odds = _odds(conn, row.id)
    prizes = odds[row.odds_version]
    stock = _stock(conn, row.id)
    seq = row.entries + 1
    guarantee = D.Guarantee(row.guarantee_after, row.guarantee_prize) if row.guarantee_after else None
    losses = _losses(conn, row.id, member.pk, odds, guarantee)
    result = D.decide(
        prizes, stock, D.roll(bytes.fromhex(row.seed), row.key, seq, entry_key), losses=losses, guarantee=guarantee
    )
    if result.prize is None:
        raise OutOfStock(f"every prize of {row.name!r} is out of stock", field="draw")
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    spend_id = book.debit(
        member.pk,
        currency,
        row.cost,
        kind="spend",
        dst=L.REDEMPTION,
        effective_at=now,
        idempotency_key=f"draw:{row.id}:{entry_key}",
        reason=f"entry to draw {row.key}",
        actor=actor,
    )
    prize = result.prize
    prize_id = None
    if prize.kind == "points" and prize.currency:
        prize_id = book.earn(
            member.pk,
            program.currencies[prize.currency],
            prize.amount,
            earned_at=now,
            tz=program.timezone,
            award_kind="draw",
            reason=f"prize {prize.key} in draw {row.key}",
            actor=actor,
        )
    balance = book.balance(member.pk, currency.key).available
    book.flush()
    _count_prize(conn, row.id, prize)
    conn.execute(update(draws).where(draws.c.id == row.id).values(entries=seq))
    conn.execute(
        draw_entries.insert().values(
            draw_id=row.id,
            seq=seq,
            entry_key=entry_key,
            member_pk=member.pk,
            odds_version=row.odds_version,
            roll=str(result.roll),
            stock_seen=stock,
            guaranteed=result.guaranteed,
            prize=prize.key,
            spend_entry_id=spend_id,
            prize_entry_id=prize_id,
            day=day,
            at=now,
        )
    )
    return EntryResult(
        row.key,
        entry_key,
        seq,
        member_id,
        prize,
        result.guaranteed,
        result.roll,
        row.odds_version,
        row.cost,
        currency.key,
        balance,
    )


def _count_prize(conn: Connection, draw_id: int, prize: D.Prize) -> None:
    """One more given; limited stock one less, guarded so that it can never go below zero."""
    stmt = update(draw_prizes).where(draw_prizes.c.draw_id == draw_id, draw_prizes.c.prize == prize.key)
    if prize.stock is None:
        done = conn.execute(stmt.values(given=draw_prizes.c.given + 1))
    else:
        done = conn.execute(
            stmt.where(draw_prizes.c.stock > 0).values(stock=draw_prizes.c.stock - 1, given=draw_prizes.c.given + 1)
        )
    if done.rowcount != 1:
        raise OutOfStock(f"prize {prize.key!r} is out of stock", field="draw")


def _losses(
    conn: Connection, draw_id: int, member_pk: int, odds: dict[int, list[D.Prize]], guarantee: D.Guarantee | None
) -> int:
    """How many of the member's latest entries in a row won nothing (only when a guarantee needs it)."""
    if guarantee is None:
        return 0
    rows = conn.execute(
        select(draw_entries.c.prize, draw_entries.c.odds_version)
        .where(draw_entries.c.draw_id == draw_id, draw_entries.c.member_pk == member_pk)
        .order_by(draw_entries.c.seq.desc())
        .limit(guarantee.after)
    ).all()
    n = 0
    for prize_key, version in rows:
        kinds = {p.key: p.kind for p in odds[version]}
        if kinds.get(prize_key) != "nothing":
            break
        n += 1
    return n


def _replayed(
    conn: Connection, loaded: LoadedProgram, row: Row[Any], entry: Row[Any], member_pk: int, member_id: str
) -> EntryResult:
    if entry.member_pk != member_pk:
        raise IdempotencyConflict(f"entry key {entry.entry_key!r} was used by another member", field="entry_key")
    prizes = {p.key: p for p in _odds(conn, row.id)[entry.odds_version]}
    book = Book(conn, loaded.program_id, loaded.version_id, entry.at)
    balance = book.balance(member_pk, row.currency).available
    return EntryResult(
        row.key,
        entry.entry_key,
        entry.seq,
        member_id,
        prizes.get(entry.prize),
        entry.guaranteed,
        int(entry.roll),
        entry.odds_version,
        row.cost,
        row.currency,
        balance,
        replayed=True,
    )


def close(conn: Connection, loaded: LoadedProgram, key: str, *, now: datetime, actor: str) -> dict[str, Any]:
    """End the draw now (if it has not ended) and so reveal its seed."""
    row = _draw(conn, loaded.program_id, key, lock=True)
    if row.closes_at > now:
        conn.execute(update(draws).where(draws.c.id == row.id).values(closes_at=max(now, row.opens_at)))
        _audit(conn, loaded.program_id, now, actor, "draw.close", key, None, {})
    return show(conn, loaded, key, now=now)


def _revealed(row: Row[Any], now: datetime) -> bool:
    return bool(row.closes_at <= now)


def show(conn: Connection, loaded: LoadedProgram, key: str, *, now: datetime) -> dict[str, Any]:
    """A draw as the public sees it: odds and stock, expected cost, commitment (and seed once closed)."""
    program = loaded.program
    row = _draw(conn, loaded.program_id, key)
    return _view(program, row, _odds(conn, row.id)[row.odds_version], _stock(conn, row.id), now)


def _view(
    program: Program, row: Row[Any], prizes: list[D.Prize], stock: dict[str, int | None], now: datetime
) -> dict[str, Any]:
    currency = program.currencies[row.currency]
    chance = D.probabilities(prizes)
    expected = D.expected_value(prizes, currency.key)
    minor = int(expected.to_integral_value())
    status = "open" if row.opens_at <= now < row.closes_at else ("closed" if now >= row.closes_at else "scheduled")
    return {
        "key": row.key,
        "name": row.name,
        "status": status,
        "currency": currency.key,
        "cost": row.cost,
        "cost_text": currency.display(row.cost),
        "daily_limit": row.daily_limit,
        "guarantee": {"after": row.guarantee_after, "prize": row.guarantee_prize} if row.guarantee_after else None,
        "opens_at": row.opens_at.isoformat(),
        "closes_at": row.closes_at.isoformat(),
        "entries": row.entries,
        "odds_version": row.odds_version,
        "commitment": row.commitment,
        "seed": row.seed if _revealed(row, now) else None,
        "scheme": "roll = HMAC-SHA256(seed, f'{draw}:{seq}:{entry_key}') as a big-endian integer; prize = the one "
        "covering roll % (total weight of prizes in stock), prizes in declared order",
        "prizes": [
            {
                **_prize_json(p),
                "stock": stock.get(p.key),
                "probability": str(chance[p.key]),
            }
            for p in prizes
        ],
        "expected_cost": {
            "per_entry": minor,
            "ratio": str((expected / row.cost).quantize(Decimal("0.0001"))),
            "text": f"an entry pays out {currency.display(minor)} on average for {currency.display(row.cost)}",
        },
    }


def listing(conn: Connection, loaded: LoadedProgram, *, now: datetime) -> list[dict[str, Any]]:
    keys = conn.execute(
        select(draws.c.key).where(draws.c.program_id == loaded.program_id).order_by(draws.c.id)
    ).scalars()
    return [show(conn, loaded, k, now=now) for k in keys]


def public_entries(conn: Connection, loaded: LoadedProgram, key: str) -> list[D.PublicEntry]:
    """Every entry as published: enough for anyone to recompute it once the seed is out."""
    row = _draw(conn, loaded.program_id, key)
    rows = conn.execute(
        select(draw_entries, members.c.member_id)
        .join(members, members.c.id == draw_entries.c.member_pk)
        .where(draw_entries.c.draw_id == row.id)
        .order_by(draw_entries.c.seq)
    ).all()
    return [
        D.PublicEntry(
            r.seq,
            r.entry_key,
            handle(row.key, r.member_id),
            r.odds_version,
            r.prize,
            int(r.roll),
            bool(r.guaranteed),
            _json(r.stock_seen),
        )
        for r in rows
    ]


def entry_json(e: D.PublicEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "entry_key": e.entry_id,
        "member": e.member,
        "odds_version": e.odds_version,
        "prize": e.prize,
        "roll": str(e.roll),
        "guaranteed": e.guaranteed,
        "stock_seen": dict(e.stock_seen),
    }


def record(conn: Connection, loaded: LoadedProgram, key: str, *, now: datetime) -> dict[str, Any]:
    """The public record of a draw: commitment, seed once revealed, every odds table and entry."""
    row = _draw(conn, loaded.program_id, key)
    return {
        "draw": row.key,
        "commitment": row.commitment,
        "seed": row.seed if _revealed(row, now) else None,
        "guarantee": {"after": row.guarantee_after, "prize": row.guarantee_prize} if row.guarantee_after else None,
        "odds": {str(v): [_prize_json(p) for p in ps] for v, ps in sorted(_odds(conn, row.id).items())},
        "entries": [entry_json(e) for e in public_entries(conn, loaded, key)],
    }


def verify_record(data: dict[str, Any]) -> list[str]:
    """Recompute a published record (what `record` returns) with nothing but the domain's scheme."""
    if data.get("seed") is None:
        raise Refused("the seed is revealed when the draw closes; it cannot be verified before", field="draw")
    odds = {int(v): [_prize_from(p) for p in ps] for v, ps in data["odds"].items()}
    g = data.get("guarantee")
    entries = [
        D.PublicEntry(
            e["seq"],
            e["entry_key"],
            e["member"],
            e["odds_version"],
            e["prize"],
            int(e["roll"]),
            e["guaranteed"],
            e["stock_seen"],
        )
        for e in data["entries"]
    ]
    return D.replay(
        data["draw"],
        bytes.fromhex(data["seed"]),
        data["commitment"],
        odds,
        D.Guarantee(g["after"], g["prize"]) if g else None,
        entries,
    )


def stats(conn: Connection, loaded: LoadedProgram, *, now: datetime) -> list[dict[str, Any]]:
    """Per draw: entries, entrants, points collected, prizes given, points paid out, cost per entry."""
    program = loaded.program
    out = []
    for row in conn.execute(select(draws).where(draws.c.program_id == loaded.program_id).order_by(draws.c.id)):
        currency = program.currencies[row.currency]
        entrants = conn.execute(
            select(func.count(func.distinct(draw_entries.c.member_pk))).where(draw_entries.c.draw_id == row.id)
        ).scalar_one()
        by_prize: dict[str, int] = dict(
            conn.execute(
                select(draw_entries.c.prize, func.count())
                .where(draw_entries.c.draw_id == row.id)
                .group_by(draw_entries.c.prize)
            ).all()
        )
        prizes = {p.key: p for ps in _odds(conn, row.id).values() for p in ps}
        paid = sum(
            prizes[k].amount * n
            if prizes[k].kind == "points" and prizes[k].currency == currency.key
            else prizes[k].value * n
            for k, n in by_prize.items()
            if k in prizes
        )
        collected = row.entries * row.cost
        out.append(
            {
                "draw": row.key,
                "name": row.name,
                "entries": row.entries,
                "entrants": entrants,
                "collected": collected,
                "paid_out": paid,
                "prizes_given": {k: int(v) for k, v in by_prize.items()},
                "cost_per_entry": str((Decimal(paid) / row.entries).quantize(Decimal("0.01"))) if row.entries else "0",
                "expected_cost_per_entry": _view(
                    program, row, _odds(conn, row.id)[row.odds_version], _stock(conn, row.id), now
                )["expected_cost"]["per_entry"],
                "text": f"{row.entries} entries by {entrants} members; {currency.display(collected)} collected, "
                f"{currency.display(paid)} paid out",
            }
        )
    return out
