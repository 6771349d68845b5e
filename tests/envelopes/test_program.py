"""The program file's `envelopes` section: optional, and every problem named with its path."""

from __future__ import annotations

import pytest

from kinloop.domain.errors import ProgramInvalid
from kinloop.program.loader import compile_program, parse_program
from tests.conftest import EXAMPLES

BASE = """
key: p
name: P
currencies:
  - {key: stars, name: Stars, kind: growth}
  - {key: beans, name: Beans, kind: points, transferable: {transferable}}
event_types:
  - {key: purchase}
"""


def compile_with(section: str, *, transferable: str = "true") -> object:
    return compile_program(parse_program(BASE.replace("{transferable}", transferable) + section))


def issues(section: str, *, transferable: str = "true") -> list[str]:
    with pytest.raises(ProgramInvalid) as caught:
        compile_with(section, transferable=transferable)
    return [str(i) for i in caught.value.issues]


def test_a_program_without_the_section_sends_no_envelopes() -> None:
    assert compile_with("").envelopes is None  # type: ignore[attr-defined]


def test_the_coffee_section_compiles_to_minor_units() -> None:
    source = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")
    policy = compile_program(parse_program(source)).envelopes
    assert policy is not None
    assert (policy.currency, policy.daily_limit, policy.birthday, policy.daily[0].amount) == ("beans", 200, 888, 5)


def test_problems_are_named_with_their_path() -> None:
    assert issues("envelopes: {currency: beans}", transferable="false") == [
        "envelopes.currency: 'beans' is not transferable: mark it `transferable: true`"
    ]
    assert issues("envelopes: {currency: stars}") == [
        "envelopes.currency: 'stars' is a growth currency; envelopes move points"
    ]
    assert issues(
        "envelopes: {currency: beans, daily: [{key: d, name: D, amount: 1, condition: 'event.amount > 1'}]}"
    ) == ["envelopes.daily[0].condition: a daily envelope's condition sees `member` only"]
