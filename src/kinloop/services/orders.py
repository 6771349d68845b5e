"""Orders of the points mall: placing one (stock, limits, tier gate, the spend, codes) and
moving it through its states, all in the caller's transaction.

Never oversold, never double-spent, under any number of concurrent processes: the member's
row is locked first (so one member's orders, limits and spends are serialised), then the
reward is sold by a conditional update (`sold = sold + n WHERE sold + n <= stock`), which
locks its row until commit; the check constraint on `rewards` is the backstop. Every
transaction takes the member before the reward, so two of them cannot deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, or_, select, update

from kinloop.domain import ledger as L
from kinloop.domain.errors import (
    IdempotencyConflict,
    InvalidInput,
    LimitReached,
    RewardUnavailable,
    SoldOut,
    TierGated,
    UnknownOrder,
)
from kinloop.domain.orders import GIVES_BACK_POINTS, Action, Taken, next_status, plan_restore
from kinloop.domain.program import Currency, Program
from kinloop.domain.rewards import MAX_QUANTITY, Reward, may_redeem, period_start, price_at, tier_names
from kinloop.services import mall, outbox
from kinloop.services import members as member_svc
from kinloop.services.book import Book, lock_members
from kinloop.services.members import json_amount
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import lot_movements, lots, members, orders, reward_codes, rewards

RETURNED = ("cancelled", "refunded")


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the API and CLI show it."""

    row: Row[Any]
    member_id: str
    reward: Reward
    codes: tuple[str, ...]
    replayed: bool = False

    @property
    def id(self) -> int:
        return int(self.row.id)

    @property
    def status(self) -> str:
        return str(self.row.status)

    def as_json(self, program: Program) -> dict[str, Any]:
        o = self.row
        currency = program.currencies.get(o.currency)
        decimals = currency.decimals if currency else 0
        cost = currency.display(o.points) if currency else str(o.points)
        if o.cash is not None:
            cost += f" + {o.cash} {o.cash_currency}"
        return {
            "order_id": o.id,
            "member_id": self.member_id,
            "reward": self.reward.key,
            "reward_name": self.reward.name,
            "kind": self.reward.kind,
            "quantity": o.quantity,
            "currency": o.currency,
            "unit_price": json_amount(o.unit_price, decimals),
            "points": json_amount(o.points, decimals),
            "cash": o.cash,
            "cash_currency": o.cash_currency,
            "promo": o.promo,
            "status": o.status,
            "shipping_reference": o.shipping_reference,
            "codes": list(self.codes),
            "history": o.history,
            "placed_at": o.placed_at.isoformat(),
            "updated_at": o.updated_at.isoformat(),
            "replayed": self.replayed,
            "text": f"{o.quantity} × {self.reward.name} for {cost}: {o.status}",
        }


def place(
    conn: Connection,
    loaded: LoadedProgram,
    member_id: str,
    reward_key: str,
    *,
    quantity: int = 1,
    key: str | None,
    now: datetime,
    actor: str = "api",
) -> Order:
    """Redeem a reward for a member: checks, sells the stock, spends the points, issues codes.
    Idempotent on `key`: a repeat returns the first order and changes nothing."""
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidInput(f"quantity is from 1 to {MAX_QUANTITY}, got {quantity}", field="quantity")
    pid = loaded.program_id
    program = loaded.program
    member = member_svc.get(conn, pid, member_id, lock=True)
    if key:
        found = _by_key(conn, pid, key)
        if found is not None:
            if (found.member_id, found.reward.key, found.row.quantity) != (member_id, reward_key, quantity):
                raise IdempotencyConflict(
                    f"key {key!r} was already used for a different order", field="idempotency_key"
                )
            return Order(found.row, found.member_id, found.reward, found.codes, replayed=True)
    stored = mall.find(conn, pid, reward_key)
    reward = stored.reward
    currency = program.currencies.get(reward.currency)
    if not reward.active or currency is None or not currency.spendable:
        raise RewardUnavailable(f"{reward.name} cannot be redeemed now", field="reward")
    if not may_redeem(reward, member.tier):
        gate = ", ".join(tier_names(program, reward.tiers))
        raise TierGated(f"{reward.name} is for {gate} members only", field="reward")
    _check_limit(conn, program, member.pk, stored.id, reward, quantity, now)
    if reward.left is not None and reward.left < quantity:
        _sold_out(reward, reward.left)  # as read just now; the conditional update below decides
    price = price_at(reward, now)
    book = Book(conn, pid, loaded.version_id, now)
    entry_id = book.debit(
        member.pk,
        currency,
        price.points * quantity,
        kind="spend",
        dst=L.REDEMPTION,
        effective_at=now,
        reason=f"order: {quantity} × {reward.name}",
        actor=actor,
    )
    book.flush()
    # Sold last: the conditional update locks the reward's row until commit, and every
    # order of that reward waits for it, so as little as possible comes after it.
    _sell(conn, stored.id, reward, quantity)
    row = conn.execute(
        orders.insert()
        .values(
            program_id=pid,
            member_pk=member.pk,
            reward_id=stored.id,
            quantity=quantity,
            currency=reward.currency,
            unit_price=price.points,
            points=price.points * quantity,
            cash=str(reward.cash * quantity) if reward.cash is not None else None,
            cash_currency=reward.cash_currency,
            promo=price.on_sale,
            tier=member.tier,
            status="placed",
            spend_entry_id=entry_id,
            idempotency_key=key,
            history=[{"status": "placed", "at": now.isoformat(), "actor": actor}],
            placed_at=now,
            updated_at=now,
        )
        .returning(*orders.c)
    ).one()
    codes = _issue_codes(conn, stored.id, row.id, quantity, reward, now) if reward.uses_codes else ()
    order = Order(row, member_id, reward, codes)
    _report(conn, loaded, order, now)
    return order


def _check_limit(
    conn: Connection, program: Program, member_pk: int, reward_id: int, reward: Reward, quantity: int, now: datetime
) -> None:
    """Refuse an order beyond the reward's limit per member per period (the member is locked)."""
    if reward.limit is None:
        return
    query = select(func.coalesce(func.sum(orders.c.quantity), 0)).where(
        orders.c.member_pk == member_pk, orders.c.reward_id == reward_id, orders.c.status.not_in(RETURNED)
    )
    start = period_start(reward.limit.period, now, program.timezone)
    if start is not None:
        query = query.where(orders.c.placed_at >= start)
    already = int(conn.execute(query).scalar() or 0)
    if already + quantity > reward.limit.count:
        per = "in all" if reward.limit.period == "lifetime" else f"per {reward.limit.period}"
        raise LimitReached(
            f"{reward.name} is limited to {reward.limit.count} {per} per member; {already} already redeemed",
            field="quantity",
        )


def _sell(conn: Connection, reward_id: int, reward: Reward, quantity: int) -> None:
    """Take `quantity` from the stock, or SoldOut: one conditional update, atomic on both databases."""
    sold = conn.execute(
        update(rewards)
        .where(rewards.c.id == reward_id, or_(rewards.c.stock.is_(None), rewards.c.sold + quantity <= rewards.c.stock))
        .values(sold=rewards.c.sold + quantity)
    ).rowcount
    if not sold:
        left = conn.execute(select(rewards.c.stock - rewards.c.sold).where(rewards.c.id == reward_id)).scalar()
        _sold_out(reward, int(left or 0))


def _sold_out(reward: Reward, left: int) -> None:
    detail = f"{reward.name} is sold out" if not left else f"only {left} of {reward.name} left"
    raise SoldOut(detail, field="quantity")


def _issue_codes(
    conn: Connection, reward_id: int, order_id: int, quantity: int, reward: Reward, now: datetime
) -> tuple[str, ...]:
    """Give the order `quantity` codes of the pool, each exactly once: on PostgreSQL, rows another
    transaction is issuing are skipped (SKIP LOCKED); SQLite has one writer at a time."""
    query = (
        select(reward_codes.c.id, reward_codes.c.code)
        .where(reward_codes.c.reward_id == reward_id, reward_codes.c.order_id.is_(None))
        .order_by(reward_codes.c.id)
        .limit(quantity)
    )
    if conn.dialect.name != "sqlite":
        query = query.with_for_update(skip_locked=True)
    found = conn.execute(query).all()
    ids = [r.id for r in found]
    if len(ids) < quantity:
        raise SoldOut(f"{reward.name} has no codes left to issue", field="quantity")
    conn.execute(
        update(reward_codes)
        .where(reward_codes.c.id.in_(ids), reward_codes.c.order_id.is_(None))
        .values(order_id=order_id, issued_at=now)
    )
    return tuple(r.code for r in found)


def _by_key(conn: Connection, program_id: int, key: str) -> Order | None:
    order_id = conn.execute(
        select(orders.c.id).where(orders.c.program_id == program_id, orders.c.idempotency_key == key)
    ).scalar()
    return None if order_id is None else _load(conn, program_id, order_id)


def _load(conn: Connection, program_id: int, order_id: int) -> Order:
    found = _load_many(conn, program_id, [order_id])
    if not found:
        raise UnknownOrder(f"no order {order_id} in this program", field="order_id")
    return found[0]


def _load_many(conn: Connection, program_id: int, order_ids: list[int]) -> list[Order]:
    """Orders by id (in the order given), with their members, rewards and codes: three queries."""
    if not order_ids:
        return []
    rows = {
        r.id: r
        for r in conn.execute(
            select(orders, members.c.member_id)
            .join(members, members.c.id == orders.c.member_pk)
            .where(orders.c.program_id == program_id, orders.c.id.in_(order_ids))
        )
    }
    reward_ids = sorted({r.reward_id for r in rows.values()})
    by_id = {r.id: mall.to_reward(r) for r in conn.execute(select(rewards).where(rewards.c.id.in_(reward_ids)))}
    codes: dict[int, list[str]] = {}
    for order_id, code in conn.execute(
        select(reward_codes.c.order_id, reward_codes.c.code)
        .where(reward_codes.c.order_id.in_(list(rows)))
        .order_by(reward_codes.c.id)
    ):
        codes.setdefault(order_id, []).append(code)
    return [
        Order(rows[i], rows[i].member_id, by_id[rows[i].reward_id], tuple(codes.get(i, ())))
        for i in order_ids
        if i in rows
    ]


def get(conn: Connection, loaded: LoadedProgram, order_id: int) -> Order:
    """One order of the program, or UnknownOrder."""
    return _load(conn, loaded.program_id, order_id)


def listing(
    conn: Connection,
    loaded: LoadedProgram,
    *,
    member_id: str | None,
    status: str | None,
    before: int | None,
    limit: int,
) -> tuple[list[Order], str | None]:
    """A page of orders, newest first, and the cursor of the next page."""
    query = select(orders.c.id).where(orders.c.program_id == loaded.program_id).order_by(orders.c.id.desc())
    if member_id is not None:
        member = member_svc.get(conn, loaded.program_id, member_id)
        query = query.where(orders.c.member_pk == member.pk)
    if status is not None:
        query = query.where(orders.c.status == status)
    if before is not None:
        query = query.where(orders.c.id < before)
    ids = list(conn.execute(query.limit(limit + 1)).scalars())
    page = _load_many(conn, loaded.program_id, ids[:limit])
    return page, (str(ids[limit - 1]) if len(ids) > limit else None)


def transition(
    conn: Connection,
    loaded: LoadedProgram,
    order_id: int,
    action: Action,
    *,
    shipping_reference: str | None = None,
    reason: str | None = None,
    actor: str,
    now: datetime,
) -> Order:
    """Move an order on (confirm, fulfil, complete) or back (cancel, refund: points return into
    the lots they came from; a cancel also returns the stock). Illegal moves: IllegalTransition."""
    member_pk = conn.execute(
        select(orders.c.member_pk).where(orders.c.program_id == loaded.program_id, orders.c.id == order_id)
    ).scalar()
    if member_pk is None:
        raise UnknownOrder(f"no order {order_id} in this program", field="order_id")
    lock_members(conn, [member_pk])
    order = get(conn, loaded, order_id)  # read again under the lock: the state is current
    o = order.row
    target = next_status(o.status, action, kind=order.reward.kind, shipping_reference=shipping_reference)
    values: dict[str, Any] = {"status": target, "updated_at": now}
    step: dict[str, Any] = {"status": target, "at": now.isoformat(), "actor": actor}
    if reason:
        step["reason"] = reason
    if action == "fulfil":
        values["shipping_reference"] = shipping_reference
    if target in GIVES_BACK_POINTS:
        values["restore_entry_id"] = _give_back(conn, loaded, o, f"order {order_id} {target}", actor, now)
    if target == "cancelled":
        conn.execute(update(rewards).where(rewards.c.id == o.reward_id).values(sold=rewards.c.sold - o.quantity))
    values["history"] = [*o.history, step]
    conn.execute(update(orders).where(orders.c.id == order_id).values(**values))
    order = get(conn, loaded, order_id)
    _report(conn, loaded, order, now)
    return order


def taken_by(conn: Connection, entry_id: int) -> list[Taken]:
    """What an entry took from each lot (its lot movements), with the lots' expiry."""
    return [
        Taken(lot_id, -int(amount), expires_at)
        for lot_id, amount, expires_at in conn.execute(
            select(lot_movements.c.lot_id, lot_movements.c.amount, lots.c.expires_at)
            .join(lots, lots.c.id == lot_movements.c.lot_id)
            .where(lot_movements.c.entry_id == entry_id, lot_movements.c.amount < 0)
            .order_by(lot_movements.c.id)
        )
    ]


def _give_back(
    conn: Connection, loaded: LoadedProgram, o: Row[Any], reason: str, actor: str, now: datetime
) -> int | None:
    """Return the order's points into the lots its spend took them from."""
    currency = loaded.program.currencies.get(o.currency)
    if currency is None:
        raise RewardUnavailable(
            f"this program no longer has the currency {o.currency!r} to give back", field="order_id"
        )
    return give_back(
        conn,
        loaded,
        o.member_pk,
        currency,
        o.spend_entry_id,
        src=L.REDEMPTION,
        at=now,
        now=now,
        reason=reason,
        actor=actor,
    )


def give_back(
    conn: Connection,
    loaded: LoadedProgram,
    member_pk: int,
    currency: Currency,
    taking_entry_id: int,
    *,
    src: str,
    at: datetime,
    now: datetime,
    reason: str,
    actor: str,
) -> int | None:
    """Give back what an entry took, into the same lots (what had expired by `at` goes to
    expiry); returns the restoring entry's id (None when everything lapsed)."""
    plan = plan_restore(taken_by(conn, taking_entry_id), at)
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    entry_id = book.restore(
        member_pk, currency, plan.into_lots, plan.lapsed, src=src, effective_at=at, reason=reason, actor=actor
    )
    book.flush()
    return entry_id


def _report(conn: Connection, loaded: LoadedProgram, order: Order, now: datetime) -> None:
    kind = f"order.{order.status}"
    subs = outbox.load_subscribers(conn, loaded.program_id)
    if subs.of(kind):
        message = outbox.order_changed(kind, order.id, order.as_json(loaded.program))
        outbox.enqueue(conn, loaded.program_id, [message], now=now, subscribers=subs)
