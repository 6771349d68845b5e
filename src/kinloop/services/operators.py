"""Console operators: accounts with hashed passwords, and sign-in sessions with a CSRF token.

Passwords are hashed with scrypt (stdlib; memory-hard, parameters stored with each hash).
A session is a random token in an HttpOnly cookie; only its SHA-256 is stored, so a copy of
the table opens nothing, and signing out ends the session on the server, not just in the
browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Connection, func, select, update

from kinloop.domain.errors import InvalidInput, KinloopError, NotFound
from kinloop.domain.operators import ROLES, Action, Role, may, password_problem
from kinloop.services.keys import Forbidden
from kinloop.store.tables import operator_sessions, operators

SESSION_TTL = timedelta(hours=12)
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


class SignInFailed(KinloopError):
    """Unknown operator, wrong password or disabled account (deliberately not told apart)."""

    code = "sign_in_failed"


class NotAllowed(Forbidden):
    """The operator's role does not allow this."""

    code = "forbidden"


class UnknownOperator(NotFound):
    """No operator by that name."""

    code = "unknown_operator"


@dataclass(frozen=True, slots=True)
class Operator:
    id: int
    username: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None = None

    def may(self, action: Action) -> bool:
        """Whether this operator's role allows `action`."""
        return may(self.role, action)


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in operator; `token` is only known right after sign-in (it goes in the cookie)."""

    id: int
    operator: Operator
    csrf_token: str
    program_key: str | None
    expires_at: datetime
    token: str | None = None

    def require(self, action: Action) -> None:
        """Refuse unless the operator's role allows `action`."""
        if not self.operator.may(action):
            raise NotAllowed(f"a {self.operator.role} may not {action} (ask an owner)")


def hash_password(password: str) -> str:
    """A self-describing scrypt hash of `password`."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """Whether `password` matches a hash made by `hash_password` (in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
        )
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def _operator(row: object) -> Operator:
    return Operator(
        id=row.id,  # type: ignore[attr-defined]
        username=row.username,  # type: ignore[attr-defined]
        role=cast(Role, row.role),  # type: ignore[attr-defined]
        created_at=row.created_at,  # type: ignore[attr-defined]
        disabled_at=row.disabled_at,  # type: ignore[attr-defined]
    )


def _check_username(username: str) -> str:
    name = username.strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise InvalidInput("a username is 1 to 100 characters without spaces", field="username")
    return name


def create(conn: Connection, username: str, role: str, password: str, *, now: datetime) -> Operator:
    """A new operator account."""
    name = _check_username(username)
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    problem = password_problem(password)
    if problem:
        raise InvalidInput(f"password {problem}", field="password")
    if conn.execute(select(operators.c.id).where(operators.c.username == name)).first() is not None:
        raise InvalidInput(f"an operator {name!r} exists already", field="username")
    new_id = conn.execute(
        operators.insert().values(username=name, role=role, password_hash=hash_password(password), created_at=now)
    ).inserted_primary_key
    assert new_id is not None
    return Operator(id=new_id[0], username=name, role=role, created_at=now)


def listing(conn: Connection) -> list[Operator]:
    """Every operator, enabled or not, by name."""
    return [_operator(r) for r in conn.execute(select(operators).order_by(operators.c.username))]


def get(conn: Connection, username: str) -> Operator:
    """One operator by name."""
    row = conn.execute(select(operators).where(operators.c.username == username)).first()
    if row is None:
        raise UnknownOperator(f"no operator {username!r}", field="username")
    return _operator(row)


def disable(conn: Connection, username: str, *, now: datetime) -> Operator:
    """Disable an account and end its sessions at once."""
    op = get(conn, username)
    conn.execute(update(operators).where(operators.c.id == op.id).values(disabled_at=now))
    conn.execute(
        update(operator_sessions)
        .where(operator_sessions.c.operator_id == op.id, operator_sessions.c.ended_at.is_(None))
        .values(ended_at=now)
    )
    return get(conn, username)


def count(conn: Connection) -> int:
    """How many operators exist (the console offers to create the first one when none do)."""
    return int(conn.execute(select(func.count()).select_from(operators)).scalar_one())


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(
    conn: Connection, username: str, password: str, *, now: datetime, program_key: str | None = None
) -> Session:
    """Check a username and password and open a session."""
    row = conn.execute(select(operators).where(operators.c.username == username.strip())).first()
    # Hash even for an unknown name, so the reply time does not tell which names exist.
    stored = row.password_hash if row is not None else hash_password(secrets.token_hex(8))
    if not check_password(password, stored) or row is None or row.disabled_at is not None:
        raise SignInFailed("wrong username or password")
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    expires = now + SESSION_TTL
    new_id = conn.execute(
        operator_sessions.insert().values(
            token_hash=_token_hash(token),
            operator_id=row.id,
            csrf_token=csrf,
            program_key=program_key,
            created_at=now,
            expires_at=expires,
        )
    ).inserted_primary_key
    assert new_id is not None
    return Session(new_id[0], _operator(row), csrf, program_key, expires, token=token)


def session(conn: Connection, token: str, *, now: datetime) -> Session | None:
    """The live session a cookie's token opens, or None (unknown, ended, expired, disabled)."""
    row = conn.execute(
        select(operator_sessions, operators)
        .join(operators, operators.c.id == operator_sessions.c.operator_id)
        .where(operator_sessions.c.token_hash == _token_hash(token))
    ).first()
    if row is None or row.ended_at is not None or row.expires_at <= now or row.disabled_at is not None:
        return None
    op = Operator(id=row.operator_id, username=row.username, role=cast(Role, row.role), created_at=row.created_at_1)
    return Session(row.id, op, row.csrf_token, row.program_key, row.expires_at)


def choose_program(conn: Connection, session_id: int, program_key: str) -> None:
    """Remember which program this session works on."""
    conn.execute(update(operator_sessions).where(operator_sessions.c.id == session_id).values(program_key=program_key))


def sign_out(conn: Connection, session_id: int, *, now: datetime) -> None:
    """End a session on the server."""
    conn.execute(update(operator_sessions).where(operator_sessions.c.id == session_id).values(ended_at=now))
