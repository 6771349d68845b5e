"""Roles and password rules of console operators."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kinloop.domain.operators import ACTIONS, MIN_PASSWORD, ROLES, may, password_problem


def test_roles_nest() -> None:
    # Whatever a viewer may, an operator may; whatever an operator may, an owner may.
    for action in ACTIONS:
        assert not may("viewer", action) or may("operator", action)
        assert not may("operator", action) or may("owner", action)


@pytest.mark.parametrize(("role", "allowed"), [("viewer", {"view"}), ("operator", {"view", "act", "configure"})])
def test_what_each_role_may(role: str, allowed: set[str]) -> None:
    assert {a for a in ACTIONS if may(role, a)} == allowed  # type: ignore[arg-type]


def test_only_owners_administer() -> None:
    assert [r for r in ROLES if may(r, "administer")] == ["owner"]


@given(st.text(min_size=MIN_PASSWORD, max_size=60).filter(lambda s: s.strip() == s))
def test_long_enough_passwords_are_accepted(password: str) -> None:
    assert password_problem(password) is None


@pytest.mark.parametrize("password", ["short", " leading-space-1", "trailing-space1 ", "x" * 201])
def test_weak_or_odd_passwords_are_refused(password: str) -> None:
    assert password_problem(password)
