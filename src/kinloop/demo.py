"""`kinloop demo`: the coffee program with a believable population, in one command.

Members differ in habits (daily commuters, weekend regulars, occasional visitors, members
who drift away, newcomers who join during the period); they buy, check in, redeem their
Beans for rewards and now and then get a refund. Everything goes through the same services
as production: ingestion, spending, reversal and expiry.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine, delete, inspect, select

from kinloop.clock import utcnow
from kinloop.demo_outlets import seed_outlets
from kinloop.domain.errors import InsufficientBalance, InvalidInput
from kinloop.program.loader import parse_program
from kinloop.services import ingest, ledger, mall, member_view, operators, programs
from kinloop.services.summary import summarise
from kinloop.store import migrate
from kinloop.store.db import connect, database_url
from kinloop.store.tables import members as member_rows
from kinloop.store.tables import operator_sessions
from kinloop.store.tables import operators as operator_rows
from kinloop.web.portal.links import portal_link

EXAMPLES = Path(__file__).parent / "examples"
DEMO_URL = "sqlite:///kinloop-demo.db"
# Rewards a member may redeem Beans for (the mall arrives later; this is a plain spend).
REWARDS = [("Extra shot", 25), ("Pastry", 60), ("Any drink", 120), ("Mug", 250)]


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    share: float
    visit_weekday: float  # chance of a purchase on a weekday
    visit_weekend: float
    ticket: tuple[int, int]  # spend range per purchase
    check_in: float  # chance of opening the app and checking in on a given day
    redeem: float  # chance of redeeming when a reward is affordable
    drift_after: float | None = None  # fraction of the period after which they stop coming


PERSONAS = [
    Persona("daily commuter", 0.18, 0.75, 0.15, (28, 65), 0.8, 0.35),
    Persona("weekend regular", 0.22, 0.08, 0.6, (35, 140), 0.35, 0.25),
    Persona("occasional", 0.35, 0.07, 0.12, (25, 90), 0.1, 0.15),
    Persona("drifting away", 0.15, 0.35, 0.3, (25, 80), 0.4, 0.2, drift_after=0.4),
    Persona("big spender", 0.10, 0.3, 0.4, (90, 320), 0.5, 0.1),
]


@dataclass(slots=True)
class DemoMember:
    member_id: str
    persona: Persona
    joined: date
    purchases: list[str] = field(default_factory=list)


def _population(rng: random.Random, n: int, start: date, days: int) -> list[DemoMember]:
    weights = [p.share for p in PERSONAS]
    out = []
    for i in range(n):
        persona = rng.choices(PERSONAS, weights)[0]
        # A fifth join during the period; the rest were members already.
        joined = start + timedelta(days=rng.randrange(days)) if rng.random() < 0.2 else start
        out.append(DemoMember(f"member-{i + 1:05d}", persona, joined))
    return out


def _day_events(rng: random.Random, people: list[DemoMember], day: date, index: int, days: int) -> list[dict[str, Any]]:
    weekend = day.weekday() >= 5
    evs: list[dict[str, Any]] = []
    for m in people:
        p = m.persona
        if day < m.joined or (p.drift_after is not None and index > p.drift_after * days):
            continue
        opened = False
        if rng.random() < (p.visit_weekend if weekend else p.visit_weekday):
            at = datetime.combine(day, time(rng.randint(7, 19), rng.randrange(60)), tzinfo=UTC)
            event_id = f"{m.member_id}-{day.isoformat()}-p"
            amount = Decimal(rng.randint(*p.ticket)) + Decimal(rng.choice([0, 0, 50])) / 100
            evs.append(
                {
                    "event_id": event_id,
                    "member_id": m.member_id,
                    "type": "purchase",
                    "occurred_at": at.isoformat(),
                    "attributes": {"amount": amount, "channel": rng.choice(["store", "store", "app"])},
                }
            )
            m.purchases.append(event_id)
            opened = True
        if rng.random() < p.check_in or (opened and rng.random() < 0.5):
            at = datetime.combine(day, time(rng.randint(6, 22), rng.randrange(60)), tzinfo=UTC)
            evs.append(
                {
                    "event_id": f"{m.member_id}-{day.isoformat()}-c",
                    "member_id": m.member_id,
                    "type": "check_in",
                    "occurred_at": at.isoformat(),
                    "attributes": {},
                }
            )
    return evs


@dataclass(frozen=True, slots=True)
class WebAccess:
    """How a newcomer gets into the served demo: an operator login and member portal links."""

    console_url: str
    username: str
    password: str
    portal_links: list[tuple[str, str]]  # (member_id, link)


DEMO_OPERATOR = "demo"


def web_access(engine: Engine, base: str, *, now: datetime, members: int = 2) -> WebAccess:
    """Create (or reset) the demo's owner account and sign portal links for a few members,
    the ones with the most going on (the highest tiers and balances)."""
    password = secrets.token_urlsafe(9)
    with engine.begin() as conn:
        loaded = programs.active(conn)
        if conn.execute(select(operator_rows.c.id).where(operator_rows.c.username == DEMO_OPERATOR)).first():
            operators.disable(conn, DEMO_OPERATOR, now=now)
            conn.execute(delete(operator_sessions))
            conn.execute(delete(operator_rows).where(operator_rows.c.username == DEMO_OPERATOR))
        operators.create(conn, DEMO_OPERATOR, "owner", password, now=now)
        picked = _portal_members(conn, loaded, members)
        links = [(m, portal_link(conn, loaded.program_id, m, base, now=now)) for m in picked]
    return WebAccess(f"{base}/console", DEMO_OPERATOR, password, links)


def _portal_members(conn: Any, loaded: programs.LoadedProgram, n: int) -> list[str]:
    """The member highest on the ladder, then one on its first step: the portal differs for each."""
    rows = conn.execute(
        select(member_rows.c.member_id, member_rows.c.tier)
        .where(member_rows.c.program_id == loaded.program_id)
        .order_by(member_rows.c.id)
    ).all()
    ladder = loaded.program.ladder
    rank = ladder.index if ladder else (lambda _tier: 0)
    ranked = sorted(rows, key=lambda r: -rank(r.tier))
    picks = [ranked[0], ranked[-1], *ranked[1:-1]] if ranked else []
    return [r.member_id for r in picks][:n]


def _open_demo_db(db: str | None) -> tuple[str, Engine]:
    url = database_url(db) if db else DEMO_URL
    if url == DEMO_URL:
        # The demo's own file is recreated on every run.
        for suffix in ("", "-wal", "-shm"):
            Path(f"kinloop-demo.db{suffix}").unlink(missing_ok=True)
    engine = connect(url)
    if "programs" in inspect(engine).get_table_names():
        with engine.connect() as conn:
            if programs.count(conn):
                raise InvalidInput(
                    f"{url} already holds a program; give the demo an empty database (or no --db)", field="db"
                )
    migrate.upgrade(engine)
    return url, engine


def run_demo(
    db: str | None,
    *,
    members_n: int,
    days: int,
    seed: int,
    console: Console,
    progress_console: Console,
    clock: Callable[[], datetime] = utcnow,
) -> dict[str, Any]:
    """Build the demo database and print its summary; returns the summary as JSON."""
    url, engine = _open_demo_db(db)
    source = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")
    today = clock().date()
    start = today - timedelta(days=days)
    with engine.begin() as conn:
        loaded = programs.load(conn, parse_program(source), source, now=clock()).loaded
        _load_mall(conn, loaded, clock())
    rng = random.Random(seed)
    people = _population(rng, members_n, start, days)
    redeemed = refunded = 0
    active: set[str] = set()  # members who did something: over a few quiet days, not all did
    with Progress(
        TextColumn("simulating {task.fields[day]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=progress_console,
        transient=True,
    ) as bar:
        task = bar.add_task("days", total=days, day="")
        for index in range(days):
            day = start + timedelta(days=index)
            end_of_day = datetime.combine(day, time(23, 59), tzinfo=UTC)
            evs = _day_events(rng, people, day, index, days)
            active.update(e["member_id"] for e in evs)
            with engine.begin() as conn:
                ingest.ingest(conn, loaded, evs, now=end_of_day)
                redeemed += _redeem(conn, loaded, rng, people, day, end_of_day)
                refunded += _refund(conn, loaded, rng, people, end_of_day)
            bar.update(task, advance=1, day=day.isoformat())
    with engine.begin() as conn:
        ledger.expire(conn, loaded, now=clock())
    with engine.connect() as conn:
        summary = summarise(conn, loaded)
        shown = _samples([m for m in people if m.member_id in active])
        samples = [member_view.show(conn, loaded, m.member_id, now=clock()) for m in shown]
    _print(console, loaded, summary, samples, url, redeemed, refunded, days, members_n)
    outlets = seed_outlets(engine, loaded, [m.member_id for m in people], seed=seed, now=clock())
    console.print("outlets: " + ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in outlets.items()))
    return summary.as_json(loaded)


def _load_mall(conn: Any, loaded: programs.LoadedProgram, now: datetime) -> None:
    """The coffee mall (rewards, one sold out, one on sale, and a pool of cinema codes)."""
    folder = EXAMPLES / "mall"
    seed = (folder / "coffee-rewards.yaml").read_text(encoding="utf-8")
    mall.load_seed(conn, loaded, seed, now=now, source="examples/mall/coffee-rewards.yaml")
    codes = (folder / "cinema-codes.txt").read_text(encoding="utf-8").splitlines()
    mall.upload_codes(conn, loaded.program_id, "cinema", codes, now=now)


def _redeem(
    conn: Any, loaded: programs.LoadedProgram, rng: random.Random, people: list[DemoMember], day: date, now: datetime
) -> int:
    done = 0
    beans = loaded.program.currencies["beans"]
    for m in rng.sample(people, k=max(1, len(people) // 8)):
        if rng.random() >= m.persona.redeem or not m.purchases:
            continue
        name, price = rng.choice(REWARDS)
        try:
            ledger.spend(
                conn,
                loaded,
                m.member_id,
                beans.key,
                price,
                reason=f"Reward: {name}",
                key=f"redeem-{m.member_id}-{day.isoformat()}",
                now=now,
                actor="demo",
            )
            done += 1
        except InsufficientBalance:
            pass  # Not enough Beans yet: members browse rewards they cannot afford, too.
    return done


def _refund(
    conn: Any, loaded: programs.LoadedProgram, rng: random.Random, people: list[DemoMember], now: datetime
) -> int:
    done = 0
    for m in rng.sample(people, k=max(1, len(people) // 200)):
        if m.purchases and rng.random() < 0.3:
            event_id = m.purchases.pop()
            partial = rng.random() < 0.5
            try:
                ledger.reverse(
                    conn,
                    loaded,
                    event_id,
                    amount=Decimal(10) if partial else None,
                    reason="refund at the counter",
                    actor="demo",
                    now=now,
                )
                done += 1
            except InvalidInput:
                pass  # A partial refund larger than what is left of the purchase.
    return done


def _samples(people: list[DemoMember]) -> list[DemoMember]:
    picks: dict[str, DemoMember] = {}
    for m in people:
        picks.setdefault(m.persona.name, m)
    return list(picks.values())[:3]


def _print(
    console: Console,
    loaded: programs.LoadedProgram,
    summary: Any,
    samples: list[Any],
    url: str,
    redeemed: int,
    refunded: int,
    days: int,
    n: int,
) -> None:
    program = loaded.program
    del n
    console.print(
        f"[bold]{program.name}[/]: {summary.members:,} members over {days} days, {summary.events:,} events, "
        f"{redeemed:,} redemptions, {refunded:,} refunds"
    )
    console.print(f"database: {url}")
    tiers = Table("tier", "members", "share", title="members per tier")
    for _key, name, count in summary.tiers:
        tiers.add_row(name, f"{count:,}", f"{count / max(summary.members, 1):.0%}")
    untiered = summary.members - sum(c for _, _, c in summary.tiers)
    if untiered:
        tiers.add_row("(no tier yet)", f"{untiered:,}", f"{untiered / max(summary.members, 1):.0%}")
    console.print(tiers)
    money = Table("currency", "issued", "taken back", "spent", "expired", "outstanding", title="currencies")
    for key, f in summary.currencies.items():
        c = program.currencies[key]
        spent = c.display(f.spent) if c.spendable else "never spent"
        expired = c.display(f.expired) if c.spendable else "-"
        money.add_row(c.name, c.display(f.issued), c.display(f.reversed), spent, expired, c.display(f.outstanding))
    console.print(money)
    console.print("a few members:")
    for view in samples:
        tier = view.tier["name"] if view.tier else "-"
        nxt = f" — {view.next_tier['text']}" if view.next_tier else " — top tier"
        console.print(f"  {view.member_id}: {tier}, {', '.join(view.display.values())}{nxt}")
    console.print(f"try: kinloop member show {samples[0].member_id} --db {url}" if samples else "")
