"""`kinloop member link MEMBER_ID`: a signed link that opens the member portal as that member."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

import typer

from kinloop.cli.common import DbOption, ProgramOption, out, program_transaction
from kinloop.cli.errors import handled
from kinloop.clock import utcnow
from kinloop.domain.errors import InvalidInput

DEFAULT_BASE = "http://127.0.0.1:8000"


@handled
def member_link(
    member_id: Annotated[str, typer.Argument(help="The member the link opens the portal for.")],
    hours: Annotated[int, typer.Option("--hours", min=1, max=24, help="How long the link works.")] = 24,
    base: Annotated[str, typer.Option("--base", help="Where `kinloop serve` is reached.")] = DEFAULT_BASE,
    db: DbOption = None,
    program: ProgramOption = None,
) -> None:
    """Print a signed link to the member portal for MEMBER_ID (valid --hours, at most 24)."""
    from kinloop.web.portal.links import portal_link  # the web stack loads only for this command

    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"--base must be an http(s) URL such as {DEFAULT_BASE}, got {base!r}", field="base")
    with program_transaction(db, program) as (conn, lp):
        link = portal_link(conn, lp.program_id, member_id, base, now=utcnow(), ttl=timedelta(hours=hours))
    out.print(link, markup=False)
