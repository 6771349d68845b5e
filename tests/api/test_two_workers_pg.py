"""Two `kinloop serve` workers on one PostgreSQL, posted to concurrently for the same members.

Several threads, each with its own keep-alive connection, post the same events (single and in
small batches, in different orders, each event several times). Afterwards: each event id was
accepted by exactly one reply and is in the ledger once, every repeat returned the first
result, `verify` is clean, and every member's balances and tier equal those of the distinct
events ingested one by one on a fresh SQLite database.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from kinloop.clock import utcnow
from kinloop.services import ingest, keys, programs
from kinloop.services import verify as verify_svc
from kinloop.store import migrate
from kinloop.store.db import connect
from kinloop.store.tables import balances, entries, events, members
from tests.api.conftest import free_port
from tests.conftest import load_coffee_with_capped_check_in

pytestmark = pytest.mark.postgres

MEMBERS = ["m0", "m1", "m2", "m3"]
THREADS = 6
COPIES = 3  # each event is posted this many times in all, by different threads
STARTUP_TIMEOUT = 60.0
RUN_TIMEOUT = 120.0


@pytest.fixture
def server(db_url: str, engine: Engine, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`kinloop serve --workers 2` on the test's PostgreSQL database: (base URL, ingest key)."""
    if db_url.startswith("sqlite"):
        pytest.skip("two workers on one database is a PostgreSQL deployment")
    # Check-ins arrive in any order across workers: a per-day capped rule is order-independent.
    coffee = load_coffee_with_capped_check_in(engine)
    with engine.begin() as conn:
        key, _ = keys.create(conn, coffee.program_id, "ingest", name="workers test", now=utcnow())
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kinloop", "serve", "--db", db_url, "--port", str(port), "--workers", "2"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the workers go down with it
        env={**os.environ, "KINLOOP_RATE_LIMIT": "100000"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield base, key
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        log.close()


def _events() -> list[dict[str, Any]]:
    """Purchases and check-ins (1 Bean a day at most) for a few members over a few days."""
    rng = random.Random(20260301)
    start = (utcnow() - timedelta(days=12)).replace(minute=0, second=0, microsecond=0)
    out: list[dict[str, Any]] = []
    for i in range(72):
        member = MEMBERS[i % len(MEMBERS)]
        at = (start + timedelta(hours=3 * i)).isoformat().replace("+00:00", "Z")
        if i % 3 == 0:
            out.append({"event_id": f"ci-{i}", "member_id": member, "type": "check_in", "occurred_at": at})
        else:
            amount = rng.choice([30, 50, 120, 275, 1000])
            out.append(
                {
                    "event_id": f"p-{i}",
                    "member_id": member,
                    "type": "purchase",
                    "occurred_at": at,
                    "attributes": {"amount": amount},
                }
            )
    # The same check-in day twice for a member: the daily limit must hold across workers.
    for member in MEMBERS:
        at = (start + timedelta(days=3, hours=1)).isoformat().replace("+00:00", "Z")
        for n in range(3):
            out.append({"event_id": f"ci-{member}-{n}", "member_id": member, "type": "check_in", "occurred_at": at})
    return out


def _post_all(base: str, key: str, plan: list[list[dict[str, Any]]], replies: list[Any], errors: list[str]) -> None:
    """One client: post each group of events (a group of one is posted as a single event)."""
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            for group in plan:
                body: Any = group[0] if len(group) == 1 else {"events": group}
                r = client.post("/v1/events", json=body)
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text}")
                    continue
                got = r.json()
                results = got.get("results", [got])
                replies.extend((group[x["index"]]["event_id"], x) for x in results)
    except Exception as exc:  # reported by the test, with the others
        errors.append(repr(exc))


def _balances(engine: Engine, program_key: str) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        loaded = programs.active(conn, program_key)
        rows = conn.execute(
            select(members.c.member_id, members.c.tier, balances.c.currency, balances.c.available)
            .join(balances, balances.c.member_pk == members.c.id)
            .where(members.c.program_id == loaded.program_id)
        ).all()
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for member_id, tier, currency, available in rows:
        out[member_id][currency] = available
        out[member_id]["tier"] = tier
    return dict(out)


def test_two_workers_under_concurrent_posts_for_the_same_members(
    server: tuple[str, str], engine: Engine, tmp_path: Path
) -> None:
    base, key = server
    distinct = _events()
    rng = random.Random(7)
    plans: list[list[list[dict[str, Any]]]] = [[] for _ in range(THREADS)]
    for copy in range(COPIES):
        for n, ev in enumerate(distinct):
            plans[(n + copy * 2) % THREADS].append([ev])
    for n, plan in enumerate(plans):
        rng.shuffle(plan)
        # Every third request is a small batch of three, with its first event repeated in it.
        grouped: list[list[dict[str, Any]]] = []
        for i in range(0, len(plan), 5):
            if i + 2 < len(plan):
                grouped.append(plan[i] + plan[i + 1] + plan[i + 2] + plan[i])
                grouped.extend(plan[i + 3 : i + 5])
            else:
                grouped.extend(plan[i:])
        plans[n] = grouped
    replies: list[Any] = []
    errors: list[str] = []
    threads = [threading.Thread(target=_post_all, args=(base, key, plan, replies, errors)) for plan in plans]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, RUN_TIMEOUT - (time.monotonic() - started)))
    assert not any(t.is_alive() for t in threads), "posting did not finish in time"
    assert errors == []

    # Every reply is an acknowledgement; each event accepted exactly once, repeats give its result.
    by_event: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event_id, result in replies:
        by_event[event_id].append(result)
    assert set(by_event) == {e["event_id"] for e in distinct}
    for event_id, results in by_event.items():
        assert sorted(r["status"] for r in results) == ["accepted"] + ["duplicate"] * (len(results) - 1), event_id
        assert len(results) >= COPIES, event_id
        first = next(r for r in results if r["status"] == "accepted")
        assert all(r["awards"] == first["awards"] for r in results), event_id

    with engine.connect() as conn:
        loaded = programs.active(conn, "coffee")
        stored = conn.execute(
            select(events.c.event_id, func.count())
            .where(events.c.program_id == loaded.program_id)
            .group_by(events.c.event_id)
        ).all()
        assert dict(stored) == {e["event_id"]: 1 for e in distinct}
        # And each event booked its awards once: one earning entry per award in its first reply.
        earned: dict[str, int] = dict(
            conn.execute(
                select(events.c.event_id, func.count(entries.c.id))
                .join(entries, entries.c.event_pk == events.c.id)
                .where(entries.c.kind == "earn", events.c.program_id == loaded.program_id)
                .group_by(events.c.event_id)
            ).all()
        )
        for event_id, results in by_event.items():
            assert earned.get(event_id, 0) == len(results[0]["awards"]), event_id
        report = verify_svc.verify(conn, loaded)
    assert report.ok, [m.as_json() for m in report.mismatches]

    # One by one on a fresh SQLite database: the same balances and tiers.
    alone = connect(f"sqlite:///{tmp_path / 'sequential.db'}")
    migrate.upgrade(alone)
    try:
        single = load_coffee_with_capped_check_in(alone)
        now = utcnow()
        for ev in distinct:
            with alone.begin() as conn:
                (result,) = ingest.ingest(conn, single, [ev], now=now)
            assert result.status == "accepted", result
        expected = _balances(alone, "coffee")
    finally:
        alone.dispose()
    assert _balances(engine, "coffee") == expected
