"""Signed links into the member portal (placeholder until the portal lands)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection

from kinloop.services import keys


def portal_link(
    conn: Connection,
    program_id: int,
    member_id: str,
    base_url: str,
    *,
    now: datetime,
    ttl: timedelta = keys.MAX_TOKEN_TTL,
) -> str:
    """A link that opens the portal as `member_id` until `ttl` passes."""
    token, _ = keys.mint_token(keys.token_secret(conn, now), program_id, member_id, now=now, ttl=ttl)
    return f"{base_url}/portal/enter?token={token}"
