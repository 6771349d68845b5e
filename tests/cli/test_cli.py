"""The `kinloop` command line, end to end, on SQLite and (when configured) PostgreSQL.

Every command runs in-process through Typer's CliRunner against a real database. Refused and
invalid commands must print a clear message, exit non-zero, never show a traceback and leave
the database exactly as it was.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, inspect, select, text
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner

import kinloop.cli.app as cli
from kinloop.services import ingest as ingest_svc
from kinloop.store.db import connect, database_url
from kinloop.store.tables import (
    audit_log,
    balances,
    entries,
    events,
    ingest_checkpoints,
    lots,
    members,
    program_versions,
    programs,
)
from tests.conftest import EXAMPLES, PG_URL

COFFEE = EXAMPLES / "coffee.yaml"
# The CLI reads the wall clock once per command through `kinloop.cli.app.utcnow`; the tests fix it.
CLI_NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SUMMARY = re.compile(r"^(\d+) accepted, (\d+) duplicates, (\d+) rejected( \(resumed after line \d+\))? in [\d.]+s ")

runner = CliRunner()


# --- helpers -------------------------------------------------------------------------------


def kl(*args: object) -> Any:
    """Run `kinloop ARGS` and check that, whatever happened, no traceback escaped."""
    result = runner.invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "400"})
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def purchase(event_id: str, member_id: str, amount: Any, at: str = "2025-06-02T09:00:00Z") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "member_id": member_id,
        "type": "purchase",
        "occurred_at": at,
        "attributes": {"amount": amount},
    }


def check_in(event_id: str, member_id: str, at: str) -> dict[str, Any]:
    return {"event_id": event_id, "member_id": member_id, "type": "check_in", "occurred_at": at}


def write_jsonl(path: Path, rows: list[dict[str, Any] | str], *, append: bool = False) -> Path:
    """Write events as JSON Lines; a str row is written as it is (to make broken lines)."""
    with path.open("a" if append else "w", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("event_id,member_id,type,occurred_at,amount\n" + "".join(line + "\n" for line in lines))
    return path


def snapshot(url: str) -> dict[str, Any]:
    """Row counts of every table a command could write, and every balance."""
    engine = connect(url)
    try:
        with engine.connect() as conn:
            state: dict[str, Any] = {
                t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (programs, program_versions, members, events, entries, lots, audit_log, ingest_checkpoints)
            }
            state["balances"] = sorted(
                tuple(r)
                for r in conn.execute(
                    select(members.c.member_id, balances.c.currency, balances.c.available, balances.c.pending).join(
                        members, members.c.id == balances.c.member_pk
                    )
                )
            )
    finally:
        engine.dispose()
    return state


def show(url: str, member_id: str) -> dict[str, Any]:
    result = kl("member", "show", member_id, "--db", url, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def summary_counts(stdout: str) -> tuple[int, int, int]:
    match = SUMMARY.match(stdout)
    assert match, stdout
    return int(match[1]), int(match[2]), int(match[3])


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "utcnow", lambda: CLI_NOW)


@pytest.fixture
def ready(db_url: str) -> str:
    """A database with the coffee program loaded through `kinloop init`."""
    result = kl("init", COFFEE, "--db", db_url)
    assert result.exit_code == 0, result.output
    return db_url


@pytest.fixture
def populated(ready: str, tmp_path: Path) -> str:
    """Two members after one JSON Lines and one CSV import:
    m1 has 3 ★ and 21 Beans, m2 has 0 ★ and 5 Beans."""
    jsonl = write_jsonl(
        tmp_path / "events.jsonl",
        [
            purchase("j1", "m1", 120, "2025-06-02T09:00:00Z"),  # 2 ★, 12 Beans
            check_in("j2", "m1", "2025-06-02T10:00:00Z"),  # 1 Bean
            purchase("j3", "m2", 45.5, "2025-06-03T09:00:00Z"),  # 0 ★, 4 Beans
        ],
    )
    csv = write_csv(
        tmp_path / "events.csv",
        [
            "c1,m1,purchase,2025-06-05T09:00:00Z,80",  # 1 ★, 8 Beans
            "c2,m2,check_in,2025-06-05T09:00:00Z,",  # 1 Bean
            "c3,m2,check_in,2025-06-05T18:00:00Z,",  # same day in Paris: the limit says no
        ],
    )
    for path in (jsonl, csv):
        result = kl("ingest", path, "--db", ready)
        assert result.exit_code == 0, result.output
    return ready


@pytest.fixture
def blank_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A database on the same backend that kinloop has never touched."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    assert PG_URL is not None
    admin = create_engine(database_url(PG_URL), isolation_level="AUTOCOMMIT")
    name = f"kinloop_blank_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{database_url(PG_URL).rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def table_names(url: str) -> list[str]:
    engine = connect(url)
    try:
        return sorted(inspect(engine).get_table_names())
    finally:
        engine.dispose()


# --- init, validate, schema ----------------------------------------------------------------


def test_init_loads_the_program_then_reports_unchanged_and_a_changed_file_becomes_a_new_version(
    db_url: str, tmp_path: Path
) -> None:
    first = kl("init", COFFEE, "--db", db_url)
    assert first.exit_code == 0
    assert first.stdout == f"loaded: Coffee Club (coffee) version 1 in {database_url(db_url)}\n"

    again = kl("init", COFFEE, "--db", db_url)
    assert again.exit_code == 0
    assert again.stdout == "unchanged: Coffee Club (coffee) version 1 is active\n"

    changed = tmp_path / "coffee.yaml"
    changed.write_text(COFFEE.read_text().replace("per: 10, amount: 1", "per: 5, amount: 1"))
    second = kl("init", changed, "--db", db_url)
    assert second.exit_code == 0
    assert second.stdout == f"new version: Coffee Club (coffee) version 2 in {database_url(db_url)}\n"
    assert kl("init", changed, "--db", db_url).stdout == "unchanged: Coffee Club (coffee) version 2 is active\n"

    engine = connect(db_url)
    with engine.connect() as conn:
        versions = conn.execute(
            select(program_versions.c.version, program_versions.c.active).order_by(program_versions.c.version)
        ).all()
    engine.dispose()
    assert [tuple(v) for v in versions] == [(1, False), (2, True)]

    # Events now earn by version 2: a Bean for every 5.
    write_jsonl(tmp_path / "v2.jsonl", [purchase("v2-1", "m1", 100)])
    assert kl("ingest", tmp_path / "v2.jsonl", "--db", db_url).exit_code == 0
    assert show(db_url, "m1")["balances"] == {"stars": 2, "beans": 20}
    explained = json.loads(kl("explain", "v2-1", "--db", db_url, "--json").stdout)
    assert explained["program_version"] == 2


def test_validate_accepts_the_example_program() -> None:
    result = kl("validate", COFFEE)
    assert result.exit_code == 0
    assert result.stdout == (
        f"ok {COFFEE}: program Coffee Club (coffee): 2 currencies, 2 event types, 2 rules, 4 tiers\n"
    )


def test_validate_prints_every_problem_with_its_path(tmp_path: Path) -> None:
    source = COFFEE.read_text()
    source = source.replace(
        "  - key: purchase_stars\n", "  - key: purchase_stars\n    cap: {per_day: 0}\n    colour: red\n"
    )
    source = source.replace(
        "    rate: {attribute: amount, per: 10, amount: 1}\n",
        "    rate: {attribute: amount, per: 10, amount: 1}\n    cap: {per_day: -2}\n",
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text(source)

    result = kl("validate", broken)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: {broken}: 3 problems\n"
        "  rules[0].cap.per_day: must be greater than 0\n"
        "  rules[0].colour: unknown field\n"
        "  rules[1].cap.per_day: must be greater than 0\n"
    )


def test_validate_reports_semantic_problems_and_yaml_syntax_with_their_place(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown_currency.yaml"
    unknown.write_text(COFFEE.read_text().replace("currency: beans\n    rate:", "currency: euros\n    rate:"))
    result = kl("validate", unknown)
    assert result.exit_code == 2
    assert result.stderr == f"error: {unknown}: 1 problem\n  rules[1].currency: unknown currency 'euros'\n"

    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("key: coffee\nname: [Coffee\n")
    result = kl("validate", syntax)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {syntax}: 1 problem\n  not valid YAML: line 3, column 1: ")


def test_schema_prints_the_json_schema_of_program_files() -> None:
    result = kl("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "kinloop program"
    assert {"key", "name", "currencies", "event_types", "rules", "ladder"} <= set(schema["properties"])


# --- ingest and look -----------------------------------------------------------------------


def test_ingest_jsonl_then_csv_and_show_the_members(ready: str, tmp_path: Path) -> None:
    jsonl = write_jsonl(
        tmp_path / "events.jsonl",
        [
            purchase("j1", "m1", 120, "2025-06-02T09:00:00Z"),
            check_in("j2", "m1", "2025-06-02T10:00:00Z"),
            purchase("j3", "m2", 45.5, "2025-06-03T09:00:00Z"),
        ],
    )
    result = kl("ingest", jsonl, "--db", ready)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert summary_counts(lines[0]) == (3, 0, 0)
    assert lines[1:] == ["awarded: 2 ★, 17 Beans"]
    assert result.stderr == ""

    csv = write_csv(
        tmp_path / "events.csv",
        [
            "c1,m1,purchase,2025-06-05T09:00:00Z,80",
            "c2,m2,check_in,2025-06-05T09:00:00Z,",
            "c3,m2,check_in,2025-06-05T18:00:00Z,",
        ],
    )
    result = kl("ingest", csv, "--db", ready, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data.pop("seconds") >= 0
    assert data == {
        "lines": 3,
        "resumed_after_line": 0,
        "accepted": 3,
        "duplicates": 0,
        "rejected": 0,
        "errors": [],
        "awarded": {"stars": 1, "beans": 9},
    }

    m1 = show(ready, "m1")
    campaigns = m1.pop("campaigns")
    # m1 checked in once, on 2 June 2025 (j2): a streak long broken by the CLI's "now".
    checkin = m1.pop("checkin")
    assert (checkin["streak"], checkin["best"], checkin["days"], checkin["last_day"]) == (0, 1, 1, "2025-06-02")
    assert checkin["checked_in_today"] is False
    assert m1 == {
        "member_id": "m1",
        "balances": {"stars": 3, "beans": 21},
        "pending": {"stars": 0, "beans": 0},
        "tier": {"key": "green", "name": "Green"},
        "next_tier": {"key": "jade", "name": "Jade", "missing": 1, "text": "1 ★ to Jade"},
        "tier_status": {
            "source": "earned",
            "earned": "green",
            "qualification": 3,
            "qualification_text": "3 ★ in the current window",
            "window": "lifetime",
            "grace_until": None,
            "paid": None,
            "manual": None,
            "kept": None,
            "keep": None,
        },
        "expiring": [],
        "display": {"stars": "3 ★", "beans": "21 Beans"},
        "badges": [],
        "tasks": [
            {
                "key": "complete_profile",
                "name": "Complete your profile",
                "every": "once",
                "period": "all",
                "progress": 0,
                "target": 3,
                "done": False,
                "text": "Complete your profile: 0/3",
                "reward": {"currency": "beans", "amount": 5, "text": "5 Beans"},
            }
        ],
        "privileges": [],  # Green holds none
        "profile": {},
        "holds": {"held": {}, "text": {}, "active": []},
    }
    # The clock says Sunday 1 March 2026: the next member day is Wednesday the 4th.
    assert (campaigns["active"], campaigns["next"]["next_start"]) == ([], "2026-03-04T00:00:00+01:00")
    m2 = show(ready, "m2")
    assert (m2["balances"], m2["tier"]) == ({"stars": 0, "beans": 5}, {"key": "green", "name": "Green"})

    table = kl("member", "show", "m1", "--db", ready)
    assert table.exit_code == 0
    assert table.stdout == (
        "m1 — Green\n  Stars: 3 ★\n  Beans: 21 Beans\n  1 ★ to Jade\n  task Complete your profile: 0/3\n"
        "  Check-in: no streak yet; not checked in today; next day 1: 1 Beans\n"
    )
    assert kl("verify", "--db", ready).exit_code == 0


def test_member_show_lists_points_expiring_within_30_days(ready: str, tmp_path: Path) -> None:
    # Earned on 15 March 2025, Beans expire 12 months later: 14 days after the CLI's "now".
    write_jsonl(tmp_path / "e.jsonl", [purchase("x1", "m9", 70, "2025-03-15T09:00:00Z")])
    assert kl("ingest", tmp_path / "e.jsonl", "--db", ready).exit_code == 0
    view = show(ready, "m9")
    assert view["expiring"] == [
        {"currency": "beans", "amount": 7, "on": "2026-03-15", "text": "7 Beans expire on 2026-03-15"}
    ]
    # The expiring points come after the tier progress, before the tasks.
    assert kl("member", "show", "m9", "--db", ready).stdout.splitlines()[-3:-1] == [
        "  7 Beans expire on 2026-03-15",
        "  task Complete your profile: 0/3",
    ]


# --- spend, adjust, reverse ----------------------------------------------------------------


def test_spend_debits_and_is_idempotent_with_an_id(populated: str) -> None:
    before = snapshot(populated)
    first = kl("spend", "m1", "beans", "5", "--reason", "latte", "--id", "order-1", "--db", populated)
    assert first.exit_code == 0, first.output
    assert first.stdout == "spent 5 Beans for m1; balance 16 Beans\n"
    after_first = snapshot(populated)
    assert after_first["entries"] == before["entries"] + 1

    again = kl("spend", "m1", "beans", "5", "--reason", "latte", "--id", "order-1", "--db", populated, "--json")
    assert again.exit_code == 0
    data = json.loads(again.stdout)
    assert (data["amount"], data["balance"], data["replayed"]) == (5, 16, True)
    assert snapshot(populated) == after_first
    assert show(populated, "m1")["balances"] == {"stars": 3, "beans": 16}

    plain = kl("spend", "m1", "beans", "5", "--reason", "latte", "--id", "order-1", "--db", populated)
    assert plain.stdout == "spent 5 Beans for m1; balance 16 Beans (already done; nothing changed)\n"

    engine = connect(populated)
    with engine.connect() as conn:
        row = conn.execute(
            select(
                entries.c.kind, entries.c.amount, entries.c.actor, entries.c.reason, entries.c.idempotency_key
            ).where(entries.c.kind == "spend")
        ).one()
    engine.dispose()
    assert tuple(row) == ("spend", 5, "cli", "latte", "order-1")


def test_spend_reusing_an_id_for_another_amount_is_refused(populated: str) -> None:
    assert kl("spend", "m1", "beans", "5", "--reason", "latte", "--id", "order-1", "--db", populated).exit_code == 0
    before = snapshot(populated)
    result = kl("spend", "m1", "beans", "6", "--reason", "latte", "--id", "order-1", "--db", populated)
    assert result.exit_code == 1
    assert result.stderr == "error idempotency_conflict (id): key 'order-1' was already used for a different request\n"
    assert snapshot(populated) == before


def test_spend_is_refused_when_short_and_writes_nothing(populated: str) -> None:
    before = snapshot(populated)
    result = kl("spend", "m1", "beans", "22", "--reason", "espresso machine", "--db", populated)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == "error insufficient_balance (amount): available balance is 21 Beans, 22 Beans asked\n"
    assert snapshot(populated) == before


@pytest.mark.parametrize(
    ("currency", "amount", "code", "message"),
    [
        (
            "stars",
            "1",
            1,
            "error currency_not_spendable: Stars is a growth currency: it qualifies for tiers and is never spent\n",
        ),
        (
            "euros",
            "1",
            2,
            "error unknown_currency (currency): unknown currency 'euros' (this program has: stars, beans)\n",
        ),
        ("beans", "abc", 2, "error invalid_amount (amount): 'abc' is not a number\n"),
        ("beans", "1.5", 2, "error invalid_amount (amount): 1.5 has more than 0 decimal places\n"),
        ("beans", "0", 2, "error invalid_amount (amount): amount must be greater than 0, got 0\n"),
        ("beans", "NaN", 2, "error invalid_amount (amount): 'NaN' is not a finite number\n"),
    ],
)
def test_spend_with_bad_input_says_why_and_writes_nothing(
    populated: str, currency: str, amount: str, code: int, message: str
) -> None:
    before = snapshot(populated)
    result = kl("spend", "m1", currency, amount, "--reason", "r", "--db", populated)
    assert result.exit_code == code
    assert result.stderr == message
    assert snapshot(populated) == before


def test_adjust_credits_and_debits_with_actor_and_reason_in_the_audit_log(populated: str) -> None:
    credit = kl(
        "adjust", "m1", "beans", "10", "--reason", "goodwill: cold coffee", "--actor", "alice", "--db", populated
    )
    assert credit.exit_code == 0, credit.output
    assert credit.stdout == "adjusted 10 Beans for m1; balance 31 Beans\n"
    debit = kl("adjust", "m1", "beans", "--reason", "typo", "--actor", "bob", "--db", populated, "--", "-4")
    assert debit.exit_code == 0, debit.output
    assert debit.stdout == "debited 4 Beans for m1; balance 27 Beans\n"
    assert show(populated, "m1")["balances"] == {"stars": 3, "beans": 27}

    engine = connect(populated)
    with engine.connect() as conn:
        audit = conn.execute(
            select(
                audit_log.c.actor, audit_log.c.action, audit_log.c.target, audit_log.c.reason, audit_log.c.details
            ).order_by(audit_log.c.id)
        ).all()
        adjustments = conn.execute(
            select(entries.c.id, entries.c.amount, entries.c.from_account, entries.c.to_account, entries.c.actor)
            .where(entries.c.kind == "adjustment")
            .order_by(entries.c.id)
        ).all()
    engine.dispose()
    assert [tuple(a)[:4] for a in audit] == [
        ("alice", "adjust", "m1", "goodwill: cold coffee"),
        ("bob", "adjust", "m1", "typo"),
    ]
    assert [a.details for a in audit] == [
        {"currency": "beans", "amount": 10, "entry_id": adjustments[0].id},
        {"currency": "beans", "amount": -4, "entry_id": adjustments[1].id},
    ]
    assert [tuple(a)[1:] for a in adjustments] == [
        (10, "adjustment", "available", "alice"),
        (4, "available", "adjustment", "bob"),
    ]
    assert kl("verify", "--db", populated).exit_code == 0


def test_adjust_refused_or_invalid_writes_nothing_not_even_an_audit_row(populated: str) -> None:
    before = snapshot(populated)
    short = kl("adjust", "m1", "beans", "--reason", "r", "--actor", "bob", "--db", populated, "--", "-22")
    assert short.exit_code == 1
    assert short.stderr == "error insufficient_balance (amount): available balance is 21 Beans, 22 Beans asked\n"
    no_actor = kl("adjust", "m1", "beans", "3", "--reason", "r", "--actor", " ", "--db", populated)
    assert no_actor.exit_code == 2
    assert no_actor.stderr == "error invalid_input (actor): an actor is required for a manual adjustment\n"
    zero = kl("adjust", "m1", "beans", "0", "--reason", "r", "--actor", "bob", "--db", populated)
    assert zero.exit_code == 2
    assert zero.stderr == "error invalid_amount (amount): amount must not be 0\n"
    assert snapshot(populated) == before


def test_reverse_part_then_all_of_a_purchase_and_the_tier_follows(ready: str, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "r.jsonl", [purchase("r1", "m3", 250)])  # 5 ★ (Jade), 25 Beans
    assert kl("ingest", tmp_path / "r.jsonl", "--db", ready).exit_code == 0
    assert show(ready, "m3")["tier"] == {"key": "jade", "name": "Jade"}

    part = kl("reverse", "r1", "--amount", "100", "--reason", "two cups refunded", "--actor", "carol", "--db", ready)
    assert part.exit_code == 0, part.output
    assert part.stdout == "reversed r1: took back 2 ★, 10 Beans\ntier: jade → green\n"
    view = show(ready, "m3")
    assert (view["balances"], view["tier"]) == ({"stars": 3, "beans": 15}, {"key": "green", "name": "Green"})

    rest = kl("reverse", "r1", "--db", ready, "--json")
    assert rest.exit_code == 0, rest.output
    assert json.loads(rest.stdout) == {
        "event_id": "r1",
        "clawed_back": {"stars": 3, "beans": 15},
        "unrecovered": {},
        "text": {"stars": "3 ★", "beans": "15 Beans"},
        "unrecovered_text": {},
    }
    assert show(ready, "m3")["balances"] == {"stars": 0, "beans": 0}

    before = snapshot(ready)
    again = kl("reverse", "r1", "--db", ready)
    assert again.exit_code == 1
    assert again.stderr == "error already_reversed: event 'r1' has nothing left to reverse\n"
    assert snapshot(ready) == before

    engine = connect(ready)
    with engine.connect() as conn:
        audit = conn.execute(
            select(audit_log.c.actor, audit_log.c.action, audit_log.c.target, audit_log.c.reason).order_by(
                audit_log.c.id
            )
        ).all()
    engine.dispose()
    assert [tuple(a) for a in audit] == [
        ("carol", "reverse", "r1", "two cups refunded"),
        ("cli", "reverse", "r1", "reversal"),
    ]
    assert kl("verify", "--db", ready).exit_code == 0


def test_reverse_after_spending_takes_back_what_is_left_and_says_what_is_not(populated: str, tmp_path: Path) -> None:
    assert kl("spend", "m1", "beans", "15", "--reason", "mug", "--db", populated).exit_code == 0  # 6 Beans left
    result = kl("reverse", "c1", "--db", populated)  # c1 earned 1 ★ and 8 Beans
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "reversed c1: took back 1 ★, 6 Beans\nnot recoverable (already spent; balance may not go negative): 2 Beans\n"
    )
    assert show(populated, "m1")["balances"] == {"stars": 2, "beans": 0}

    # What could not be taken back is written off: reversing again takes nothing earned since.
    write_jsonl(tmp_path / "later.jsonl", [purchase("later", "m1", 50, "2025-06-20T09:00:00Z")])
    assert kl("ingest", tmp_path / "later.jsonl", "--db", populated).exit_code == 0
    before = snapshot(populated)
    again = kl("reverse", "c1", "--db", populated)
    assert again.exit_code == 1
    assert again.stderr == "error already_reversed: event 'c1' has nothing left to reverse\n"
    assert snapshot(populated) == before
    assert show(populated, "m1")["balances"] == {"stars": 3, "beans": 5}
    assert kl("verify", "--db", populated).exit_code == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["r1", "--amount", "abc"], 2, "error invalid_input (amount): 'abc' is not a number\n"),
        (["r1", "--amount", "0"], 2, "error invalid_amount (amount): a refund amount must be greater than 0\n"),
        (
            ["r1", "--amount", "250.01"],
            2,
            "error invalid_amount (amount): refund of 250.01 exceeds what is left of amount (250)\n",
        ),
        (["nope"], 3, "error unknown_event (event_id): no event 'nope' in this program\n"),
    ],
)
def test_reverse_with_bad_input_says_why_and_writes_nothing(
    ready: str, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    write_jsonl(tmp_path / "r.jsonl", [purchase("r1", "m3", 250)])
    assert kl("ingest", tmp_path / "r.jsonl", "--db", ready).exit_code == 0
    before = snapshot(ready)
    result = kl("reverse", *args, "--db", ready)
    assert result.exit_code == code
    assert result.stderr == message
    assert snapshot(ready) == before


# --- explain, expire, verify ---------------------------------------------------------------


def test_explain_names_each_rule_and_why(populated: str) -> None:
    result = kl("explain", "j1", "--db", populated)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("j1: purchase by m1 at 2025-06-02T09:00:00+00:00 (received ")
    assert 'program version 1)\nattributes: {"amount": 120}\n' in out
    assert re.search(r"Stars for purchases\s*│\s*awarded\s*│\s*2 ★", out)
    assert re.search(r"Beans for purchases\s*│\s*awarded\s*│\s*12 Beans", out)
    assert "tier: None → green" in out

    j3 = json.loads(kl("explain", "j3", "--db", populated, "--json").stdout)
    assert j3["rules"] == [
        {
            "rule": "purchase_stars",
            "name": "Stars for purchases",
            "status": "zero",
            "detail": "amount rounds to 0",
            "amount": 0,
            "bonus": 0,
            "currency": "stars",
        },
        {
            "rule": "purchase_beans",
            "name": "Beans for purchases",
            "status": "awarded",
            "detail": "4 Beans",
            "amount": 4,
            "bonus": 0,
            "currency": "beans",
        },
    ]
    assert [(e["kind"], e["currency"], e["amount"]) for e in j3["entries"]] == [("earn", "beans", 4)]

    c3 = kl("explain", "c3", "--db", populated)
    assert re.search(r"Daily check-in\s*│\s*already_checked_in\s*│\s*already checked in on 2025-06-05", c3.stdout)
    c3_json = json.loads(kl("explain", "c3", "--db", populated, "--json").stdout)
    assert [(r["rule"], r["status"]) for r in c3_json["rules"]] == [("checkin", "already_checked_in")]
    c2_json = json.loads(kl("explain", "c2", "--db", populated, "--json").stdout)
    assert [(r["rule"], r["status"], r["amount"], r["currency"]) for r in c2_json["rules"]] == [
        ("checkin", "checked_in", 1, "beans")
    ]
    assert c3_json["entries"] == []


def test_explain_an_unknown_event(populated: str) -> None:
    result = kl("explain", "nope", "--db", populated)
    assert result.exit_code == 3
    assert result.stderr == "error unknown_event (event_id): no event 'nope' in this program\n"


def test_expire_takes_due_lots_once_and_a_second_run_finds_nothing(ready: str, tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "x.jsonl",
        [
            purchase("x1", "m5", 100, "2025-01-10T10:00:00Z"),  # 10 Beans, expire 2026-01-10: due
            purchase("x2", "m5", 50, "2025-06-10T10:00:00Z"),  # 5 Beans, expire 2026-06-10: not yet
            purchase("x3", "m6", 30, "2025-02-01T10:00:00Z"),  # 3 Beans, expire 2026-02-01: due
        ],
    )
    assert kl("ingest", tmp_path / "x.jsonl", "--db", ready).exit_code == 0

    first = kl("expire", "--db", ready)
    assert first.exit_code == 0, first.output
    assert first.stdout == "expired: 13 Beans\n"
    after_first = snapshot(ready)
    second = kl("expire", "--db", ready, "--json")
    assert second.exit_code == 0
    assert json.loads(second.stdout) == {"expired": {}}
    assert kl("expire", "--db", ready).stdout == "expired: nothing due\n"
    assert snapshot(ready) == after_first

    assert show(ready, "m5")["balances"] == {"stars": 3, "beans": 5}  # Stars (growth) never expire
    assert show(ready, "m6")["balances"] == {"stars": 0, "beans": 0}
    engine = connect(ready)
    with engine.connect() as conn:
        expired = conn.execute(
            select(entries.c.idempotency_key, entries.c.amount).where(entries.c.kind == "expire").order_by(entries.c.id)
        ).all()
    engine.dispose()
    assert sorted(a for _, a in expired) == [3, 10]
    assert len({k for k, _ in expired}) == 2
    assert kl("verify", "--db", ready).exit_code == 0


def test_verify_is_ok_on_a_sound_ledger_and_names_a_tampered_balance(populated: str) -> None:
    ok = kl("verify", "--db", populated, "--json")
    assert ok.exit_code == 0
    report = json.loads(ok.stdout)
    assert report == {"ok": True, "members": 2, "entries": 7, "lots": 5, "mismatches": []}
    plain = kl("verify", "--db", populated)
    assert plain.stdout == (
        "ok: 2 members, 7 entries, 5 lots; every balance equals the sum of its entries and every lot its movements\n"
    )

    engine = connect(populated)
    with engine.begin() as conn:
        m1 = conn.execute(select(members.c.id).where(members.c.member_id == "m1")).scalar_one()
        conn.execute(
            balances.update()
            .where(balances.c.member_pk == m1, balances.c.currency == "beans")
            .values(available=balances.c.available + 1)
        )
    engine.dispose()
    bad = kl("verify", "--db", populated, "--json")
    assert bad.exit_code == 1
    mismatches = json.loads(bad.stdout)["mismatches"]
    assert {(m["check"], m["member_id"], m["currency"], m["expected"], m["found"]) for m in mismatches} == {
        ("balance.available", "m1", "beans", 21, 22),
        ("lots.available", "m1", "beans", 22, 21),
    }


# --- bad input -----------------------------------------------------------------------------


def test_a_malformed_json_line_is_reported_with_its_number_and_the_others_are_ingested(
    ready: str, tmp_path: Path
) -> None:
    path = write_jsonl(
        tmp_path / "e.jsonl",
        [
            purchase("g1", "m1", 100),
            '{"event_id": "g2" "member_id": "m1"}',
            "[1, 2]",
            purchase("g3", "m1", 50),
        ],
    )
    result = kl("ingest", path, "--db", ready)
    assert result.exit_code == 2
    assert result.stderr == (
        "line 2: not valid JSON: Expecting ',' delimiter at column 19\nline 3: each line must be a JSON object\n"
    )
    assert summary_counts(result.stdout) == (2, 0, 2)
    state = snapshot(ready)
    assert state["events"] == 2
    assert show(ready, "m1")["balances"] == {"stars": 3, "beans": 15}


def test_ingest_json_output_lists_the_errors(ready: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", ["{oops", purchase("g1", "m1", 100)])
    result = kl("ingest", path, "--db", ready, "--json")
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert (data["lines"], data["accepted"], data["rejected"]) == (2, 1, 1)
    assert data["errors"] == [
        {
            "line": 1,
            "code": "invalid_input",
            "field": None,
            "detail": "not valid JSON: Expecting property name enclosed in double quotes at column 2",
        }
    ]


def test_an_unknown_event_type_and_bad_attributes_are_rejected_alone(ready: str, tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "e.jsonl",
        [
            purchase("g1", "m1", 100),
            {"event_id": "g2", "member_id": "m1", "type": "refund", "occurred_at": "2025-06-02T09:00:00Z"},
            purchase("g3", "m1", "abc"),
            purchase("g4", "m1", 100, at="2025-06-02T09:00:00"),
            {"event_id": "g5", "member_id": "m1", "type": "purchase", "occurred_at": "2025-06-02T09:00:00Z"},
            purchase("g6", "m2", 60),
        ],
    )
    result = kl("ingest", path, "--db", ready)
    assert result.exit_code == 2
    assert result.stderr == (
        "line 2 (type): unknown event type 'refund' (this program knows: check_in, purchase)\n"
        "line 3 (attributes.amount): attribute 'amount' must be a decimal, got string 'abc'\n"
        "line 4 (occurred_at): '2025-06-02T09:00:00' has no time zone offset (add Z or +hh:mm)\n"
        "line 5 (attributes.amount): attribute 'amount' is required for 'purchase' events\n"
    )
    assert summary_counts(result.stdout) == (2, 0, 4)
    state = snapshot(ready)
    assert (state["events"], state["members"]) == (2, 2)
    assert show(ready, "m1")["balances"] == {"stars": 2, "beans": 10}
    assert show(ready, "m2")["balances"] == {"stars": 1, "beans": 6}


def test_csv_with_a_non_numeric_amount_or_a_short_row(ready: str, tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "e.csv",
        [
            "k1,m1,purchase,2025-06-02T09:00:00Z,abc",
            "k2,m1,purchase,2025-06-02T09:00:00Z",
            "k3,m1,purchase,2025-06-02T09:00:00Z,100",
        ],
    )
    result = kl("ingest", path, "--db", ready)
    assert result.exit_code == 2
    assert result.stderr == (
        "line 2 (attributes.amount): attribute 'amount' must be a decimal, got string 'abc'\n"
        "line 3: expected 5 cells, found 4\n"
    )
    assert summary_counts(result.stdout) == (1, 0, 2)
    assert snapshot(ready)["events"] == 1


def test_a_csv_saved_with_a_byte_order_mark_is_read(ready: str, tmp_path: Path) -> None:
    """Spreadsheets save "CSV UTF-8" with a byte order mark before the header."""
    path = tmp_path / "excel.csv"
    path.write_bytes(
        b"\xef\xbb\xbfevent_id,member_id,type,occurred_at,amount\nb1,m1,purchase,2025-06-05T09:00:00Z,80\n"
    )
    result = kl("ingest", path, "--db", ready)
    assert result.stderr == ""
    assert result.exit_code == 0
    assert show(ready, "m1")["balances"] == {"stars": 1, "beans": 8}


def test_a_line_that_is_not_utf8_is_rejected_not_guessed(ready: str, tmp_path: Path) -> None:
    """Bytes that are not UTF-8 must not be replaced: two different member ids would become one."""
    good, first, second = (
        json.dumps(purchase(event_id, member_id, 80)).encode()
        for event_id, member_id in (("u0", "m0"), ("u1", "m@1"), ("u2", "m@1"))
    )
    path = tmp_path / "events.jsonl"
    path.write_bytes(good + b"\n" + first.replace(b"@", b"\xff") + b"\n" + second.replace(b"@", b"\xfe") + b"\n")

    result = kl("ingest", path, "--db", ready)

    assert result.exit_code == 2, result.output
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["line 2", "line 3"]
    assert summary_counts(result.stdout) == (1, 0, 2)
    assert snapshot(ready)["members"] == 1


def test_a_csv_without_the_core_columns_is_refused(ready: str, tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_text("id,member,type,occurred_at\nk1,m1,check_in,2025-06-02T09:00:00Z\n")
    result = kl("ingest", path, "--db", ready)
    assert result.exit_code == 2
    assert result.stderr == "line 1: CSV header lacks column(s): event_id, member_id\n"
    assert snapshot(ready)["events"] == 0


def test_an_absurdly_large_amount_is_rejected_alone(ready: str, tmp_path: Path) -> None:
    """A number too large for the ledger is bad input on its line, like any other."""
    path = write_jsonl(
        tmp_path / "e.jsonl",
        [purchase("h1", "m1", 100), purchase("h2", "m2", 1e30), purchase("h3", "m3", 100)],
    )
    result = kl("ingest", path, "--db", ready)
    assert result.exit_code == 2, result.output
    assert (
        result.stderr
        == "line 2 (attributes.amount): attribute 'amount' is 1E+30, larger than kinloop accepts (1e+15)\n"
    )
    assert snapshot(ready)["events"] == 2
    assert show(ready, "m3")["balances"] == {"stars": 2, "beans": 10}


def test_an_absurdly_large_adjustment_is_invalid_input(populated: str) -> None:
    before = snapshot(populated)
    result = kl("adjust", "m1", "beans", "1e30", "--reason", "r", "--actor", "bob", "--db", populated)
    assert result.exit_code == 2, result.output
    assert result.stderr == "error invalid_amount (amount): 1e30 is larger than the ledger accepts (1e+15 units)\n"
    assert snapshot(populated) == before


def test_an_unknown_member(populated: str) -> None:
    before = snapshot(populated)
    shown = kl("member", "show", "ghost", "--db", populated)
    assert shown.exit_code == 3
    assert shown.stderr == "error unknown_member (member_id): no member 'ghost' in this program\n"
    spent = kl("spend", "ghost", "beans", "1", "--reason", "r", "--db", populated)
    assert spent.exit_code == 3
    assert spent.stderr == "error unknown_member (member_id): no member 'ghost' in this program\n"
    assert snapshot(populated) == before


def test_a_broken_program_file_leaves_the_database_as_it_was(populated: str, tmp_path: Path) -> None:
    broken = tmp_path / "coffee.yaml"
    broken.write_text(COFFEE.read_text().replace("threshold: 16", "threshold: many"))
    before = snapshot(populated)
    result = kl("init", broken, "--db", populated)
    assert result.exit_code == 2
    assert result.stderr == f"error: {broken}: 1 problem\n  ladder.tiers[2].threshold: must be a valid decimal\n"
    assert snapshot(populated) == before
    assert kl("init", COFFEE, "--db", populated).stdout == "unchanged: Coffee Club (coffee) version 1 is active\n"


def test_a_broken_program_file_does_not_even_create_the_schema(blank_url: str, tmp_path: Path) -> None:
    broken = tmp_path / "coffee.yaml"
    broken.write_text(COFFEE.read_text().replace("kind: growth", "kind: money"))
    result = kl("init", broken, "--db", blank_url)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {broken}: 1 problem\n  currencies[0].kind: must be ")
    assert table_names(blank_url) == []


def test_missing_files(ready: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"
    before = snapshot(ready)
    ingest = kl("ingest", missing, "--db", ready)
    assert ingest.exit_code == 2
    assert ingest.stderr == f"error invalid_input (file): no such file: {missing}\n"
    init = kl("init", tmp_path / "nowhere.yaml", "--db", ready)
    assert init.exit_code == 2
    assert init.stderr == f"error invalid_input (file): no such file: {tmp_path / 'nowhere.yaml'}\n"
    validate = kl("validate", tmp_path / "nowhere.yaml")
    assert validate.exit_code == 2
    assert validate.stderr.startswith(f"error: {tmp_path / 'nowhere.yaml'}: 1 problem\n  cannot read ")
    assert snapshot(ready) == before


def test_an_unknown_format_is_refused(ready: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "e.jsonl", [purchase("g1", "m1", 100)])
    result = kl("ingest", path, "--format", "xml", "--db", ready)
    assert result.exit_code == 2
    assert result.stderr == "error invalid_input (format): unknown format 'xml': use jsonl or csv\n"
    assert snapshot(ready)["events"] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["member", "show", "m1"],
        ["spend", "m1", "beans", "1", "--reason", "r"],
        ["adjust", "m1", "beans", "1", "--reason", "r", "--actor", "a"],
        ["reverse", "e1"],
        ["explain", "e1"],
        ["expire"],
        ["verify"],
        ["ingest", "EVENTS"],
    ],
)
def test_commands_on_an_uninitialised_database_say_to_run_init(blank_url: str, tmp_path: Path, args: list[str]) -> None:
    events_file = write_jsonl(tmp_path / "e.jsonl", [purchase("g1", "m1", 100)])
    args = [str(events_file) if a == "EVENTS" else a for a in args]
    result = kl(*args, "--db", blank_url)
    assert result.exit_code == 1
    assert result.stderr == (
        f"error not_initialised: {database_url(blank_url)} has no kinloop data; run `kinloop init PROGRAM.yaml` first\n"
    )
    assert table_names(blank_url) == []


def test_a_migrated_database_without_a_program_says_to_run_init(db_url: str) -> None:
    result = kl("member", "show", "m1", "--db", db_url)
    assert result.exit_code == 3
    assert result.stderr == "error unknown_program: no program is loaded; run `kinloop init PROGRAM.yaml` first\n"


def test_an_unreachable_database_is_a_database_error() -> None:
    result = kl("verify", "--db", "postgresql://nobody@127.0.0.1:1/nothing")
    assert result.exit_code == 4
    assert result.stderr.startswith("error database_unavailable: ")
    assert "\n" not in result.stderr.rstrip("\n")


def test_an_unsupported_database_url() -> None:
    result = kl("verify", "--db", "mysql://x@localhost/y")
    assert result.exit_code == 2
    assert result.stderr == "error invalid_input (db): unsupported database 'mysql': use sqlite or postgresql\n"


# --- resumability --------------------------------------------------------------------------


# June 2025 without its Wednesdays: coffee's member day would double the Beans.
JUNE_DAYS = [d for d in range(1, 29) if date(2025, 6, d).weekday() != 2]


def many_purchases(first: int, last: int) -> list[dict[str, Any]]:
    """Purchases numbered first..last for 20 members; purchase n is worth n Beans and n // 5 Stars."""
    return [
        purchase(f"p{n:05d}", f"m{n % 20:02d}", n * 10, f"2025-06-{JUNE_DAYS[n % 24]:02d}T09:{n % 60:02d}:00Z")
        for n in range(first, last + 1)
    ]


def totals(url: str) -> dict[str, int]:
    engine = connect(url)
    with engine.connect() as conn:
        rows = conn.execute(select(balances.c.currency, func.sum(balances.c.available)).group_by(balances.c.currency))
        out = {"beans": 0, "stars": 0} | {cur: int(total) for cur, total in rows}
    engine.dispose()
    return out


def expected_totals(first: int, last: int) -> dict[str, int]:
    return {"beans": sum(range(first, last + 1)), "stars": sum(n // 5 for n in range(first, last + 1))}


def test_appending_to_a_large_file_resumes_after_the_last_ingested_line(ready: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "big.jsonl", many_purchases(1, 700))
    assert path.stat().st_size > 65536
    first = kl("ingest", path, "--db", ready, "--batch-size", "250")
    assert first.exit_code == 0, first.output
    assert summary_counts(first.stdout) == (700, 0, 0)

    write_jsonl(path, many_purchases(701, 705), append=True)
    second = kl("ingest", path, "--db", ready)
    assert second.exit_code == 0, second.output
    assert summary_counts(second.stdout) == (5, 0, 0)
    assert "(resumed after line 700)" in second.stdout
    assert snapshot(ready)["events"] == 705
    assert totals(ready) == expected_totals(1, 705)

    third = kl("ingest", path, "--db", ready)
    assert summary_counts(third.stdout) == (0, 0, 0)
    assert "(resumed after line 705)" in third.stdout
    assert totals(ready) == expected_totals(1, 705)
    assert kl("verify", "--db", ready).exit_code == 0


def test_appending_to_a_small_file_resumes_after_the_last_ingested_line(ready: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "small.jsonl", many_purchases(1, 3))
    assert summary_counts(kl("ingest", path, "--db", ready).stdout) == (3, 0, 0)
    write_jsonl(path, many_purchases(4, 5), append=True)

    second = kl("ingest", path, "--db", ready)

    assert second.exit_code == 0
    assert totals(ready) == expected_totals(1, 5)  # never double-counted ...
    assert snapshot(ready)["events"] == 5
    # ... and only the new lines are read again.
    assert summary_counts(second.stdout) == (2, 0, 0), second.stdout
    assert "(resumed after line 3)" in second.stdout


def test_a_grown_csv_file_resumes_after_the_last_ingested_row(ready: str, tmp_path: Path) -> None:
    # 1 to 5 May 2025: no Wednesday, so no member day doubling the Beans.
    rows = [f"p{n},m{n % 3},purchase,2025-05-0{n}T09:00:00Z,{n * 10}" for n in range(1, 6)]
    path = write_csv(tmp_path / "events.csv", rows[:3])
    assert summary_counts(kl("ingest", path, "--db", ready).stdout) == (3, 0, 0)
    with path.open("a") as f:
        f.write("".join(row + "\n" for row in rows[3:]))

    second = kl("ingest", path, "--db", ready)

    assert second.exit_code == 0, second.output
    assert summary_counts(second.stdout) == (2, 0, 0)
    assert "(resumed after line 4)" in second.stdout  # the header is line 1
    assert totals(ready) == expected_totals(1, 5)


def test_a_replaced_or_shortened_file_is_read_from_the_top(ready: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", many_purchases(1, 3))
    assert summary_counts(kl("ingest", path, "--db", ready).stdout) == (3, 0, 0)

    write_jsonl(path, many_purchases(11, 14))  # another file under the same name
    replaced = kl("ingest", path, "--db", ready)
    assert replaced.exit_code == 0, replaced.output
    assert summary_counts(replaced.stdout) == (4, 0, 0)
    assert "resumed" not in replaced.stdout

    write_jsonl(path, many_purchases(11, 12))  # cut short
    shortened = kl("ingest", path, "--db", ready)
    assert summary_counts(shortened.stdout) == (0, 2, 0)
    assert "resumed" not in shortened.stdout
    assert totals(ready) == {
        "beans": expected_totals(1, 3)["beans"] + expected_totals(11, 14)["beans"],
        "stars": expected_totals(1, 3)["stars"] + expected_totals(11, 14)["stars"],
    }


def test_a_rejected_line_is_reported_once_and_a_grown_file_resumes_after_it(ready: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", [*many_purchases(1, 1), "{oops", *many_purchases(2, 2)])
    first = kl("ingest", path, "--db", ready)
    assert first.exit_code == 2
    assert first.stderr == "line 2: not valid JSON: Expecting property name enclosed in double quotes at column 2\n"
    write_jsonl(path, many_purchases(3, 3), append=True)

    second = kl("ingest", path, "--db", ready)

    assert second.exit_code == 0, second.output
    assert summary_counts(second.stdout) == (1, 0, 0)
    assert "(resumed after line 3)" in second.stdout
    assert totals(ready) == expected_totals(1, 3)


def test_a_partly_written_last_line_is_read_again_once_it_is_complete(ready: str, tmp_path: Path) -> None:
    """A writer appending to the file may be caught mid-line: that line is not there yet, and
    must be read (whole) by the next run rather than skipped."""
    p1, p2, p3, p4 = (json.dumps(e) for e in many_purchases(1, 4))
    path = tmp_path / "events.jsonl"
    path.write_text(p1 + "\n" + p2 + "\n" + p3[:40])
    first = kl("ingest", path, "--db", ready)
    assert summary_counts(first.stdout)[0] == 2
    with path.open("a") as f:
        f.write(p3[40:] + "\n" + p4 + "\n")

    second = kl("ingest", path, "--db", ready)

    assert second.stderr == ""
    assert second.exit_code == 0, second.output
    assert summary_counts(second.stdout) == (2, 0, 0)
    assert snapshot(ready)["events"] == 4
    assert totals(ready) == expected_totals(1, 4)


def test_an_interrupted_ingestion_resumes_after_the_last_committed_batch(
    ready: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", many_purchases(1, 7))
    real = ingest_svc.ingest
    calls = 0

    def dies_on_the_third_batch(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_svc, "ingest", dies_on_the_third_batch)
    cut = kl("ingest", path, "--db", ready, "--batch-size", "2")
    assert cut.exit_code == 70
    assert cut.stderr.startswith("internal error: RuntimeError: power cut\n")
    assert snapshot(ready)["events"] == 4  # two batches of two committed, the third rolled back whole
    assert totals(ready) == expected_totals(1, 4)

    monkeypatch.setattr(ingest_svc, "ingest", real)
    resumed = kl("ingest", path, "--db", ready, "--batch-size", "2")
    assert resumed.exit_code == 0, resumed.output
    assert summary_counts(resumed.stdout) == (3, 0, 0)
    assert "(resumed after line 4)" in resumed.stdout
    assert snapshot(ready)["events"] == 7
    assert totals(ready) == expected_totals(1, 7)
    assert kl("verify", "--db", ready).exit_code == 0


def test_a_batch_that_loses_a_race_is_retried_and_counted_once(
    ready: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jsonl(tmp_path / "events.jsonl", many_purchases(1, 7))
    real = ingest_svc.ingest
    calls = 0

    def deadlocks_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        result = real(*args, **kwargs)  # the batch's rows are written ...
        if calls == 2:
            raise OperationalError("INSERT ...", {}, Exception("deadlock detected"))  # ... then rolled back
        return result

    monkeypatch.setattr(ingest_svc, "ingest", deadlocks_once)
    result = kl("ingest", path, "--db", ready, "--batch-size", "2")
    assert result.exit_code == 0, result.output
    assert summary_counts(result.stdout) == (7, 0, 0)
    assert calls == 5  # four batches, the second one twice
    assert snapshot(ready)["events"] == 7
    assert totals(ready) == expected_totals(1, 7)
    assert kl("verify", "--db", ready).exit_code == 0
