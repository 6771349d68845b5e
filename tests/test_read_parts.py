"""A batch's member reads give the same rows whether they go in one JSON statement (single
events) or one plain statement per part (large batches), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select

from kinloop.bench import START, generate
from kinloop.domain.periods import period_key
from kinloop.domain.program import PERIODS
from kinloop.services import checkin as checkin_svc
from kinloop.services import growth_badges, ingest
from kinloop.services import members as member_svc
from kinloop.services import tiers as tier_svc
from kinloop.services.book import Book
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import Part, kinds_of, part_in, read_parts
from kinloop.store.tables import members, tier_qualification
from tests.conftest import load_example


def _grown(engine: Engine) -> LoadedProgram:
    """The growth bench program (every feature on) after 3,000 generated events."""
    loaded = load_example(engine, "bench_growth", now=START)
    raws = list(generate(3000, members=60))
    with engine.begin() as conn:
        for i in range(0, len(raws), 500):
            ingest.ingest(conn, loaded, raws[i : i + 500], now=START + timedelta(days=61))
    return loaded


def _parts(conn: Any, loaded: LoadedProgram, pks: list[int]) -> list[Part | None]:
    program = loaded.program
    days = {START.date() + timedelta(days=d) for d in range(0, 61, 7)}
    periods = {period_key(p, d) for d in days for p in PERIODS}
    book = Book(conn, loaded.program_id, loaded.version_id, START)
    return [
        book.balances_part(pks),
        *member_svc.state_parts(conn, program, pks, periods),
        checkin_svc.load_part(conn, pks),
        *tier_svc.Realtime.parts(conn, program, pks),
        *growth_badges.start_parts(conn, program, pks, days),
        # Kinds the ingest parts may not cover: a JSON profile, timestamps.
        part_in(conn, members, ("id", "member_id", "profile", "created_at"), "id", pks),
        part_in(conn, tier_qualification, ("member_pk", "day", "currency", "amount"), "member_pk", pks),
    ]


def test_plain_reads_give_the_rows_the_joint_read_gives(engine: Engine) -> None:
    loaded = _grown(engine)
    with engine.connect() as conn:
        pks = sorted(conn.execute(select(members.c.id).where(members.c.program_id == loaded.program_id)).scalars())
        parts = _parts(conn, loaded, pks)
        together = read_parts(conn, parts)
        apart = read_parts(conn, parts, together=False)
    asked = [i for i, p in enumerate(parts) if p is not None]
    assert len(asked) >= 8
    assert sum(len(together[i]) for i in asked) > 500  # the reads found something to compare
    for i in asked:
        assert sorted(apart[i], key=repr) == sorted(together[i], key=repr), parts[i]
        assert [tuple(type(v) for v in r) for r in sorted(apart[i], key=repr)] == [
            tuple(type(v) for v in r) for r in sorted(together[i], key=repr)
        ], parts[i]


def test_a_sum_reads_back_as_an_integer_either_way(engine: Engine) -> None:
    _grown(engine)
    with engine.connect() as conn:
        base = part_in(conn, tier_qualification, ("member_pk", "day"), "member_pk", list(range(1, 1000)))
        assert base is not None
        total = Part(
            ("member_pk", "sum(amount)"),
            base.rest + " GROUP BY member_pk",
            base.params,
            kinds_of(tier_qualification, ("member_pk", "amount")),
        )
        together, apart = read_parts(conn, [total])[0], read_parts(conn, [total], together=False)[0]
    assert together
    assert sorted(together) == sorted(apart)
    assert all(type(s) is int for _, s in apart)
