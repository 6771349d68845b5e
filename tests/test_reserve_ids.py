"""Primary keys reserved before a bulk insert: distinct, above what exists, usable, and on
PostgreSQL drawn from the very sequence the column's default uses (named, not looked up)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, Integer, func, select, text

from kinloop.store.bulk import Part, read_parts
from kinloop.store.db import reserve_ids, reserve_ids_sql, reserved_ids, serial_sequence
from kinloop.store.tables import audit_log, metadata

ROW = {"at": datetime(2026, 1, 1, tzinfo=UTC), "actor": "a", "action": "x", "details": {}}


def _serial_tables() -> list[str]:
    return [
        t.name
        for t in metadata.sorted_tables
        if "id" in t.c and t.c.id.primary_key and isinstance(t.c.id.type, Integer) and t.c.id.autoincrement
    ]


def test_every_serial_id_uses_the_sequence_named_for_it(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no sequences")
    with engine.connect() as conn:
        for name in _serial_tables():
            found = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": name}).scalar()
            assert found is not None, name
            assert found.rsplit(".", 1)[-1] == serial_sequence(metadata.tables[name]), name


def test_reserved_ids_are_distinct_and_take_the_place_of_the_default(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(audit_log.insert(), [ROW])
        before = conn.execute(select(func.max(audit_log.c.id))).scalar()
        first = reserve_ids(conn, audit_log, 50)
        column, rest, params = reserve_ids_sql(conn, audit_log, 30)
        [[row]] = read_parts(conn, [Part((column,), rest, params)])
        second = reserved_ids(conn, row[0], 30, above=max(first))
        ids = first + second
        assert len(set(ids)) == 80
        assert min(ids) > before
        conn.execute(audit_log.insert(), [{"id": i, **ROW} for i in ids])
        # The column's own default goes on past them.
        conn.execute(audit_log.insert(), [ROW])
        latest = conn.execute(select(func.max(audit_log.c.id))).scalar()
    assert latest > max(ids)
