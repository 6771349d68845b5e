"""The audit log's service: what `record` writes and how `listing` pages and filters it, on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from kinloop.services import audit
from kinloop.services.programs import LoadedProgram
from tests.conftest import NOW, load_example


@pytest.fixture
def logged(engine: Engine, coffee: LoadedProgram) -> tuple[int, int]:
    """Seven entries of the coffee program, one of no program, one of another program."""
    other = load_example(engine, "content_community")
    with engine.begin() as conn:
        for i, (actor, action, target) in enumerate(
            [
                ("console:owner", "reward.update", "mug"),
                ("console:ann_b", "order.cancel", "12"),
                ("console:annxb", "order.cancel", "13"),
                ("cli", "adjust", "member-1"),
                ("console:owner", "key.create", "ab12cd34"),
                ("console:100%", "order.fulfil", "12"),
                ("api", "draw.close", "wheel"),
            ]
        ):
            audit.record(
                conn,
                coffee.program_id,
                actor=actor,
                action=action,
                target=target,
                reason=f"r{i}",
                now=NOW + timedelta(i),
            )
        audit.record(conn, None, actor="console:owner", action="operator.create", target="bob", now=NOW)
        audit.record(conn, other.program_id, actor="console:owner", action="reward.update", target="zine", now=NOW)
    return coffee.program_id, other.program_id


def test_a_program_sees_its_entries_and_those_of_no_program_newest_first(
    engine: Engine, logged: tuple[int, int]
) -> None:
    with engine.connect() as conn:
        page, cursor = audit.listing(conn, logged[0])
    assert cursor is None
    assert [e.target for e in page] == ["bob", "wheel", "12", "ab12cd34", "member-1", "13", "12", "mug"]
    assert "zine" not in [e.target for e in page]
    assert (page[-1].actor, page[-1].reason, page[-1].details) == ("console:owner", "r0", {})


def test_filters_match_text_anywhere_and_wildcards_literally(engine: Engine, logged: tuple[int, int]) -> None:
    with engine.connect() as conn:

        def targets(**given: str) -> list[str | None]:
            return [e.target for e in audit.listing(conn, logged[0], **given)[0]]

        assert targets(actor="ann_b") == ["12"]  # `_` is not "any character"
        assert targets(actor="100%") == ["12"]
        assert targets(action="order.cancel") == ["13", "12"]
        assert targets(action="order") == []  # actions match exactly
        assert targets(target="12") == ["12", "ab12cd34", "12"]
        assert targets(actor="owner", action="key.create") == ["ab12cd34"]
        assert audit.actions(conn, logged[0]) == [
            "adjust",
            "draw.close",
            "key.create",
            "operator.create",
            "order.cancel",
            "order.fulfil",
            "reward.update",
        ]


@pytest.mark.parametrize("limit", [1, 2, 3, 8])
def test_pages_cover_the_log_once_in_order(engine: Engine, logged: tuple[int, int], limit: int) -> None:
    with engine.connect() as conn:
        everything = [e.id for e in audit.listing(conn, logged[0], limit=100)[0]]
        seen: list[int] = []
        before: int | None = None
        while True:
            page, before = audit.listing(conn, logged[0], before=before, limit=limit)
            assert len(page) <= limit
            seen += [e.id for e in page]
            if before is None:
                break
    assert seen == everything
