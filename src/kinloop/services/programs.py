"""Programs and their versions: load a file, find the active version, compile it once."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select, update

from kinloop.domain.errors import UnknownProgram
from kinloop.domain.program import Program
from kinloop.program.loader import canonical_text, compile_program, parse_program
from kinloop.program.schema import ProgramFile
from kinloop.store.tables import program_versions, programs


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
