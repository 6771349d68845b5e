"""Reading event files (JSON Lines or CSV) and ingesting them in resumable batches.

Each batch commits together with a checkpoint: the last line it covered, that line's end as a
byte offset, and a hash of the file up to there. A later run over the same file (or the same
file grown longer) resumes after that line; anything else starts from the top, where event
idempotency makes a re-read harmless.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError, OperationalError

from kinloop.clock import utcnow
from kinloop.domain.errors import InvalidInput, KinloopError
from kinloop.services import ingest as ingest_svc
from kinloop.services import programs
from kinloop.store.db import upsert
from kinloop.store.tables import ingest_checkpoints

CORE_FIELDS = ("event_id", "member_id", "type", "occurred_at")


@dataclass(slots=True)
class Line:
    number: int
    raw: dict[str, Any] | None
    error: KinloopError | None = None
    end: int = 0  # byte offset just after this line
    complete: bool = True  # ends with a newline (a writer may still be appending to it)


@dataclass(slots=True)
class Summary:
    lines: int = 0
    skipped: int = 0  # lines already ingested by an earlier, interrupted run
    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, KinloopError]] = field(default_factory=list)
    awarded: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def prefix_hash(path: Path, length: int) -> str:
    """SHA-256 of the first `length` bytes of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        left = length
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class _Physical:
    number: int
    text: str | None  # None: not valid UTF-8
    end: int
    complete: bool


def _physical_lines(f: BinaryIO, number: int) -> Iterator[_Physical]:
    """Each line from the current position, decoded strictly (a wrong byte is not guessed)."""
    offset = f.tell()
    for raw in f:
        offset += len(raw)
        number += 1
        try:
            text: str | None = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if number == 1 and text is not None:
            text = text.removeprefix("\ufeff")  # a byte-order mark, as spreadsheets save "CSV UTF-8"
        yield _Physical(number, text, offset, raw.endswith(b"\n"))


NOT_UTF8 = "line is not valid UTF-8"


def read_lines(path: Path, fmt: str, *, start_line: int = 0, start_offset: int = 0) -> Iterator[Line]:
    """Yield each line after `start_line` as a raw event or an error (CSV: the header is line 1)."""
    with path.open("rb") as f:
        if fmt == "csv":
            yield from _csv_lines(f, start_line, start_offset)
            return
        f.seek(start_offset)
        for p in _physical_lines(f, start_line):
            if p.text is None:
                yield Line(p.number, None, InvalidInput(NOT_UTF8), p.end, p.complete)
                continue
            text = p.text.rstrip("\r\n")
            if not text.strip():
                continue
            try:
                raw = json.loads(text, parse_float=Decimal)
            except json.JSONDecodeError as exc:
                error = InvalidInput(f"not valid JSON: {exc.msg} at column {exc.colno}")
                yield Line(p.number, None, error, p.end, p.complete)
                continue
            if not isinstance(raw, dict):
                yield Line(p.number, None, InvalidInput("each line must be a JSON object"), p.end, p.complete)
                continue
            yield Line(p.number, raw, None, p.end, p.complete)


def _csv_lines(f: BinaryIO, start_line: int, start_offset: int) -> Iterator[Line]:
    header_text = f.readline().decode("utf-8-sig", errors="replace")
    header = next(csv.reader([header_text]), None)
    if not header:
        return
    missing = [c for c in CORE_FIELDS if c not in header]
    if missing:
        yield Line(1, None, InvalidInput(f"CSV header lacks column(s): {', '.join(missing)}"), f.tell())
        return
    if start_line > 1:
        f.seek(start_offset)
    else:
        start_line = 1
    position: dict[str, Any] = {"end": f.tell(), "number": start_line, "complete": True, "bad": False}

    def texts() -> Iterator[str]:
        for p in _physical_lines(f, start_line):
            position.update(end=p.end, number=p.number, complete=p.complete, bad=p.text is None)
            yield p.text if p.text is not None else "\n"

    for cells in csv.reader(texts()):
        number, end, complete = position["number"], position["end"], position["complete"]
        if position["bad"]:
            yield Line(number, None, InvalidInput(NOT_UTF8), end, complete)
            continue
        if not any(cells):
            continue
        if len(cells) != len(header):
            yield Line(number, None, InvalidInput(f"expected {len(header)} cells, found {len(cells)}"), end, complete)
            continue
        row = dict(zip(header, cells, strict=True))
        raw: dict[str, Any] = {k: row.pop(k) for k in CORE_FIELDS}
        attrs: dict[str, Any] = {}
        text = row.pop("attributes", "")
        if text.strip():
            try:
                attrs.update(json.loads(text, parse_float=Decimal))
            except json.JSONDecodeError as exc:
                yield Line(number, None, InvalidInput(f"attributes column is not JSON: {exc.msg}"), end, complete)
                continue
        attrs.update({k: v for k, v in row.items() if v != ""})
        raw["attributes"] = attrs
        yield Line(number, raw, None, end, complete)


def ingest_file(
    engine: Engine,
    path: Path,
    *,
    program_key: str | None,
    fmt: str | None = None,
    batch_size: int = 1000,
    on_progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], Any] = utcnow,
) -> Summary:
    """Ingest a file batch by batch, resuming after the last line an earlier run committed."""
    if not path.is_file():
        raise InvalidInput(f"no such file: {path}", field="file")
    fmt = fmt or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    if fmt not in ("csv", "jsonl"):
        raise InvalidInput(f"unknown format {fmt!r}: use jsonl or csv", field="format")
    source = str(path.resolve())
    with engine.begin() as conn:
        loaded = programs.active(conn, program_key)
        row = conn.execute(
            select(ingest_checkpoints.c.fingerprint, ingest_checkpoints.c.line, ingest_checkpoints.c.byte_offset).where(
                ingest_checkpoints.c.program_id == loaded.program_id, ingest_checkpoints.c.source == source
            )
        ).first()
    start_line = start_offset = 0
    if (
        row is not None
        and path.stat().st_size >= row.byte_offset
        and prefix_hash(path, row.byte_offset) == row.fingerprint
    ):
        start_line, start_offset = row.line, row.byte_offset
    summary = Summary(skipped=start_line)
    started = time.perf_counter()
    batch: list[Line] = []
    # The checkpoint never passes a line without its newline: a writer may still be adding to
    # it, and the next run must read it again whole.
    covered: Line | None = None
    last_number = start_line
    for line in read_lines(path, fmt, start_line=start_line, start_offset=start_offset):
        summary.lines += 1
        last_number = line.number
        if line.complete:
            covered = line
        if line.error is not None:
            summary.rejected.append((line.number, line.error))
            continue
        batch.append(line)
        if len(batch) >= batch_size:
            _commit(engine, path, program_key, batch, covered, source, fmt, summary, clock)
            if on_progress:
                on_progress(line.number, summary.accepted)
            batch = []
    if batch or (covered is not None and covered.number > start_line):
        _commit(engine, path, program_key, batch, covered, source, fmt, summary, clock)
        if on_progress:
            on_progress(last_number, summary.accepted)
    summary.rejected.sort(key=lambda r: r[0])
    summary.seconds = time.perf_counter() - started
    return summary


def _commit(
    engine: Engine,
    path: Path,
    program_key: str | None,
    batch: list[Line],
    upto: Line | None,
    source: str,
    fmt: str,
    summary: Summary,
    clock: Callable[[], Any],
) -> None:
    raws = [line.raw or {} for line in batch]
    fingerprint = prefix_hash(path, upto.end) if upto is not None else ""
    results: list[ingest_svc.IngestResult] = []
    for attempt in range(6):
        try:
            with engine.begin() as conn:
                loaded = programs.active(conn, program_key)
                now = clock()
                results = ingest_svc.ingest(conn, loaded, raws, now=now, text_values=fmt == "csv") if raws else []
                if upto is not None:
                    row = {
                        "program_id": loaded.program_id,
                        "source": source,
                        "fingerprint": fingerprint,
                        "line": upto.number,
                        "byte_offset": upto.end,
                        "updated_at": now,
                    }
                    upsert(conn, ingest_checkpoints, [row], ("program_id", "source"))
            break
        except (OperationalError, IntegrityError):
            # Another writer won a race (the same new event or member, a deadlock, a busy
            # SQLite file): the transaction rolled back whole; try the batch again.
            if attempt == 5:
                raise
            time.sleep(0.02 * (2**attempt))
    for line, result in zip(batch, results, strict=True):
        if result.status == "accepted":
            summary.accepted += 1
            for award in result.outcome.get("awards", []):
                summary.awarded[award[1]] = summary.awarded.get(award[1], 0) + award[2]
        elif result.status == "duplicate":
            summary.duplicates += 1
        elif result.error is not None:
            summary.rejected.append((line.number, result.error))
