"""Benchmarks, each beside a ceiling measured in the same run.

`kinloop bench ingest`: the engine's ingestion speed beside the store's raw ceiling. The
engine ingests N generated events for examples/bench.yaml. Then the same rows it wrote
(events, entries, lots) are inserted again, as plain batched inserts with no rule work, into
an empty copy of the schema on the same store. `ratio` = raw time / engine time: 1.0 would
mean the engine runs at the store's ceiling.

`kinloop bench api`: the HTTP API under `kinloop serve`, driven over loopback by another
process, beside the same load on /healthz (the HTTP stack's ceiling); see `run_api_bench`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Connection, Engine, select, text

from kinloop import bench_load
from kinloop.clock import utcnow
from kinloop.program.loader import parse_program
from kinloop.services import ingest, keys, programs
from kinloop.store import migrate
from kinloop.store.bulk import insert_rows
from kinloop.store.db import connect, database_url
from kinloop.store.tables import entries, lots, metadata
from kinloop.store.tables import events as events_table

EXAMPLES = Path(__file__).parent / "examples"
BENCH_SCHEMA = "kinloop_bench"
RAW_SCHEMA = "kinloop_bench_raw"
# The paced phases' rates: the issue's targets (SQLite: 1,000 events/s, 3,000 reads/s).
EVENT_RATE = 1_000.0
READ_RATE = 3_000.0
PACED_SECONDS = 5.0
PACED_CONNECTIONS = 64
GROWTH_SCHEMA = "kinloop_bench_growth"
START = datetime(2026, 1, 1, tzinfo=UTC)


def generate(n: int, *, seed: int = 1, members: int | None = None) -> Iterator[dict[str, Any]]:
    """N events of a retail program: purchases, check-ins, reviews, shares, referrals."""
    rng = random.Random(seed)
    m = members or max(10, n // 25)
    span = 60 * 86400
    kinds = (
        ["purchase"] * 40
        + ["check_in"] * 30
        + ["review"] * 12
        + ["share"] * 12
        + ["referral"] * 3
        + ["profile_completed"] * 3
    )
    for i in range(n):
        kind = rng.choice(kinds)
        at = START + timedelta(seconds=span * i // n + rng.randrange(600))
        attrs: dict[str, Any] = {}
        if kind == "purchase":
            attrs = {"amount": rng.choice([18, 35, 49.9, 88, 120, 199, 320, 560])}
            if rng.random() < 0.5:
                attrs["channel"] = rng.choice(["app", "store", "mini_program"])
        elif kind == "review":
            attrs = {"stars": rng.randint(1, 5), "words": rng.randint(0, 200)}
        elif kind == "referral":
            attrs = {"invitee": f"inv{i}"}
        yield {
            "event_id": f"b{i}",
            "member_id": f"m{rng.randrange(m)}",
            "type": kind,
            "occurred_at": at.isoformat(),
            "attributes": attrs,
        }


def _engine_in(url: str, schema: str) -> Engine:
    """An engine on an empty kinloop schema: a temporary SQLite file, or a PostgreSQL schema
    of the benchmark's own (it never touches the database's other schemas)."""
    if url.startswith("sqlite"):
        return connect(url)
    engine = connect(url, connect_args={"options": f"-csearch_path={schema}"})
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    return engine


def _targets(db: str | None, tmp: Path) -> tuple[str, str, str]:
    url = database_url(db) if db else f"sqlite:///{tmp / 'engine.db'}"
    if url.startswith("sqlite"):
        if db is not None and url not in ("sqlite://", "sqlite:///:memory:"):
            # Never overwrite a user's file: measure on fresh files beside it in a temp dir.
            pass
        return "sqlite", f"sqlite:///{tmp / 'engine.db'}", f"sqlite:///{tmp / 'raw.db'}"
    return "postgresql", url, url


def run_ingest_bench(
    db: str | None,
    *,
    events: int,
    single: bool = False,
    batch_size: int = 1000,
    growth: bool = False,
    progress_console: Console | None = None,
    clock: Callable[[], datetime] = lambda: START + timedelta(days=61),
) -> dict[str, Any]:
    """Run the benchmark and return its figures.

    With `growth`, the same events also go through examples/bench_growth.yaml (the same rules
    with every growth feature on) in a store of its own, and `growth_ratio` is its rate over
    the plain program's, measured in the same run."""
    size = 1 if single else batch_size
    with tempfile.TemporaryDirectory(prefix="kinloop-bench-") as tmpdir:
        backend, engine_url, raw_url = _targets(db, Path(tmpdir))
        raws = list(generate(events))
        batches = [raws[i : i + size] for i in range(0, len(raws), size)]
        engine = _engine_in(engine_url, BENCH_SCHEMA)
        engine_seconds = _engine_run(engine, "bench.yaml", batches, clock, progress_console, "engine")
        rows = _written_rows(engine, size)
        engine.dispose()
        raw_engine = _engine_in(raw_url, RAW_SCHEMA)
        metadata.create_all(raw_engine)
        with raw_engine.begin() as conn:
            _copy_fixed_rows(engine_url, conn)
        n_rows = sum(len(e) + len(en) + len(lo) for e, en, lo in rows)
        with _progress(progress_console, "raw inserts", len(rows)) as advance:
            started = time.perf_counter()
            for ev_rows, entry_rows, lot_rows in rows:
                with raw_engine.begin() as conn:
                    insert_rows(conn, events_table, ev_rows)
                    insert_rows(conn, entries, entry_rows)
                    insert_rows(conn, lots, lot_rows)
                advance(1)
            raw_seconds = time.perf_counter() - started
        raw_engine.dispose()
        growth_seconds = None
        if growth:
            growth_url = engine_url if backend == "postgresql" else f"sqlite:///{Path(tmpdir) / 'growth.db'}"
            growth_engine = _engine_in(growth_url, GROWTH_SCHEMA)
            growth_seconds = _engine_run(
                growth_engine, "bench_growth.yaml", batches, clock, progress_console, "engine, growth features on"
            )
            growth_engine.dispose()
        if backend == "postgresql":
            _drop_schemas(engine_url)
    result: dict[str, Any] = {
        "mode": "single" if single else "batched",
        "database": backend,
        "events": events,
        "batch_size": size,
        "events_per_s": round(events / engine_seconds, 1),
        "raw_rows_per_s": round(n_rows / raw_seconds, 1),
        "rows_per_event": round(n_rows / events, 3),
        "ratio": round(raw_seconds / engine_seconds, 3),
        "engine_seconds": round(engine_seconds, 3),
        "raw_seconds": round(raw_seconds, 3),
    }
    if growth_seconds is not None:
        result["growth_events_per_s"] = round(events / growth_seconds, 1)
        result["growth_ratio"] = round(engine_seconds / growth_seconds, 3)
    return result


def _engine_run(
    engine: Engine,
    program_file: str,
    batches: list[list[dict[str, Any]]],
    clock: Callable[[], datetime],
    progress_console: Console | None,
    label: str,
) -> float:
    """Seconds the engine takes to ingest `batches` under the example program `program_file`."""
    migrate.upgrade(engine)
    source = (EXAMPLES / program_file).read_text(encoding="utf-8")
    with engine.begin() as conn:
        loaded = programs.load(conn, parse_program(source), source, now=clock()).loaded
    now = clock()
    with _progress(progress_console, label, sum(len(b) for b in batches)) as advance:
        started = time.perf_counter()
        for batch in batches:
            with engine.begin() as conn:
                ingest.ingest(conn, loaded, batch, now=now)
            advance(len(batch))
        return time.perf_counter() - started


def _written_rows(engine: Engine, size: int) -> list[tuple[list[dict[str, Any]], ...]]:
    """The rows the engine wrote, grouped in the engine's batches."""
    with engine.connect() as conn:
        ev = [dict(r._mapping) for r in conn.execute(select(events_table).order_by(events_table.c.id))]
        en = [dict(r._mapping) for r in conn.execute(select(entries).order_by(entries.c.id))]
        lo = [dict(r._mapping) for r in conn.execute(select(lots).order_by(lots.c.id))]
    by_event_entries: dict[int, list[dict[str, Any]]] = {}
    for row in en:
        by_event_entries.setdefault(row["event_pk"], []).append(row)
    by_event_lots: dict[int, list[dict[str, Any]]] = {}
    for row in lo:
        by_event_lots.setdefault(row["event_pk"], []).append(row)
    # Events were written in batches of `size` submitted events; ids follow that order.
    groups: list[tuple[list[dict[str, Any]], ...]] = []
    for i in range(0, len(ev), size):
        part = ev[i : i + size]
        groups.append(
            (
                part,
                [e for p in part for e in by_event_entries.get(p["id"], [])],
                [lot for p in part for lot in by_event_lots.get(p["id"], [])],
            )
        )
    return groups


def _copy_fixed_rows(engine_url: str, conn: Connection) -> None:
    """The raw database needs the program, version and members rows the events refer to."""
    from kinloop.store.tables import members, program_versions
    from kinloop.store.tables import programs as programs_table

    src = _engine_in_existing(engine_url, BENCH_SCHEMA)
    with src.connect() as s:
        for table in (programs_table, program_versions, members):
            rows = [dict(r._mapping) for r in s.execute(select(table))]
            if rows:
                conn.execute(table.insert(), rows)
    src.dispose()


def _engine_in_existing(url: str, schema: str) -> Engine:
    if url.startswith("sqlite"):
        return connect(url)
    return connect(url, connect_args={"options": f"-csearch_path={schema}"})


def _drop_schemas(url: str) -> None:
    engine = connect(url)
    with engine.begin() as conn:
        for schema in (BENCH_SCHEMA, RAW_SCHEMA, GROWTH_SCHEMA):
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()


class _progress:
    def __init__(self, console: Console | None, label: str, total: int) -> None:
        self.bar = (
            Progress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            if console is not None and console.is_terminal
            else None
        )
        self.total = total

    def __enter__(self) -> Callable[[int], None]:
        if self.bar is None:
            return lambda n: None
        self.bar.start()
        task = self.bar.add_task("", total=self.total)
        bar = self.bar
        return lambda n: bar.advance(task, n)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- kinloop bench api ----------------------------------------------------------------------
API_SCHEMA = "kinloop_bench_api"
API_MEMBERS = 2000


def run_api_bench(
    db: str | None,
    *,
    events: int = 20_000,
    reads: int = 20_000,
    workers: int = 1,
    concurrency: int = 16,
    time_limit: float = 60.0,
    members: int = API_MEMBERS,
    event_rate: float = EVENT_RATE,
    read_rate: float = READ_RATE,
    paced_seconds: float = PACED_SECONDS,
    progress_console: Console | None = None,
) -> dict[str, Any]:
    """Serve a fresh database with `kinloop serve` and measure it over loopback HTTP.

    A separate (spawned) process keeps `concurrency` keep-alive connections busy, each with
    one request in flight: first GET /healthz (the HTTP stack's ceiling: uvicorn, FastAPI and
    the middleware with no database work), then `events` single-event POST /v1/events, then
    `reads` GET /v1/members/{id}. Each phase stops after its count or `time_limit` seconds.

    After each of the two saturating phases comes a paced one: for `paced_seconds`, requests
    at a fixed `event_rate` / `read_rate` a second whatever the replies do, each timed from
    when it was due (so a server that falls behind is charged for the wait: no coordinated
    omission). A saturating phase's latency is mostly its own queue (Little's law: in flight
    / throughput); the paced phase answers "at this rate, how long does a request take?".
    A paced phase with nothing to send (a rate of 0, or a rate times seconds under 1) is skipped.
    """

    def say(msg: str) -> None:
        if progress_console is not None:
            progress_console.print(msg)

    with tempfile.TemporaryDirectory(prefix="kinloop-bench-api-") as tmpdir:
        tmp = Path(tmpdir)
        url = database_url(db) if db else f"sqlite:///{tmp / 'api.db'}"
        backend = "sqlite" if url.startswith("sqlite") else "postgresql"
        if backend == "sqlite":
            # Never a user's file: the benchmark writes tens of thousands of events.
            url = f"sqlite:///{tmp / 'api.db'}"
            server_url = url
        else:
            # `kinloop serve` takes a URL: psycopg passes `options` on to the server.
            server_url = url + ("&" if "?" in url else "?") + f"options=-csearch_path%3D{API_SCHEMA}"
        engine = _engine_in(url, API_SCHEMA)
        proc: subprocess.Popen[bytes] | None = None
        phases: dict[str, dict[str, Any]] = {}
        try:
            migrate.upgrade(engine)
            ingest_key, read_key = _api_fixture(engine)
            engine.dispose()
            port = _free_port()
            # The per-key rate limit (2,000/s per worker by default) would measure itself.
            env = {**os.environ, "KINLOOP_RATE_LIMIT": str(10**9)}
            cmd = [sys.executable, "-m", "kinloop", "serve", "--db", server_url, "--port", str(port)]
            with (tmp / "serve.log").open("wb") as log:
                proc = subprocess.Popen(
                    [*cmd, "--workers", str(workers)], stdout=log, stderr=log, env=env, start_new_session=True
                )
            _wait_ready(proc, port, tmp / "serve.log")
            plan = _LoadPlan(
                port,
                ingest_key,
                read_key,
                events,
                reads,
                concurrency,
                time_limit,
                min(members, events),
                {"paced_events": event_rate, "paced_reads": read_rate},
                paced_seconds,
            )
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(1) as pool:
                pool.apply(_drive, (plan, "warmup", 0))
                for phase in ("ceiling", "events", "paced_events", "reads", "paced_reads"):
                    if phase in plan.rates and plan.paced(phase) == 0:
                        continue  # a paced phase with nothing to send (a rate of 0): skipped, not 0 ms
                    say(f"bench api: {phase.replace('_', ' ')}")
                    before = _tree_cpu(proc.pid)
                    posted = phases["events"]["requests"] if phase.endswith("reads") else 0
                    running = pool.apply_async(_drive, (plan, phase, posted))
                    # Which worker accepted which connection is up to the kernel: say so.
                    split = None
                    while workers > 1 and split is None and not running.ready():
                        running.wait(0.3)
                        split = _connections_by_worker(proc.pid, port)
                    phases[phase] = running.get()
                    after = _tree_cpu(proc.pid)
                    done = phases[phase]["requests"]
                    if before is not None and after is not None and done:
                        phases[phase]["server_cpu_ms"] = round((after - before) * 1000 / done, 3)
                    if split is not None:
                        phases[phase]["connections_by_worker"] = split
        finally:
            if proc is not None:
                _stop(proc)
            engine.dispose()
            if backend == "postgresql":
                _drop_schema(url, API_SCHEMA)
    ev, rd, top = phases["events"], phases["reads"], phases["ceiling"]
    return {
        "database": backend,
        "workers": workers,
        "concurrency": concurrency,
        "members": plan.members,
        "events": ev["requests"],
        "events_per_s": ev["per_s"],
        "event_p50_ms": ev["p50_ms"],
        "event_p99_ms": ev["p99_ms"],
        "reads": rd["requests"],
        "reads_per_s": rd["per_s"],
        "read_p50_ms": rd["p50_ms"],
        "read_p99_ms": rd["p99_ms"],
        "ceiling_per_s": top["per_s"],
        "ceiling_p50_ms": top["p50_ms"],
        "ceiling_p99_ms": top["p99_ms"],
        "events_ratio": round(ev["per_s"] / top["per_s"], 3) if top["per_s"] else None,
        "reads_ratio": round(rd["per_s"] / top["per_s"], 3) if top["per_s"] else None,
        **_paced_figures(phases, "paced_events", "event", event_rate),
        **_paced_figures(phases, "paced_reads", "read", read_rate),
        "errors": sum(p["errors"] for p in phases.values()),
        "phases": phases,
    }


def _paced_figures(phases: dict[str, dict[str, Any]], phase: str, noun: str, rate: float) -> dict[str, Any]:
    """The top-level figures of a paced phase (None where it was skipped)."""
    got = phases.get(phase)
    return {
        f"{noun}_rate": rate,
        f"paced_{noun}s_per_s": got["per_s"] if got else None,
        f"paced_{noun}_p50_ms": got["p50_ms"] if got else None,
        f"paced_{noun}_p99_ms": got["p99_ms"] if got else None,
    }


def _api_fixture(engine: Engine) -> tuple[str, str]:
    """The coffee program and two keys: one to post events, one to read."""
    source = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")
    with engine.begin() as conn:
        loaded = programs.load(conn, parse_program(source), source, now=utcnow()).loaded
        ingest_key, _ = keys.create(conn, loaded.program_id, "ingest", name="bench api ingest", now=utcnow())
        read_key, _ = keys.create(conn, loaded.program_id, "read", name="bench api read", now=utcnow())
    return ingest_key, read_key


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(proc: Any, port: int, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"kinloop serve exited with {proc.returncode}: {tail}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"kinloop serve was not ready within {timeout:.0f} s")


def _stop(proc: Any) -> None:
    """SIGTERM (uvicorn stops its workers), then SIGKILL to the whole group if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # any worker left behind (start_new_session=True)
    proc.wait()


def _drop_schema(url: str, schema: str) -> None:
    engine = connect(url)
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    engine.dispose()


def _tree_cpu(pid: int) -> float | None:
    """CPU seconds used so far by a process and its descendants (Linux /proc), else None."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        stats: dict[int, tuple[int, float]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                raw = (Path("/proc") / entry / "stat").read_text()
            except OSError:
                continue
            fields = raw.rsplit(")", 1)[1].split()
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    except (OSError, ValueError, AttributeError):
        return None
    if pid not in stats:
        return None
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _) in stats.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(stats[p][1] for p in tree)


def _connections_by_worker(pid: int, port: int) -> list[int] | None:
    """How many established connections to `port` each worker process of `pid` holds (Linux
    /proc), busiest first; None when unknown or none are open yet."""
    try:
        inodes: set[str] = set()
        listening: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError), open(table) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if fields[1].rsplit(":", 1)[1] == f"{port:04X}":
                        {"01": inodes, "0A": listening}.get(fields[3], set()).add(fields[9])  # ESTABLISHED, LISTEN
        counts = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((Path("/proc") / entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != pid:
                    continue
                fds = Path("/proc") / entry / "fd"
                held = {link[8:-1] for fd in os.listdir(fds) if (link := os.readlink(fds / fd)).startswith("socket:[")}
                if held & listening:  # a worker, not a helper process
                    counts.append(len(held & inodes))
    except OSError:
        return None
    return sorted(counts, reverse=True) if sum(counts) else None


@dataclass(frozen=True)
class _LoadPlan:
    port: int
    ingest_key: str
    read_key: str
    events: int
    reads: int
    concurrency: int
    time_limit: float
    members: int
    rates: dict[str, float]  # requests a second of each paced phase
    paced_seconds: float

    def paced(self, phase: str) -> int:
        """How many requests a paced phase sends (0 for the others)."""
        return int(self.rates.get(phase, 0) * self.paced_seconds)


def _event_bodies(plan: _LoadPlan, phase: str) -> list[dict[str, Any]]:
    """Single events for the coffee program: 70% purchases, 30% check-ins, distinct ids,
    spread over the last two hours; the warm-up uses members of its own."""
    rng = random.Random(13 if phase == "paced_events" else 7)
    n = {"events": plan.events, "paced_events": plan.paced(phase)}.get(phase, min(200, plan.events))
    base = utcnow() - timedelta(hours=2)
    out = []
    for i in range(n):
        purchase = rng.random() < 0.7
        out.append(
            {
                "event_id": f"{phase}-{i}",
                "member_id": f"m{rng.randrange(plan.members)}" if phase != "warmup" else f"warm{i % 20}",
                "type": "purchase" if purchase else "check_in",
                "occurred_at": (base + timedelta(seconds=3600 * i / n)).isoformat(),
                "attributes": {"amount": rng.choice([4.5, 12, 35, 60, 120])} if purchase else {},
            }
        )
    return out


def _requests(plan: _LoadPlan, phase: str, posted: int) -> list[bytes]:
    """The phase's requests, encoded once up front so that the load costs the client little."""
    host = f"127.0.0.1:{plan.port}"

    def get(path: str, key: str | None) -> bytes:
        auth = f"authorization: Bearer {key}\r\n" if key else ""
        return f"GET {path} HTTP/1.1\r\nhost: {host}\r\n{auth}\r\n".encode()

    def post(path: str, key: str, body: dict[str, Any]) -> bytes:
        data = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {key}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
        )
        return head.encode() + data

    if phase == "ceiling":
        return [get("/healthz", None)] * max(plan.events, plan.reads)
    if phase in ("events", "paced_events"):
        return [post("/v1/events", plan.ingest_key, b) for b in _event_bodies(plan, phase)]
    if phase in ("reads", "paced_reads"):
        # Members the events phase created (its first `posted` events, if time cut it short).
        rng = random.Random(11 if phase == "reads" else 17)
        known = sorted({b["member_id"] for b in _event_bodies(plan, "events")[:posted]}) or ["m0"]
        n = plan.reads if phase == "reads" else plan.paced(phase)
        return [get(f"/v1/members/{rng.choice(known)}", plan.read_key) for _ in range(n)]
    # warmup: every worker compiles the program, caches the keys and opens its connections.
    warm = _event_bodies(plan, "warmup")
    return (
        [post("/v1/events", plan.ingest_key, b) for b in warm]
        + [get(f"/v1/members/{b['member_id']}", plan.read_key) for b in warm]
        + [get("/healthz", None)] * len(warm)
    )


def _drive(plan: _LoadPlan, phase: str, posted: int) -> dict[str, Any]:
    """Run one phase (in the load process) and summarise its latencies."""
    requests = _requests(plan, phase, posted)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        runner = asyncio.run
    cpu = time.process_time()
    rate = plan.rates.get(phase)
    # Paced: enough connections that a slow reply does not hold up the schedule.
    connections = plan.concurrency if rate is None else PACED_CONNECTIONS
    load = bench_load.load(plan.port, requests, connections=connections, time_limit=plan.time_limit, rate=rate)
    # The load's own full collections (55 ms seen mid-phase) would be charged to the server.
    with ingest.gc_paused():
        latencies, errors, statuses, seconds = runner(load)
    cpu = time.process_time() - cpu
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float:
        return round(latencies[min(n - 1, max(0, int(q * n + 0.999999) - 1))] * 1000, 3) if n else 0.0

    return {
        "requests": n,
        "errors": errors,
        "statuses": statuses,
        "seconds": round(seconds, 3),
        "per_s": round(n / seconds, 1) if seconds else 0.0,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 3) if n else 0.0,
        "client_cpu_ms": round(cpu * 1000 / n, 3) if n else 0.0,
    }
