"""Group commit of posted events (kinloop/api/batching.py), on SQLite and PostgreSQL: posts that
arrive together share one transaction, and each still gets exactly its own results."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from kinloop.api import batching, deps
from kinloop.api.app import create_app
from kinloop.domain.errors import KinloopError
from kinloop.services.keys import Principal
from kinloop.store.db import connect
from kinloop.store.tables import entries, events
from tests.api.conftest import NOW, event
from tests.conftest import load_example


@pytest.fixture
def setup(db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> tuple[deps.ApiState, Principal, list[int]]:
    """The coffee program, an app's state on the database, and a count of commits."""
    coffee = load_example(engine, "coffee")
    monkeypatch.setattr(batching, "utcnow", lambda: NOW)
    commits: list[int] = []
    commit = deps._commit

    def counted(conn: Any) -> None:
        commits.append(1)
        commit(conn)

    monkeypatch.setattr(deps, "_commit", counted)
    st: deps.ApiState = create_app(db_url).state.kinloop
    return st, Principal(coffee.program_id, "ingest", "test"), commits


def post_together(st: deps.ApiState, posts: list[tuple[Principal, list[dict[str, Any]]]]) -> list[Any]:
    """Submit the posts in one tick of the event loop, as concurrent requests arrive."""
    batcher = batching.EventBatcher(st)

    async def main() -> list[Any]:
        return await asyncio.gather(*(batcher.ingest(who, raws) for who, raws in posts), return_exceptions=True)

    return asyncio.run(main())


def test_posts_that_arrive_together_are_committed_together(setup: Any, engine: Engine) -> None:
    st, who, commits = setup
    outcomes = post_together(st, [(who, [event(f"e{i}", f"m{i % 3}", 100)]) for i in range(8)])
    assert len(commits) == 1
    for i, (_, [result]) in enumerate(outcomes):
        assert (result.index, result.event_id, result.status) == (0, f"e{i}", "accepted")
        assert result.outcome["awards"] == [
            ["purchase_stars", "stars", 2, "rule", False],
            ["purchase_beans", "beans", 10, "rule", False],
        ]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 8


def test_each_post_gets_its_own_results_at_its_own_indexes(setup: Any) -> None:
    st, who, _ = setup
    first = [event("a1", "m1", 50), {**event("a2", "m1", 50), "type": "refund"}]
    second = [event("b1", "m2", 100), event("a1", "m9", 999), event("b3", "m2", 200)]
    [(_, mine), (_, theirs)] = post_together(st, [(who, first), (who, second)])
    assert [(r.index, r.event_id, r.status) for r in mine] == [(0, "a1", "accepted"), (1, "a2", "rejected")]
    assert mine[1].error is not None
    assert mine[1].error.code == "unknown_event_type"
    assert [(r.index, r.event_id, r.status) for r in theirs] == [
        (0, "b1", "accepted"),
        (1, "a1", "duplicate"),  # an event id posted in the same batch by another post
        (2, "b3", "accepted"),
    ]
    assert theirs[1].outcome == mine[0].outcome  # the first copy's result, nothing awarded again


def test_a_post_that_breaks_the_batch_fails_alone(setup: Any, engine: Engine) -> None:
    st, who, commits = setup
    stranger = Principal(10**9, "ingest", "a key whose program is gone")
    outcomes = post_together(st, [(who, [event("x1")]), (stranger, [event("x2")]), (who, [event("x3")])])
    assert isinstance(outcomes[1], KinloopError)
    assert [o[1][0].status for i, o in enumerate(outcomes) if i != 1] == ["accepted", "accepted"]
    assert len(commits) == 2  # the whole batch rolled back, then the two good posts one by one
    with engine.connect() as conn:
        ids = set(conn.execute(select(events.c.event_id)).scalars())
        assert ids == {"x1", "x3"}
        assert conn.execute(select(func.count()).select_from(entries)).scalar_one() == 4


def test_a_batch_holds_at_most_max_events(setup: Any) -> None:
    st, who, commits = setup
    batcher = batching.EventBatcher(st, max_events=5)

    async def main() -> list[Any]:
        posts = [[event(f"p{i}-{j}", "m1", 50) for j in range(3)] for i in range(4)]
        return await asyncio.gather(*(batcher.ingest(who, raws) for raws in posts))

    outcomes = asyncio.run(main())
    assert len(commits) == 4  # 3 + 3 would exceed 5: each post of 3 goes in a batch of its own
    assert all(r.status == "accepted" for _, results in outcomes for r in results)


def _where_written(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The threads the batches were ingested in, in order."""
    threads: list[str] = []
    ingest = batching.ingest.ingest

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append("loop" if threading.current_thread() is threading.main_thread() else "writer")
        return ingest(*args, **kwargs)

    monkeypatch.setattr(batching.ingest, "ingest", spy)
    return threads


def test_on_sqlite_a_lone_post_is_written_on_the_loop_when_the_lock_is_free(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hop to the writer thread and back was a tenth of a lone post's CPU; batches (and
    every post on PostgreSQL, which waits on the network) still go to the thread."""
    st, who, _ = setup
    threads = _where_written(monkeypatch)
    [(_, [alone])] = post_together(st, [(who, [event("alone", "m1", 100)])])
    post_together(st, [(who, [event(f"b{i}", "m1", 100)]) for i in range(3)])
    assert alone.status == "accepted"
    assert threads == (["loop", "writer"] if st.in_process else ["writer", "writer"])


def test_on_a_sqlite_file_a_lone_post_waits_in_the_thread_while_another_process_writes(
    setup: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were it written on the loop, the loop would wait for the other writer's lock."""
    st, who, _ = setup
    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL posts always go to the thread")
    threads = _where_written(monkeypatch)
    # As another process would: an engine of its own, its write committed a second later from
    # another thread (so that a loop stuck waiting for the lock fails the test, not hangs it).
    other = connect(db_url, connect_args={"check_same_thread": False})
    holder = other.connect()
    holder.exec_driver_sql("DELETE FROM events WHERE 0")  # begins: takes the writer lock
    release = threading.Timer(1.0, holder.commit)

    async def main() -> Any:
        release.start()
        posting = asyncio.ensure_future(batching.EventBatcher(st).ingest(who, [event("waits", "m1", 100)]))
        await asyncio.sleep(0.2)
        assert not posting.done()  # waiting for the lock, in the thread, while the loop runs on
        return await posting

    _, [result] = asyncio.run(main())
    release.join()
    holder.close()
    other.dispose()
    assert result.status == "accepted"
    assert threads == ["writer"]
