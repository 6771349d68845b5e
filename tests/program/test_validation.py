"""A wrong program file names every problem at once, each with its path and its reason."""

from __future__ import annotations

import pytest

from kinloop.domain.errors import Issue, ProgramInvalid
from kinloop.program.loader import compile_program, parse_program, program_schema


def problems(text: str) -> list[Issue]:
    """The issues a program file is refused with (it must be refused)."""
    with pytest.raises(ProgramInvalid) as info:
        compile_program(parse_program(text))
    assert info.value.code == "program_invalid"
    return info.value.issues


def pairs(text: str) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in problems(text)]


HEADER = """
key: shop
name: Shop
currencies:
  - {key: stars, name: Stars, kind: growth}
  - {key: beans, name: Beans, kind: points}
event_types:
  - key: purchase
    attributes: {amount: decimal, channel: {type: string, required: false}}
  - key: check_in
"""


def test_a_valid_program_compiles() -> None:
    p = compile_program(parse_program(HEADER + "rules:\n  - {key: a, event: purchase, currency: beans, amount: 1}\n"))
    assert p.key == "shop"
    assert [r.key for r in p.rules] == ["a"]


# --- the schema -------------------------------------------------------------------------------


def test_every_schema_problem_is_reported_at_once_with_its_path() -> None:
    # given a file with four mistakes in different places, a bad cap among them at rules[3]
    text = """
key: shop
name: Shop
colour: red
currencies:
  - {key: stars, name: Stars, kind: growth, shiny: true}
event_types:
  - key: purchase
rules:
  - {key: a, event: purchase, currency: stars, amount: 1}
  - {key: b, event: purchase, currency: stars, amount: 0}
  - {key: c, event: purchase, currency: stars, amount: 1}
  - {key: d, event: purchase, currency: stars, amount: 1, cap: {per_day: 0}}
"""
    # then all four are reported, each at its path
    assert sorted(pairs(text)) == [
        ("colour", "unknown field"),
        ("currencies[0].shiny", "unknown field"),
        ("rules[1].amount", "must be greater than 0"),
        ("rules[3].cap.per_day", "must be greater than 0"),
    ]


def test_the_error_message_lists_every_problem_with_the_source() -> None:
    text = HEADER + "rules:\n  - {key: a, event: purchase, currency: beans, amount: 1, cap: {per_day: 0}, x: 1}\n"
    with pytest.raises(ProgramInvalid) as info:
        parse_program(text, source="shop.yaml")
    assert info.value.source == "shop.yaml"
    assert str(info.value) == (
        "shop.yaml: 2 problems\n  rules[0].cap.per_day: must be greater than 0\n  rules[0].x: unknown field"
    )


@pytest.mark.parametrize(
    ("fragment", "path", "message"),
    [
        (
            "key: Shop-1\nname: S\ncurrencies: [{key: p, name: P, kind: points}]\nevent_types: [{key: e}]",
            "key",
            "must be lower_snake_case (letters, digits, underscores; starting with a letter)",
        ),
        (
            "key: s\nname: S\ncurrencies: [{key: p, name: P, kind: silver}]\nevent_types: [{key: e}]",
            "currencies[0].kind",
            "must be 'growth' or 'points'",
        ),
        (
            "key: s\nname: S\ncurrencies: [{key: p, name: P, kind: points, decimals: 9}]\nevent_types: [{key: e}]",
            "currencies[0].decimals",
            "must be less than or equal to 6",
        ),
        (
            "key: s\nname: S\ncurrencies: [{key: p, name: P, kind: points, expiry: {days: 3, months: 1}}]\n"
            "event_types: [{key: e}]",
            "currencies[0].expiry",
            "give exactly one of never, days, months, end_of_month, end_of_year",
        ),
        (
            "key: s\nname: S\ncurrencies: [{key: p, name: P, kind: points}]\nevent_types: [{key: e}]\n"
            "rules: [{key: r, event: e, currency: p, amount: 1, rate: {per: 10}}]",
            "rules[0]",
            "give exactly one of amount (fixed) or rate (proportional)",
        ),
        (
            "key: s\nname: S\ncurrencies: [{key: p, name: P, kind: points}]\nevent_types: [{key: e}]\n"
            "rules: [{key: r, event: e, currency: p, amount: 1,"
            " valid_from: '2026-03-01T00:00:00Z', valid_to: '2026-02-01T00:00:00Z'}]",
            "rules[0]",
            "valid_from must be before valid_to",
        ),
        (
            "key: s\nname: S\ncurrencies: [{key: p, name: P, kind: points}]\nevent_types: [{key: e}]\n"
            "rules: [{event: e, currency: p, amount: 1}]",
            "rules[0].key",
            "is required",
        ),
        (
            "key: s\nname: S\ncurrencies: [{key: p, name: P, kind: points, pending: {until_event: e}}]\n"
            "event_types: [{key: e}]",
            "currencies[0].pending",
            "until_event needs key: the attribute that links the two events",
        ),
    ],
)
def test_schema_problems_name_the_field_and_the_reason(fragment: str, path: str, message: str) -> None:
    assert pairs(fragment) == [(path, message)]


def test_a_mistyped_attribute_is_one_problem_at_the_attribute() -> None:
    # given two wrong attribute declarations: an unknown type name, and a bad `required`
    text = """
key: s
name: S
currencies: [{key: p, name: P, kind: points}]
event_types:
  - key: purchase
    attributes: {amount: money, qty: {type: integer, required: maybe}}
"""
    # then one problem each, at the attribute (or its field), in the file's own terms
    assert pairs(text) == [
        (
            "event_types[0].attributes.amount",
            "unknown type 'money': use one of integer, decimal, string, boolean, timestamp",
        ),
        ("event_types[0].attributes.qty.required", "must be a valid boolean, unable to interpret input"),
    ]


# --- references, order and conditions ---------------------------------------------------------


def test_every_semantic_problem_is_reported_at_once() -> None:
    # given a file that parses but is wrong in eight ways
    text = """
key: shop
name: Shop
timezone: Mars/Olympus
currencies:
  - {key: stars, name: Stars, kind: growth, expiry: {days: 30}}
  - {key: beans, name: Beans, kind: points}
event_types:
  - key: purchase
    attributes: {amount: decimal, channel: string}
rules:
  - {key: a, event: purchase, currency: gems, amount: 1}
  - {key: b, event: refund, currency: beans, amount: 1}
  - {key: c, event: purchase, currency: beans, rate: {attribute: channel}}
  - {key: d, event: purchase, currency: beans, amount: 1, condition: "event.amount >"}
  - {key: e, event: purchase, currency: beans, amount: 1, condition: "event.channel + 1 > 2"}
ladder:
  currency: stars
  tiers:
    - {key: x, name: X, threshold: 10}
    - {key: y, name: Y, threshold: 5}
"""
    # when
    issues = problems(text)
    # then
    found = {(i.path, i.message) for i in issues if i.path != "rules[3].condition"}
    assert found == {
        ("timezone", "unknown time zone 'Mars/Olympus' (use an IANA name such as Europe/Paris)"),
        ("currencies[0].expiry", "growth currencies do not expire (only points currencies can)"),
        ("rules[0].currency", "unknown currency 'gems'"),
        ("rules[1].event", "unknown event type 'refund'"),
        ("rules[2].rate.attribute", "attribute 'channel' is a string, not a number"),
        ("rules[4].condition", "type error: Unsupported operation: string + int"),
        ("ladder.tiers[1].threshold", "must be greater than the tier before (10)"),
    }
    [syntax] = [i for i in issues if i.path == "rules[3].condition"]
    assert syntax.message.startswith("not a valid CEL expression: ")
    assert "Syntax error" in syntax.message
    assert len(issues) == 8


def rules_with(*rules: str) -> str:
    return HEADER + "rules:\n" + "".join(f"  - {r}\n" for r in rules)


@pytest.mark.parametrize(
    ("rule", "path", "message"),
    [
        ("{key: r, event: purchase, currency: gems, amount: 1}", "rules[0].currency", "unknown currency 'gems'"),
        ("{key: r, event: order, currency: beans, amount: 1}", "rules[0].event", "unknown event type 'order'"),
        (
            "{key: r, event: purchase, currency: beans, rate: {attribute: total}}",
            "rules[0].rate.attribute",
            "event type 'purchase' has no attribute 'total'",
        ),
        (
            "{key: r, event: purchase, currency: beans, rate: {attribute: channel}}",
            "rules[0].rate.attribute",
            "attribute 'channel' is a string, not a number",
        ),
        (
            "{key: r, event: purchase, currency: beans, amount: 0.5}",
            "rules[0].amount",
            "0.5 has more than 0 decimal places for beans",
        ),
        (
            "{key: r, event: purchase, currency: beans, amount: 1, cap: {per_day: 2.5}}",
            "rules[0].cap.per_day",
            "2.5 has more than 0 decimal places for beans",
        ),
        (
            "{key: r, event: purchase, currency: beans, amount: 1, limit: {per_week: 1.5}}",
            "rules[0].limit.per_week",
            "must be a whole number of awards",
        ),
        (
            "{key: r, event: purchase, currency: beans, amount: 1, condition: 'shop.open'}",
            "rules[0].condition",
            "unknown variable(s) shop: conditions see event and member",
        ),
        (
            "{key: r, event: purchase, currency: beans, amount: 1, condition: \"event.colour == 'red'\"}",
            "rules[0].condition",
            "refers to 'colour', which 'purchase' events and members do not have",
        ),
        (
            "{key: r, event: purchase, currency: beans, amount: 1, condition: 'event.amount + 1.0'}",
            "rules[0].condition",
            "must evaluate to true or false, not float",
        ),
        (
            "{key: r, event: purchase, currency: beans, amount: 1, condition: 'event.amount > \"10\"'}",
            "rules[0].condition",
            "type error: No such overload: the operation is not defined for the given operand types",
        ),
        (
            "{key: r, event: purchase, currency: beans, amount: 1, pending: {until_event: delivered, key: order}}",
            "rules[0].pending.until_event",
            "unknown event type 'delivered'",
        ),
    ],
)
def test_rule_problems_name_the_field_and_the_reason(rule: str, path: str, message: str) -> None:
    assert (path, message) in pairs(rules_with(rule))


def test_conditions_may_use_macros_and_member_state() -> None:
    p = compile_program(
        parse_program(
            rules_with(
                "{key: r, event: purchase, currency: beans, amount: 1,"
                " condition: \"[1, 2].all(x, x > 0) && member.tier == 'gold' && member.counters.check_in > 2\"}"
            )
        )
    )
    condition = p.rules[0].condition
    assert condition is not None
    assert condition.uses_member


def test_a_bad_condition_is_reported_at_its_rule_index() -> None:
    text = rules_with(
        "{key: a, event: purchase, currency: beans, amount: 1}",
        "{key: b, event: purchase, currency: beans, amount: 1, condition: 'event.amount > 1.0'}",
        "{key: c, event: purchase, currency: beans, amount: 1, condition: 'event.amount >'}",
    )
    assert [i.path for i in problems(text)] == ["rules[2].condition"]


def test_each_problem_is_reported_once() -> None:
    # given pending awards released by an event type that lacks the linking attribute, where
    # the release type is also the earning type (rule b), or two rules earn the currency (c)
    text = """
key: s
name: S
currencies:
  - {key: pts, name: Points, kind: points}
  - {key: held, name: Held, kind: points, pending: {until_event: delivered, key: order_id}}
event_types:
  - {key: purchase, attributes: {amount: decimal}}
  - {key: delivered, attributes: {order_id: string}}
rules:
  - {key: b, event: purchase, currency: pts, amount: 1, pending: {until_event: purchase, key: order_id}}
  - {key: c1, event: purchase, currency: held, amount: 1}
  - {key: c2, event: purchase, currency: held, amount: 2}
"""
    # then one issue for each place that is wrong
    assert sorted(pairs(text)) == [
        ("currencies[1].pending.key", "event type 'purchase' has no attribute 'order_id'"),
        ("rules[0].pending.key", "event type 'purchase' has no attribute 'order_id'"),
    ]


def test_duplicate_keys_are_reported_at_the_second_occurrence() -> None:
    text = """
key: s
name: S
currencies:
  - {key: p, name: P, kind: points}
  - {key: p, name: Q, kind: points}
event_types: [{key: e}, {key: e}]
rules:
  - {key: r, event: e, currency: p, amount: 1}
  - {key: r, event: e, currency: p, amount: 2}
"""
    assert pairs(text) == [
        ("currencies[1].key", "duplicate key 'p'"),
        ("event_types[1].key", "duplicate key 'e'"),
        ("rules[1].key", "duplicate key 'r'"),
    ]


def test_tier_thresholds_must_ascend() -> None:
    text = (
        HEADER
        + """
ladder:
  currency: stars
  tiers:
    - {key: a, name: A, threshold: 0}
    - {key: b, name: B, threshold: 100}
    - {key: c, name: C, threshold: 100}
    - {key: d, name: D, threshold: 50}
"""
    )
    assert pairs(text) == [
        ("ladder.tiers[2].threshold", "must be greater than the tier before (100)"),
        ("ladder.tiers[3].threshold", "must be greater than the tier before (100)"),
    ]


def test_a_ladder_must_qualify_on_a_growth_currency() -> None:
    text = HEADER + "ladder: {currency: beans, tiers: [{key: a, name: A, threshold: 0}]}\n"
    assert pairs(text) == [("ladder.currency", "'beans' is a points currency; tiers qualify on a growth currency")]
    text = HEADER + "ladder: {currency: gems, tiers: [{key: a, name: A, threshold: 0}]}\n"
    assert pairs(text) == [("ladder.currency", "unknown currency 'gems'")]


def test_growth_currencies_neither_expire_nor_transfer() -> None:
    text = """
key: s
name: S
currencies:
  - {key: xp, name: XP, kind: growth, expiry: {months: 12}, transferable: true}
  - {key: ok, name: OK, kind: growth, expiry: never}
event_types: [{key: e}]
"""
    assert pairs(text) == [
        ("currencies[0].transferable", "growth currencies cannot be transferred"),
        ("currencies[0].expiry", "growth currencies do not expire (only points currencies can)"),
    ]


def test_an_unknown_time_zone_is_refused() -> None:
    text = HEADER.replace("name: Shop", "name: Shop\ntimezone: Europe/Atlantis")
    assert pairs(text) == [("timezone", "unknown time zone 'Europe/Atlantis' (use an IANA name such as Europe/Paris)")]


def test_a_known_time_zone_is_used() -> None:
    p = compile_program(parse_program(HEADER.replace("name: Shop", "name: Shop\ntimezone: Asia/Shanghai")))
    assert str(p.timezone) == "Asia/Shanghai"


# --- not a program at all ---------------------------------------------------------------------


def test_invalid_yaml_names_the_line() -> None:
    with pytest.raises(ProgramInvalid) as info:
        parse_program("key: shop\nname: [unclosed\ncurrencies: []\n")
    [issue] = info.value.issues
    assert issue.path == ""
    assert issue.message == "not valid YAML: line 3, column 11: expected ',' or ']', but got ':'"


def test_invalid_indentation_names_the_line_and_column() -> None:
    with pytest.raises(ProgramInvalid) as info:
        parse_program("key: shop\n  name: Shop\n")
    assert [str(i) for i in info.value.issues] == [
        "not valid YAML: line 2, column 7: mapping values are not allowed here"
    ]


@pytest.mark.parametrize("text", ["- a\n- b\n", "", "just text\n"])
def test_a_program_must_be_a_mapping(text: str) -> None:
    with pytest.raises(ProgramInvalid) as info:
        parse_program(text)
    assert [str(i) for i in info.value.issues] == ["a program file must be a mapping at the top level"]


# --- the JSON Schema --------------------------------------------------------------------------


def test_program_schema_is_a_json_schema_of_program_files() -> None:
    schema = program_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "kinloop program"
    assert schema["type"] == "object"
    assert {"key", "name", "timezone", "currencies", "event_types", "rules", "ladder"} <= set(schema["properties"])
    assert set(schema["required"]) == {"key", "name", "currencies", "event_types"}
    assert schema["additionalProperties"] is False
    assert "RuleSpec" in schema["$defs"]
    assert "per_day" in schema["$defs"]["PeriodLimits"]["properties"]
