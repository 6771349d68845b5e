"""A small program with badges and tasks, shared by the badge and task tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from kinloop.program.loader import parse_program
from kinloop.services import programs
from kinloop.services.programs import LoadedProgram
from tests.conftest import NOW

FORUM = """
key: forum
name: Forum
timezone: Asia/Shanghai
currencies:
  - {key: growth, name: Growth, kind: growth}
  - {key: coins, name: Coins, unit: C, kind: points}
event_types:
  - key: answer
  - key: comment
    attributes: {long: {type: boolean, required: false}}
  - key: purchase
    attributes: {amount: decimal}
  - key: check_in
rules:
  - {key: answer_growth, event: answer, currency: growth, amount: 3}
ladder:
  currency: growth
  tiers:
    - {key: newbie, name: Newbie, threshold: 0}
    - {key: regular, name: Regular, threshold: 20}
badges:
  - key: helpful
    name: Helpful
    counter: counters.answer.lifetime
    levels:
      - {key: bronze, name: Bronze, threshold: 2}
      - {key: silver, name: Silver, threshold: 3, reward: {currency: growth, amount: 15}}
      - {key: gold, name: Gold, criterion: "member.counters.answer.lifetime >= 5 && member.streaks.answer >= 2"}
  - key: chatty
    name: Chatty
    criterion: member.counters.comment.day >= 3
    reward: {currency: coins, amount: 7}
  - key: big_spender
    name: Big spender
    criterion: member.totals.purchase.amount.month >= 100.5
  - key: first_buy
    name: First purchase
    criterion: member.firsts.purchase
  - key: regular
    name: Regular
    counter: streaks.check_in
    levels:
      - {key: week, name: Week, threshold: 7}
tasks:
  - key: daily_comments
    name: Comment 3 times today
    every: day
    event: comment
    target: 3
    reward: {currency: coins, amount: 5}
  - key: long_comment
    name: Write a long comment this week
    every: week
    event: comment
    condition: has(event.long) && event.long
    reward: {currency: coins, amount: 2}
  - key: first_purchase
    name: Make a first purchase
    event: purchase
    condition: event.amount >= 10
    reward: {currency: coins, amount: 10}
  - key: complete_profile
    name: Complete your profile
    profile: [display_name, phone]
    reward: {currency: coins, amount: 3}
"""


def load(engine: Engine, text: str = FORUM) -> LoadedProgram:
    with engine.begin() as conn:
        return programs.load(conn, parse_program(text), text, now=NOW).loaded


def event(event_id: str, type_: str, at: str, member: str = "m1", **attributes: Any) -> dict[str, Any]:
    return {"event_id": event_id, "member_id": member, "type": type_, "occurred_at": at, "attributes": attributes}
