"""Concurrent writers on PostgreSQL: a badge level and a task reward are given once, however
many transactions race to earn them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from kinloop.services import ingest, verify
from kinloop.services.programs import LoadedProgram
from kinloop.store.db import connect
from kinloop.store.tables import entries, member_badges, metadata, task_progress
from tests.badges.programs import event, load
from tests.conftest import NOW

pytestmark = pytest.mark.postgres
WRITERS = 4


@pytest.fixture
def pg_engine(pg_database: str | None) -> Iterator[Engine]:
    if pg_database is None:
        pytest.skip("KINLOOP_TEST_POSTGRES_URL not set")
    engine = connect(pg_database)
    yield engine
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()


def race(engine: Engine, loaded: LoadedProgram, batches: list[list[dict[str, Any]]]) -> list[Any]:
    """Ingest each batch in its own transaction and thread, all released at once."""
    barrier = threading.Barrier(len(batches), timeout=60)
    results: list[Any] = [None] * len(batches)

    def run(i: int) -> None:
        try:
            barrier.wait()
            with engine.begin() as conn:
                results[i] = ingest.ingest(conn, loaded, batches[i], now=NOW)
        except BaseException as exc:  # reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(isinstance(r, BaseException) for r in results), results
    return results


def test_racing_writers_award_each_level_and_task_once(pg_engine: Engine) -> None:
    forum = load(pg_engine)
    # Each writer sends its own answers and comments for the same member on the same day,
    # plus copies of the other writers' events: enough for bronze and silver many times over.
    own = [
        [
            event(f"a{w}", "answer", f"2026-02-0{w + 1}T10:00:00+08:00"),
            event(f"c{w}", "comment", f"2026-02-10T1{w}:00:00+08:00"),
        ]
        for w in range(WRITERS)
    ]
    batches = [own[w] + [e for other in own if other is not own[w] for e in other] for w in range(WRITERS)]
    race(pg_engine, forum, batches)
    with pg_engine.connect() as conn:
        held = sorted(conn.execute(select(member_badges.c.badge, member_badges.c.level)).all())
        completed = conn.execute(
            select(task_progress.c.task, task_progress.c.count).where(task_progress.c.completed_at.is_not(None))
        ).all()
        rewards = dict(
            conn.execute(
                select(entries.c.rule, func.count())
                .where(entries.c.award_kind.in_(("badge", "task")))
                .group_by(entries.c.rule)
            ).all()
        )
        assert verify.verify(conn, forum).ok
    assert held == [("chatty", ""), ("helpful", "bronze"), ("helpful", "silver")]
    assert completed == [("daily_comments", 3)]
    assert rewards == {"chatty": 1, "daily_comments": 1, "helpful": 1}
