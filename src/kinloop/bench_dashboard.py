"""`kinloop bench dashboard`: open the console's dashboard over a large store, beside its ceiling.

A year of a coffee program is written in bulk straight through the driver (COPY on
PostgreSQL): N members who buy and check in, earn Stars and Beans, spend Beans (some through
mall orders), let unspent Beans expire after six months, climb tiers and use a privilege. Ids
grow with time, as in a live store, and the ledger invariants hold (`kinloop verify` passes:
balances are the sums of entries, lots the sums of their movements). Then the rollups are
refreshed (timed), a server is started on 127.0.0.1 and a signed-in operator GETs
`/console/dashboard` over HTTP: the first request (cold) and then `runs` more (warm; median and
max). The ceiling is one `SELECT count(*)` over the entries of the same store, what any
dashboard that reads the ledger itself must at least do; `ratio` = ceiling / median time.
"""

from __future__ import annotations

import json
import random
import re
import socket
import statistics
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from sqlalchemy import Connection, Engine, text

from kinloop.bench import _engine_in, _targets
from kinloop.clock import utcnow
from kinloop.program.loader import parse_program
from kinloop.services import dashboard as dashboard_svc
from kinloop.services import operators, programs
from kinloop.store import migrate
from kinloop.store.db import database_url, driver_cursor
from kinloop.store.tables import entries as entries_table
from kinloop.store.tables import events as events_table
from kinloop.store.tables import lot_movements, lots

SCHEMA = "kinloop_bench_dash"
PASSWORD = "bench-password-1"
PROGRAM = """
key: dash_bench
name: Dashboard bench
timezone: Europe/Paris
money_currency: EUR
currencies:
  - {key: stars, name: Stars, unit: ★, kind: growth}
  - {key: beans, name: Beans, kind: points, expiry: {months: 6}, money_value: "0.05"}
event_types:
  - {key: purchase, attributes: {amount: decimal}}
  - {key: check_in}
rules:
  - {key: purchase_stars, event: purchase, currency: stars, rate: {attribute: amount, per: 50, amount: 1}}
  - {key: purchase_beans, event: purchase, currency: beans, rate: {attribute: amount, per: 10, amount: 1}}
  - {key: daily_check_in, event: check_in, currency: beans, amount: 1, limit: {per_day: 1}}
ladder:
  currency: stars
  tiers:
    - {key: green, name: Green, threshold: 0}
    - {key: jade, name: Jade, threshold: 10}
    - {key: gold, name: Gold, threshold: 60}
privileges:
  - {key: free_drink, name: Free drink, kind: preferential, tiers: [gold], quota: {uses: 2, per: month}}
"""
THRESHOLDS = (("green", 0), ("jade", 10), ("gold", 60))
REWARDS = (("shot", "Extra shot", 25), ("pastry", "Pastry", 60), ("drink", "Any drink", 120), ("mug", "Mug", 250))
DAYS = 365
EXPIRE_DAYS = 182  # about six months: what the bench writes by hand, the program says `months: 6`
FLUSH = 200_000  # entries per bulk write


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Writer:
    """Rows as tuples, written in bulk in the driver's own form (COPY on PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        self.pending: dict[str, tuple[Sequence[str], list[tuple[Any, ...]]]] = {}

    def stamp(self, at: datetime) -> Any:
        # What SQLAlchemy's SQLite DATETIME writes: naive UTC text.
        return at.isoformat(" ", "microseconds")[:26] if self.sqlite else at

    def add(self, table: str, columns: Sequence[str], row: tuple[Any, ...]) -> None:
        self.pending.setdefault(table, (columns, []))[1].append(row)

    def flush(self, order: Iterable[str]) -> None:
        with self.engine.begin() as conn:
            for table in order:
                columns, rows = self.pending.pop(table, ((), []))
                if rows:
                    _write(conn, table, columns, rows, self.sqlite)


def _write(conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]], sqlite: bool) -> None:
    names = ", ".join(columns)
    if sqlite:
        sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
        with driver_cursor(conn, sql) as cur:
            cur.executemany(sql, rows)
        return
    sql = f"COPY {table} ({names}) FROM STDIN"
    with driver_cursor(conn, sql) as cur, cur.copy(sql) as copy:
        for row in rows:
            copy.write_row(row)


EVENT_COLS = (
    "id",
    "program_id",
    "event_id",
    "member_pk",
    "type",
    "occurred_at",
    "received_at",
    "attributes",
    "program_version_id",
    "outcome",
)
ENTRY_COLS = (
    "id",
    "program_id",
    "member_pk",
    "currency",
    "amount",
    "from_account",
    "to_account",
    "kind",
    "event_pk",
    "rule",
    "award_kind",
    "program_version_id",
    "idempotency_key",
    "effective_at",
    "created_at",
)
LOT_COLS = ("id", "member_pk", "currency", "amount", "remaining", "status", "earned_at", "expires_at", "event_pk")
MOVE_COLS = ("id", "entry_id", "lot_id", "amount")
ORDER = ("members", "events", "entries", "lots", "lot_movements", "orders", "tier_changes", "privilege_uses")


class _Member:
    __slots__ = (
        "active_until",
        "balance",
        "counts",
        "head",
        "joined",
        "last_day",
        "lots",
        "moves",
        "pk",
        "stars",
        "tier",
    )

    def __init__(self, pk: int, joined: int, active_until: int) -> None:
        self.pk = pk
        self.joined = joined
        self.active_until = active_until
        self.balance = 0
        self.stars = 0
        self.tier = "green"
        self.lots: deque[tuple[int, int, datetime, int, int]] = deque()  # id, amount, at, event, day
        self.head = 0  # what is left of the first lot
        self.moves: list[tuple[int, int, int, int]] = []  # the first lot's movements, written with it
        self.last_day: dict[str, int] = {}
        self.counts: dict[str, int] = {}


def build(
    engine: Engine, *, members: int, entries: int, now: datetime, console: Console | None = None
) -> dict[str, int]:
    """Write the members and a year of their activity, `entries` ledger entries in all."""
    rng = random.Random(6)
    with engine.begin() as conn:
        loaded = programs.load(conn, parse_program(PROGRAM), PROGRAM, now=now - timedelta(days=DAYS + 1)).loaded
        reward_ids = []
        for i, (key, name, price) in enumerate(REWARDS, start=1):
            conn.execute(
                text(
                    "INSERT INTO rewards (id, program_id, key, name, kind, currency, price, sold, tiers, promos,"
                    " active, hidden, uses_codes, created_at, updated_at) VALUES (:id, :pid, :key, :name, 'internal',"
                    " 'beans', :price, 0, '[]', '[]', :t, :f, :f, :at, :at)"
                ),
                {"id": i, "pid": loaded.program_id, "key": key, "name": name, "price": price, "t": True, "f": False}
                | {"at": now - timedelta(days=DAYS + 1)},
            )
            reward_ids.append((i, price))
    pid, vid = loaded.program_id, loaded.version_id
    # Secondary indexes are built once at the end: several times faster than row by row.
    deferred = [ix for t in (events_table, entries_table, lots, lot_movements) for ix in t.indexes]
    with engine.begin() as conn:
        for ix in deferred:
            ix.drop(conn)
    w = _Writer(engine)
    start = now - timedelta(days=DAYS)
    people = []
    for pk in range(1, members + 1):
        joined = rng.randrange(0, DAYS - 30) if rng.random() < 0.6 else 0
        # A quarter drift away after a while: their Beans expire.
        until = joined + rng.randrange(30, DAYS) if rng.random() < 0.25 else DAYS
        people.append(_Member(pk, joined, until))
        stamp = w.stamp(start + timedelta(days=joined))
        w.add(
            "members",
            ("id", "program_id", "member_id", "tier", "profile", "created_at"),
            (pk, pid, f"m{pk:07d}", "green", "{}", stamp),
        )
    ids = {"event": 0, "entry": 0, "move": 0, "order": 0, "tier": 0, "use": 0}
    written = 0
    expiring: dict[int, set[int]] = {}

    def entry(
        m: _Member,
        cur: str,
        amount: int,
        src: str,
        dst: str,
        kind: str,
        ev: int | None,
        at: datetime,
        rule: str | None = None,
        key: str | None = None,
    ) -> int:
        ids["entry"] += 1
        s = w.stamp(at)
        w.add(
            "entries",
            ENTRY_COLS,
            (ids["entry"], pid, m.pk, cur, amount, src, dst, kind, ev, rule, "rule" if rule else None, vid, key, s, s),
        )
        return ids["entry"]

    def take(m: _Member, amount: int, entry_id: int) -> None:
        """Consume `amount` from the member's lots, oldest (= soonest expiring) first."""
        left = amount
        while left:
            lot_id = m.lots[0][0]
            t = min(left, m.head)
            ids["move"] += 1
            m.moves.append((ids["move"], entry_id, lot_id, -t))
            m.head -= t
            left -= t
            if m.head == 0:
                _close_lot(m)

    def _close_lot(m: _Member) -> None:
        lot_id, lot_amount, at, ev, _ = m.lots.popleft()
        w.add(
            "lots",
            LOT_COLS,
            (
                lot_id,
                m.pk,
                "beans",
                lot_amount,
                m.head,
                "available",
                w.stamp(at),
                w.stamp(at + timedelta(days=EXPIRE_DAYS)),
                ev,
            ),
        )
        # A lot is written once it is done with (spent, expired, or at the end), and its
        # movements after it: they refer to it.
        for move in m.moves:
            w.add("lot_movements", MOVE_COLS, move)
        m.moves = []
        m.head = m.lots[0][1] if m.lots else 0

    for day in range(DAYS):
        if written >= entries:
            break
        base = start + timedelta(days=day)
        for pk in sorted(expiring.pop(day, ())):
            m = people[pk - 1]
            while m.lots and m.lots[0][4] + EXPIRE_DAYS <= day:
                lot_id = m.lots[0][0]
                amount = m.head
                at = m.lots[0][2] + timedelta(days=EXPIRE_DAYS)
                e = entry(m, "beans", amount, "available", "expiry", "expire", m.lots[0][3], at, key=f"expire:{lot_id}")
                written += 1
                ids["move"] += 1
                m.moves.append((ids["move"], e, lot_id, -amount))
                m.balance -= amount
                m.head = 0
                _close_lot(m)
        # Spread what is left over the days left; an event writes about two entries.
        quota = written + (entries - written) // (DAYS - day)
        seconds = deque(sorted(rng.randrange(7 * 3600, 21 * 3600) for _ in range(max(1, (quota - written) // 2))))
        while written < quota or (day == DAYS - 1 and written < entries):
            sec = seconds.popleft() if seconds else 21 * 3600
            m = people[rng.randrange(members)]
            if not m.joined <= day < m.active_until:
                continue
            at = base + timedelta(seconds=sec)
            ids["event"] += 1
            ev = ids["event"]
            s = w.stamp(at)
            kind = "purchase" if rng.random() < 0.65 else "check_in"
            if kind == "check_in" and m.last_day.get(kind) == day:
                kind = "purchase"
            amount = rng.randrange(20, 121) if kind == "purchase" else 0
            attrs = json.dumps({"amount": str(amount)}) if amount else "{}"
            w.add("events", EVENT_COLS, (ev, pid, f"e{ev}", m.pk, kind, s, s, attrs, vid, "{}"))
            m.last_day[kind] = day
            m.counts[kind] = m.counts.get(kind, 0) + 1
            beans = amount // 10 if amount else 1
            stars = amount // 50
            if stars:
                entry(m, "stars", stars, "issuance", "available", "earn", ev, at, "purchase_stars")
                written += 1
                m.stars += stars
                reached = _tier(m.stars)
                if reached != m.tier:
                    ids["tier"] += 1
                    w.add(
                        "tier_changes",
                        ("id", "member_pk", "from_tier", "to_tier", "reason", "event_pk", "at"),
                        (ids["tier"], m.pk, m.tier, reached, "qualified", ev, s),
                    )
                    m.tier = reached
            lot_id = entry(
                m,
                "beans",
                beans,
                "issuance",
                "available",
                "earn",
                ev,
                at,
                "purchase_beans" if amount else "daily_check_in",
            )
            written += 1
            if not m.lots:
                m.head = beans
            m.lots.append((lot_id, beans, at, ev, day))
            m.balance += beans
            expiring.setdefault(day + EXPIRE_DAYS, set()).add(m.pk)
            if m.tier == "gold" and kind == "purchase" and rng.random() < 0.1:
                ids["use"] += 1
                w.add(
                    "privilege_uses",
                    ("id", "program_id", "member_pk", "privilege", "tier", "used_at", "idempotency_key", "result"),
                    (ids["use"], pid, m.pk, "free_drink", "gold", s, f"use{ids['use']}", "{}"),
                )
            if m.balance >= 60 and rng.random() < 0.25:
                spend = rng.randrange(25, min(m.balance, 250) + 1)
                order = rng.random() < 0.3
                if order:
                    reward, price = reward_ids[rng.randrange(len(reward_ids))]
                    if price > m.balance:
                        order = False
                    else:
                        spend = price
                e = entry(m, "beans", spend, "available", "redemption", "spend", None, at)
                written += 1
                take(m, spend, e)
                m.balance -= spend
                if order:
                    ids["order"] += 1
                    w.add(
                        "orders",
                        (
                            "id",
                            "program_id",
                            "member_pk",
                            "reward_id",
                            "quantity",
                            "currency",
                            "unit_price",
                            "points",
                            "promo",
                            "tier",
                            "status",
                            "spend_entry_id",
                            "history",
                            "placed_at",
                            "updated_at",
                        ),
                        (
                            ids["order"],
                            pid,
                            m.pk,
                            reward,
                            1,
                            "beans",
                            spend,
                            spend,
                            False,
                            m.tier,
                            "completed",
                            e,
                            "[]",
                            s,
                            s,
                        ),
                    )
            if written >= entries:
                break
        if len(w.pending.get("entries", ((), []))[1]) >= FLUSH:
            w.flush(ORDER)
        if console is not None and day % 30 == 0:
            console.print(f"day {day}/{DAYS}: {written:,} entries", end="\r")
    # What is left: open lots, balances, tiers and activity.
    for m in people:
        while m.lots:
            _close_lot(m)
    w.flush(ORDER)
    for lo in range(0, members, 50_000):
        part = people[lo : lo + 50_000]
        for m in part:
            w.add("balances", ("member_pk", "currency", "available", "pending"), (m.pk, "beans", m.balance, 0))
            if m.stars:
                w.add("balances", ("member_pk", "currency", "available", "pending"), (m.pk, "stars", m.stars, 0))
            for kind, last in m.last_day.items():
                w.add(
                    "activity",
                    ("member_pk", "event_type", "count", "last_day", "streak"),
                    (m.pk, kind, m.counts[kind], (start + timedelta(days=last)).date().toordinal(), 1),
                )
        w.flush(("balances", "activity"))
    with engine.begin() as conn:
        for ix in deferred:
            ix.create(conn)
        for tier, _ in THRESHOLDS:
            pks = [m.pk for m in people if m.tier == tier and tier != "green"]
            for i in range(0, len(pks), 5000):
                chunk = ",".join(map(str, pks[i : i + 5000]))
                conn.execute(text(f"UPDATE members SET tier = '{tier}' WHERE id IN ({chunk})"))
        if not w.sqlite:
            tops = {
                "members": members,
                "events": ids["event"],
                "entries": ids["entry"],
                "lot_movements": ids["move"],
                "orders": ids["order"],
                "tier_changes": ids["tier"],
                "privilege_uses": ids["use"],
                "rewards": len(REWARDS),
            }
            for name, top in tops.items():
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), {max(top, 1)})"))
            conn.execute(text("ANALYZE"))
    return {"members": members, "entries": ids["entry"], "events": ids["event"], "orders": ids["order"]}


def _tier(stars: int) -> str:
    return [k for k, t in THRESHOLDS if stars >= t][-1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def time_dashboard(url: str, *, runs: int, schema: str | None = None) -> dict[str, float]:
    """Serve the store on 127.0.0.1 and GET the dashboard as a signed-in operator: cold, then warm."""
    import uvicorn

    from kinloop.api.app import create_app

    app = create_app(f"{url}?options=-csearch_path%3D{schema}" if schema else url)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the bench server did not start")
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=120) as client:
            form = client.get("/console/login").text
            token = re.search(r'name="login_token" value="([^"]+)"', form)
            assert token is not None
            client.post(
                "/console/login",
                data={"username": "bench", "password": PASSWORD, "login_token": token.group(1), "next": "/console"},
            )

            def get() -> float:
                started = time.perf_counter()
                reply = client.get("/console/dashboard?period=30")
                took = time.perf_counter() - started
                if reply.status_code != 200 or "data-chart" not in reply.text:
                    raise RuntimeError(f"the dashboard answered {reply.status_code}")
                return took

            cold = get()
            warm = [get() for _ in range(runs)]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    return {
        "cold_ms": _ms(cold),
        "dashboard_ms": _ms(statistics.median(warm)),
        "dashboard_max_ms": _ms(max(warm)),
    }


def run_dashboard_bench(
    db: str | None,
    *,
    members: int,
    entries: int,
    runs: int = 9,
    progress_console: Console | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> dict[str, Any]:
    """Build the store, refresh the rollups, time the dashboard and the ceiling; the figures."""
    now = clock()
    with tempfile.TemporaryDirectory(prefix="kinloop-bench-dash-") as tmpdir:
        backend, url, _ = _targets(db, Path(tmpdir))
        engine = _engine_in(url, SCHEMA)
        try:
            migrate.upgrade(engine)
            started = time.perf_counter()
            built = build(engine, members=members, entries=entries, now=now, console=progress_console)
            build_s = time.perf_counter() - started
            with engine.begin() as conn:
                operators.create(conn, "bench", "viewer", PASSWORD, now=now)
                loaded = programs.active(conn, "dash_bench")
            started = time.perf_counter()
            dashboard_svc.refresh(engine, loaded, now=utcnow())
            refresh_s = time.perf_counter() - started
            started = time.perf_counter()
            with engine.connect() as conn:
                counted = conn.execute(text("SELECT count(*) FROM entries")).scalar()
            raw_s = time.perf_counter() - started
            started = time.perf_counter()
            with engine.connect() as conn:
                rollup_rows = len(conn.execute(text("SELECT * FROM dashboard_daily")).all())
            rollup_s = time.perf_counter() - started
            timed = time_dashboard(url, runs=runs, schema=None if backend == "sqlite" else SCHEMA)
        finally:
            engine.dispose()
            if backend == "postgresql":
                _drop(url)
    return {
        "database": backend if db is None else database_url(db).split("@")[-1],
        "members": members,
        "entries": int(counted or 0),
        "events": built["events"],
        "build_s": round(build_s, 1),
        "refresh_s": round(refresh_s, 2),
        "rollup_rows": rollup_rows,
        **timed,
        "raw_ms": _ms(raw_s),
        "raw_rollup_ms": _ms(rollup_s),
        "ratio": round(raw_s * 1000 / timed["dashboard_ms"], 2) if timed["dashboard_ms"] else None,
    }


def _drop(url: str) -> None:
    from kinloop.store.db import connect

    engine = connect(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    engine.dispose()
