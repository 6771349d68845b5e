"""Operators of the console and what each role may do (pure: no storage, no web)."""

from __future__ import annotations

from typing import Literal

Role = Literal["owner", "operator", "viewer"]
ROLES: tuple[Role, ...] = ("owner", "operator", "viewer")

# `view` reads the console; `act` changes members and orders (adjustments, order states,
# draws, envelopes); `configure` changes the program (versions, campaigns, the mall);
# `administer` manages who gets in (operators, API keys, webhooks).
Action = Literal["view", "act", "configure", "administer"]
ACTIONS: tuple[Action, ...] = ("view", "act", "configure", "administer")

_ALLOWED: dict[Role, frozenset[Action]] = {
    "owner": frozenset(ACTIONS),
    "operator": frozenset({"view", "act", "configure"}),
    "viewer": frozenset({"view"}),
}

MIN_PASSWORD = 10
MAX_PASSWORD = 200


def may(role: Role, action: Action) -> bool:
    """Whether an operator with `role` may do `action`."""
    return action in _ALLOWED[role]


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD:
        return f"must be at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"must be at most {MAX_PASSWORD} characters"
    if password.strip() != password:
        return "must not start or end with a space"
    return None
