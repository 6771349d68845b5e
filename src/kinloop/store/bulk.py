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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from operator import itemgetter
from typing import Any

from sqlalchemy import JSON, Boolean, Connection, Date, Table

from kinloop.store.db import driver_cursor
from kinloop.store.tables import UTCDateTime

Convert = Callable[[Any], Any]


def sqlite_datetime(value: datetime | None) -> str | None:
    """A datetime as SQLAlchemy binds it for SQLite (naive UTC text), to compare in raw SQL."""
    return _sqlite_datetime(value)


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
    """INSERT many rows (dicts with the same keys) in one driver call (or, inside `deferred`,
    with the other writes of the block)."""
    if not rows:
        return
    dialect = conn.dialect.name
    columns = list(rows[0])
    if dialect == "postgresql":
        queue = _queue(conn)
        if queue is not None and len(rows) <= COPY_FROM:
            sql = (
                f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({_arrays(conn, table, columns)})"
            )
            queue.add(conn, table.name, sql, _columns(table, columns, rows))
            return
        if queue is not None:
            queue.flush(conn)  # in order: the rows may refer to rows written before them
        # COPY is PostgreSQL's bulk path: several times faster than multi-row INSERTs.
        sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
        with driver_cursor(conn, sql) as cur, cur.copy(sql) as copy:
            for values in _tuples(table, columns, rows, dialect):
                copy.write_row(values)
        return
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({_placeholders(len(columns), dialect)})"
    with driver_cursor(conn, sql) as cur:
        cur.executemany(sql, _tuples(table, columns, rows, dialect))


def update_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], key: str) -> None:
    """UPDATE the rows whose `key` column is each row's `key` value, setting its other columns."""
    if not rows:
        return
    columns = list(rows[0])
    sets = [c for c in columns if c != key]
    if conn.dialect.name == "postgresql":
        sql = (
            f"UPDATE {table.name} SET {', '.join(f'{c} = v.{c}' for c in sets)} "
            f"FROM unnest({_arrays(conn, table, columns)}) AS v({', '.join(columns)}) "
            f"WHERE {table.name}.{key} = v.{key}"
        )
        _run(conn, table.name, sql, _columns(table, columns, rows))
        return
    ordered = [*sets, key]
    sql = f"UPDATE {table.name} SET {', '.join(f'{c} = ?' for c in sets)} WHERE {key} = ?"
    with driver_cursor(conn, sql) as cur:
        cur.executemany(sql, _tuples(table, ordered, rows, "sqlite"))


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
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM unnest({_arrays(conn, table, columns)})"
        _run(conn, table.name, sql + conflict, _columns(table, columns, rows))
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
        where, param = _any(conn, table, key, values)
        sql += where
        params: list[Any] = [param]
        if also is not None:
            where, param = _any(conn, table, also[0], also[1])
            sql += " AND " + where
            params.append(param)
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
        sql = f"INSERT INTO {name} ({', '.join(columns)}) SELECT * FROM unnest({_arrays(conn, table, columns)})"
        _run(conn, name, sql + conflict, _columns(table, columns, rows))
        return
    sql = f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({_placeholders(len(columns), dialect)})"
    with driver_cursor(conn, sql) as cur:
        cur.executemany(sql + conflict, _tuples(table, columns, rows, dialect))


# --- several reads in one statement -----------------------------------------------------------
# A column's kind decides how its value is brought back to what SQLAlchemy would have returned:
# "" as the driver gives it (integers, text), "ts" an aware UTC datetime, "json" the decoded
# value, "bool" a bool.
Kind = str


@dataclass(frozen=True, slots=True)
class Part:
    """One SELECT of `read_parts`: column expressions, the rest of the query (FROM, WHERE, GROUP
    BY; placeholders in the dialect's style) and its parameters."""

    columns: tuple[str, ...]
    rest: str
    params: tuple[Any, ...] = ()
    kinds: tuple[Kind, ...] = ()


def kinds_of(table: Table, columns: Sequence[str]) -> tuple[Kind, ...]:
    """The kinds of these columns of `table` (plain for expressions such as `sum(amount)`)."""
    return _kinds(table, tuple(columns))


@cache  # a member read asks for a dozen parts; looking the columns up each time cost a tenth of it
def _kinds(table: Table, columns: tuple[str, ...]) -> tuple[Kind, ...]:
    out = []
    for name in columns:
        if name not in table.c:
            out.append("")
            continue
        t = table.c[name].type
        if isinstance(t, UTCDateTime):
            out.append("ts")
        elif isinstance(t, JSON):
            out.append("json")
        elif isinstance(t, Boolean):
            out.append("bool")
        else:
            out.append("")
    return tuple(out)


def part_in(
    conn: Connection,
    table: Table,
    columns: Sequence[str],
    key: str,
    values: Sequence[Any],
    *,
    also: tuple[str, Sequence[Any]] | None = None,
) -> Part | None:
    """`select_in` as a `Part` (None when it would find nothing)."""
    if not values or (also is not None and not also[1]):
        return None
    pg = conn.dialect.name == "postgresql"
    conditions = [(key, values)] + ([also] if also is not None else [])
    where = []
    params: list[Any] = []
    for column, given in conditions:
        if pg:
            condition, param = _any(conn, table, column, given)
            where.append(condition)
            params.append(param)
        else:
            where.append(f"{column} IN ({_placeholders(len(given), 'sqlite')})")
            params += list(given)
    return Part(
        tuple(columns), f"FROM {table.name} WHERE {' AND '.join(where)}", tuple(params), kinds_of(table, columns)
    )


# Above this many members, a batch's reads go one statement per part in the driver's own types:
# decoding thousands of JSON rows (and building them in PostgreSQL) cost more than the few
# extra round trips, which matter only for a single event.
TOGETHER_UP_TO = 32


def read_parts(conn: Connection, parts: Sequence[Part | None], *, together: bool = True) -> list[list[tuple[Any, ...]]]:
    """The rows of each part (an empty list for None), read in ONE statement: each part's rows,
    tagged with the part's index, joined by UNION ALL (see `union_of`). A round trip to
    PostgreSQL costs more than the JSON; SQLite saves its per-statement overhead too. With
    `together=False`, one plain statement per part (for large reads); the rows are the same."""
    pg = conn.dialect.name == "postgresql"
    if together:
        union = union_of(parts, pg)
        return read_union(conn, union, union.params)
    out: list[list[tuple[Any, ...]]] = [[] for _ in parts]
    for i, p in enumerate(parts):
        if p is not None:
            out[i] = _read_plain(conn, p, pg)
    return out


@dataclass(frozen=True, slots=True)
class UnionRead:
    """Parts as the one statement `read_parts` sends: built once, it can be run again with
    other parameters of the same shape (`read_union`)."""

    sql: str
    params: tuple[Any, ...]
    kinds: tuple[tuple[Kind, ...], ...]  # by the part's index
    widths: tuple[int, ...]  # columns of each part (0 for None)
    flat: bool  # each part's values as columns, padded with NULLs (SQLite), not a JSON array

    @property
    def size(self) -> int:
        """Parts, None ones included."""
        return len(self.widths)


def union_of(parts: Sequence[Part | None], pg: bool, *, with_: tuple[str, tuple[Any, ...]] | None = None) -> UnionRead:
    """The statement reading `parts` together (see `read_parts`). PostgreSQL's UNION wants one
    type per column, so each part's row is a JSON array there; SQLite takes any value in any
    column, so its rows are padded to the widest part (decoding the JSON was 2.7% of a member read).

    `with_` is a common table expression the parts may read, `name AS (SELECT ...)`, and its
    parameters (which come first)."""
    widths = tuple(len(p.columns) if p is not None else 0 for p in parts)
    width = max(widths, default=0)
    selects = []
    params: list[Any] = []
    for i, p in enumerate(parts):
        if p is None:
            continue
        if pg:
            row = f"json_build_array({', '.join(p.columns)}) AS r"
        else:
            row = ", ".join([*p.columns, *["NULL"] * (width - len(p.columns))])
        selects.append(f"SELECT * FROM (SELECT {i} AS part, {row} {p.rest}) AS p{i}")
        params += p.params
    kinds = tuple(p.kinds if p is not None else () for p in parts)
    sql = "\nUNION ALL\n".join(selects)
    if with_ is not None and sql:
        sql = f"WITH {with_[0]}\n{sql}"
        params = [*with_[1], *params]
    return UnionRead(sql, tuple(params), kinds, widths, not pg)


def read_union(conn: Connection, union: UnionRead, params: Sequence[Any]) -> list[list[tuple[Any, ...]]]:
    """The rows of each part of `union`, run with `params` (its own, or others of their shape)."""
    out: list[list[tuple[Any, ...]]] = [[] for _ in range(union.size)]
    if not union.sql:
        return out
    pg = conn.dialect.name == "postgresql"
    with driver_cursor(conn, union.sql) as cur:
        cur.execute(union.sql, tuple(params))
        rows = cur.fetchall()
    for r in rows:
        i = r[0]
        values = r[1 : 1 + union.widths[i]] if union.flat else _array(r[1])
        kinds = union.kinds[i]
        if kinds:
            values = [_typed(v, k, pg) if k and v is not None else v for v, k in zip(values, kinds, strict=False)]
        out[i].append(tuple(values))
    return out


def _array(value: Any) -> Any:
    """A part's JSON array as psycopg decoded it (or its text, decoded here)."""
    return json.loads(value) if isinstance(value, str) else value


def _read_plain(conn: Connection, part: Part, pg: bool) -> list[tuple[Any, ...]]:
    """One part as its own statement, its values made what `read_parts` gives through JSON."""
    sql = f"SELECT {', '.join(part.columns)} {part.rest}"
    with driver_cursor(conn, sql) as cur:
        cur.execute(sql, part.params)
        rows = cur.fetchall()
    kinds = part.kinds or ("",) * len(part.columns)
    # Plain columns of no kind come as JSON gives them; expressions (sums) may not, on PostgreSQL.
    convert = [(j, k) for j, (k, c) in enumerate(zip(kinds, part.columns, strict=True)) if k or (pg and "(" in c)]
    if not convert:
        return [tuple(r) for r in rows]
    out = []
    for r in rows:
        values = list(r)
        for j, k in convert:
            if values[j] is not None:
                values[j] = _typed(values[j], k, pg)
        out.append(tuple(values))
    return out


def _typed(value: Any, kind: Kind, pg: bool) -> Any:
    """A value read through JSON or from the driver, as the callers of `read_parts` get it."""
    if kind == "ts":
        stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    if kind == "json":  # psycopg decodes JSON columns itself; SQLite gives their text
        return json.loads(value) if isinstance(value, str) and not pg else value
    if kind == "bool":
        return bool(value)
    # An untyped expression as its JSON form reads back (PostgreSQL's sums come as Decimal).
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


class Reads:
    """Parts gathered from several loaders, then read together in one statement (`read_parts`)."""

    def __init__(self, conn: Connection, *, together: bool = True) -> None:
        self.conn = conn
        self.together = together
        self.parts: list[Part | None] = []
        self.rows: list[list[tuple[Any, ...]]] = []

    def add(self, part: Part | None) -> int:
        """Queue a part; its rows will be `self[index]` after `run`."""
        self.parts.append(part)
        return len(self.parts) - 1

    def run(self) -> None:
        self.rows = read_parts(self.conn, self.parts, together=self.together)

    def __getitem__(self, index: int) -> list[tuple[Any, ...]]:
        return self.rows[index]


# --- writes of a block in one statement (PostgreSQL) -------------------------------------------
# Inside `deferred(conn)`, the helpers above queue their statements, and the block's end sends
# them as ONE statement of data-modifying CTEs (`WITH w0 AS (INSERT ...), w1 AS (...) SELECT 1`):
# a single event's dozen writes cost one round trip instead of a dozen. Foreign keys are checked
# at the end of that statement, so rows may refer to rows of another CTE. Bigger inserts than
# `COPY_FROM` rows still take COPY (the queue is sent first, to keep the order of writes).

COPY_FROM = 100
_QUEUE = "kinloop_deferred_writes"


def _arrays(conn: Connection, table: Table, columns: Sequence[str]) -> str:
    """`%s::type[]` per column, for `unnest` (a collation is not part of an array cast's type)."""
    return ", ".join(f"%s::{_array_type(table, c, conn.dialect)}[]" for c in columns)


def _any(conn: Connection, table: Table, column: str, values: Sequence[Any]) -> tuple[str, str]:
    """`column = ANY(array)` on PostgreSQL, with its parameter (an array literal)."""
    return f"{column} = ANY(%s::{_array_type(table, column, conn.dialect)}[])", array_literal(values)


@cache  # compiling a type costs more than the rest of a small statement
def _array_type(table: Table, column: str, dialect: Any) -> str:
    return str(table.c[column].type.compile(dialect=dialect)).split(" COLLATE ")[0]


def _columns(table: Table, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """One array literal per column (JSON as its text), the parameters of `unnest`."""
    convs = _converters(table, tuple(columns), "postgresql")
    out = []
    for c, convert in zip(columns, convs, strict=True):
        values = [row[c] for row in rows]
        if convert is not None:
            values = [None if v is None else convert(v) for v in values]
        out.append(array_literal(values))
    return tuple(out)


def array_literal(values: Sequence[Any]) -> str:
    """PostgreSQL's text form of an array of these values, for a `%s::type[]` parameter.

    psycopg adapts a list element by element in Python, with a pattern match on each to decide
    its quoting: for the thousands of values of a batch's writes, a tenth of the batch's time.
    Here every text is quoted (always valid), and numbers are written as they are."""
    if all(type(v) is int for v in values):  # keys and amounts, the most common columns
        return "{" + ",".join(map(str, values)) + "}"
    parts = []
    for v in values:
        if v is None:
            parts.append("NULL")
        elif isinstance(v, bool):
            parts.append("t" if v else "f")
        elif isinstance(v, int):
            parts.append(str(v))
        else:
            text = v.isoformat() if isinstance(v, datetime | date) else str(v)
            parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


class _Queue:
    """Statements waiting for the end of a `deferred` block, in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, tuple[Any, ...]]] = []

    def add(self, conn: Connection, table: str, sql: str, params: tuple[Any, ...]) -> None:
        if any(t == table for t, _, _ in self.items):
            # A statement may change a row only once: a second write to a table starts anew.
            self.flush(conn)
        self.items.append((table, sql, params))

    def flush(self, conn: Connection) -> None:
        items, self.items = self.items, []
        if not items:
            return
        if len(items) == 1:
            sql, params = items[0][1], items[0][2]
        else:
            sql = "WITH " + ", ".join(f"w{i} AS ({stmt})" for i, (_, stmt, _) in enumerate(items)) + " SELECT 1"
            params = tuple(p for _, _, ps in items for p in ps)
        with driver_cursor(conn, sql) as cur:
            cur.execute(sql, params)


def _queue(conn: Connection) -> _Queue | None:
    queue: _Queue | None = conn.info.get(_QUEUE)
    return queue


def _run(conn: Connection, table: str, sql: str, params: tuple[Any, ...]) -> None:
    """Run a write now, or queue it inside a `deferred` block."""
    queue = _queue(conn)
    if queue is not None:
        queue.add(conn, table, sql, params)
        return
    with driver_cursor(conn, sql) as cur:
        cur.execute(sql, params)


@contextmanager
def deferred(conn: Connection) -> Iterator[None]:
    """Send the bulk helpers' writes of the block together at its end (PostgreSQL; elsewhere,
    and in a block already deferring, they run as they come). Reads inside the block do not see
    queued writes: call `flush_deferred` before one that must. On an error nothing queued is
    sent (the transaction is failing anyway)."""
    if conn.dialect.name != "postgresql" or _queue(conn) is not None:
        yield
        return
    queue = conn.info[_QUEUE] = _Queue()
    try:
        yield
        queue.flush(conn)
    finally:
        del conn.info[_QUEUE]


def flush_deferred(conn: Connection) -> None:
    """Send what a `deferred` block has queued so far (nothing outside one)."""
    queue = _queue(conn)
    if queue is not None:
        queue.flush(conn)
