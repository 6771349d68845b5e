"""Operator accounts and console sessions, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from kinloop.domain.errors import InvalidInput
from kinloop.services import operators
from kinloop.services.operators import SESSION_TTL, NotAllowed, SignInFailed, UnknownOperator
from kinloop.store.tables import operator_sessions
from kinloop.store.tables import operators as operator_rows
from tests.conftest import NOW

PASSWORD = "a-long-enough-password"


def test_password_hash_checks_and_is_salted() -> None:
    one, two = operators.hash_password(PASSWORD), operators.hash_password(PASSWORD)
    assert one != two
    assert operators.check_password(PASSWORD, one)
    assert not operators.check_password(PASSWORD + "x", one)
    assert not operators.check_password(PASSWORD, "not-a-hash")


def test_only_a_hash_is_stored(engine: Engine) -> None:
    with engine.begin() as conn:
        operators.create(conn, "ana", "owner", PASSWORD, now=NOW)
        stored = conn.execute(select(operator_rows.c.password_hash)).scalar_one()
    assert PASSWORD not in stored
    assert stored.startswith("scrypt$")


@pytest.mark.parametrize(
    ("username", "role", "password", "field"),
    [
        ("has space", "owner", PASSWORD, "username"),
        ("", "owner", PASSWORD, "username"),
        ("bo", "admin", PASSWORD, "role"),
        ("bo", "viewer", "short", "password"),
    ],
)
def test_bad_accounts_are_refused(engine: Engine, username: str, role: str, password: str, field: str) -> None:
    with engine.begin() as conn, pytest.raises(InvalidInput) as caught:
        operators.create(conn, username, role, password, now=NOW)
    assert caught.value.field == field
    with engine.connect() as conn:
        assert operators.count(conn) == 0


def test_usernames_are_unique(engine: Engine) -> None:
    with engine.begin() as conn:
        operators.create(conn, "ana", "owner", PASSWORD, now=NOW)
        with pytest.raises(InvalidInput):
            operators.create(conn, "ana", "viewer", PASSWORD, now=NOW)


def test_session_lives_until_it_expires_or_ends(engine: Engine) -> None:
    with engine.begin() as conn:
        operators.create(conn, "ana", "operator", PASSWORD, now=NOW)
        opened = operators.sign_in(conn, "ana", PASSWORD, now=NOW)
    assert opened.token is not None
    with engine.begin() as conn:
        found = operators.session(conn, opened.token, now=NOW + SESSION_TTL - timedelta(seconds=1))
        assert found is not None
        assert found.operator.username == "ana"
        assert found.csrf_token == opened.csrf_token
        assert operators.session(conn, opened.token, now=NOW + SESSION_TTL) is None
        assert operators.session(conn, opened.token + "x", now=NOW) is None
        operators.sign_out(conn, opened.id, now=NOW)
        assert operators.session(conn, opened.token, now=NOW) is None
        # The cookie's token is never stored, only its hash.
        assert opened.token not in conn.execute(select(operator_sessions.c.token_hash)).scalars().all()


def test_sign_in_refusals_do_not_say_which_part_was_wrong(engine: Engine) -> None:
    with engine.begin() as conn:
        operators.create(conn, "ana", "viewer", PASSWORD, now=NOW)
    messages = set()
    for user, password in (("ana", "wrong-password-x"), ("nobody", PASSWORD)):
        with engine.begin() as conn, pytest.raises(SignInFailed) as caught:
            operators.sign_in(conn, user, password, now=NOW)
        messages.add(caught.value.detail)
    assert len(messages) == 1


def test_disabling_ends_sessions_and_blocks_sign_in(engine: Engine) -> None:
    with engine.begin() as conn:
        operators.create(conn, "ana", "operator", PASSWORD, now=NOW)
        opened = operators.sign_in(conn, "ana", PASSWORD, now=NOW)
        operators.disable(conn, "ana", now=NOW)
        assert opened.token is not None
        assert operators.session(conn, opened.token, now=NOW) is None
        with pytest.raises(SignInFailed):
            operators.sign_in(conn, "ana", PASSWORD, now=NOW)
        with pytest.raises(UnknownOperator):
            operators.disable(conn, "bob", now=NOW)


def test_a_session_refuses_what_its_role_may_not(engine: Engine) -> None:
    with engine.begin() as conn:
        operators.create(conn, "vi", "viewer", PASSWORD, now=NOW)
        opened = operators.sign_in(conn, "vi", PASSWORD, now=NOW)
    opened.require("view")
    with pytest.raises(NotAllowed):
        opened.require("act")
