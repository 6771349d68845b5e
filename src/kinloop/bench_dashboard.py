"""`kinloop bench dashboard`: open the console's dashboard over a large store, beside its ceiling.

A year of a coffee program is written in bulk straight through the driver (binary COPY on
PostgreSQL), its indexes and constraints built and checked after the load: N members who buy
and check in, earn Stars and Beans, spend Beans (some through mall orders), let unspent Beans
expire after six months, climb tiers and use a privilege. Ids grow with time, as in a live
store, and the ledger invariants hold (`kinloop verify` passes: balances are the sums of
entries, lots the sums of their movements). Then the rollups are refreshed (timed), a server
is started on 127.0.0.1 and a signed-in operator GETs `/console/dashboard` over HTTP: the first
request (cold) and then `runs` more (warm; median and max). The ceiling is one `SELECT count(*)`
over the entries of the same store, what any dashboard that reads the ledger itself must at
least do; `ratio` = ceiling / median time.
"""

from __future__ import annotations

import random
import re
import socket
import statistics
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from sqlalchemy import Connection, Engine, Index, text

from kinloop.bench import _engine_in, _progress, _targets
from kinloop.clock import utcnow
from kinloop.program.loader import parse_program
from kinloop.services import dashboard as dashboard_svc
from kinloop.services import operators, programs
from kinloop.store import migrate
from kinloop.store.db import database_url, driver_cursor
from kinloop.store.tables import metadata

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
EXPIRY = timedelta(days=EXPIRE_DAYS)
FLUSH = 200_000  # entries per bulk write


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Writer:
    """Rows as tuples, written in bulk in the driver's own form (binary COPY on PostgreSQL), on
    the one connection of the load (its session is set up for bulk writes, see `_bulk_session`)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"
        self.pending: dict[str, tuple[Sequence[str], list[tuple[Any, ...]]]] = {}
        self.types: dict[str, list[str]] = {}

    def stamp(self, at: datetime) -> Any:
        # What SQLAlchemy's SQLite DATETIME writes: naive UTC text.
        return at.isoformat(" ", "microseconds")[:26] if self.sqlite else at

    def rows(self, table: str, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """The list to append `table`'s rows to (the hot loop keeps it at hand); a flush
        writes and empties it."""
        return self.pending.setdefault(table, (columns, []))[1]

    def add(self, table: str, columns: Sequence[str], row: tuple[Any, ...]) -> None:
        self.rows(table, columns).append(row)

    def flush(self, order: Iterable[str]) -> None:
        with self.conn.begin():
            for table in order:
                columns, rows = self.pending.get(table, ((), []))
                if not rows:
                    continue
                if self.sqlite:
                    _insert(self.conn, table, columns, rows)
                else:
                    if table not in self.types:
                        self.types[table] = _copy_types(self.conn, table, columns)
                    _copy(self.conn, table, columns, self.types[table], rows)
                rows.clear()


def _insert(conn: Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    with driver_cursor(conn, sql) as cur:
        cur.executemany(sql, rows)


def _copy(
    conn: Connection, table: str, columns: Sequence[str], types: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    # Binary COPY with the column types given up front: psycopg then neither looks up a dumper
    # for every value nor formats text, which had cost more than the server's work.
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with driver_cursor(conn, sql) as cur, cur.copy(sql) as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _copy_types(conn: Connection, table: str, columns: Sequence[str]) -> list[str]:
    """The PostgreSQL type of each column, as binary COPY needs them."""
    rows = conn.execute(
        text(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
            " WHERE a.attrelid = CAST(:table AS regclass) AND a.attnum > 0 AND NOT a.attisdropped"
        ),
        {"table": table},
    )
    # json's binary form is its text, and the rows hold it as text already (jsonb would differ).
    types = {name: "text" if typ == "json" else typ for name, typ in rows}
    return [types[c] for c in columns]


# The tables the bench fills in bulk. While they load they have no secondary indexes, and no
# unique or foreign-key constraints on PostgreSQL (no foreign-key checks on SQLite); all are
# put back, and so checked, once the rows are in, as pg_restore does: one index build or one
# validating join per constraint costs far less than a B-tree insert or a trigger per row.
LOADED = (
    "members",
    "events",
    "entries",
    "lots",
    "lot_movements",
    "orders",
    "tier_changes",
    "privilege_uses",
    "balances",
    "activity",
)


def _deferred_indexes() -> list[Index]:
    return [ix for name in LOADED for ix in metadata.tables[name].indexes]


def _pg_constraints(conn: Connection) -> list[tuple[str, str, str, str]]:
    """(table, name, kind, definition) of the foreign-key and then unique constraints of LOADED."""
    rows = conn.execute(
        text(
            "SELECT t.relname, c.conname, c.contype, pg_get_constraintdef(c.oid) FROM pg_constraint c"
            " JOIN pg_class t ON t.oid = c.conrelid"
            " WHERE t.relnamespace = current_schema()::regnamespace AND c.contype IN ('u', 'f')"
            " AND t.relname = ANY(:tables) ORDER BY c.contype, t.relname, c.conname"
        ),
        {"tables": list(LOADED)},
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


@contextmanager
def _bulk_session(conn: Connection) -> Iterator[None]:
    """Session settings for the load on the bench's own throwaway store, put back after, so
    that the refresh and the dashboard run on a store set up as usual.

    PostgreSQL: a commit does not wait for its WAL to reach the disk (a crash could lose the
    last commits of the load, never corrupt it), and index builds get memory to sort in.
    SQLite: foreign-key checks are off (`_restore` checks them all at the end), commits do not
    fsync, and the page cache is large enough for the indexes being written."""
    if conn.dialect.name == "sqlite":
        driver = conn.connection.driver_connection
        assert driver is not None
        # Outside any transaction: SQLite ignores a foreign_keys PRAGMA inside one.
        cache = driver.execute("PRAGMA cache_size").fetchone()[0]
        driver.execute("PRAGMA foreign_keys=OFF")
        driver.execute("PRAGMA synchronous=OFF")
        driver.execute("PRAGMA cache_size=-262144")  # 256 MiB
        try:
            yield
        finally:
            driver.execute(f"PRAGMA cache_size={int(cache)}")
            driver.execute("PRAGMA synchronous=NORMAL")  # what `connect` sets
            driver.execute("PRAGMA foreign_keys=ON")
        return
    with conn.begin():
        conn.execute(text("SET synchronous_commit = off"))
        conn.execute(text("SET maintenance_work_mem = '256MB'"))
    try:
        yield
    finally:
        with conn.begin():
            conn.execute(text("RESET synchronous_commit"))
            conn.execute(text("RESET maintenance_work_mem"))


def _strip(conn: Connection) -> list[tuple[str, str, str, str]]:
    """Drop LOADED's secondary indexes (and on PostgreSQL its unique and foreign-key
    constraints, foreign keys first); what `_restore` puts back."""
    with conn.begin():
        for ix in _deferred_indexes():
            ix.drop(conn)
        if conn.dialect.name == "sqlite":
            return []
        constraints = _pg_constraints(conn)
        for table, name, _, _ in constraints:
            conn.execute(text(f"ALTER TABLE {table} DROP CONSTRAINT {name}"))
    return constraints


def _restore(conn: Connection, constraints: list[tuple[str, str, str, str]], console: Console | None) -> None:
    """Build the indexes and add back the constraints `_strip` dropped, each checked over all
    rows (a violation fails the build); on SQLite, check every foreign key."""
    indexes = _deferred_indexes()
    # Unique constraints before the foreign keys: the reverse of `_strip`.
    adds = [f"ALTER TABLE {table} ADD CONSTRAINT {name} {how}" for table, name, _, how in reversed(constraints)]
    with conn.begin(), _progress(console, "indexes and constraints", len(indexes) + len(adds) + 1) as advance:
        for ix in indexes:
            ix.create(conn)
            advance(1)
        for sql in adds:
            conn.execute(text(sql))
            advance(1)
        if conn.dialect.name == "sqlite":
            sql = "PRAGMA foreign_key_check"
            with driver_cursor(conn, sql) as cur:
                broken = cur.execute(sql).fetchmany(5)
            if broken:
                raise RuntimeError(f"the bench wrote rows whose foreign keys do not hold: {broken}")
        advance(1)


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
        self.lots: deque[tuple[int, int, datetime, int, int, Any]] = deque()  # id, amount, at, event, day, stamp
        self.head = 0  # what is left of the first lot
        self.moves: list[tuple[int, int, int, int]] = []  # the first lot's movements, written with it
        self.last_day: dict[str, int] = {}
        self.counts: dict[str, int] = {}


def build(
    engine: Engine, *, members: int, entries: int, now: datetime, console: Console | None = None
) -> dict[str, int]:
    """Write the members and a year of their activity, `entries` ledger entries in all, into
    an empty store of its own: if a check fails at the end, the store is left without some of
    its indexes and constraints (the bench drops it anyway)."""
    rng = random.Random(6)
    pid, vid, reward_ids = _program(engine, now)
    start = now - timedelta(days=DAYS)
    with engine.connect() as conn, _bulk_session(conn):
        constraints = _strip(conn)
        w = _Writer(conn)
        people = _people(w, rng, members, start, pid)
        with _progress(console, "a year of activity (days)", DAYS) as advance:
            ids = _year(w, rng, people, reward_ids, program=(pid, vid), entries=entries, start=start, advance=advance)
        _balances(w, people, start)
        _restore(conn, constraints, console)
        _finish(conn, people, ids)
    return {"members": members, "entries": ids["entry"], "events": ids["event"], "orders": ids["order"]}


def _program(engine: Engine, now: datetime) -> tuple[int, int, list[tuple[int, int]]]:
    """Load the program and its rewards: (program id, version id, [(reward id, price)])."""
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
    return loaded.program_id, loaded.version_id, reward_ids


def _people(w: _Writer, rng: random.Random, members: int, start: datetime, pid: int) -> list[_Member]:
    """The members: when they join and, for a quarter of them, when they drift away."""
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
    return people


def _year(
    w: _Writer,
    rng: random.Random,
    people: list[_Member],
    reward_ids: list[tuple[int, int]],
    *,
    program: tuple[int, int],
    entries: int,
    start: datetime,
    advance: Callable[[int], None],
) -> dict[str, int]:
    """A year of events, entries, lots and their movements, orders, tier changes and privilege
    uses, written as it goes; the last id of each."""
    pid, vid = program
    ids = {"event": 0, "entry": 0, "move": 0, "order": 0, "tier": 0, "use": 0}
    written = 0
    expiring: dict[int, set[int]] = {}
    entry_rows = w.rows("entries", ENTRY_COLS)
    event_rows = w.rows("events", EVENT_COLS)
    lot_rows = w.rows("lots", LOT_COLS)
    move_rows = w.rows("lot_movements", MOVE_COLS)

    def entry(
        m: _Member,
        cur: str,
        amount: int,
        src: str,
        dst: str,
        kind: str,
        ev: int | None,
        s: Any,
        rule: str | None = None,
        key: str | None = None,
    ) -> int:
        """Append an entry effective (and created) at the stamp `s`; its id."""
        ids["entry"] += 1
        entry_rows.append(
            (ids["entry"], pid, m.pk, cur, amount, src, dst, kind, ev, rule, "rule" if rule else None, vid, key, s, s)
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
        lot_id, lot_amount, at, ev, _, stamp = m.lots.popleft()
        lot_rows.append((lot_id, m.pk, "beans", lot_amount, m.head, "available", stamp, w.stamp(at + EXPIRY), ev))
        # A lot is written once it is done with (spent, expired, or at the end), and its
        # movements after it: they refer to it.
        move_rows.extend(m.moves)
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
                at = w.stamp(m.lots[0][2] + EXPIRY)
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
            m = people[rng.randrange(len(people))]
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
            # What json.dumps({"amount": str(amount)}) writes, without its cost per event.
            attrs = f'{{"amount": "{amount}"}}' if amount else "{}"
            event_rows.append((ev, pid, f"e{ev}", m.pk, kind, s, s, attrs, vid, "{}"))
            m.last_day[kind] = day
            m.counts[kind] = m.counts.get(kind, 0) + 1
            beans = amount // 10 if amount else 1
            stars = amount // 50
            if stars:
                entry(m, "stars", stars, "issuance", "available", "earn", ev, s, "purchase_stars")
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
                s,
                "purchase_beans" if amount else "daily_check_in",
            )
            written += 1
            if not m.lots:
                m.head = beans
            m.lots.append((lot_id, beans, at, ev, day, s))
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
                e = entry(m, "beans", spend, "available", "redemption", "spend", None, s)
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
        if len(entry_rows) >= FLUSH:
            w.flush(ORDER)
        advance(1)
    # What is left: the lots still open.
    for m in people:
        while m.lots:
            _close_lot(m)
    w.flush(ORDER)
    return ids


def _balances(w: _Writer, people: list[_Member], start: datetime) -> None:
    """What the year left: balances and activity."""
    for lo in range(0, len(people), 50_000):
        for m in people[lo : lo + 50_000]:
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


def _finish(conn: Connection, people: list[_Member], ids: dict[str, int]) -> None:
    """Members' tiers; on PostgreSQL the sequences past the ids written, and fresh statistics."""
    with conn.begin():
        for tier, _ in THRESHOLDS:
            pks = [m.pk for m in people if m.tier == tier and tier != "green"]
            for i in range(0, len(pks), 5000):
                chunk = ",".join(map(str, pks[i : i + 5000]))
                conn.execute(text(f"UPDATE members SET tier = '{tier}' WHERE id IN ({chunk})"))
        if conn.dialect.name == "sqlite":
            return
        tops = {
            "members": len(people),
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
        # Every table of the bench's schema, and nothing of the database's other schemas.
        names = conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")
        ).scalars()
        conn.execute(text(f"ANALYZE {', '.join(names)}"))


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
            with _refresh_bar(progress_console) as progress:
                started = time.perf_counter()
                dashboard_svc.refresh(engine, loaded, now=utcnow(), progress=progress)
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


@contextmanager
def _refresh_bar(console: Console | None) -> Iterator[dashboard_svc.Progress | None]:
    """A bar per rolled-up table while the refresh runs, on a terminal only (never with --json)."""
    if console is None or not console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("refresh {task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(source: str, done: int, total: int) -> None:
            if source not in tasks:
                tasks[source] = bar.add_task(source, total=max(total, 1))
            bar.update(tasks[source], completed=done, total=max(total, 1))

        yield progress


def _drop(url: str) -> None:
    from kinloop.store.db import connect

    engine = connect(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
    engine.dispose()
