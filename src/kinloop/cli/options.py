"""Options shared by every command module (kept apart from app.py so sub-apps can import them)."""

from __future__ import annotations

from typing import Annotated

import typer

DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL [env: KINLOOP_DATABASE_URL; default sqlite:///kinloop.db]")
]
ProgramOption = Annotated[str | None, typer.Option("--program", help="Program key (needed when several are loaded).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
