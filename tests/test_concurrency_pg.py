"""Concurrency on PostgreSQL with real processes: several writers on the same members at once
must give exactly what one writer alone would have given.

Each test starts 2 to 4 processes (the 'spawn' context, so nothing is shared but the database),
releases them together through a barrier, and bounds every wait.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import random
import re
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from kinloop.clock import utcnow
from kinloop.domain.errors import InsufficientBalance
from kinloop.importer import ingest_file
from kinloop.program.loader import parse_program
from kinloop.services import ingest as ingest_svc
from kinloop.services import ledger, programs
from kinloop.services import verify as verify_svc
from kinloop.store import migrate
from kinloop.store.db import connect
from kinloop.store.tables import balances, entries, events, lot_movements, lots, members, metadata
from tests.conftest import EXAMPLES, load_example

pytestmark = pytest.mark.postgres

MEMBERS = [f"m{i:02d}" for i in range(20)]
PROCESSES = 4
TIMEOUT = 120  # seconds, for starting together and for each process to finish
EXPIRE_NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def pg_url(pg_database: str | None) -> Iterator[str]:
    """The session's PostgreSQL database, emptied after the test."""
    if pg_database is None:
        pytest.skip("KINLOOP_TEST_POSTGRES_URL not set")
    yield pg_database
    engine = connect(pg_database)
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


# --- running processes ---------------------------------------------------------------------


def _run(target: Callable[..., Any], barrier: Any, results: Any, name: str, *args: Any) -> None:
    """Process body: wait for the others, run, and report (name, result or traceback)."""
    try:
        barrier.wait(TIMEOUT)
        results.put((name, "ok", target(*args)))
    except BaseException:
        results.put((name, "error", traceback.format_exc()))


def run_together(jobs: list[tuple[str, Callable[..., Any], tuple[Any, ...]]]) -> dict[str, Any]:
    """Run each (name, function, args) in its own spawned process, all released at once."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(jobs))
    results = ctx.Queue()
    procs = [ctx.Process(target=_run, args=(fn, barrier, results, name, *args), name=name) for name, fn, args in jobs]
    for p in procs:
        p.start()
    out: dict[str, Any] = {}
    errors: list[str] = []
    deadline = time.monotonic() + 2 * TIMEOUT
    try:
        while len(out) + len(errors) < len(procs):
            try:
                name, status, value = results.get(timeout=0.5)
            except queue.Empty:
                # A process that died without reporting (it could not even start) fails fast.
                assert time.monotonic() < deadline, "processes did not finish in time"
                crashed = any(p.exitcode not in (None, 0) for p in procs)
                if (crashed or not any(p.is_alive() for p in procs)) and results.empty():
                    errors.append(f"exit codes {[p.exitcode for p in procs]}, results from {sorted(out)}")
                    break
                continue
            if status == "ok":
                out[name] = value
            else:
                errors.append(f"{name}:\n{value}")
        for p in procs:
            p.join(TIMEOUT)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    assert not errors, "\n".join(errors)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return out


# --- process bodies (module level, so that 'spawn' can import them) ------------------------


def ingest_worker(url: str, path: str, batch_size: int) -> dict[str, int]:
    engine = connect(url)
    try:
        summary = ingest_file(engine, Path(path), program_key="coffee", batch_size=batch_size)
        return {
            "lines": summary.lines,
            "accepted": summary.accepted,
            "duplicates": summary.duplicates,
            "rejected": len(summary.rejected),
        }
    finally:
        engine.dispose()


def spend_worker(url: str, worker: int, attempts: int, amount: int) -> dict[str, int]:
    engine = connect(url)
    spent = refused = 0
    try:
        for n in range(attempts):
            try:
                with engine.begin() as conn:
                    loaded = programs.active(conn, "coffee")
                    ledger.spend(
                        conn, loaded, "m00", "beans", amount, reason="race", key=f"w{worker}-{n}", now=utcnow()
                    )
                spent += 1
            except InsufficientBalance:
                refused += 1
        return {"spent": spent, "refused": refused}
    finally:
        engine.dispose()


def spend_once_worker(url: str, key: str) -> dict[str, Any]:
    engine = connect(url)
    try:
        with engine.begin() as conn:
            loaded = programs.active(conn, "coffee")
            moved = ledger.spend(conn, loaded, "m00", "beans", 5, reason="retry", key=key, now=utcnow())
        return {"entry_id": moved.entry_id, "balance": moved.balance, "replayed": moved.replayed}
    finally:
        engine.dispose()


def expire_worker(url: str, limit: int) -> dict[str, int]:
    """Expire in rounds of `limit` members until nothing is due; an empty round (the other
    process got there first) is not the end while due lots are left."""
    engine = connect(url)
    total: dict[str, int] = {"rounds": 0, "empty_rounds": 0}
    try:
        while True:
            with engine.begin() as conn:
                loaded = programs.active(conn, "coffee")
                done = ledger.expire(conn, loaded, now=EXPIRE_NOW, limit=limit)
            total["rounds"] += 1
            for k, v in done.items():
                total[k] = total.get(k, 0) + v
            if not done:
                total["empty_rounds"] += 1
                with engine.connect() as conn:
                    if not conn.execute(
                        select(func.count())
                        .select_from(lots)
                        .where(lots.c.expires_at <= EXPIRE_NOW, lots.c.remaining > 0)
                    ).scalar_one():
                        return total

    finally:
        engine.dispose()


# --- helpers -------------------------------------------------------------------------------


def make_events(seed: int = 7) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """200 events shared by every process plus 25 of each process's own, for the same 20 members:
    purchases (proportional Stars and Beans) and check-ins (at most one awarded per day)."""
    rng = random.Random(seed)

    def event(event_id: str) -> dict[str, Any]:
        member = rng.choice(MEMBERS)
        day = rng.randint(1, 6)
        at = f"2025-05-{day:02d}T{rng.randint(8, 20):02d}:{rng.randint(0, 59):02d}:00Z"
        if rng.random() < 0.35:
            return {"event_id": event_id, "member_id": member, "type": "check_in", "occurred_at": at}
        amount = rng.choice([7, 35, 49.9, 50, 99.5, 120, 260, 1000])
        return {
            "event_id": event_id,
            "member_id": member,
            "type": "purchase",
            "occurred_at": at,
            "attributes": {"amount": amount},
        }

    shared = [event(f"s{n:04d}") for n in range(200)]
    per_process = []
    for p in range(PROCESSES):
        own = [event(f"u{p}-{n:03d}") for n in range(25)]
        mine = shared + own
        random.Random(100 + p).shuffle(mine)
        per_process.append(mine)
    return shared, per_process


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ledger_picture(url: str) -> dict[str, Any]:
    """Per member: balances, tier, and entries summed by (currency, kind, rule)."""
    engine = connect(url)
    try:
        with engine.connect() as conn:
            bals = {
                (m, c): (a, p)
                for m, c, a, p in conn.execute(
                    select(members.c.member_id, balances.c.currency, balances.c.available, balances.c.pending).join(
                        members, members.c.id == balances.c.member_pk
                    )
                )
            }
            tiers = dict(conn.execute(select(members.c.member_id, members.c.tier)).all())
            moves = {
                (m, c, k, r): int(s)
                for m, c, k, r, s in conn.execute(
                    select(
                        members.c.member_id,
                        entries.c.currency,
                        entries.c.kind,
                        entries.c.rule,
                        func.sum(entries.c.amount),
                    )
                    .join(members, members.c.id == entries.c.member_pk)
                    .group_by(members.c.member_id, entries.c.currency, entries.c.kind, entries.c.rule)
                )
            }
        return {"balances": bals, "tiers": tiers, "entries": moves}
    finally:
        engine.dispose()


def verify_ok(url: str) -> verify_svc.Report:
    engine = connect(url)
    try:
        with engine.connect() as conn:
            report = verify_svc.verify(conn, programs.active(conn, "coffee"))
    finally:
        engine.dispose()
    assert report.mismatches == []
    return report


# Coffee with its check-in as a rule capped per day, as the file had it before the daily
# check-in feature. A rule's cap counts by the day an event happened in, whatever order events
# arrive in, so concurrent writers must end where one writer does; the check-in feature keeps
# a streak, and a check-in arriving after a later day's is late by design (order matters).
RULE_CHECKIN = """
  - key: daily_check_in
    name: Daily check-in
    event: check_in
    currency: beans
    amount: 1
    limit: {per_day: 1}
"""


def load_coffee_with_capped_check_in(engine: Engine) -> None:
    source = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")
    source = re.sub(r"\ncheckin:\n(  .*\n)+", "\n", source)
    source = source.replace("\nladder:", RULE_CHECKIN + "\nladder:", 1)
    with engine.begin() as conn:
        programs.load(conn, parse_program(source), source, now=utcnow())


def sequential_expectation(tmp_path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What one writer alone makes of these events, on a fresh SQLite database."""
    url = f"sqlite:///{tmp_path / 'expected.db'}"
    engine = connect(url)
    migrate.upgrade(engine)
    load_coffee_with_capped_check_in(engine)
    with engine.begin() as conn:
        results = ingest_svc.ingest(conn, programs.active(conn, "coffee"), rows, now=utcnow())
    engine.dispose()
    assert [r.status for r in results] == ["accepted"] * len(rows)
    return ledger_picture(url)


# --- tests ---------------------------------------------------------------------------------


def test_four_processes_ingesting_overlapping_files_count_each_event_once(pg_url: str, tmp_path: Path) -> None:
    engine = connect(pg_url)
    load_coffee_with_capped_check_in(engine)
    engine.dispose()
    shared, per_process = make_events()
    files = [write_jsonl(tmp_path / f"events-{p}.jsonl", rows) for p, rows in enumerate(per_process)]

    done = run_together([(f"ingest-{p}", ingest_worker, (pg_url, str(path), 10)) for p, path in enumerate(files)])

    distinct = {r["event_id"]: r for rows in per_process for r in rows}
    assert len(distinct) == len(shared) + PROCESSES * 25 == 300
    for p in range(PROCESSES):
        got = done[f"ingest-{p}"]
        assert (got["lines"], got["rejected"]) == (225, 0)
        assert got["accepted"] + got["duplicates"] == 225
    assert sum(d["accepted"] for d in done.values()) == len(distinct)
    assert sum(d["duplicates"] for d in done.values()) == PROCESSES * 225 - len(distinct)

    engine = connect(pg_url)
    with engine.connect() as conn:
        counted = dict(conn.execute(select(events.c.event_id, func.count()).group_by(events.c.event_id)).all())
        member_count = conn.execute(select(func.count()).select_from(members)).scalar_one()
    engine.dispose()
    assert counted == dict.fromkeys(distinct, 1)
    assert member_count == len({r["member_id"] for r in distinct.values()})

    expected = sequential_expectation(tmp_path, sorted(distinct.values(), key=lambda r: r["event_id"]))
    assert ledger_picture(pg_url) == expected
    assert verify_ok(pg_url).members == member_count


def test_four_processes_spending_from_one_member_never_overspend(pg_url: str) -> None:
    engine = connect(pg_url)
    loaded = load_example(engine, "coffee")
    # 100 Beans in five lots of 20.
    raws = [
        {
            "event_id": f"e{n}",
            "member_id": "m00",
            "type": "purchase",
            "occurred_at": f"2025-05-0{n}T10:00:00Z",
            "attributes": {"amount": 200},
        }
        for n in range(1, 6)
    ]
    with engine.begin() as conn:
        ingest_svc.ingest(conn, loaded, raws, now=utcnow())
    engine.dispose()

    done = run_together([(f"spend-{w}", spend_worker, (pg_url, w, 10, 7)) for w in range(PROCESSES)])

    spent = sum(d["spent"] for d in done.values())
    assert spent + sum(d["refused"] for d in done.values()) == PROCESSES * 10
    # Spending 7 at a time from 100 succeeds exactly 14 times, whoever wins each race.
    assert spent == 14
    engine = connect(pg_url)
    with engine.connect() as conn:
        available = conn.execute(select(balances.c.available).where(balances.c.currency == "beans")).scalar_one()
        spends = conn.execute(select(func.count(), func.sum(entries.c.amount)).where(entries.c.kind == "spend")).one()
        lowest_lot = conn.execute(select(func.min(lots.c.remaining))).scalar_one()
        taken = conn.execute(select(func.sum(lot_movements.c.amount))).scalar_one()
    engine.dispose()
    assert available == 100 - 7 * 14 == 2
    assert tuple(spends) == (14, 98)
    assert lowest_lot >= 0
    assert taken == -98
    verify_ok(pg_url)


def test_four_processes_retrying_one_spend_key_spend_once(pg_url: str) -> None:
    engine = connect(pg_url)
    loaded = load_example(engine, "coffee")
    raw = {
        "event_id": "e1",
        "member_id": "m00",
        "type": "purchase",
        "occurred_at": "2025-05-01T10:00:00Z",
        "attributes": {"amount": 200},
    }
    with engine.begin() as conn:
        ingest_svc.ingest(conn, loaded, [raw], now=utcnow())  # 20 Beans
    engine.dispose()

    done = run_together([(f"retry-{w}", spend_once_worker, (pg_url, "order-1")) for w in range(PROCESSES)])

    assert len({d["entry_id"] for d in done.values()}) == 1
    assert sorted(d["replayed"] for d in done.values()) == [False, True, True, True]
    assert {d["balance"] for d in done.values()} == {15}
    engine = connect(pg_url)
    with engine.connect() as conn:
        spends = conn.execute(select(func.count()).select_from(entries).where(entries.c.kind == "spend")).scalar_one()
    engine.dispose()
    assert spends == 1
    verify_ok(pg_url)


def test_two_processes_expiring_the_same_lots_expire_each_once(pg_url: str) -> None:
    engine = connect(pg_url)
    loaded = load_example(engine, "coffee")
    # Every member: one lot due on 2026-03-01 (earned in January 2025) and one that is not.
    raws = []
    for i, member in enumerate(MEMBERS):
        raws.append(
            {
                "event_id": f"old-{member}",
                "member_id": member,
                "type": "purchase",
                "occurred_at": "2025-01-10T10:00:00Z",
                "attributes": {"amount": 10 * (i + 1)},
            }
        )
        raws.append(
            {
                "event_id": f"new-{member}",
                "member_id": member,
                "type": "purchase",
                "occurred_at": "2025-06-10T10:00:00Z",
                "attributes": {"amount": 30},
            }
        )
    with engine.begin() as conn:
        ingest_svc.ingest(conn, loaded, raws, now=utcnow())
    engine.dispose()
    due = sum(range(1, 21))  # member i earned i + 1 Beans in January 2025

    done = run_together([(f"expire-{w}", expire_worker, (pg_url, 3)) for w in range(2)])

    assert sum(d.get("beans", 0) for d in done.values()) == due
    assert expire_worker(pg_url, 3) == {"rounds": 1, "empty_rounds": 1}
    engine = connect(pg_url)
    with engine.connect() as conn:
        expired = conn.execute(
            select(entries.c.idempotency_key, entries.c.amount).where(entries.c.kind == "expire")
        ).all()
        still_due = conn.execute(
            select(func.count()).select_from(lots).where(lots.c.expires_at <= EXPIRE_NOW, lots.c.remaining > 0)
        ).scalar_one()
        remaining = dict(
            conn.execute(
                select(members.c.member_id, balances.c.available)
                .join(members, members.c.id == balances.c.member_pk)
                .where(balances.c.currency == "beans")
            ).all()
        )
    engine.dispose()
    assert len(expired) == 20
    assert len({key for key, _ in expired}) == 20
    assert sorted(amount for _, amount in expired) == list(range(1, 21))
    assert still_due == 0
    assert remaining == dict.fromkeys(MEMBERS, 3)
    verify_ok(pg_url)
