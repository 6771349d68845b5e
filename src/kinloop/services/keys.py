"""API keys and member tokens: who may call the HTTP API, for which program, with what scope.

A key is `kl_<prefix>_<secret>`; only a SHA-256 of the secret is stored (the secret is 32
random bytes, so a slow password hash would add nothing but latency to every request).
A member token is a short-lived, HMAC-signed statement "this is member M of program P until
T", minted by an admin or ingest key for a member's own app.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, select, update

from kinloop.domain.errors import InvalidInput, KinloopError, NotFound
from kinloop.store.db import insert_ignore
from kinloop.store.tables import api_keys, app_secrets

Scope = Literal["admin", "ingest", "read"]
SCOPES: tuple[Scope, ...] = ("admin", "ingest", "read")
TOKEN_TTL = timedelta(minutes=15)
MAX_TOKEN_TTL = timedelta(hours=24)


class Unauthorized(KinloopError):
    """No credentials, or credentials that are not (or no longer) valid."""

    code = "unauthorized"


class Forbidden(KinloopError):
    """Valid credentials whose scope does not allow this action."""

    code = "forbidden"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key with a scope, or a member holding a token."""

    program_id: int
    scope: Scope | Literal["member"]
    name: str
    key_id: int | None = None
    member_id: str | None = None
    rate_limit: int | None = None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: int
    prefix: str
    scope: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prefix": self.prefix,
            "scope": self.scope,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create(conn: Connection, program_id: int, scope: str, *, name: str, now: datetime) -> tuple[str, KeyInfo]:
    """Create a key; the full key is returned once and never stored."""
    if scope not in SCOPES:
        raise InvalidInput(f"unknown scope {scope!r}: use admin, ingest or read", field="scope")
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    key_id = conn.execute(
        api_keys.insert()
        .values(
            program_id=program_id,
            prefix=prefix,
            secret_hash=_hash(secret),
            scope=scope,
            name=name or f"{scope} key",
            created_at=now,
        )
        .returning(api_keys.c.id)
    ).scalar_one()
    return f"kl_{prefix}_{secret}", KeyInfo(key_id, prefix, scope, name or f"{scope} key", now, None)


def listing(conn: Connection, program_id: int) -> list[KeyInfo]:
    rows = conn.execute(
        select(
            api_keys.c.id,
            api_keys.c.prefix,
            api_keys.c.scope,
            api_keys.c.name,
            api_keys.c.created_at,
            api_keys.c.revoked_at,
        )
        .where(api_keys.c.program_id == program_id)
        .order_by(api_keys.c.id)
    )
    return [KeyInfo(*r) for r in rows]


def revoke(conn: Connection, program_id: int, prefix: str, *, now: datetime) -> KeyInfo:
    """Revoke a key by its prefix (or its full text); revoking twice changes nothing."""
    prefix = prefix.split("_")[1] if prefix.startswith("kl_") and prefix.count("_") >= 2 else prefix
    conn.execute(
        update(api_keys)
        .where(api_keys.c.program_id == program_id, api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    for info in listing(conn, program_id):
        if info.prefix == prefix:
            return info
    raise NotFound(f"no key with prefix {prefix!r} in this program", field="prefix")


def authenticate(conn: Connection, key: str) -> Principal:
    """The principal behind a key, or Unauthorized."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "kl":
        raise Unauthorized("not a kinloop key")
    row = conn.execute(
        select(
            api_keys.c.id,
            api_keys.c.program_id,
            api_keys.c.secret_hash,
            api_keys.c.scope,
            api_keys.c.name,
            api_keys.c.rate_limit,
            api_keys.c.revoked_at,
        ).where(api_keys.c.prefix == parts[1])
    ).first()
    if row is None or not hmac.compare_digest(row.secret_hash, _hash(parts[2])):
        raise Unauthorized("unknown key")
    if row.revoked_at is not None:
        raise Unauthorized("this key has been revoked")
    return Principal(row.program_id, row.scope, row.name, key_id=row.id, rate_limit=row.rate_limit)


def token_secret(conn: Connection, now: datetime) -> bytes:
    """The signing secret for member tokens, shared by every worker through the database."""
    insert_ignore(
        conn, app_secrets, [{"name": "member_tokens", "value": secrets.token_hex(32), "created_at": now}], ("name",)
    )
    value = conn.execute(select(app_secrets.c.value).where(app_secrets.c.name == "member_tokens")).scalar_one()
    return bytes.fromhex(value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_token(
    secret: bytes, program_id: int, member_id: str, *, now: datetime, ttl: timedelta = TOKEN_TTL
) -> tuple[str, datetime]:
    """A signed token for one member of one program, valid for `ttl`."""
    if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise InvalidInput(f"a token lives between 1 second and {MAX_TOKEN_TTL}", field="ttl_seconds")
    expires = now + ttl
    body = _b64(
        json.dumps({"p": program_id, "m": member_id, "exp": int(expires.timestamp())}, separators=(",", ":")).encode()
    )
    sig = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    return f"klm_{body}.{sig}", expires


def read_token(secret: bytes, token: str, *, now: datetime) -> Principal:
    """The member a token speaks for, or Unauthorized (bad signature, expired)."""
    try:
        body, sig = token.removeprefix("klm_").split(".", 1)
        good = hmac.compare_digest(_unb64(sig), hmac.new(secret, body.encode(), hashlib.sha256).digest())
        claims = json.loads(_unb64(body)) if good else None
    except (ValueError, json.JSONDecodeError):
        raise Unauthorized("malformed member token") from None
    if not isinstance(claims, dict):
        raise Unauthorized("member token signature does not match")
    if claims.get("exp", 0) < now.timestamp():
        raise Unauthorized("member token has expired")
    return Principal(int(claims["p"]), "member", f"member {claims['m']}", member_id=str(claims["m"]))
