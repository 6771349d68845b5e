"""Programs and their versions: load a file, find the active version, compile it once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, select, update

from kinloop.domain.errors import Issue, NotFound, ProgramInvalid, UnknownProgram
from kinloop.domain.program import Program
from kinloop.program.loader import canonical_text, compile_program, parse_program
from kinloop.program.schema import ProgramFile
from kinloop.services import audit
from kinloop.store.tables import audit_log, program_versions, programs

if TYPE_CHECKING:
    from kinloop.services.tiers import Evaluated


@dataclass(frozen=True, slots=True)
class LoadedProgram:
    """A program version as the engine runs it, with its database ids."""

    program_id: int
    version_id: int
    version: int
    program: Program


@dataclass(frozen=True, slots=True)
class LoadResult:
    loaded: LoadedProgram
    created_program: bool
    new_version: bool


_compiled: dict[tuple[int, str], Program] = {}


def _compile(version_id: int, digest: str, source: str) -> Program:
    # Compiling (CEL included) happens once per version and process.
    key = (version_id, digest)
    program = _compiled.get(key)
    if program is None:
        program = compile_program(parse_program(source))
        _compiled[key] = program
    return program


def load(conn: Connection, spec: ProgramFile, source: str, *, now: datetime, activate: bool = True) -> LoadResult:
    """Store a validated program file; a changed file becomes a new version, active unless told not."""
    program = compile_program(spec)
    digest = hashlib.sha256(canonical_text(spec).encode()).hexdigest()
    row = conn.execute(select(programs.c.id).where(programs.c.key == spec.key)).first()
    created = row is None
    if row is None:
        program_id = conn.execute(
            programs.insert().values(key=spec.key, name=spec.name, created_at=now).returning(programs.c.id)
        ).scalar_one()
    else:
        program_id = row.id
        conn.execute(programs.update().where(programs.c.id == program_id).values(name=spec.name))
    latest = conn.execute(
        select(program_versions.c.id, program_versions.c.version, program_versions.c.digest)
        .where(program_versions.c.program_id == program_id)
        .order_by(program_versions.c.version.desc())
        .limit(1)
    ).first()
    if latest is not None and latest.digest == digest:
        if not activate:
            return LoadResult(LoadedProgram(program_id, latest.id, latest.version, program), created, False)
        conn.execute(
            update(program_versions)
            .where(program_versions.c.program_id == program_id)
            .values(active=program_versions.c.id == latest.id)
        )
        _compiled[(latest.id, digest)] = program
        return LoadResult(LoadedProgram(program_id, latest.id, latest.version, program), created, False)
    number = (latest.version if latest else 0) + 1
    activate = activate or latest is None  # a program always has an active version
    if activate:
        conn.execute(update(program_versions).where(program_versions.c.program_id == program_id).values(active=False))
    version_id = conn.execute(
        program_versions.insert()
        .values(program_id=program_id, version=number, source=source, digest=digest, active=activate, created_at=now)
        .returning(program_versions.c.id)
    ).scalar_one()
    _compiled[(version_id, digest)] = program
    return LoadResult(LoadedProgram(program_id, version_id, number, program), created, True)


def active(conn: Connection, key: str | None = None) -> LoadedProgram:
    """The active version of the program `key`, or of the only program when there is one."""
    query = (
        select(
            programs.c.id,
            programs.c.key,
            program_versions.c.id.label("version_id"),
            program_versions.c.version,
            program_versions.c.digest,
            program_versions.c.source,
        )
        .join(program_versions, program_versions.c.program_id == programs.c.id)
        .where(program_versions.c.active.is_(True))
    )
    if key is not None:
        query = query.where(programs.c.key == key)
    rows = conn.execute(query).all()
    if not rows:
        if key is not None:
            raise UnknownProgram(f"no program {key!r} is loaded; run `kinloop init FILE` first")
        raise UnknownProgram("no program is loaded; run `kinloop init PROGRAM.yaml` first")
    if len(rows) > 1:
        keys = ", ".join(sorted(r.key for r in rows))
        raise UnknownProgram(f"several programs are loaded ({keys}); choose one with --program")
    r = rows[0]
    return LoadedProgram(r.id, r.version_id, r.version, _compile(r.version_id, r.digest, r.source))


def active_by_id(conn: Connection, program_id: int) -> LoadedProgram:
    """The active version of the program with this database id."""
    row = conn.execute(
        select(
            program_versions.c.id, program_versions.c.version, program_versions.c.digest, program_versions.c.source
        ).where(program_versions.c.program_id == program_id, program_versions.c.active.is_(True))
    ).first()
    if row is None:
        raise UnknownProgram("the program of this key has no active version")
    return LoadedProgram(program_id, row.id, row.version, _compile(row.id, row.digest, row.source))


def version_program(conn: Connection, version_id: int) -> Program:
    """The compiled program of any stored version (for explaining old events)."""
    r = conn.execute(
        select(program_versions.c.digest, program_versions.c.source).where(program_versions.c.id == version_id)
    ).one()
    return _compile(version_id, r.digest, r.source)


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(programs)).scalar() or 0)


# --- versions: listing, upload and activation (the API and the console share these) ---------


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a program file."""

    version: int
    active: bool
    digest: str
    created_at: datetime
    source: str

    def as_json(self, *, source: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "active": self.active,
            "digest": self.digest,
            "created_at": self.created_at.isoformat(),
        }
        if source:
            out["source"] = self.source
        return out


def versions(conn: Connection, program_id: int) -> list[Version]:
    """Every version of a program, oldest first."""
    v = program_versions.c
    rows = conn.execute(
        select(v.version, v.active, v.digest, v.created_at, v.source)
        .where(v.program_id == program_id)
        .order_by(v.version)
    )
    return [Version(r.version, r.active, r.digest, r.created_at, r.source) for r in rows]


def version(conn: Connection, program_id: int, number: int) -> Version:
    """One version of a program, or NotFound."""
    if not 0 < number < 2**31:  # the column's range: anything else names no version
        raise NotFound(f"no version {number} of this program", field="version")
    v = program_versions.c
    r = conn.execute(
        select(v.version, v.active, v.digest, v.created_at, v.source).where(
            v.program_id == program_id, v.version == number
        )
    ).first()
    if r is None:
        raise NotFound(f"no version {number} of this program", field="version")
    return Version(r.version, r.active, r.digest, r.created_at, r.source)


def activated_at(conn: Connection, program_id: int, number: int) -> datetime | None:
    """When a version was last made active by an activation or a roll back (None: when it was
    stored, by an upload or `kinloop init`)."""
    a = audit_log.c
    return conn.execute(
        select(a.at)
        .where(
            a.program_id == program_id,
            a.action.in_(("program.activate", "program.rollback")),
            a.target == f"version {number}",
        )
        .order_by(a.id.desc())
        .limit(1)
    ).scalar()


def check(loaded: LoadedProgram, source: str) -> ProgramFile:
    """A new version's file, validated as `kinloop validate` does and with the program's own
    key; ProgramInvalid lists every problem with its path."""
    spec = parse_program(source)
    compile_program(spec)
    if spec.key != loaded.program.key:
        raise ProgramInvalid([Issue("key", f"this key belongs to program {loaded.program.key!r}, not {spec.key!r}")])
    return spec


def upload(
    conn: Connection,
    loaded: LoadedProgram,
    source: str,
    *,
    now: datetime,
    actor: str,
    activate: bool = False,
    keep_until: datetime | None = None,
) -> LoadResult:
    """Store a new version of the program (checked first), active only when asked; audited."""
    spec = check(loaded, source)
    result = load(conn, spec, source, now=now, activate=activate)
    if activate:
        _after_activation(conn, loaded.program, result.loaded, now=now, keep_until=keep_until)
    audit.record(
        conn,
        loaded.program_id,
        actor=actor,
        action="program.upload",
        target=f"version {result.loaded.version}",
        details={"version": result.loaded.version, "new": result.new_version, "activated": activate},
        now=now,
    )
    return result


def activate(
    conn: Connection,
    program_id: int,
    number: int,
    *,
    now: datetime,
    actor: str,
    keep_until: datetime | None = None,
    reason: str | None = None,
    action: str = "program.activate",
) -> Evaluated | None:
    """Make a stored version the active one and re-evaluate tiers when the ladder changed;
    audited. Returns how many members moved (None when the ladder is unchanged)."""
    version(conn, program_id, number)  # or NotFound
    before = active_by_id(conn, program_id)
    conn.execute(
        update(program_versions)
        .where(program_versions.c.program_id == program_id)
        .values(active=program_versions.c.version == number)
    )
    moved = _after_activation(conn, before.program, active_by_id(conn, program_id), now=now, keep_until=keep_until)
    details: dict[str, Any] = {"from_version": before.version, "to_version": number}
    if moved is not None:
        details["tiers_moved"] = moved.changed
    audit.record(
        conn,
        program_id,
        actor=actor,
        action=action,
        target=f"version {number}",
        reason=reason,
        details=details,
        now=now,
    )
    return moved


def _after_activation(
    conn: Connection, before: Program, after: LoadedProgram, *, now: datetime, keep_until: datetime | None
) -> Evaluated | None:
    # Imported here: tiers reads members, which reads this module.
    from kinloop.services import tiers

    return tiers.on_activation(conn, before, after, now=now, keep_until=keep_until)
