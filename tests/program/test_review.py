"""The program review: problems at their YAML lines, the unified diff, the summary of changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinloop.domain.errors import Issue, ProgramInvalid
from kinloop.program.loader import compile_program, parse_program
from kinloop.program.review import Change, line_of, locate, path_steps, summary, unified

COFFEE = (Path(__file__).resolve().parents[2] / "src/kinloop/examples/coffee.yaml").read_text(encoding="utf-8")


def test_path_steps() -> None:
    assert path_steps("rules[3].cap.per_day") == ["rules", 3, "cap", "per_day"]
    assert path_steps("ladder.tiers[0]") == ["ladder", "tiers", 0]
    assert path_steps("key") == ["key"]


def test_a_problem_is_placed_on_its_line() -> None:
    broken = COFFEE.replace("per: 10, amount: 1}", "per: 0, amount: 1}")
    with pytest.raises(ProgramInvalid) as caught:
        compile_program(parse_program(broken))
    [located] = locate(broken, caught.value.issues)
    assert located.path == "rules[1].rate.per"
    assert broken.splitlines()[located.line - 1].strip() == "rate: {attribute: amount, per: 0, amount: 1}"  # type: ignore[operator]


def test_a_missing_field_is_placed_at_its_parent() -> None:
    text = "key: x\nname: X\ncurrencies:\n  - key: pts\n    kind: points\n"
    assert line_of(text, "currencies[0].name") == 4  # the item that lacks it
    assert line_of(text, "event_types") is None  # nothing written at all


def test_a_yaml_syntax_error_keeps_its_own_line() -> None:
    text = "key: x\nname: [unclosed\n"
    with pytest.raises(ProgramInvalid) as caught:
        parse_program(text)
    [located] = locate(text, caught.value.issues)
    assert located.path == ""
    assert located.line is not None
    assert located.line >= 2


@given(st.lists(st.integers(min_value=0, max_value=999), min_size=1, max_size=20))
def test_every_item_of_a_list_is_found_on_its_own_line(values: list[int]) -> None:
    text = "items:\n" + "".join(f"  - {{value: {v}}}\n" for v in values)
    for i in range(len(values)):
        assert line_of(text, f"items[{i}].value") == i + 2


def test_unified_diff_marks_what_was_added_and_removed() -> None:
    new = COFFEE.replace("per: 10, amount: 1}", "per: 10, amount: 2}")
    lines = unified(COFFEE, new, old_name="version 1", new_name="version 2")
    assert [line.text for line in lines[:2]] == ["--- version 1", "+++ version 2"]
    assert [line.text for line in lines if line.kind == "del"] == ["-    rate: {attribute: amount, per: 10, amount: 1}"]
    assert [line.text for line in lines if line.kind == "add"] == ["+    rate: {attribute: amount, per: 10, amount: 2}"]
    assert unified(COFFEE, COFFEE, old_name="a", new_name="b") == []


def test_summary_names_each_concept_that_changed() -> None:
    new_text = (
        COFFEE.replace("per: 10, amount: 1}", "per: 10, amount: 2}")
        .replace("{key: gold, name: Gold, threshold: 16}", "{key: gold, name: Gold, threshold: 20}")
        .replace("timezone: Europe/Paris", "timezone: Europe/Berlin")
    )
    new_text += "\nprivileges: []\n"
    new_text = new_text.replace(
        "  - key: check_in\n    description: The member opened the app and checked in.\n",
        "  - key: check_in\n    description: The member opened the app and checked in.\n  - key: review\n",
    )
    changes = summary(parse_program(COFFEE), parse_program(new_text))
    assert Change("timezone", None, "changed") in changes
    assert Change("event_types", "review", "added") in changes
    assert Change("rules", "purchase_beans", "changed", ("rate",)) in changes
    assert Change("ladder.tiers", "gold", "changed", ("threshold",)) in changes
    assert str(Change("rules", "daily_check_in", "changed", ("amount",))) == "rules 'daily_check_in' changed (amount)"


def test_summary_of_a_removed_rule_and_of_no_change() -> None:
    spec = parse_program(COFFEE)
    fewer = spec.model_copy(update={"rules": spec.rules[:1]})
    assert summary(spec, fewer) == [Change("rules", "purchase_beans", "removed")]
    assert summary(spec, spec) == []


def test_issues_without_a_path_or_line_stay_unplaced() -> None:
    [located] = locate("key: x\n", [Issue("", "a program file must be a mapping")])
    assert located.line is None
    assert str(located) == "a program file must be a mapping"
