"""The dashboard's rollups: daily sums kept up to date incrementally, and what the dashboard reads.

What is rolled up. Each *source* is an append-only table with an integer id (ledger entries,
events, members, tier changes, privilege uses, orders, draw entries); its rows are summed per
program, local day (the program's time zone) and a few dimensions into `dashboard_daily`.
Two *snapshots* of current state (members per tier, members per last active day) are
recomputed whole on every refresh.

How it stays exact. Rows are never updated or deleted, so a row's contribution is fixed once
it is visible; the only question is when every row up to some id is visible. Each source keeps
`final_id`: every row with an id up to it has been added to the 'final' layer, once, and no
row with such an id can still appear. Rows above it are summed again from scratch into the
'open' layer on every refresh, so they are counted whatever order they commit in. Days come
from the rows themselves (`effective_at`, `occurred_at`...), so a back-dated event lands on
its own day, whenever it is written.

When does `final_id` move?
- SQLite: a refresh runs in a write transaction, and writers take ids (max + 1) under the
  same single lock, so every id up to the largest one visible is final.
- PostgreSQL: ids come from sequences and commit out of order. A refresh reads each
  sequence's value (the *frontier*) and then the virtual transaction ids of the transactions
  running in this database. Any id up to the frontier was drawn by a transaction that had
  started by then, so once all those transactions have ended (checked in `pg_locks`), nothing
  up to the frontier can appear any more and `final_id` moves to it. A refresh waits up to a
  couple of seconds for that; if some transaction runs longer, the observation is kept and
  checked again on the next refresh, and meanwhile the rows above `final_id` are in 'open'.
  (Rows inserted with explicit ids below the frontier, as benchmarks do, must be written
  before the refresh that finalises them.)

The final layer grows in steps of `STEP` ids, one transaction each (a first refresh of a large
store can be interrupted and resumed); a step clears the open layer of its source, so a row
may briefly be missing from the dashboard but is never counted twice. `refresh` is a job: it
owns its transactions (like the webhook worker), everything else here takes a connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, text, update

from kinloop.domain import dashboard as D
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import insert_rows, upsert_rows
from kinloop.store.db import is_sqlite
from kinloop.store.tables import dashboard_daily, dashboard_sources, draws, programs, rewards

STEP = 500_000  # ids per transaction when growing the final layer
WAIT_SECONDS = 2.0  # PostgreSQL: how long a refresh waits for transactions older than the frontier
LAZY_LIMIT = 200_000  # rows behind, at most, for the dashboard to refresh itself before it opens
STALE_SECONDS = 300  # snapshots older than this are recomputed when the dashboard opens
KEYS = ("program_id", "source", "layer", "day", "k1", "k2", "k3", "k4", "k5")
Progress = Callable[[str, int, int], None]  # (source, ids done, ids to do)


@dataclass(frozen=True, slots=True)
class Source:
    """How one append-only table is summed: FROM/WHERE, its time column, dimensions, n and amount."""

    name: str
    table: str
    tables: str
    program: str
    at: str
    dims: tuple[str, ...]
    n: str = "count(*)"
    amount: str = "0"


SOURCES: tuple[Source, ...] = (
    Source(
        "entries",
        "entries",
        "entries x",
        "x.program_id",
        "x.effective_at",
        (
            "x.currency",
            "x.kind",
            "x.from_account",
            "x.to_account",
            "CASE WHEN x.kind = 'earn' AND x.rule IS NOT NULL"
            " THEN COALESCE(x.award_kind, 'rule') || ':' || x.rule ELSE '' END",
        ),
        amount="sum(x.amount)",
    ),
    Source("events", "events", "events x", "x.program_id", "x.occurred_at", ("x.type",)),
    Source("members", "members", "members x", "x.program_id", "x.created_at", ()),
    Source(
        "tier_changes",
        "tier_changes",
        "tier_changes x JOIN members m ON m.id = x.member_pk",
        "m.program_id",
        "x.at",
        ("COALESCE(x.from_tier, '')", "COALESCE(x.to_tier, '')"),
    ),
    Source(
        "privilege_uses",
        "privilege_uses",
        "privilege_uses x",
        "x.program_id",
        "x.used_at",
        ("x.privilege", "COALESCE(x.tier, '')"),
    ),
    Source(
        "orders",
        "orders",
        "orders x",
        "x.program_id",
        "x.placed_at",
        ("CAST(x.reward_id AS VARCHAR(20))", "COALESCE(x.tier, '')", "x.currency"),
        n="sum(x.quantity)",
        amount="sum(x.points)",
    ),
    Source(
        "draw_entries",
        "draw_entries",
        "draw_entries x JOIN draws w ON w.id = x.draw_id",
        "w.program_id",
        "x.at",
        ("CAST(x.draw_id AS VARCHAR(20))", "COALESCE(x.prize, '')"),
        amount="sum(w.cost)",
    ),
)
BY_NAME = {s.name: s for s in SOURCES}
SNAPSHOTS: dict[str, str] = {
    # day 0, k1 = tier ('' for none)
    "tiers_now": "SELECT 0, COALESCE(tier, ''), count(*) FROM members WHERE program_id = :pid GROUP BY tier",
    # day = the member's last active day (any event type)
    "last_active": (
        "SELECT last, '', count(*) FROM (SELECT a.member_pk, max(a.last_day) AS last FROM activity a"
        " JOIN members m ON m.id = a.member_pk WHERE m.program_id = :pid AND a.last_day IS NOT NULL"
        " GROUP BY a.member_pk) t GROUP BY last"
    ),
}


# --- refreshing -----------------------------------------------------------------------------
Cells = dict[tuple[int, str, str, str, str, str], list[int]]


def _aggregate(conn: Connection, source: Source, pid: int, tz: Any, lo: int, hi: int | None) -> Cells:
    """The rows of `source` with lo < id <= hi (no upper bound for None), summed per day and dims."""
    dims = list(source.dims) + ["''"] * (5 - len(source.dims))
    tzname = getattr(tz, "key", "UTC")
    if is_sqlite(conn):
        bucket = f"CAST(strftime('%s', {source.at}) AS INTEGER) / {D.QUARTER}"
    else:
        bucket = f"(({source.at} AT TIME ZONE :tz)::date - DATE '0001-01-01' + 1)"
    where = f"{source.program} = :pid AND x.id > :lo" + ("" if hi is None else " AND x.id <= :hi")
    sql = (
        f"SELECT {bucket}, {', '.join(dims)}, {source.n}, {source.amount}"
        f" FROM {source.tables} WHERE {where} GROUP BY {', '.join(str(i) for i in range(1, 7))}"
    )
    params: dict[str, Any] = {"pid": pid, "lo": lo, "tz": tzname}
    if hi is not None:
        params["hi"] = hi
    out: Cells = {}
    days: dict[int, int] = {}
    for b, k1, k2, k3, k4, k5, n, amount in conn.execute(text(sql), params):
        if is_sqlite(conn):
            day = days.get(b)
            if day is None:
                day = days[b] = D.quarter_day(int(b), tz)
        else:
            day = int(b)
        cell = out.setdefault((day, k1, k2, k3, k4, k5), [0, 0])
        cell[0] += int(n or 0)
        cell[1] += int(amount or 0)
    return out


def _rows(pid: int, source: str, layer: str, cells: Cells) -> list[dict[str, Any]]:
    return [
        {
            "program_id": pid,
            "source": source,
            "layer": layer,
            "day": day,
            "k1": k1,
            "k2": k2,
            "k3": k3,
            "k4": k4,
            "k5": k5,
            "n": n,
            "amount": amount,
        }
        for (day, k1, k2, k3, k4, k5), (n, amount) in sorted(cells.items())
    ]


@dataclass(slots=True)
class _State:
    final_id: int
    seen_id: int
    frontier: int | None
    waiting: list[str] | None
    refreshed_at: datetime | None


def _lock_state(conn: Connection, pid: int, source: str, now: datetime) -> _State:
    """The source's refresh state, locked for this transaction (created on first use)."""
    query = select(
        dashboard_sources.c.final_id,
        dashboard_sources.c.seen_id,
        dashboard_sources.c.frontier,
        dashboard_sources.c.waiting,
        dashboard_sources.c.refreshed_at,
    ).where(dashboard_sources.c.program_id == pid, dashboard_sources.c.source == source)
    locking = query if is_sqlite(conn) else query.with_for_update()
    row = conn.execute(locking).first()
    if row is None:
        insert = dashboard_sources.insert().values(
            program_id=pid, source=source, final_id=0, seen_id=0, refreshed_at=now
        )
        if is_sqlite(conn):
            conn.execute(insert)
        else:
            # Two refreshes may start together: one inserts, the other then waits for its lock.
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            conn.execute(
                pg_insert(dashboard_sources)
                .values(program_id=pid, source=source, final_id=0, seen_id=0, refreshed_at=now)
                .on_conflict_do_nothing()
            )
        row = conn.execute(locking).first()
        assert row is not None
        return _State(int(row.final_id), int(row.seen_id), row.frontier, row.waiting, None)
    return _State(int(row.final_id), int(row.seen_id), row.frontier, row.waiting, row.refreshed_at)


def _save_state(conn: Connection, pid: int, source: str, **values: Any) -> None:
    conn.execute(
        update(dashboard_sources)
        .where(dashboard_sources.c.program_id == pid, dashboard_sources.c.source == source)
        .values(**values)
    )


def _top(conn: Connection, table: str) -> int:
    return int(conn.execute(text(f"SELECT max(id) FROM {table}")).scalar() or 0)


def _clear(conn: Connection, pid: int, source: str, layer: str) -> None:
    conn.execute(
        delete(dashboard_daily).where(
            dashboard_daily.c.program_id == pid, dashboard_daily.c.source == source, dashboard_daily.c.layer == layer
        )
    )


# PostgreSQL: transactions of this database (other than our own) and whether they still run.
_RUNNING = (
    "SELECT l.virtualxid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'virtualxid' AND l.granted AND a.datname = current_database()"
    " AND a.backend_type = 'client backend' AND l.pid <> pg_backend_pid()"
)


def _observe(engine: Engine) -> tuple[dict[str, int], list[str]]:
    """Each source's sequence value, then the transactions running: they hold every id up to it
    that is not visible yet."""
    frontiers: dict[str, int] = {}
    with engine.connect() as conn:
        for s in SOURCES:
            seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": s.table}).scalar()
            if seq is None:
                frontiers[s.name] = _top(conn, s.table)
                continue
            last, called = conn.execute(text(f"SELECT last_value, is_called FROM {seq}")).one()
            frontiers[s.name] = int(last) if called else int(last) - 1
        running = [str(v) for v in conn.execute(text(_RUNNING)).scalars()]
        conn.rollback()
    return frontiers, running


def _still_running(engine: Engine, vxids: Sequence[str]) -> bool:
    if not vxids:
        return False
    with engine.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'virtualxid' AND virtualxid = ANY(:v)"),
            {"v": list(vxids)},
        ).scalar()
        conn.rollback()
    return bool(n)


def _ended(engine: Engine, vxids: Sequence[str], wait: float) -> bool:
    """Whether these transactions have all ended, waiting up to `wait` seconds for them."""
    deadline = time.monotonic() + wait
    while _still_running(engine, vxids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What a refresh did: rows added to the final layer and rows summed into the open one."""

    program: str
    final_rows: dict[str, int]
    open_rows: dict[str, int]
    seconds: float
    settled: bool  # PostgreSQL: every id up to the frontier read at the start is now final

    def as_json(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "final_rows": self.final_rows,
            "open_rows": self.open_rows,
            "seconds": round(self.seconds, 3),
            "settled": self.settled,
        }


def refresh(
    engine: Engine,
    loaded: LoadedProgram,
    *,
    now: datetime,
    progress: Progress | None = None,
    wait: float = WAIT_SECONDS,
) -> Refreshed:
    """Bring the program's rollups up to date (a job: it opens and commits its own transactions)."""
    started = time.perf_counter()
    pid, tz = loaded.program_id, loaded.program.timezone
    sqlite = engine.dialect.name == "sqlite"
    observed: dict[str, int] = {}
    running: list[str] = []
    settled = True
    if not sqlite:
        observed, running = _observe(engine)
        settled = _ended(engine, running, wait)
    final_rows: dict[str, int] = {}
    open_rows: dict[str, int] = {}
    for source in SOURCES:
        with engine.begin() as conn:
            st = _lock_state(conn, pid, source.name, now)
            if sqlite:
                target = _top(conn, source.table)
            elif settled:
                target = max(st.final_id, observed[source.name])
            elif st.frontier is not None and not _still_running(engine, st.waiting or []):
                target = max(st.final_id, int(st.frontier))  # an earlier observation has settled since
            else:
                target = st.final_id
            # Keep an unsettled observation until it settles; replacing it at every refresh
            # could postpone the final layer for ever under steady writes.
            if not sqlite and not settled and (st.frontier is None or target >= int(st.frontier)):
                _save_state(conn, pid, source.name, frontier=observed[source.name], waiting=running)
            start = st.final_id
        done = 0
        while True:
            with engine.begin() as conn:
                st = _lock_state(conn, pid, source.name, now)
                lo = st.final_id
                if lo >= target:
                    break
                hi = min(lo + STEP, target)
                cells = _aggregate(conn, source, pid, tz, lo, hi)
                upsert_rows(conn, dashboard_daily, _rows(pid, source.name, "final", cells), KEYS, add=("n", "amount"))
                _clear(conn, pid, source.name, "open")  # it counted some of these rows: never twice
                _save_state(conn, pid, source.name, final_id=hi)
                done += sum(n for n, _ in cells.values())
            if progress is not None:
                progress(source.name, hi - start, target - start)
        final_rows[source.name] = done
        with engine.begin() as conn:
            st = _lock_state(conn, pid, source.name, now)
            _clear(conn, pid, source.name, "open")
            cells = _aggregate(conn, source, pid, tz, st.final_id, None)
            insert_rows(conn, dashboard_daily, _rows(pid, source.name, "open", cells))
            seen = max(_top(conn, source.table), st.final_id)
            _save_state(conn, pid, source.name, seen_id=seen, refreshed_at=now)
            open_rows[source.name] = sum(n for n, _ in cells.values())
        if progress is not None:
            progress(source.name, max(target - start, 1), max(target - start, 1))
    with engine.begin() as conn:
        for name, sql in SNAPSHOTS.items():
            _lock_state(conn, pid, name, now)
            _clear(conn, pid, name, "open")
            snap: Cells = {}
            for day, k1, n in conn.execute(text(sql), {"pid": pid}):
                snap[(int(day), str(k1), "", "", "", "")] = [int(n), 0]
            insert_rows(conn, dashboard_daily, _rows(pid, name, "open", snap))
            _save_state(conn, pid, name, refreshed_at=now)
    return Refreshed(loaded.program.key, final_rows, open_rows, time.perf_counter() - started, settled)


@dataclass(frozen=True, slots=True)
class Freshness:
    """How current the rollups are: when last refreshed, and how many rows are not in them yet."""

    refreshed_at: datetime | None
    behind: int

    def stale(self, now: datetime) -> bool:
        if self.refreshed_at is None or self.behind > 0:
            return True
        return (now - self.refreshed_at).total_seconds() > STALE_SECONDS


def freshness(conn: Connection, program_id: int) -> Freshness:
    """Rows written since the last refresh (by id, over every source) and its time."""
    seen = {
        source: (int(seen_id), at)
        for source, seen_id, at in conn.execute(
            select(dashboard_sources.c.source, dashboard_sources.c.seen_id, dashboard_sources.c.refreshed_at).where(
                dashboard_sources.c.program_id == program_id
            )
        )
    }
    behind = 0
    for s in SOURCES:
        top = _top(conn, s.table)
        behind += max(0, top - seen.get(s.name, (0, None))[0])
    times = [at for name, (_, at) in seen.items() if name in SNAPSHOTS]
    return Freshness(min(times) if len(times) == len(SNAPSHOTS) else None, behind)


def refresh_all(
    engine: Engine, *, now: datetime, program: str | None = None, progress: Progress | None = None
) -> list[Refreshed]:
    """Refresh every program's rollups (or only `program`'s)."""
    from kinloop.services import programs as program_svc

    with engine.connect() as conn:
        keys = [program] if program else list(conn.execute(select(programs.c.key).order_by(programs.c.key)).scalars())
        loaded = [program_svc.active(conn, key) for key in keys]
    return [refresh(engine, lp, now=now, progress=progress) for lp in loaded]


# --- reading --------------------------------------------------------------------------------
@dataclass(slots=True)
class Board:
    """Everything the dashboard shows for one program and period (amounts in minor units)."""

    period: D.Period
    currencies: dict[str, D.CurrencyDays]
    owned_now: dict[str, tuple[int, int]]  # currency -> (what members own, reserved part)
    earned: dict[str, tuple[int, int]]  # award key -> (entries, amount) in the period
    tasks: dict[str, int]  # task key -> completions in the period
    tiers_now: dict[str, int]  # tier key ('' for none) -> members
    tier_moves: dict[int, tuple[int, int]]  # day -> (up, down)
    privilege_uses: dict[tuple[str, str], int]  # (privilege, tier) -> uses in the period
    events: dict[tuple[int, str], int]  # (day, type) -> events
    new_members: dict[int, int]
    active_since_start: int
    orders: dict[tuple[str, str, str], tuple[int, int]]  # (reward key, tier, currency) -> (quantity, points)
    reward_names: dict[str, str]
    draws: dict[str, tuple[int, int]]  # draw key -> (entries, points spent)
    prizes: dict[tuple[str, str], int]  # (draw key, prize) -> entries that won it
    draw_names: dict[str, tuple[str, str]]  # draw key -> (name, currency)
    freshness: Freshness
    members: int = field(default=0)


def _period_rows(conn: Connection, pid: int, sources: Iterable[str], first: int, last: int) -> list[Any]:
    d = dashboard_daily.c
    return list(
        conn.execute(
            select(d.source, d.day, d.k1, d.k2, d.k3, d.k4, d.k5, func.sum(d.n), func.sum(d.amount))
            .where(d.program_id == pid, d.source.in_(list(sources)), d.day >= first, d.day <= last)
            .group_by(d.source, d.day, d.k1, d.k2, d.k3, d.k4, d.k5)
        )
    )


def _flows(conn: Connection, pid: int, period: D.Period) -> list[D.Flow]:
    """Ledger flows: every day of the period, and the days before and after it each as one."""
    d = dashboard_daily.c
    first, last = period.first.toordinal(), period.last.toordinal()
    out = [
        D.Flow(day, k1, k2, k3, k4, k5, int(n), int(amount))
        for _, day, k1, k2, k3, k4, k5, n, amount in _period_rows(conn, pid, ["entries"], first, last)
    ]
    for day, cond in ((first - 1, d.day < first), (last + 1, d.day > last)):
        for k1, k2, k3, k4, n, amount in conn.execute(
            select(d.k1, d.k2, d.k3, d.k4, func.sum(d.n), func.sum(d.amount))
            .where(d.program_id == pid, d.source == "entries", cond)
            .group_by(d.k1, d.k2, d.k3, d.k4)
        ):
            out.append(D.Flow(day, k1, k2, k3, k4, "", int(n), int(amount)))
    return out


def read(conn: Connection, loaded: LoadedProgram, period: D.Period) -> Board:
    """The dashboard's figures for a period, from the rollups alone (and two small name lists)."""
    pid = loaded.program_id
    flows = _flows(conn, pid, period)
    first, last = period.first.toordinal(), period.last.toordinal()
    rows = _period_rows(
        conn, pid, ["events", "members", "tier_changes", "privilege_uses", "orders", "draw_entries"], first, last
    )
    d = dashboard_daily.c
    snapshots = conn.execute(
        select(d.source, d.day, d.k1, func.sum(d.n))
        .where(d.program_id == pid, d.source.in_(list(SNAPSHOTS)))
        .group_by(d.source, d.day, d.k1)
    ).all()
    tiers_now = {k1: int(n) for source, _, k1, n in snapshots if source == "tiers_now"}
    active = sum(int(n) for source, day, _, n in snapshots if source == "last_active" and day >= first)
    ladder = [t.key for t in loaded.program.ladder.tiers] if loaded.program.ladder else []
    moves: list[tuple[int, str, str, int]] = []
    uses: dict[tuple[str, str], int] = {}
    events: dict[tuple[int, str], int] = {}
    new_members: dict[int, int] = {}
    by_reward: dict[tuple[str, str, str], tuple[int, int]] = {}
    by_draw: dict[str, tuple[int, int]] = {}
    prizes: dict[tuple[str, str], int] = {}
    reward_keys = {
        str(i): (k, name)
        for i, k, name in conn.execute(
            select(rewards.c.id, rewards.c.key, rewards.c.name).where(rewards.c.program_id == pid)
        )
    }
    draw_keys = {
        str(i): (k, name, cur)
        for i, k, name, cur in conn.execute(
            select(draws.c.id, draws.c.key, draws.c.name, draws.c.currency).where(draws.c.program_id == pid)
        )
    }
    for source, day, k1, k2, k3, _k4, _k5, n, amount in rows:
        n, amount = int(n), int(amount)
        if source == "events":
            events[(day, k1)] = events.get((day, k1), 0) + n
        elif source == "members":
            new_members[day] = new_members.get(day, 0) + n
        elif source == "tier_changes":
            moves.append((day, k1, k2, n))
        elif source == "privilege_uses":
            uses[(k1, k2)] = uses.get((k1, k2), 0) + n
        elif source == "orders":
            key = reward_keys.get(k1, (f"#{k1}", f"#{k1}"))[0]
            q, p = by_reward.get((key, k2, k3), (0, 0))
            by_reward[(key, k2, k3)] = (q + n, p + amount)
        elif source == "draw_entries":
            key = draw_keys.get(k1, (f"#{k1}", f"#{k1}", ""))[0]
            e, p = by_draw.get(key, (0, 0))
            by_draw[key] = (e + n, p + amount)
            if k2:
                prizes[(key, k2)] = prizes.get((key, k2), 0) + n
    return Board(
        period=period,
        currencies=D.by_currency(flows, period),
        owned_now=D.owned(flows),
        earned=D.earned_by(flows, period),
        tasks={k: n for k, (n, _) in D.earned_by(flows, period, "task").items()},
        tiers_now=tiers_now,
        tier_moves=D.tier_moves(moves, ladder),
        privilege_uses=uses,
        events=events,
        new_members=new_members,
        active_since_start=active,
        orders=by_reward,
        reward_names=dict(reward_keys.values()),
        draws=by_draw,
        prizes=prizes,
        draw_names={k: (name, cur) for k, name, cur in draw_keys.values()},
        freshness=freshness(conn, pid),
        members=sum(tiers_now.values()),
    )


def checkin_type(loaded: LoadedProgram) -> str | None:
    """The event type that is a check-in: the program's `checkin` one, else one named so."""
    program = loaded.program
    if program.checkin is not None:
        return program.checkin.event_type
    return next((k for k in ("check_in", "checkin") if k in program.event_types), None)


def today(loaded: LoadedProgram, now: datetime) -> date:
    """Today where the program lives."""
    return now.astimezone(loaded.program.timezone).date()
