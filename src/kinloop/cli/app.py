"""`kinloop`: program as code, the ledger and its jobs, from the command line."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kinloop.bench import EVENT_RATE, PACED_SECONDS, READ_RATE
from kinloop.cli import checkin as checkin_cli
from kinloop.cli import draws as outlets_cli
from kinloop.cli import envelopes as envelopes_cli
from kinloop.cli import leaderboard as leaderboard_cli
from kinloop.cli import portal as portal_cli
from kinloop.cli import privileges as privileges_cli
from kinloop.cli import tasks as tasks_cli
from kinloop.cli import users as users_cli
from kinloop.cli.campaigns import campaigns_app
from kinloop.cli.common import (
    DbOption,
    JsonOption,
    ProgramOption,
    drain,
    open_engine,
    out,
    print_json,
    print_totals,
    program_transaction,
)
from kinloop.cli.errors import EXIT_INVALID, EXIT_REFUSED, err, handled
from kinloop.cli.tiers import parse_moment, tiers_app
from kinloop.clock import utcnow
from kinloop.domain.errors import InvalidInput
from kinloop.program.loader import compile_program, parse_program, program_schema
from kinloop.services import explain as explain_svc
from kinloop.services import keys as key_svc
from kinloop.services import ledger, member_view, programs
from kinloop.services import verify as verify_svc
from kinloop.store import migrate
from kinloop.store.db import connect, database_url

app = typer.Typer(
    name="kinloop",
    help="Membership growth engine: program as code, an exact points ledger, tiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
member_app = typer.Typer(help="Look at members.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmarks, each reported against the raw ceiling of the same store.", no_args_is_help=True
)
app.add_typer(member_app, name="member")
member_app.command("link")(portal_cli.member_link)
app.add_typer(bench_app, name="bench")
keys_app = typer.Typer(help="API keys for the HTTP API.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(tasks_cli.app, name="tasks")
app.add_typer(campaigns_app, name="campaigns")
app.add_typer(tiers_app, name="tiers")
app.add_typer(outlets_cli.draws_app, name="draws")
app.add_typer(outlets_cli.goals_app, name="goals")
app.add_typer(envelopes_cli.app, name="envelopes")
app.add_typer(privileges_cli.app, name="privileges")
app.add_typer(users_cli.app, name="users")
app.command("leaderboard")(leaderboard_cli.leaderboard)
app.command("check-in")(checkin_cli.check_in)
# soft_wrap: piped output and logs get whole lines, not lines cut at 80 columns.


@app.command()
@handled
def schema() -> None:
    """Print the JSON Schema of program files (for editor completion)."""
    print_json(program_schema())


@app.command()
@handled
def validate(file: Annotated[Path, typer.Argument(help="Program YAML file.")]) -> None:
    """Check a program file and print every problem with its path."""
    from kinloop.program.loader import load_program

    program, _ = load_program(file)
    out.print(
        f"[green]ok[/] {file}: program [bold]{program.name}[/] ({program.key}): "
        f"{len(program.currencies)} currencies, {len(program.event_types)} event types, "
        f"{len(program.rules)} rules, {len(program.ladder.tiers) if program.ladder else 0} tiers"
    )


@app.command()
@handled
def init(
    file: Annotated[Path, typer.Argument(help="Program YAML file.")],
    db: DbOption = None,
    keep_tiers_until: Annotated[
        str | None,
        typer.Option("--keep-tiers-until", help="On a new version: members keep their current tier until this date."),
    ] = None,
) -> None:
    """Create or migrate the database and load the program (a changed file adds a version, and every
    member's tier is re-evaluated under its ladder)."""
    if not file.is_file():
        raise InvalidInput(f"no such file: {file}", field="file")
    text = file.read_text(encoding="utf-8")
    spec = parse_program(text, source=str(file))
    compile_program(spec, source=str(file))
    engine = connect(db)
    migrate.upgrade(engine)
    keep = parse_moment(keep_tiers_until, "keep_tiers_until") if keep_tiers_until else None
    with engine.begin() as conn:
        from kinloop.services import tiers as tier_svc

        now = utcnow()
        before = tier_svc.active_program(conn, spec.key)
        result = programs.load(conn, spec, text, now=now)
        moved = tier_svc.on_activation(conn, before, result.loaded, now=now, keep_until=keep)
        if moved is not None:
            out.print(f"tiers re-evaluated: {moved.changed:,} of {moved.members:,} members moved")
    lp = result.loaded
    if result.new_version:
        what = "loaded" if result.created_program else "new version"
        out.print(f"[green]{what}[/]: {lp.program.name} ({lp.program.key}) version {lp.version} in {database_url(db)}")
    else:
        out.print(f"[green]unchanged[/]: {lp.program.name} ({lp.program.key}) version {lp.version} is active")


@app.command()
@handled
def ingest(
    file: Annotated[Path, typer.Argument(help="JSON Lines (.jsonl) or CSV (.csv) file of events.")],
    db: DbOption = None,
    program: ProgramOption = None,
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl or csv (default: by file extension).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10000)] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Ingest events: batched, resumable after interruption, idempotent on event_id."""
    from kinloop.importer import ingest_file

    engine = open_engine(db)
    total = _count_lines(file)
    with Progress(
        TextColumn("ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json or not err.is_terminal,
    ) as bar:
        task = bar.add_task("ingest", total=total)
        summary = ingest_file(
            engine,
            file,
            program_key=program,
            fmt=fmt,
            batch_size=batch_size,
            on_progress=lambda line, _n: bar.update(task, completed=line),
        )
    with engine.connect() as conn:
        lp = programs.active(conn, program)
    awarded = {k: lp.program.currencies[k].display(v) for k, v in summary.awarded.items()}
    if as_json:
        print_json(
            {
                "lines": summary.lines,
                "resumed_after_line": summary.skipped,
                "accepted": summary.accepted,
                "duplicates": summary.duplicates,
                "rejected": len(summary.rejected),
                "errors": [
                    {"line": n, "code": e.code, "field": e.field, "detail": e.detail} for n, e in summary.rejected
                ],
                "awarded": summary.awarded,
                "seconds": round(summary.seconds, 3),
            }
        )
    else:
        for number, error in summary.rejected[:50]:
            where = f" ({error.field})" if error.field else ""
            err.print(f"[red]line {number}[/]{where}: ", end="")
            err.print(error.detail, markup=False)
        if len(summary.rejected) > 50:
            err.print(f"... and {len(summary.rejected) - 50} more rejected lines")
        resumed = f" (resumed after line {summary.skipped})" if summary.skipped else ""
        rate = summary.accepted / summary.seconds if summary.seconds else 0
        out.print(
            f"{summary.accepted} accepted, {summary.duplicates} duplicates, "
            f"{len(summary.rejected)} rejected{resumed} in {summary.seconds:.1f}s ({rate:,.0f} events/s)"
        )
        if awarded:
            out.print("awarded: " + ", ".join(awarded.values()))
    if summary.rejected:
        raise typer.Exit(EXIT_INVALID)


def _count_lines(path: Path) -> int | None:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return None


@member_app.command("show")
@handled
def member_show(
    member_id: str, db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False
) -> None:
    """A member's balances, tier, progress to the next tier and soon-expiring points."""
    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        view = member_view.show(conn, lp, member_id, now=utcnow())
    if as_json:
        print_json(view.as_json())
        return
    tier = view.tier["name"] if view.tier else "no tier"
    out.print(f"[bold]{view.member_id}[/] — {tier}")
    for key, text in view.display.items():
        out.print(f"  {lp.program.currencies[key].name}: {text}")
    if view.next_tier:
        out.print(f"  {view.next_tier['text']}")
    status = view.tier_status or {}
    for part in ("keep", "paid", "manual", "kept"):
        if status.get(part):
            out.print(f"  {status[part]['text']}")
    for item in view.expiring:
        out.print(f"  [yellow]{item['text']}[/]")
    for badge in view.badges:
        earned = ", ".join(e["name"] for e in badge["earned"]) or f"{badge['name']}: not yet"
        nxt = badge["next"] and badge["next"].get("text")
        out.print(f"  badge {earned}" + (f"; {nxt}" if nxt else ""), markup=False)
    for task in view.tasks:
        out.print(f"  task {task['text']}", markup=False)
    if view.checkin:
        out.print(f"  Check-in: {view.checkin['text']}; next {view.checkin['next_reward']['text']}")
    for running in (view.campaigns or {}).get("active", []):
        out.print(f"  [green]{running['text']}[/]")
    for held in view.privileges:
        out.print(f"  {held['name']}: {held['text']}", markup=False)


def _print_movement(result: ledger.Movement, lp: programs.LoadedProgram, verb: str, as_json: bool) -> None:
    if as_json:
        print_json(result.as_json(lp.program))
        return
    c = lp.program.currencies[result.currency]
    again = " (already done; nothing changed)" if result.replayed else ""
    out.print(f"{verb} {c.display(result.amount)} for {result.member_id}; balance {c.display(result.balance)}{again}")


@app.command()
@handled
def spend(
    member_id: str,
    currency: str,
    amount: str,
    reason: Annotated[str, typer.Option("--reason", help="Why (shown in the member's history).")],
    key: Annotated[str | None, typer.Option("--id", help="Idempotency key: repeating it does nothing.")] = None,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Debit a member's available points (soonest-expiring first); refused when short."""
    with program_transaction(db, program) as (conn, lp):
        result = ledger.spend(conn, lp, member_id, currency, amount, reason=reason, key=key, now=utcnow(), actor="cli")
    _print_movement(result, lp, "spent", as_json)


@app.command()
@handled
def adjust(
    member_id: str,
    currency: str,
    amount: Annotated[str, typer.Argument(help="Positive to credit, negative to debit (e.g. -- -5).")],
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the audit log.")],
    actor: Annotated[str, typer.Option("--actor", help="Who makes the change.")],
    key: Annotated[str | None, typer.Option("--id", help="Idempotency key.")] = None,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Manual credit or debit with actor and reason, audited."""
    with program_transaction(db, program) as (conn, lp):
        result = ledger.adjust(conn, lp, member_id, currency, amount, reason=reason, actor=actor, key=key, now=utcnow())
    _print_movement(result, lp, "adjusted" if not amount.startswith("-") else "debited", as_json)


@app.command()
@handled
def reverse(
    event_id: str,
    amount: Annotated[str | None, typer.Option("--amount", help="Partial refund, in the event's amount.")] = None,
    reason: Annotated[str, typer.Option("--reason")] = "reversal",
    actor: Annotated[str, typer.Option("--actor")] = "cli",
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Claw back what an event awarded (all, or by a refunded amount) and re-evaluate the tier."""
    with program_transaction(db, program) as (conn, lp):
        result = ledger.reverse(
            conn,
            lp,
            event_id,
            amount=None if amount is None else Decimal_or_error(amount),
            reason=reason,
            actor=actor,
            now=utcnow(),
        )
    data = result.as_json(lp.program)
    if as_json:
        print_json(data)
        return
    taken = ", ".join(data["text"].values()) or "nothing"
    out.print(f"reversed {event_id}: took back {taken}")
    if data["unrecovered_text"]:
        out.print(
            "[yellow]not recoverable (already spent; balance may not go negative):[/] "
            + ", ".join(data["unrecovered_text"].values())
        )
    if result.tier:
        out.print(f"tier: {result.tier[0]} → {result.tier[1]}")


def Decimal_or_error(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise InvalidInput(f"{text!r} is not a number", field="amount") from None
    return value


@app.command()
@handled
def expire(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Expire due lots; safe to run as often as you like (each lot expires exactly once)."""
    lp, totals = drain(db, program, ledger.expire, now=utcnow())
    print_totals(lp, "expired", totals, as_json)


@app.command()
@handled
def release(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Release pending amounts whose holding period is over."""
    lp, totals = drain(db, program, ledger.release, now=utcnow())
    print_totals(lp, "released", totals, as_json)


@app.command()
@handled
def verify(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Recompute every balance from the entries and every lot from its movements."""
    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        report = verify_svc.verify(conn, lp)
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "members": report.members,
                "entries": report.entries,
                "lots": report.lots,
                "mismatches": [m.as_json() for m in report.mismatches],
            }
        )
    elif report.ok:
        out.print(
            f"[green]ok[/]: {report.members} members, {report.entries} entries, {report.lots} lots; "
            "every balance equals the sum of its entries and every lot its movements"
        )
    else:
        table = Table("check", "member", "currency", "expected", "found", "detail", title="mismatches")
        for m in report.mismatches:
            table.add_row(m.check, m.member_id, m.currency, str(m.expected), str(m.found), m.detail)
        out.print(table)
    if not report.ok:
        raise typer.Exit(EXIT_REFUSED)


@app.command()
@handled
def explain(event_id: str, db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Why an event earned what it earned: every rule, matched or not, and the entries since."""
    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        x = explain_svc.explain(conn, lp, event_id)
    if as_json:
        print_json(x.as_json())
        return
    out.print(
        f"[bold]{x.event_id}[/]: {x.type} by {x.member_id} at {x.occurred_at.isoformat()} "
        f"(received {x.received_at.isoformat()}, program version {x.version})"
    )
    out.print(f"attributes: {json.dumps(x.attributes, ensure_ascii=False)}", markup=False)
    table = Table("rule", "result", "why", title="rules")
    for r in x.rules:
        colour = "green" if r["status"] in ("awarded", "capped") else "yellow"
        table.add_row(r["name"], f"[{colour}]{r['status']}[/]", r["detail"])
    out.print(table)
    if x.entries:
        entries = Table("entry", "kind", "amount", "from → to", "reason", title="ledger entries")
        for e in x.entries:
            entries.add_row(str(e["entry_id"]), e["kind"], e["text"], f"{e['from']} → {e['to']}", e["reason"] or "")
        out.print(entries)
    if x.tier:
        out.print(f"tier: {x.tier[0]} → {x.tier[1]}")


@app.command()
@handled
def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64)] = 1,
) -> None:
    """Serve the HTTP API (docs at /docs, schema at /openapi.json)."""
    import os

    from kinloop.api import serve as server

    open_engine(db)  # refuse to start on a database that is not initialised
    os.environ["KINLOOP_DATABASE_URL"] = database_url(db)
    err.print(f"kinloop API on http://{host}:{port} (docs: http://{host}:{port}/docs), {workers} worker(s)")
    server.run(host=host, port=port, workers=workers)


@keys_app.command("create")
@handled
def keys_create(
    scope: Annotated[str, typer.Option("--scope", help="admin, ingest or read")],
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "",
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key; it is printed once and only its hash is kept."""
    with program_transaction(db, program) as (conn, lp):
        key, info = key_svc.create(conn, lp.program_id, scope, name=name, now=utcnow())
    if as_json:
        print_json({"key": key, **info.as_json()})
        return
    out.print(f"{info.scope} key for {lp.program.key} (prefix {info.prefix}); store it now, it is not shown again:")
    out.print(key, markup=False)


@keys_app.command("list")
@handled
def keys_list(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """List the program's keys (prefixes only)."""
    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        found = key_svc.listing(conn, lp.program_id)
    if as_json:
        print_json([k.as_json() for k in found])
        return
    table = Table("prefix", "scope", "name", "created", "revoked", title=f"API keys of {lp.program.key}")
    for k in found:
        table.add_row(
            k.prefix,
            k.scope,
            k.name,
            k.created_at.isoformat(timespec="seconds"),
            k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke")
@handled
def keys_revoke(prefix: str, db: DbOption = None, program: ProgramOption = None) -> None:
    """Revoke a key by its prefix; it stops working within seconds on every worker."""
    with program_transaction(db, program) as (conn, lp):
        info = key_svc.revoke(conn, lp.program_id, prefix, now=utcnow())
    out.print(f"revoked {info.prefix} ({info.scope}, {info.name})")


@app.command()
@handled
def remind(
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="Points expiring within this many days.")] = 30,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a points.expiring webhook message per member and expiry date, once however often it runs."""
    from kinloop.services.reminders import remind_expiring

    with program_transaction(db, program) as (conn, lp):
        result = remind_expiring(conn, lp, days=days, now=utcnow())
    if as_json:
        print_json(result.as_json())
    elif not result.subscribed:
        out.print("no webhook subscription wants points.expiring; nothing written")
    else:
        out.print(f"reminders: {result.written} written, {result.already} already sent")


@app.command()
@handled
def worker(
    db: DbOption = None,
    once: Annotated[bool, typer.Option("--once", help="Deliver what is due now, then stop.")] = False,
    poll: Annotated[float, typer.Option("--poll", min=0.1, max=60, help="Seconds to wait when nothing is due.")] = 1.0,
    housekeeping: Annotated[
        float,
        typer.Option(
            "--housekeeping",
            min=0,
            max=3600,
            help="Every this many seconds, release timed-out holds and due pending amounts, expire due lots and"
            " close envelopes past their window (0: never).",
        ),
    ] = 60.0,
    stats_every: Annotated[
        float, typer.Option("--stats-every", min=0, help="Refresh the dashboard's rollups every N seconds (0: never).")
    ] = 60.0,
    as_json: JsonOption = False,
) -> None:
    """Deliver webhook messages (signed, retried with backoff, at least once) and do the
    time-driven housekeeping, and keep the dashboard's rollups fresh (stop with Ctrl-C)."""
    import signal
    import threading

    from kinloop.services import housekeeping as chores
    from kinloop.services.webhooks import Counts, Worker

    engine = open_engine(db)

    def tidy() -> None:
        done = chores.run_due(engine, now=utcnow())
        if done and as_json:
            print_json({"housekeeping": done})
        elif done:
            out.print(f"housekeeping: {done}")

    with Worker(engine) as job:
        if once:
            if housekeeping:
                tidy()
            totals = job.drain()
            if as_json:
                print_json(totals.as_json())
            else:
                out.print(f"delivered {totals.delivered}, retrying {totals.retrying}, failed {totals.failed}")
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        _dashboard.refresh_in_background(engine, stop, stats_every)

        def chores_loop() -> None:
            while not stop.wait(housekeeping):
                try:
                    tidy()
                except Exception as exc:  # a failed round is retried next time; the worker goes on
                    err.print(f"housekeeping failed: {type(exc).__name__}: {exc}", markup=False)

        if housekeeping:
            threading.Thread(target=chores_loop, name="housekeeping", daemon=True).start()

        def report(done: Counts) -> None:
            if as_json:
                print_json(done.as_json())
            else:
                out.print(f"delivered {done.delivered}, retrying {done.retrying}, failed {done.failed}")

        err.print(f"kinloop worker on {database_url(db)}; Ctrl-C stops it")
        try:
            job.run(stop, poll=poll, on_round=report)
        except KeyboardInterrupt:
            stop.set()


@app.command()
@handled
def demo(
    db: DbOption = None,
    members_n: Annotated[int, typer.Option("--members", min=1, max=1_000_000)] = 2000,
    days: Annotated[int, typer.Option("--days", min=1, max=3650)] = 90,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Stop after the summary.")] = False,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
) -> None:
    """Create a demo database with the coffee program and a realistic population, summarise it,
    then serve the console, the member portal and the HTTP API on 127.0.0.1 (until Ctrl-C)
    unless --no-serve."""
    from kinloop.demo import DEMO_URL, run_demo, web_access

    run_demo(db, members_n=members_n, days=days, seed=seed, console=out, progress_console=err)
    if no_serve:
        return
    url = database_url(db) if db else DEMO_URL
    engine = open_engine(url)
    base = f"http://127.0.0.1:{port}"
    with engine.begin() as conn:
        lp = programs.active(conn)
        key, _ = key_svc.create(conn, lp.program_id, "admin", name="demo", now=utcnow())
    access = web_access(engine, base, now=utcnow())
    out.print(f"\n[bold]Console:[/] {access.console_url}  (sign in as {access.username!r}, password below)")
    out.print(access.password, markup=False)
    out.print("[bold]Member portal[/] (links valid 24 hours):")
    for member_id, link in access.portal_links:
        out.print(f"  {member_id}: ", end="")
        out.print(link, markup=False)
    out.print(f"[bold]API:[/] {base} (interactive docs: {base}/docs), demo admin key:")
    out.print(key, markup=False)
    out.print(f"try:  curl -H 'Authorization: Bearer {key}' {base}/v1/members/member-00002", markup=False)
    out.print("[dim]Ctrl-C stops the server.[/]")
    serve(db=url, host="127.0.0.1", port=port, workers=1)


@bench_app.command("ingest")
@handled
def bench_ingest(
    events: Annotated[int, typer.Option("--events", min=100, max=10_000_000)] = 100_000,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL (default: a temporary SQLite file). The benchmark drops and recreates its tables.",
        ),
    ] = None,
    single: Annotated[bool, typer.Option("--single", help="One event per transaction.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10000)] = 1000,
    growth: Annotated[
        bool,
        typer.Option(
            "--growth",
            help="Also run the same events through examples/bench_growth.yaml (every growth feature on) "
            "and report growth_ratio: its rate over the plain program's.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Ingest N generated events and compare with plain inserts of the same rows."""
    from kinloop.bench import run_ingest_bench

    result = run_ingest_bench(
        db,
        events=events,
        single=single,
        batch_size=batch_size,
        growth=growth,
        progress_console=None if as_json else err,
    )
    if as_json:
        print_json(result)
        return
    table = Table("figure", "value", title=f"kinloop bench ingest ({result['mode']}, {result['database']})")
    for k, v in result.items():
        table.add_row(k, f"{v:,.3f}" if isinstance(v, float) else str(v))
    out.print(table)


@bench_app.command("tiers")
@handled
def bench_tiers(
    members_n: Annotated[int, typer.Option("--members", min=100, max=10_000_000)] = 100_000,
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL (default: a temporary SQLite file). The benchmark drops and recreates its tables.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Build N members with a year of qualification history in bulk, then time a full tier
    evaluation (a year-end review), beside a plain scan of the same rows."""
    from kinloop.bench_tiers import run_tiers_bench

    result = run_tiers_bench(db, members=members_n, progress_console=None if as_json else err)
    if as_json:
        print_json(result)
        return
    table = Table("figure", "value", title=f"kinloop bench tiers ({result['database']})")
    for k, v in result.items():
        table.add_row(k, f"{v:,.3f}" if isinstance(v, float) else str(v))
    out.print(table)


@bench_app.command("api")
@handled
def bench_api(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL (default: a temporary SQLite file). On PostgreSQL the benchmark works in a "
            "schema of its own, kinloop_bench_api, dropped afterwards.",
        ),
    ] = None,
    events: Annotated[int, typer.Option("--events", min=10, max=1_000_000, help="Single-event POSTs.")] = 20_000,
    reads: Annotated[int, typer.Option("--reads", min=10, max=1_000_000, help="Member GETs.")] = 20_000,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="`kinloop serve` workers.")] = 1,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=256, help="Keep-alive connections, one request in flight each.")
    ] = 16,
    duration: Annotated[float, typer.Option("--duration", min=1, max=3600, help="Time limit per phase (s).")] = 60.0,
    event_rate: Annotated[
        float, typer.Option("--event-rate", min=0, max=100_000, help="Events a second of the paced phase (0: none).")
    ] = EVENT_RATE,
    read_rate: Annotated[
        float, typer.Option("--read-rate", min=0, max=100_000, help="Reads a second of the paced phase (0: none).")
    ] = READ_RATE,
    paced_seconds: Annotated[
        float, typer.Option("--paced-seconds", min=0.1, max=600, help="Length of each paced phase (s).")
    ] = PACED_SECONDS,
    as_json: JsonOption = False,
) -> None:
    """Serve a fresh database on 127.0.0.1 and load it from another process: single-event posts,
    member reads, and /healthz as the HTTP stack's ceiling, then posts and reads at a fixed rate."""
    from kinloop.bench import run_api_bench

    result = run_api_bench(
        db,
        events=events,
        reads=reads,
        workers=workers,
        concurrency=concurrency,
        time_limit=duration,
        event_rate=event_rate,
        read_rate=read_rate,
        paced_seconds=paced_seconds,
        progress_console=None if as_json else err,
    )
    if as_json:
        print_json(result)
        return
    title = f"kinloop bench api ({result['database']}, {workers} worker(s), {concurrency} in flight)"
    table = Table("figure", "value", title=title)
    for k, v in result.items():
        if k != "phases":
            table.add_row(k, f"{v:,.3f}" if isinstance(v, float) else str(v))
    out.print(table)


@bench_app.command("outlets")
@handled
def bench_outlets(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL (default: a temporary SQLite file). On PostgreSQL the benchmark works in a "
            "schema of its own, kinloop_bench_outlets, dropped afterwards.",
        ),
    ] = None,
    processes: Annotated[int, typer.Option("--processes", min=1, max=64)] = 4,
    members_n: Annotated[int, typer.Option("--members", min=1, max=1_000_000)] = 200,
    duration: Annotated[float, typer.Option("--duration", min=1, max=3600, help="Time limit per phase (s).")] = 10.0,
    attempts: Annotated[
        int, typer.Option("--attempts", min=1, help="At most this many per process and phase.")
    ] = 100_000,
    as_json: JsonOption = False,
) -> None:
    """Concurrent redemptions and holds from several processes against limited stock and
    balances, then an audit: `oversold` and `double_spent` must be 0."""
    from kinloop.bench_outlets import run_outlets_bench

    result = run_outlets_bench(
        db,
        processes=processes,
        members=members_n,
        seconds=duration,
        attempts=attempts,
        progress_console=None if as_json else err,
    )
    if as_json:
        print_json(result)
        return
    table = Table("figure", "value", title=f"kinloop bench outlets ({result['database']}, {processes} processes)")
    for k, v in result.items():
        table.add_row(k, f"{v:,.1f}" if isinstance(v, float) else str(v))
    out.print(table)


# The mall's commands live in a module of their own, which builds on the helpers above.
from kinloop.cli import mall as _mall  # noqa: E402

_mall.register(app)
from kinloop.cli import dashboard as _dashboard  # noqa: E402

_dashboard.register(app, bench_app)


def main() -> None:
    app()
