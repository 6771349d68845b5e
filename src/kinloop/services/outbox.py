"""The outbox: webhook messages, written in the same transaction as the change they report.

A message is written only when an active subscription of the program wants its kind, with
one pending delivery per such subscription; the delivery worker (`services/webhooks.py`)
sends it later, at least once. A message's id is derived from what it reports (the program,
the kind and a natural key such as the event id), so the same change always yields the same
id: receivers drop repeats by it, and jobs that may run again (reminders) write nothing twice.

Payloads speak the program's words (currency units, tier names, a `text` line) beside the
machine fields (keys, amounts: JSON numbers for whole-unit currencies, decimal strings
otherwise).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, select

from kinloop.domain.program import Program
from kinloop.services.members import MemberRow, json_amount
from kinloop.store.bulk import Part, insert_rows, kinds_of, select_in
from kinloop.store.db import insert_ignore, reserve_ids
from kinloop.store.tables import events, members, outbox, webhook_deliveries, webhook_subscriptions

AWARD_CREATED = "award.created"
TIER_CHANGED = "tier.changed"
POINTS_EXPIRING = "points.expiring"
GOAL_REACHED = "goal.reached"
TIER_WILL_CHANGE = "tier.will_change"
TIER_EXPIRING = "tier.expiring"
BADGE_AWARDED = "badge.awarded"
ORDER_KINDS = (
    "order.placed",
    "order.confirmed",
    "order.fulfilled",
    "order.completed",
    "order.cancelled",
    "order.refunded",
)
KINDS = (
    AWARD_CREATED,
    TIER_CHANGED,
    POINTS_EXPIRING,
    TIER_WILL_CHANGE,
    TIER_EXPIRING,
    BADGE_AWARDED,
    GOAL_REACHED,
    *ORDER_KINDS,
)


@dataclass(frozen=True, slots=True)
class Message:
    """One change to report: its kind, what identifies it within the program, and its data."""

    kind: str
    key: str
    payload: dict[str, Any]


class Subscribers:
    """The active subscriptions of one program, by the kinds they want (read once per unit of work)."""

    __slots__ = ("by_kind",)

    def __init__(self, by_kind: Mapping[str, list[int]]) -> None:
        self.by_kind = by_kind

    def __bool__(self) -> bool:
        return bool(self.by_kind)

    def of(self, kind: str) -> list[int]:
        return self.by_kind.get(kind, [])


def load_subscribers(conn: Connection, program_id: int) -> Subscribers:
    """Who wants what in this program, right now."""
    # Asked once per ingested batch, and so once per event posted alone: straight to the
    # driver, which costs a sixth of a compiled SQLAlchemy select.
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    rows = conn.exec_driver_sql(
        f"SELECT id, kinds FROM {webhook_subscriptions.name} WHERE program_id = {mark} AND active ORDER BY id",
        (program_id,),
    ).fetchall()
    return subscribers_from(rows)


def subscribers_part(conn: Connection, program_id: int) -> Part:
    """`load_subscribers` as a part of a joint read (`store.bulk.read_parts`); its rows go to
    `subscribers_from`."""
    mark = "?" if conn.dialect.name == "sqlite" else "%s"
    rest = f"FROM {webhook_subscriptions.name} WHERE program_id = {mark} AND active"
    return Part(("id", "kinds"), rest, (program_id,), kinds_of(webhook_subscriptions, ("id", "kinds")))


def subscribers_from(rows: Iterable[Sequence[Any]]) -> Subscribers:
    """Subscribers from (id, kinds) rows of active subscriptions."""
    by_kind: dict[str, list[int]] = {}
    for sub_id, kinds in sorted(rows, key=lambda r: r[0]):
        for kind in json.loads(kinds) if isinstance(kinds, str) else kinds:
            by_kind.setdefault(kind, []).append(sub_id)
    return Subscribers(by_kind)


def message_id(program_id: int, kind: str, key: str) -> str:
    """The idempotency id of a message: the same change always gets the same id."""
    digest = hashlib.sha256(f"{program_id}\x1f{kind}\x1f{key}".encode()).hexdigest()
    return f"msg_{digest[:40]}"


def enqueue(
    conn: Connection,
    program_id: int,
    messages: Sequence[Message],
    *,
    now: datetime,
    subscribers: Subscribers | None = None,
    skip_repeats: bool = False,
) -> int:
    """Write the messages some subscription wants, each with a pending delivery per such
    subscription, in bulk; returns how many were written.

    With `skip_repeats`, a message whose id is already in the outbox is left out (for jobs
    that may find the same change again); otherwise every message must be new.
    """
    subs = subscribers if subscribers is not None else load_subscribers(conn, program_id)
    wanted = [m for m in messages if subs.of(m.kind)]
    if not wanted:
        return 0
    ids = reserve_ids(conn, outbox, len(wanted))
    rows: list[dict[str, Any]] = [
        {
            "id": pk,
            "program_id": program_id,
            "kind": m.kind,
            "message_id": message_id(program_id, m.kind, m.key),
            "payload": m.payload,
            "created_at": now,
        }
        for pk, m in zip(ids, wanted, strict=True)
    ]
    if skip_repeats:
        insert_ignore(conn, outbox, rows, ("message_id",))
        kept = {pk for (pk,) in select_in(conn, outbox, ("id",), "id", ids)}
        rows = [r for r in rows if r["id"] in kept]
    else:
        insert_rows(conn, outbox, rows)
    insert_rows(
        conn,
        webhook_deliveries,
        [
            {
                "subscription_id": sub_id,
                "outbox_id": row["id"],
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for row in rows
            for sub_id in subs.of(row["kind"])
        ],
    )
    return len(rows)


# --- what ingestion and the ledger report ---------------------------------------------------
def events_booked(
    conn: Connection,
    program_id: int,
    program: Program,
    event_rows: Sequence[Mapping[str, Any]],
    tier_rows: Sequence[Mapping[str, Any]],
    member_rows: Iterable[MemberRow],
    *,
    now: datetime,
    subscribers: Subscribers | None = None,
) -> None:
    """Report a booked batch: `award.created` per event that awarded something, and
    `tier.changed` per tier change (rows as `ingest` writes them to `events` and `tier_changes`)."""
    awarded = [r for r in event_rows if r["outcome"]["awards"]]
    if not awarded and not tier_rows:
        return
    subs = subscribers if subscribers is not None else load_subscribers(conn, program_id)
    if not subs:
        return
    member_ids = {m.pk: m.member_id for m in member_rows}
    messages: list[Message] = []
    if subs.of(AWARD_CREATED):
        messages += [
            award_created(
                program,
                member_id=member_ids[r["member_pk"]],
                event_id=r["event_id"],
                event_type=r["type"],
                occurred_at=r["occurred_at"],
                awards=r["outcome"]["awards"],
            )
            for r in awarded
        ]
    if subs.of(TIER_CHANGED) and tier_rows:
        event_ids = {r["id"]: r["event_id"] for r in event_rows}
        messages += [
            tier_changed(
                program,
                key=f"event:{event_ids[t['event_pk']]}",
                member_id=member_ids[t["member_pk"]],
                from_tier=t["from_tier"],
                to_tier=t["to_tier"],
                reason=t["reason"],
                event_id=event_ids[t["event_pk"]],
                at=t["at"],
            )
            for t in tier_rows
        ]
    enqueue(conn, program_id, messages, now=now, subscribers=subs)


def badges_awarded(
    conn: Connection,
    program_id: int,
    program: Program,
    badge_rows: Sequence[Mapping[str, Any]],
    event_rows: Sequence[Mapping[str, Any]],
    member_rows: Iterable[MemberRow],
    *,
    now: datetime,
    subscribers: Subscribers | None = None,
) -> None:
    """Report badge levels earned in a booked batch: one `badge.awarded` per member, badge and level."""
    subs = subscribers if subscribers is not None else load_subscribers(conn, program_id)
    if not subs.of(BADGE_AWARDED):
        return
    member_ids = {m.pk: m.member_id for m in member_rows}
    event_ids = {r["id"]: r["event_id"] for r in event_rows}
    messages = [
        badge_awarded(
            program,
            member_id=member_ids[b["member_pk"]],
            badge_key=b["badge"],
            level=b["level"],
            event_id=event_ids.get(b["event_pk"]),
            at=b["awarded_at"],
        )
        for b in badge_rows
    ]
    enqueue(conn, program_id, messages, now=now, subscribers=subs)


def tier_change_recorded(
    conn: Connection,
    program_id: int,
    program: Program,
    *,
    change_id: int,
    member_pk: int,
    from_tier: str | None,
    to_tier: str | None,
    reason: str,
    event_pk: int | None,
    now: datetime,
) -> None:
    """Report one tier change made outside ingestion (adjustment, reversal, release)."""
    subs = load_subscribers(conn, program_id)
    if not subs.of(TIER_CHANGED):
        return
    member_id = conn.execute(select(members.c.member_id).where(members.c.id == member_pk)).scalar_one()
    event_id = None
    if event_pk is not None:
        event_id = conn.execute(select(events.c.event_id).where(events.c.id == event_pk)).scalar_one()
    message = tier_changed(
        program,
        key=f"tier_change:{change_id}",
        member_id=member_id,
        from_tier=from_tier,
        to_tier=to_tier,
        reason=reason,
        event_id=event_id,
        at=now,
    )
    enqueue(conn, program_id, [message], now=now, subscribers=subs)


# --- messages, in the program's words -------------------------------------------------------
def award_created(
    program: Program,
    *,
    member_id: str,
    event_id: str,
    event_type: str,
    occurred_at: datetime,
    awards: Sequence[Sequence[Any]],
) -> Message:
    """What an event earned (awards as stored in its outcome: rule, currency, amount, kind, pending)."""
    items = []
    for rule_key, currency_key, amount, kind, pending in awards:
        currency = program.currencies[currency_key]
        rule = program.rule(rule_key)
        text = currency.display(amount) + (" (pending)" if pending else "")
        items.append(
            {
                "rule": rule_key,
                "rule_name": rule.name if rule else _reward_name(program, kind, rule_key),
                "kind": kind,
                "currency": currency_key,
                "currency_name": currency.name,
                "amount": json_amount(amount, currency.decimals),
                "pending": bool(pending),
                "text": text,
            }
        )
    return Message(
        AWARD_CREATED,
        f"event:{event_id}",
        {
            "member_id": member_id,
            "event_id": event_id,
            "event_type": event_type,
            "occurred_at": occurred_at.isoformat(),
            "awards": items,
            "text": ", ".join(i["text"] for i in items),
        },
    )


def _reward_name(program: Program, kind: str, key: str) -> str:
    """The name of what gave an award that no rule gave: a badge or a task."""
    if kind == "badge":
        return next((b.name for b in program.badges if b.key == key), key)
    if kind == "task":
        return next((t.name for t in program.tasks if t.key == key), key)
    return key


def tier_changed(
    program: Program,
    *,
    key: str,
    member_id: str,
    from_tier: str | None,
    to_tier: str | None,
    reason: str,
    event_id: str | None,
    at: datetime,
) -> Message:
    """A member moved between tiers (up or down the ladder)."""
    tiers = list(program.ladder.tiers) if program.ladder else []
    rank = {t.key: i for i, t in enumerate(tiers)}
    names = {t.key: t.name for t in tiers}

    def ref(tier: str | None) -> dict[str, str] | None:
        return None if tier is None else {"key": tier, "name": names.get(tier, tier)}

    up = rank.get(to_tier or "", -1) > rank.get(from_tier or "", -1)
    if to_tier is None:
        text = f"left {names.get(from_tier or '', from_tier)}"
    elif up:
        text = f"reached {names.get(to_tier, to_tier)}"
    else:
        text = f"moved down to {names.get(to_tier, to_tier)}"
    return Message(
        TIER_CHANGED,
        key,
        {
            "member_id": member_id,
            "from": ref(from_tier),
            "to": ref(to_tier),
            "direction": "up" if up else "down",
            "reason": reason,
            "event_id": event_id,
            "at": at.isoformat(),
            "text": text,
        },
    )


def badge_awarded(
    program: Program, *, member_id: str, badge_key: str, level: str, event_id: str | None, at: datetime
) -> Message:
    """A member earned a badge, or one level of it ("" for a one-time badge)."""
    badge = next((b for b in program.badges if b.key == badge_key), None)
    title = badge.title(level) if badge is not None else badge_key
    found = next((lv for lv in badge.levels if lv.key == level), None) if badge is not None else None
    return Message(
        BADGE_AWARDED,
        f"{member_id}\x1f{badge_key}\x1f{level}",
        {
            "member_id": member_id,
            "badge": badge_key,
            "badge_name": badge.name if badge is not None else badge_key,
            "level": level or None,
            "level_name": found.name if found is not None and level else None,
            "event_id": event_id,
            "at": at.isoformat(),
            "text": f"earned {title}",
        },
    )


def points_expiring(program: Program, *, member_id: str, currency_key: str, amount: int, on: date) -> Message:
    """Some of a member's points expire on a date (one message per member, currency and date)."""
    currency = program.currencies[currency_key]
    return Message(
        POINTS_EXPIRING,
        f"{member_id}\x1f{currency_key}\x1f{on.isoformat()}",
        {
            "member_id": member_id,
            "currency": currency_key,
            "currency_name": currency.name,
            "amount": json_amount(amount, currency.decimals),
            "expires_on": on.isoformat(),
            "text": f"{currency.display(amount)} expire on {on.isoformat()}",
        },
    )


def goal_reached(
    program: Program, *, goal: str, name: str, round_: int, currency_key: str, raised: int, donors: list[dict[str, Any]]
) -> Message:
    """A shared goal reached its target (one message per goal and round), with its donors."""
    currency = program.currencies[currency_key]
    return Message(
        GOAL_REACHED,
        f"{goal}\x1f{round_}",
        {
            "goal": goal,
            "name": name,
            "round": round_,
            "currency": currency_key,
            "raised": json_amount(raised, currency.decimals),
            "donors": donors,
            "text": f"{name} reached with {currency.display(raised)} from {len(donors)} members",
        },
    )


def _tier_name(program: Program, key: str | None) -> str:
    tier = program.ladder.get(key) if program.ladder else None
    return tier.name if tier else (key or "no tier")


def tier_will_change(
    program: Program, *, member_id: str, from_tier: str | None, to_tier: str | None, on: date
) -> Message:
    """A demotion is scheduled (one message per member, scheduled date and destination)."""
    return Message(
        TIER_WILL_CHANGE,
        f"{member_id}\x1f{from_tier}\x1f{to_tier}\x1f{on.isoformat()}",
        {
            "member_id": member_id,
            "from": {"key": from_tier, "name": _tier_name(program, from_tier)} if from_tier else None,
            "to": {"key": to_tier, "name": _tier_name(program, to_tier)} if to_tier else None,
            "on": on.isoformat(),
            "text": f"{_tier_name(program, from_tier)} ends on {on.isoformat()} "
            f"(moving to {_tier_name(program, to_tier)}) unless requalified",
        },
    )


def tier_expiring(program: Program, *, member_id: str, tier: str, ends_at: datetime) -> Message:
    """A paid tier's term ends soon (one message per member, tier and end of term)."""
    on = ends_at.astimezone(program.timezone).date()
    return Message(
        TIER_EXPIRING,
        f"{member_id}\x1f{tier}\x1f{ends_at.isoformat()}",
        {
            "member_id": member_id,
            "tier": {"key": tier, "name": _tier_name(program, tier)},
            "ends_at": ends_at.isoformat(),
            "text": f"{_tier_name(program, tier)} membership ends on {on.isoformat()}",
        },
    )


def order_changed(kind: str, order_id: int, data: dict[str, Any]) -> Message:
    """An order reached a state (`order.placed`, ..., `order.refunded`); `data` is the order as
    the API shows it, in the program's words."""
    return Message(kind, f"order:{order_id}", data)
