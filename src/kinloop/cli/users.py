"""`kinloop users`: operator accounts of the console (owner, operator, viewer)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from kinloop.cli.common import DbOption, JsonOption, open_engine, out, print_json
from kinloop.cli.errors import handled
from kinloop.clock import utcnow
from kinloop.services import operators

app = typer.Typer(help="Operators of the web console.", no_args_is_help=True)


def _password(given: str | None) -> str:
    if given is not None:
        return given
    from_env = os.environ.get("KINLOOP_PASSWORD")
    if from_env:
        return from_env
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _as_json(op: operators.Operator) -> dict[str, object]:
    return {
        "username": op.username,
        "role": op.role,
        "created_at": op.created_at.isoformat(),
        "disabled_at": op.disabled_at.isoformat() if op.disabled_at else None,
    }


@app.command("create")
@handled
def create(
    username: Annotated[str, typer.Argument(help="Sign-in name (no spaces).")],
    role: Annotated[str, typer.Option("--role", help="owner, operator or viewer")] = "operator",
    password: Annotated[
        str | None,
        typer.Option("--password", help="Password (else $KINLOOP_PASSWORD, else asked for; at least 10 characters)."),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an operator; only a scrypt hash of the password is kept."""
    secret = _password(password)
    with open_engine(db).begin() as conn:
        op = operators.create(conn, username, role, secret, now=utcnow())
    if as_json:
        print_json(_as_json(op))
        return
    out.print(f"created {op.role} {op.username!r}; sign in at /console")


@app.command("list")
@handled
def listing(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the operators."""
    with open_engine(db).connect() as conn:
        found = operators.listing(conn)
    if as_json:
        print_json([_as_json(o) for o in found])
        return
    table = Table("username", "role", "created", "disabled", title="Operators")
    for o in found:
        disabled = o.disabled_at.isoformat(timespec="seconds") if o.disabled_at else ""
        table.add_row(o.username, o.role, o.created_at.isoformat(timespec="seconds"), disabled)
    out.print(table)


@app.command("disable")
@handled
def disable(username: str, db: DbOption = None) -> None:
    """Disable an operator; their sessions end at once."""
    with open_engine(db).begin() as conn:
        op = operators.disable(conn, username, now=utcnow())
    out.print(f"disabled {op.username!r}; their sessions have ended")
