"""`kinloop bench outlets`: several processes redeem and hold points at once, against limited
stock and limited balances, then the database is audited.

Setup: the coffee program on an empty store (a temporary SQLite file, or a PostgreSQL schema of
the benchmark's own), `members` members with `balance` Beans each (one in ten with only 100
Beans, so balances run short) and as many for the holds; five rewards, two of them with only
`scarce` units (sold out within seconds) and three with `stock` units; and one with a daily
limit. Then `processes` processes (spawn: nothing shared but the database), released together
through a barrier:
- redemptions: each places orders for random members and rewards until the time is up or it
  has made `attempts` attempts; one order in ten is cancelled at once (points and stock return);
- holds: each holds points for random members, captures every other hold twice (the second
  must change nothing) and releases the rest.
- draws and transfers (`bench_draws.py`): entries to a wheel whose two prizes have little stock;
  group envelopes sent and claimed, one claimer claiming twice.

Afterwards, from the database: `oversold` counts units in live orders beyond each reward's
stock (plus rewards whose `sold` counter disagrees with their orders); `double_spent` counts
members with a negative balance, `kinloop verify` mismatches (balances against entries, lots
against movements, held amounts against holds) and captures beyond one per hold; prizes given
beyond their stock count as oversold, envelope claims beyond their shares as double spent. Both
must be 0.
"""

from __future__ import annotations

import multiprocessing
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import Engine, case, func, select, text

from kinloop import bench_draws
from kinloop.clock import utcnow
from kinloop.domain.errors import InsufficientBalance, LimitReached, SoldOut
from kinloop.program.loader import parse_program
from kinloop.services import holds, ingest, mall, orders, programs
from kinloop.services import verify as verify_svc
from kinloop.store import migrate
from kinloop.store.db import connect, database_url
from kinloop.store.tables import balances, entries, rewards
from kinloop.store.tables import holds as holds_table
from kinloop.store.tables import orders as orders_table

SCHEMA = "kinloop_bench_outlets"
EXAMPLES = Path(__file__).parent / "examples"
START_TIMEOUT = 300.0  # seconds for the spawned processes to import kinloop and meet
PRICES = (50, 80, 120, 200, 300)


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        return connect(url)
    return connect(url, connect_args={"options": f"-csearch_path={SCHEMA}"})


def _fresh(url: str) -> Engine:
    """An engine on an empty, migrated kinloop store."""
    if not url.startswith("sqlite"):
        admin = connect(url)
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        admin.dispose()
    engine = _engine(url)
    migrate.upgrade(engine)
    return engine


def _seed(engine: Engine, *, members: int, balance: int, stock: int, scarce: int) -> list[str]:
    """The coffee program, members with `balance` Beans each, and the rewards; returns reward keys."""
    source = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")
    now = utcnow()
    with engine.begin() as conn:
        loaded = programs.load(conn, parse_program(source), source, now=now).loaded
        events = [
            {
                "event_id": f"seed-{group}{i}",
                # b…: members who redeem; h…: members who hold (so the first phase cannot
                # leave the second without points).
                "member_id": f"{group}{i:05d}",
                "type": "purchase",
                "occurred_at": now.isoformat(),
                "attributes": {"amount": (100 if i % 10 == 0 else balance) * 10},
            }
            for group in ("b", "h")
            for i in range(members)
        ]
        ingest.ingest(conn, loaded, events, now=now)
        keys = []
        for i, price in enumerate(PRICES):
            key = f"item{i}"
            mall.put(
                conn,
                loaded,
                key,
                {"name": f"Item {i}", "currency": "beans", "price": price, "stock": scarce if i < 2 else stock},
                now=now,
            )
            keys.append(key)
        limit = {"count": 1, "period": "day"}
        mall.put(conn, loaded, "daily", {"name": "Daily", "currency": "beans", "price": 10, "limit": limit}, now=now)
        keys.append("daily")
    return keys


# --- process bodies (module level, so that 'spawn' can import them) ----------------------------
def redeem_worker(
    start: Any, url: str, seed: int, seconds: float, attempts: int, members: int, keys: list[str]
) -> dict[str, int]:
    """Place orders for random members until the time or the attempts run out."""
    rng = random.Random(seed)
    engine = _engine(url)
    counts = {"placed": 0, "sold_out": 0, "short": 0, "limited": 0, "cancelled": 0}
    try:
        with engine.connect() as conn:
            loaded = programs.active(conn, "coffee")
        start.wait(START_TIMEOUT)  # every process ready: they start together
        start_at = time.time()
        end = start_at + seconds
        for _ in range(attempts):
            if time.time() >= end:
                break
            member_id = f"b{rng.randrange(members):05d}"
            try:
                with engine.begin() as conn:
                    order = orders.place(
                        conn, loaded, member_id, rng.choice(keys), key=None, now=utcnow(), actor="bench"
                    )
                counts["placed"] += 1
                counts["elapsed_ms"] = int((time.time() - start_at) * 1000)
            except SoldOut:
                counts["sold_out"] += 1
                continue
            except InsufficientBalance:
                counts["short"] += 1
                continue
            except LimitReached:
                counts["limited"] += 1
                continue
            if rng.random() < 0.1:
                with engine.begin() as conn:
                    orders.transition(conn, loaded, order.id, "cancel", actor="bench", now=utcnow())
                counts["cancelled"] += 1
        counts["attempts"] = sum(counts[k] for k in ("placed", "sold_out", "short", "limited"))
        counts["all_ms"] = int((time.time() - start_at) * 1000)
        return counts
    finally:
        engine.dispose()


def hold_worker(start: Any, url: str, seed: int, seconds: float, attempts: int, members: int) -> dict[str, int]:
    """Hold points, capture every other hold twice, release the rest."""
    rng = random.Random(seed)
    engine = _engine(url)
    counts = {"held": 0, "captured": 0, "repeats": 0, "released": 0, "short": 0}
    try:
        with engine.connect() as conn:
            loaded = programs.active(conn, "coffee")
        start.wait(START_TIMEOUT)  # every process ready: they start together
        start_at = time.time()
        end = start_at + seconds
        for n in range(attempts):
            if time.time() >= end:
                break
            member_id = f"h{rng.randrange(members):05d}"
            try:
                with engine.begin() as conn:
                    hold = holds.create(
                        conn, loaded, member_id, "beans", rng.choice(PRICES), now=utcnow(), actor="bench"
                    )
            except InsufficientBalance:
                counts["short"] += 1
                continue
            counts["held"] += 1
            if n % 2:
                with engine.begin() as conn:
                    holds.release(conn, loaded, hold.row.id, now=utcnow(), actor="bench")
                counts["released"] += 1
                continue
            for _ in range(2):
                with engine.begin() as conn:
                    done = holds.capture(conn, loaded, hold.row.id, now=utcnow(), actor="bench")
                counts["captured" if done.outcome == "done" else "repeats"] += 1
        counts["elapsed_ms"] = int((time.time() - start_at) * 1000)
        return counts
    finally:
        engine.dispose()


def _run(target: Callable[..., dict[str, int]], results: Any, start: Any, args: tuple[Any, ...]) -> None:
    try:
        results.put(("ok", target(start, *args)))
    except BaseException as exc:  # reported to the parent, which fails the run with it
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _together(target: Callable[..., dict[str, int]], jobs: list[tuple[Any, ...]]) -> list[dict[str, int]]:
    """Run `target(barrier, *args)` for each job in its own spawned process, released together."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(len(jobs))
    results = ctx.Queue()
    procs = [ctx.Process(target=_run, args=(target, results, start, job)) for job in jobs]
    for p in procs:
        p.start()
    try:
        found = [results.get(timeout=START_TIMEOUT + 3600) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    errors = [value for status, value in found if status == "error"]
    if errors:
        raise RuntimeError("a benchmark process failed: " + "; ".join(errors))
    return [value for _, value in found]


def _sum(results: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for r in results:
        for k, v in r.items():
            # Processes run side by side: the phase lasts as long as the slowest one.
            total[k] = max(total.get(k, 0), v) if k.endswith("_ms") else total.get(k, 0) + v
    return total


# --- the audit ---------------------------------------------------------------------------------
def audit(engine: Engine) -> dict[str, int]:
    """Count from the database what must never happen: oversold units and double spends."""
    with engine.connect() as conn:
        loaded = programs.active(conn, "coffee")
        live_units = func.coalesce(
            func.sum(case((orders_table.c.status.not_in(("cancelled", "refunded")), orders_table.c.quantity), else_=0)),
            0,
        )
        sold_units = func.coalesce(
            func.sum(case((orders_table.c.status != "cancelled", orders_table.c.quantity), else_=0)), 0
        )
        oversold = 0
        for stock, sold, live, counted in conn.execute(
            select(rewards.c.stock, rewards.c.sold, live_units, sold_units)
            .select_from(rewards.outerjoin(orders_table, orders_table.c.reward_id == rewards.c.id))
            .group_by(rewards.c.id, rewards.c.stock, rewards.c.sold)
        ):
            if stock is not None:
                oversold += max(0, int(live) - stock)
            oversold += int(sold != counted)
        negative = conn.execute(select(func.count()).select_from(balances).where(balances.c.available < 0)).scalar()
        report = verify_svc.verify(conn, loaded)
        captures = conn.execute(
            select(func.count()).select_from(entries).where(entries.c.kind == "capture")
        ).scalar_one()
        captured = conn.execute(
            select(func.count()).select_from(holds_table).where(holds_table.c.status == "captured")
        ).scalar_one()
    return {
        "oversold": oversold,
        "double_spent": int(negative or 0) + len(report.mismatches) + max(0, int(captures) - int(captured)),
        "verify_mismatches": len(report.mismatches),
    }


def run_outlets_bench(
    db: str | None,
    *,
    processes: int = 4,
    members: int = 200,
    balance: int = 3000,
    stock: int = 2000,
    scarce: int = 20,
    seconds: float = 10.0,
    attempts: int = 100_000,
    progress_console: Console | None = None,
) -> dict[str, Any]:
    """Set up, run the redemption, hold, draw and transfer phases concurrently, audit; returns the figures."""

    def say(message: str) -> None:
        if progress_console is not None:
            progress_console.print(message)

    with tempfile.TemporaryDirectory(prefix="kinloop-bench-outlets-") as tmp:
        url = (
            database_url(db)
            if db and not database_url(db).startswith("sqlite")
            else f"sqlite:///{Path(tmp) / 'outlets.db'}"
        )
        engine = _fresh(url)
        try:
            say(f"setting up {members} members with up to {balance} Beans and 6 rewards ({scarce} or {stock} of each)")
            keys = _seed(engine, members=members, balance=balance, stock=stock, scarce=scarce)
            bench_draws.seed(engine, members=members, balance=balance, scarce=scarce)
            say(f"redemptions: {processes} processes for up to {seconds:g} s")
            redeemed = _sum(
                _together(redeem_worker, [(url, i, seconds, attempts, members, keys) for i in range(processes)])
            )
            say(f"holds: {processes} processes for up to {seconds:g} s")
            held = _sum(_together(hold_worker, [(url, 100 + i, seconds, attempts, members) for i in range(processes)]))
            say(f"draws: {processes} processes for up to {seconds:g} s")
            drawn = _sum(
                _together(
                    bench_draws.draw_worker, [(url, 200 + i, seconds, attempts, members) for i in range(processes)]
                )
            )
            say(f"transfers: {processes} processes for up to {seconds:g} s")
            moved = _sum(
                _together(
                    bench_draws.transfer_worker, [(url, 300 + i, seconds, attempts, members) for i in range(processes)]
                )
            )
            found = audit(engine)
            outlets = bench_draws.audit(engine)
        finally:
            engine.dispose()
            if not url.startswith("sqlite"):
                admin = connect(url)
                with admin.begin() as conn:
                    conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
                admin.dispose()
    return {
        "database": "sqlite" if url.startswith("sqlite") else "postgresql",
        "processes": processes,
        "seconds": seconds,
        # While stock and balances last: the placed orders over the time to the last of them.
        "redemptions_per_s": _rate(redeemed, "placed"),
        # Every attempt, refused ones included, over the whole phase.
        "order_attempts_per_s": round(redeemed.get("attempts", 0) / max(redeemed.get("all_ms", 0) / 1000, 1e-3), 1),
        "holds_per_s": _rate(held, "held"),
        "orders_placed": redeemed.get("placed", 0),
        "orders_cancelled": redeemed.get("cancelled", 0),
        "refused_sold_out": redeemed.get("sold_out", 0),
        "refused_short": redeemed.get("short", 0) + held.get("short", 0),
        "refused_limit": redeemed.get("limited", 0),
        "holds_captured": held.get("captured", 0),
        "capture_repeats": held.get("repeats", 0),
        "holds_released": held.get("released", 0),
        "draw_entries_per_s": _rate(drawn, "entries"),
        "draw_entries": drawn.get("entries", 0),
        "scarce_prizes_given": outlets["scarce_prizes_given"],
        "transfers_per_s": _rate(moved, "sent"),
        "envelopes_sent": moved.get("sent", 0),
        "envelope_claims": moved.get("claimed", 0),
        "claim_repeats": moved.get("claim_repeats", 0),
        # Prizes beyond stock count as oversold; claims beyond an envelope's shares or total
        # and gaps in draw entry numbers as double spends.
        "oversold": found["oversold"] + outlets["oversold"],
        "double_spent": found["double_spent"] + outlets["double_spent"],
    }


def _rate(counts: dict[str, int], key: str) -> float:
    return round(counts.get(key, 0) / max(counts.get("elapsed_ms", 0) / 1000, 1e-3), 1)
