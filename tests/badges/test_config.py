"""Bad badge and task sections are refused, every problem with its path."""

from __future__ import annotations

import pytest

from kinloop.domain.errors import ProgramInvalid
from kinloop.program.loader import canonical_text, compile_program, parse_program
from tests.badges.programs import FORUM
from tests.program.test_validation import HEADER


def pairs(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ProgramInvalid) as info:
        compile_program(parse_program(HEADER + text))
    return [(i.path, i.message) for i in info.value.issues]


def test_a_criterion_that_does_not_compile_is_refused_with_its_path() -> None:
    got = pairs("""
badges:
  - {key: ok, name: OK, criterion: member.firsts.purchase}
  - {key: broken, name: Broken, criterion: "member.counters.purchase.day >="}
""")
    assert len(got) == 1
    path, message = got[0]
    assert path == "badges[1].criterion"
    assert message.startswith("not a valid CEL expression")


def test_every_criterion_problem_is_reported_at_once() -> None:
    got = pairs("""
badges:
  - {key: a, name: A, criterion: "member.counters.purchse.lifetime >= 1"}
  - {key: b, name: B, criterion: "member.counters.purchase.year >= 1"}
  - {key: c, name: C, criterion: "member.tier == 'gold'"}
  - {key: d, name: D, criterion: "event.amount > 3"}
  - {key: e, name: E, criterion: "member.totals.purchase.channel.day >= 1"}
  - {key: f, name: F, criterion: "member.counters.purchase.day"}
  - key: g
    name: G
    counter: counters.check_in.lifetime
    levels:
      - {key: one, threshold: 1}
      - {key: two, criterion: "member.streaks.check_in >= 'x'"}
      - {key: one, threshold: 3}
""")
    paths = [p for p, _ in got]
    assert paths == [
        "badges[0].criterion",
        "badges[1].criterion",
        "badges[2].criterion",
        "badges[3].criterion",
        "badges[4].criterion",
        "badges[5].criterion",
        "badges[6].levels[2].key",
        "badges[6].levels[1].criterion",
    ]
    messages = dict(got)
    assert messages["badges[0].criterion"] == "unknown event type 'purchse'"
    assert "criteria read member.counters.<type>.<day|week|month|lifetime>" in messages["badges[1].criterion"]
    assert messages["badges[2].criterion"].startswith("refers to 'tier'")
    assert messages["badges[3].criterion"] == "unknown variable(s) event: criteria see member"
    assert "no number attribute 'channel'" in messages["badges[4].criterion"]
    assert messages["badges[5].criterion"] == "must evaluate to true or false, not int"


def test_shapes_are_checked_by_the_schema_with_paths() -> None:
    got = pairs("""
badges:
  - {key: a, name: A}
  - {key: b, name: B, criterion: member.firsts.purchase, levels: [{key: x, threshold: 1}]}
  - {key: c, name: C, levels: [{key: x}]}
  - {key: d, name: D, levels: [{key: x, threshold: 2}]}
  - {key: e, name: E, counter: balances.stars, levels: [{key: x, threshold: 2}]}
tasks:
  - {key: t1, name: T1}
  - {key: t2, name: T2, event: purchase, profile: [phone]}
  - {key: t3, name: T3, profile: [phone], every: day}
  - {key: t4, name: T4, event: purchase, target: 0}
""")
    paths = [p for p, _ in got]
    assert paths == [
        "badges[0]",
        "badges[1]",
        "badges[2].levels[0]",
        "tasks[0]",
        "tasks[1]",
        "tasks[2]",
        "tasks[3].target",
    ]
    # The schema comes first; the compiler's checks (d, e) follow once the shapes are right.
    got = pairs("""
badges:
  - {key: d, name: D, levels: [{key: x, threshold: 2}]}
  - {key: e, name: E, counter: balances.stars, levels: [{key: x, threshold: 2}]}
""")
    assert [p for p, _ in got] == ["badges[0].levels[0].threshold", "badges[1].counter"]


def test_task_references_are_checked() -> None:
    got = pairs("""
badges:
  - {key: a, name: A, criterion: member.firsts.purchase, reward: {currency: gold, amount: 1}}
  - {key: a, name: Again, criterion: member.firsts.purchase, reward: {currency: beans, amount: 1.5}}
tasks:
  - {key: t, name: T, event: purchases}
  - {key: u, name: U, event: purchase, condition: "event.colour == 'red'", reward: {currency: beans, amount: 1}}
""")
    assert got == [
        ("badges[1].key", "duplicate key 'a'"),
        ("badges[0].reward.currency", "unknown currency 'gold'"),
        ("badges[1].reward.amount", "1.5 has more than 0 decimal places for beans"),
        ("tasks[0].event", "unknown event type 'purchases'"),
        ("tasks[1].condition", "refers to 'colour', which 'purchase' events and members do not have"),
    ]


def test_a_program_without_badges_or_tasks_keeps_its_digest() -> None:
    spec = parse_program(HEADER)
    assert '"badges"' not in canonical_text(spec)
    assert '"tasks"' not in canonical_text(spec)
    p = compile_program(spec)
    assert p.badges == ()
    assert p.tasks == ()
    assert p.counters is None


def test_the_forum_program_compiles() -> None:
    p = compile_program(parse_program(FORUM))
    assert [b.key for b in p.badges] == ["helpful", "chatty", "big_spender", "first_buy", "regular"]
    assert [(t.key, t.every, t.target) for t in p.tasks] == [
        ("daily_comments", "day", 3),
        ("long_comment", "week", 1),
        ("first_purchase", "lifetime", 1),
        ("complete_profile", "lifetime", 1),
    ]
