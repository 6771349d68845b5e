"""`array_literal`: PostgreSQL reads back exactly the values it was given (texts of any
characters but NUL, integers, booleans, NULLs, timestamps)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, create_engine

from kinloop.store.bulk import array_literal
from kinloop.store.db import database_url
from tests.conftest import PG_URL

pytestmark = [pytest.mark.postgres, pytest.mark.skipif(not PG_URL, reason="KINLOOP_TEST_POSTGRES_URL not set")]

texts = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=30)


@pytest.fixture(scope="module")
def pg() -> Engine:
    return create_engine(database_url(PG_URL))


def read_back(pg: Engine, values: list[Any], sql_type: str) -> Any:
    with pg.connect() as conn:
        return conn.exec_driver_sql(f"SELECT %s::{sql_type}[]", (array_literal(values),)).scalar_one()


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.none() | texts, max_size=12))
def test_texts_and_nulls(pg: Engine, values: list[str | None]) -> None:
    assert read_back(pg, values, "text") == values


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), max_size=12))
def test_integers(pg: Engine, values: list[int | None]) -> None:
    assert read_back(pg, values, "bigint") == values


def test_booleans_timestamps_and_json(pg: Engine) -> None:
    assert read_back(pg, [True, False, None], "boolean") == [True, False, None]
    stamps = [datetime(2026, 3, 1, 12, 30, 0, 123456, tzinfo=UTC), None]
    assert read_back(pg, stamps, "timestamptz") == stamps
    doc = '{"a": "quote \\" and backslash \\\\", "b": [1, 2]}'
    assert read_back(pg, [doc, "null"], "json") == [{"a": 'quote " and backslash \\', "b": [1, 2]}, None]
