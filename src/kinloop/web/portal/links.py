"""Signed links into the member portal: `kinloop demo` and `kinloop member link` print them."""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import quote

from sqlalchemy import Connection

from kinloop.services import keys, members

LINK_TTL = timedelta(hours=24)


def portal_link(
    conn: Connection, program_id: int, member_id: str, base_url: str, *, now: datetime, ttl: timedelta = LINK_TTL
) -> str:
    """A link that opens the portal as this member for `ttl` (at most 24 hours, as member
    tokens); UnknownMember when the program has no such member."""
    members.get(conn, program_id, member_id)
    token, _ = keys.mint_token(keys.token_secret(conn, now), program_id, member_id, now=now, ttl=ttl)
    return f"{base_url.rstrip('/')}/portal/enter?token={quote(token, safe='')}"
