"""A served process keeps its lasting heap out of the cyclic garbage collector's sight
(`deps.keep_for_good`): full collections walked it all, 70-120 ms each, every few seconds."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from kinloop.api import deps
from kinloop.api.app import app_from_env, create_app
from kinloop.services import keys
from tests.api.conftest import TestClient, event
from tests.conftest import NOW, load_example


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch, db_url: str, fixed_clock: None) -> Iterator[None]:
    """As in a new worker: no program loaded yet, nothing frozen; unfrozen again afterwards."""
    monkeypatch.setenv("KINLOOP_DATABASE_URL", db_url)
    monkeypatch.setattr(deps, "_freezing", False)
    monkeypatch.setattr(deps, "_loaded", {})
    monkeypatch.setattr(deps, "_recent", {})
    try:
        yield
    finally:
        gc.unfreeze()


def _post_one(engine: Engine, app: object) -> None:
    coffee = load_example(engine, "coffee")
    with engine.begin() as conn:
        key, _ = keys.create(conn, coffee.program_id, "ingest", name="k", now=NOW)
    with TestClient(app) as client:  # type: ignore[arg-type]
        reply = client.post("/v1/events", json=event("e1"), headers={"authorization": f"Bearer {key}"})
        assert reply.status_code == 200, reply.text


def _collected(obj: object) -> bool:
    """Whether the collector's generations hold `obj` (frozen objects are in none of them)."""
    return any(o is obj for o in gc.get_objects())


def test_a_served_app_freezes_itself_and_each_program_it_loads(engine: Engine, fresh_process: None) -> None:
    app = app_from_env()
    assert gc.get_freeze_count() > 0
    assert not _collected(app)
    _post_one(engine, app)
    [loaded] = deps._loaded.values()
    assert not _collected(loaded)
    app.state.kinloop.engine.dispose()


def test_an_app_built_otherwise_leaves_the_collector_alone(engine: Engine, db_url: str, fresh_process: None) -> None:
    app = create_app(db_url)
    _post_one(engine, app)
    [loaded] = deps._loaded.values()
    assert gc.get_freeze_count() == 0
    assert _collected(loaded)
    app.state.kinloop.engine.dispose()
