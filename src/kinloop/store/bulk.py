"""Bulk writes straight to the driver: the hot path of ingestion.

SQLAlchemy's `executemany` processes every parameter of every row in Python; for the rows
ingestion writes (thousands per batch) that costs more than the database itself. Here the
values are converted once, per column type, into exactly what SQLAlchemy would have bound,
and handed to the driver's `executemany`. Reads elsewhere still go through SQLAlchemy, which
therefore sees identical data either way.

Statements here run on the driver's own cursor, inside the caller's transaction: for a single
event, SQLAlchemy's per-statement machinery (events, result set-up) cost several times the
statements themselves. Driver errors are re-raised as SQLAlchemy's, as if it had run them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from functools import cache
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Boolean, Connection, Date, Table

from kinloop.store.db import driver_cursor
from kinloop.store.tables import UTCDateTime

Convert = Callable[[Any], Any]


def _sqlite_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # The text form SQLAlchemy's SQLite DATETIME writes (no offset), so comparisons in SQL agree.
    return value.isoformat(" ", "microseconds")[:26]


def _sqlite_date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


def _sqlite_json(value: Any) -> str:
    return json.dumps(value)


def _sqlite_bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


@cache  # per table, column list and dialect: a single event's insert had spent most of its time here
def _converters(table: Table, columns: tuple[str, ...], dialect: str) -> tuple[Convert | None, ...]:
    out: list[Convert | None] = []
    for name in columns:
        t = table.c[name].type
        if dialect == "sqlite":
            if isinstance(t, UTCDateTime):
                out.append(_sqlite_datetime)
            elif isinstance(t, JSON):
                out.append(_sqlite_json)
            elif isinstance(t, Date):
                out.append(_sqlite_date)
            elif isinstance(t, Boolean):
                out.append(_sqlite_bool)
            else:
                out.append(None)
        elif isinstance(t, JSON):
            out.append(_sqlite_json)  # COPY takes JSON as its text
        else:
            out.append(None)
    return tuple(out)


def _memo(convert: Convert) -> Convert:
    # Consecutive rows often repeat a value (every entry of a batch has the same created_at).
    last: list[Any] = [object(), None]

    def convert_once(value: Any) -> Any:
        if value is not last[0]:
            last[0] = value
            last[1] = convert(value)
        return last[1]

    return convert_once


def _tuples(table: Table, columns: Sequence[str], rows: Iterable[dict[str, Any]], dialect: str) -> list[Sequence[Any]]:
    get = itemgetter(*columns)
    convs = [(i, _memo(f)) for i, f in enumerate(_converters(table, tuple(columns), dialect)) if f is not None]
    if len(columns) == 1:
        return [(get(row),) for row in rows]
    if not convs:
        return [get(row) for row in rows]
    out: list[Sequence[Any]] = []
    for row in rows:
        values = list(get(row))
        for i, f in convs:
            values[i] = f(values[i])
        out.append(tuple(values))
    return out


def _placeholders(n: int, dialect: str) -> str:
    mark = "?" if dialect == "sqlite" else "%s"
    return ", ".join([mark] * n)


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT many rows (dicts with the same keys) in one driver call."""
    if not rows:
        return
    dialect = conn.dialect.name
    columns = list(rows[0])
    if dialect == "postgresql":
        # COPY is PostgreSQL's bulk path: several times faster than multi-row INSERTs.
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        with driver_cursor(conn, sql) as cur, cur.copy(sql) as copy:
            for values in _tuples(table, columns, rows, dialect):
                copy.write_row(values)
        return
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({_placeholders(len(columns), dialect)})"
    with driver_cursor(conn, sql) as cur:
        cur.executemany(sql, _tuples(table, columns, rows, dialect))


def upsert_rows(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str], *, add: Sequence[str] = ()
) -> None:
    """INSERT many rows, overwriting the other columns of rows whose `keys` already exist (or,
    for the columns in `add`, adding the new value to the stored one)."""
    if not rows:
        return
    dialect = conn.dialect.name
    columns = list(rows[0])
    updates = ", ".join(
        f"{c} = {table.name}.{c} + excluded.{c}" if c in add else f"{c} = excluded.{c}"
        for c in columns
        if c not in keys
    )
    conflict = f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    if dialect == "postgresql":
        # The rows upserted here are narrow (numbers and keys): one statement over arrays
        # beats a round trip per row.
        arrays = ", ".join(f"%s::{table.c[c].type.compile(dialect=conn.dialect)}[]" for c in columns)
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
        with driver_cursor(conn, sql) as cur:
            cur.execute(sql + conflict, tuple([row[c] for row in rows] for c in columns))
        return
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({_placeholders(len(columns), dialect)})"
    with driver_cursor(conn, sql) as cur:
        cur.executemany(sql + conflict, _tuples(table, columns, rows, dialect))


def select_in(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    key: str,
    values: Sequence[Any],
    *,
    also: tuple[str, Sequence[Any]] | None = None,
) -> list[tuple[Any, ...]]:
    """Rows of plain (integer and text) columns whose `key` is one of `values`, as tuples.

    For the per-batch reads of member state, where SQLAlchemy's row processing would cost more
    than the query; callers must not ask for columns that need type conversion.
    """
    if not values:
        return []
    if also is not None and not also[1]:
        return []
    sql = f"SELECT {', '.join(columns)} FROM {table.name} WHERE "
    if conn.dialect.name == "postgresql":
        # One array parameter: PostgreSQL plans `= ANY($1)` once, a long IN list every time.
        params: list[Any] = [list(values)]
        sql += f"{key} = ANY(%s)"
        if also is not None:
            sql += f" AND {also[0]} = ANY(%s)"
            params.append(list(also[1]))
    else:
        params = list(values)
        sql += f"{key} IN ({_placeholders(len(values), 'sqlite')})"
        if also is not None:
            sql += f" AND {also[0]} IN ({_placeholders(len(also[1]), 'sqlite')})"
            params += list(also[1])
    with driver_cursor(conn, sql) as cur:
        cur.execute(sql, tuple(params))
        return list(cur.fetchall())


def add_rows(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    add: str,
    latest: str,
) -> None:
    """INSERT many rows; where `keys` exist, add to column `add`, keep the later of `latest`,
    and overwrite the other columns. Counters updated without reading them first."""
    if not rows:
        return
    dialect = conn.dialect.name
    columns = list(rows[0])
    name = table.name
    sets = [f"{add} = {name}.{add} + excluded.{add}"]
    sets.append(
        f"{latest} = CASE WHEN excluded.{latest} > {name}.{latest} THEN excluded.{latest} ELSE {name}.{latest} END"
    )
    sets += [f"{c} = excluded.{c}" for c in columns if c not in keys and c not in (add, latest)]
    conflict = f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {', '.join(sets)}"
    if dialect == "postgresql":
        # A collation is not part of an array cast's type name.
        types = [table.c[c].type.compile(dialect=conn.dialect).split(" COLLATE ")[0] for c in columns]
        arrays = ", ".join(f"%s::{t}[]" for t in types)
        sql = f"INSERT INTO {name} ({', '.join(columns)}) SELECT * FROM unnest({arrays})"
        with driver_cursor(conn, sql) as cur:
            cur.execute(sql + conflict, tuple([row[c] for row in rows] for c in columns))
        return
    sql = f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({_placeholders(len(columns), dialect)})"
    with driver_cursor(conn, sql) as cur:
        cur.executemany(sql + conflict, _tuples(table, columns, rows, dialect))
