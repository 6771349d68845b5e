"""Errors are translated to messages and exit codes here, once, for every command."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from kinloop.domain.errors import IdempotencyConflict, InvalidInput, KinloopError, NotFound, ProgramInvalid

err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

EXIT_REFUSED = 1
EXIT_INVALID = 2
EXIT_NOT_FOUND = 3
EXIT_DATABASE = 4
EXIT_INTERNAL = 70


def report(exc: KinloopError) -> int:
    """Print a domain error for a person and return the exit status it maps to."""
    if isinstance(exc, ProgramInvalid):
        err.print(
            f"[bold red]error:[/] {exc.source + ': ' if exc.source else ''}"
            f"{len(exc.issues)} problem{'s' if len(exc.issues) != 1 else ''}"
        )
        for issue in exc.issues:
            err.print(f"  {issue}", markup=False)
        return EXIT_INVALID
    where = f" ({exc.field})" if exc.field else ""
    err.print(f"[bold red]error[/] [dim]{exc.code}[/]{where}: ", end="")
    err.print(exc.detail, markup=False)
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, InvalidInput):
        return EXIT_INVALID
    return EXIT_REFUSED


def handled(fn: F) -> F:
    """Run a command so that no error reaches the user as a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KinloopError as exc:
            raise typer.Exit(report(exc)) from None
        except IntegrityError as exc:
            if "idempotency_key" in str(exc.orig):
                # Two writers raced with one key for different members; the loser lands here.
                conflict = IdempotencyConflict("this idempotency key was already used for another request", field="id")
                raise typer.Exit(report(conflict)) from None
            raise
        except OperationalError as exc:
            err.print("[bold red]error[/] [dim]database_unavailable[/]: ", end="")
            err.print(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc), markup=False)
            raise typer.Exit(EXIT_DATABASE) from None
        except DBAPIError as exc:
            if os.environ.get("KINLOOP_DEBUG"):
                raise
            err.print("[bold red]error[/] [dim]database_error[/]: ", end="")
            err.print(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc), markup=False)
            raise typer.Exit(EXIT_DATABASE) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # The last line of defence: a message, not a traceback.
            if os.environ.get("KINLOOP_DEBUG"):
                raise
            err.print(f"[bold red]internal error[/]: {type(exc).__name__}: ", end="")
            err.print(str(exc), markup=False)
            err.print("[dim]This is a bug in kinloop; run again with KINLOOP_DEBUG=1 for the traceback.[/]")
            print(file=sys.stderr)
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper  # type: ignore[return-value]
