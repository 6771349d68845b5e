"""The member portal's view of a member: the card, check-in, tasks, badges, the mall as this
member can use it, history in the program's words, leaderboards and red envelopes.

Everything the portal shows is decided here, over the same services as the API; the web
handlers only pick a section and render it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Connection

from kinloop.domain.amounts import to_minor
from kinloop.domain.program import Currency, Program
from kinloop.domain.rewards import may_redeem, price_at, tier_names
from kinloop.services import leaderboards, mall, member_view
from kinloop.services import members as member_svc
from kinloop.services.member_view import MemberView
from kinloop.services.programs import LoadedProgram

HISTORY_PAGE = 20
HOME_HISTORY = 5
BOARD_TOP = 5

OfferState = Literal["available", "short", "gated", "sold_out"]


@dataclass(frozen=True, slots=True)
class Balance:
    key: str
    name: str
    text: str
    spendable: bool


@dataclass(frozen=True, slots=True)
class Card:
    """The membership card: tier, the distance to the next one, balances, what expires soon."""

    program_name: str
    member_id: str
    display_name: str | None
    tier_name: str | None
    next_tier_name: str | None
    progress_percent: int
    progress_text: str  # "3 ★ to Gold", or what the top looks like
    qualification_text: str | None
    keep_text: str | None
    status_texts: list[str]
    balances: list[Balance]
    expiring: list[str]
    privileges: list[dict[str, Any]]
    campaigns: list[str]


@dataclass(frozen=True, slots=True)
class Checkin:
    """The check-in panel: streak, today's state, the next reward and the ladder."""

    streak: int
    best: int
    checked_in_today: bool
    text: str
    next_reward: str
    next_milestone: str | None
    ladder: list[tuple[int, str, bool]]  # (day, reward text, is the next day's)
    makeup_cards_left: int


@dataclass(frozen=True, slots=True)
class Offer:
    """A reward of the mall as this member can (or cannot yet) redeem it."""

    key: str
    name: str
    kind: str
    category: str | None
    description: str | None
    price_text: str
    regular_text: str | None  # the price before a running promo
    promo_until: str | None
    left_text: str | None
    limit_text: str | None
    state: OfferState
    reason: str | None  # why it cannot be redeemed now, in the program's words

    @property
    def redeemable(self) -> bool:
        return self.state == "available"


@dataclass(frozen=True, slots=True)
class Line:
    """One ledger entry of a member in the program's words."""

    entry_id: int
    when: str
    title: str
    note: str | None
    amount_text: str
    sign: int  # +1 in, -1 out, 0 a move inside the member's own balances


@dataclass(frozen=True, slots=True)
class Board:
    key: str
    name: str
    period: str
    rank_text: str
    entries: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class EnvelopeForm:
    """What sending a red envelope allows: the currency, the day's limits, the fee."""

    currency_name: str
    unit: str
    hints: list[str]


@dataclass(frozen=True, slots=True)
class Home:
    """Everything on the portal's home page for one member."""

    card: Card
    checkin: Checkin | None
    tasks: list[dict[str, Any]]
    badges: list[dict[str, Any]]
    offers: list[Offer]
    history: list[Line]
    history_more: str | None
    boards: list[Board]
    envelopes: EnvelopeForm | None


def _minor(value: int | str, currency: Currency) -> int:
    return to_minor(Decimal(str(value)), currency.decimals)


def _local_day(at: datetime, program: Program) -> str:
    return at.astimezone(program.timezone).date().isoformat()


def card(loaded: LoadedProgram, view: MemberView) -> Card:
    """The membership card of a member view, with the progress bar's share and words."""
    program = loaded.program
    ladder = program.ladder
    status = view.tier_status or {}
    percent, words = 100, "no tiers in this program"
    next_name = None
    if ladder is not None:
        currency = program.currencies[ladder.currency]
        value = _minor(status.get("qualification") or 0, currency)
        current = ladder.get(view.tier["key"]) if view.tier else None
        if view.next_tier is not None:
            upcoming = ladder.get(view.next_tier["key"])
            upper = upcoming.threshold if upcoming and upcoming.threshold is not None else value
            lower = current.threshold if current and current.threshold is not None else 0
            lower = min(lower, value)
            span = upper - lower
            percent = max(0, min(100, (value - lower) * 100 // span)) if span > 0 else 100
            words = str(view.next_tier["text"])
            next_name = str(view.next_tier["name"])
        elif current is not None:
            words = f"{current.name}: the highest tier you can earn"
        else:
            words = f"{currency.display(value)} so far"
    keep = status.get("keep") or None
    extras = [status[k]["text"] for k in ("paid", "manual", "kept") if status.get(k)]
    balances = [
        Balance(key, c.name, view.display[key], c.spendable)
        for key, c in program.currencies.items()
        if key in view.display
    ]
    running = [str(c["text"]) for c in (view.campaigns or {}).get("active", [])]
    name = view.profile.get("display_name")
    return Card(
        program_name=program.name,
        member_id=view.member_id,
        display_name=str(name) if isinstance(name, str) and name else None,
        tier_name=view.tier["name"] if view.tier else None,
        next_tier_name=next_name,
        progress_percent=int(percent),
        progress_text=words,
        qualification_text=status.get("qualification_text"),
        keep_text=keep["text"] if keep else None,
        status_texts=extras,
        balances=balances,
        expiring=[str(e["text"]) for e in view.expiring],
        privileges=list(view.privileges),
        campaigns=running,
    )


def checkin(program: Program, view: MemberView) -> Checkin | None:
    """The check-in panel, or None when the program has no daily check-in."""
    config = program.checkin
    given = view.checkin
    if config is None or given is None:
        return None
    currency = program.currencies[config.currency]
    upcoming = int(given["next_reward"]["day"])
    # The ladder's steps, with the step the next check-in earns marked (it cycles or holds).
    position = (upcoming - 1) % len(config.ladder) + 1
    if upcoming > len(config.ladder) and config.after_ladder == "hold":
        position = len(config.ladder)
    steps = [(i, currency.display(amount), i == position) for i, amount in enumerate(config.ladder, start=1)]
    milestone = given.get("next_milestone")
    return Checkin(
        streak=int(given["streak"]),
        best=int(given["best"]),
        checked_in_today=bool(given["checked_in_today"]),
        text=str(given["text"]),
        next_reward=str(given["next_reward"]["text"]),
        next_milestone=str(milestone["text"]) if milestone else None,
        ladder=steps,
        makeup_cards_left=int(given["makeup_cards_left"]),
    )


def offers(conn: Connection, loaded: LoadedProgram, view: MemberView, *, now: datetime) -> list[Offer]:
    """The rewards a member sees, each with whether they can redeem it now and, if not, why."""
    program = loaded.program
    tier = view.tier["key"] if view.tier else None
    out = []
    for stored in mall.listing(conn, loaded.program_id):
        r = stored.reward
        shown = mall.as_json(stored, program, now, tier=tier)
        currency = program.currencies.get(r.currency)
        if currency is None:
            continue  # a reward in a currency the active version dropped cannot be redeemed
        price = price_at(r, now)
        have = _minor(view.balances.get(r.currency, 0), currency)
        cash = f" + {r.cash} {r.cash_currency}" if r.cash is not None else ""
        state: OfferState = "available"
        reason = None
        if shown["sold_out"]:
            state, reason = "sold_out", "Sold out"
        elif not may_redeem(r, tier):
            state, reason = "gated", f"For {', '.join(tier_names(program, r.tiers))} members"
        elif have < price.points:
            state, reason = "short", f"Not enough {currency.name}: {currency.display(price.points - have)} more needed"
        limit = None
        if r.limit is not None:
            per = "in all" if r.limit.period == "lifetime" else f"a {r.limit.period}"
            limit = f"at most {r.limit.count} {per}"
        out.append(
            Offer(
                key=r.key,
                name=r.name,
                kind=r.kind,
                category=r.category,
                description=r.description,
                price_text=currency.display(price.points) + cash,
                regular_text=currency.display(r.price) + cash if price.on_sale else None,
                promo_until=_local_day(price.promo.ends_at, program) if price.promo else None,
                left_text=f"{shown['left']:,} left" if shown["left"] is not None and shown["left"] > 0 else None,
                limit_text=limit,
                state=state,
                reason=reason,
            )
        )
    return out


_KIND_WORDS = {
    "earn": "Earned",
    "release": "Now spendable",
    "spend": "Redeemed",
    "expire": "Expired",
    "reversal": "Taken back",
    "adjustment": "Adjusted by the program",
    "write_off": "Written off",
    "hold": "Held for a checkout",
    "capture": "Paid at a checkout",
    "restore": "Given back",
    "lapse": "Expired while given back",
    "transfer_out": "Red envelope sent",
    "transfer_in": "Red envelope received",
    "transfer_return": "Unclaimed envelope came back",
    "fee": "Envelope fee",
    "donate": "Donated",
}
# Kinds whose recorded reason a member should read (others carry internal references).
_REASON_SHOWN = {"spend", "adjustment", "reversal", "donate", "earn", "capture"}


def _award_name(program: Program, rule: str | None) -> str | None:
    """What gave an award, by the key recorded on its entry: a rule, campaign, task or badge."""
    if rule is None:
        return None
    if rule == "checkin":
        return "Daily check-in"
    found = program.rule(rule) or program.campaign(rule)
    if found is not None:
        return found.name
    names = {t.key: t.name for t in program.tasks} | {b.key: b.name for b in program.badges}
    return names.get(rule)


def line(program: Program, entry: dict[str, Any]) -> Line:
    """A history line for one entry of `members.history`."""
    kind = str(entry["kind"])
    currency = program.currencies.get(entry["currency"])
    signed = Decimal(str(entry["signed"]))
    sign = (signed > 0) - (signed < 0)
    amount = currency.display(_minor(entry["amount"], currency)) if currency else str(entry["amount"])
    title = _KIND_WORDS.get(kind, kind.replace("_", " ").capitalize())
    named = _award_name(program, entry.get("rule")) if kind == "earn" else None
    reason = entry.get("reason") if kind in _REASON_SHOWN else None
    if named:
        title, note = named, None
    else:
        note = str(reason) if reason else None
        if kind == "spend" and note and note.startswith("order: "):
            note = note.removeprefix("order: ")
    at = datetime.fromisoformat(entry["effective_at"]).astimezone(program.timezone)
    return Line(
        entry_id=int(entry["entry_id"]),
        when=at.strftime("%d %b %Y, %H:%M"),
        title=title,
        note=note,
        amount_text=("+" if sign > 0 else "−" if sign < 0 else "") + amount,
        sign=sign,
    )


def history(
    conn: Connection, loaded: LoadedProgram, member_id: str, *, before: int | None, limit: int = HISTORY_PAGE
) -> tuple[list[Line], str | None]:
    """A page of a member's history, newest first, and the cursor of the next page."""
    page, cursor = member_svc.history(conn, loaded, member_id, before=before, limit=limit)
    return [line(loaded.program, e) for e in page], cursor


def boards(conn: Connection, loaded: LoadedProgram, member_id: str, *, now: datetime) -> list[Board]:
    """Each leaderboard's top few in the member's group, and the member's own rank."""
    out = []
    for board in loaded.program.leaderboards:
        mine = leaderboards.standing(conn, loaded, board.key, member_id, period=None, now=now)
        group = mine["group"]
        if board.group_by and not group:
            top: dict[str, Any] = {"entries": []}
        else:
            top = leaderboards.top(conn, loaded, board.key, period=None, group=group, limit=BOARD_TOP, now=now)
        entries = [{**e, "you": e["member_id"] == member_id} for e in top["entries"]]
        out.append(Board(board.key, board.name, str(mine["period"]), str(mine["text"]), entries))
    return out


def envelope_form(program: Program) -> EnvelopeForm | None:
    """What the red envelope form needs, or None when members cannot send envelopes."""
    policy = program.envelopes
    if policy is None:
        return None
    currency = program.currencies.get(policy.currency)
    if currency is None or not currency.transferable or not currency.spendable:
        return None
    hints = []
    if policy.daily_limit is not None:
        hints.append(f"up to {currency.display(policy.daily_limit)} a day")
    if policy.daily_count is not None:
        hints.append(f"{policy.daily_count} envelopes a day")
    if policy.fee_percent:
        hints.append(f"a {policy.fee_percent.normalize():f}% fee")
    return EnvelopeForm(currency.name, currency.unit, hints)


def home(conn: Connection, loaded: LoadedProgram, member_id: str, *, now: datetime) -> Home:
    """The portal's home page for a member (UnknownMember when there is none)."""
    view = member_view.show(conn, loaded, member_id, now=now)
    lines, more = history(conn, loaded, member_id, before=None, limit=HOME_HISTORY)
    return Home(
        card=card(loaded, view),
        checkin=checkin(loaded.program, view),
        tasks=list(view.tasks),
        badges=list(view.badges),
        offers=offers(conn, loaded, view, now=now),
        history=lines,
        history_more=more,
        boards=boards(conn, loaded, member_id, now=now),
        envelopes=envelope_form(loaded.program),
    )


def sent_text(program: Program, envelope: dict[str, Any]) -> str:
    """What a member reads after sending an envelope (`envelopes.view`'s shape)."""
    currency = program.currencies[envelope["currency"]]
    total = currency.display(int(envelope["total"]))
    fee = f" (fee {currency.display(int(envelope['fee']))})" if envelope.get("fee") else ""
    if envelope["kind"] == "group":
        return (
            f"Sent a group envelope of {total}{fee} in {envelope['shares']} shares. "
            f"Share its code so others can claim it: {envelope['key']}"
        )
    return f"Sent {total} to {envelope['to']}{fee}."
