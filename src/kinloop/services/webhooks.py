"""Webhook subscriptions and the delivery worker.

A subscription (per program) names a URL, the kinds of message it wants and a secret that
signs every request. Messages come from the outbox (`services/outbox.py`), each with one
delivery per subscription; the worker sends due deliveries and records every attempt.

Delivery is at least once and survives a worker's death. Claiming a delivery moves its
`next_attempt_at` a lease into the future and commits; the request is sent outside any
transaction; its outcome is recorded in a second transaction. A worker that dies in between
leaves the delivery to come due again when the lease runs out, and another run sends it.
On PostgreSQL, workers claim with `FOR UPDATE SKIP LOCKED`, so several never take the same
delivery; on SQLite the write lock serialises the claims.

A failed attempt (no 2xx reply in time) is retried after 10 s, 20 s, 40 s, ... at most an
hour apart; after `MAX_ATTEMPTS` the delivery is marked failed.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import OperationalError

from kinloop import __version__
from kinloop.clock import utcnow
from kinloop.domain.errors import InvalidInput, NotFound
from kinloop.services.book import chunks
from kinloop.services.outbox import KINDS
from kinloop.store.tables import outbox, programs, webhook_attempts, webhook_deliveries, webhook_subscriptions
from kinloop.webhook_signature import HEADER, signature_header

log = logging.getLogger("kinloop.webhooks")

MAX_ATTEMPTS = 10
FIRST_RETRY = timedelta(seconds=10)
MAX_RETRY = timedelta(hours=1)
TIMEOUT = 5.0  # seconds for each phase of a request (connect, write, read)
# How long a claimed delivery is left to its worker before another may take it: far longer
# than a round of requests, each bounded by TIMEOUT.
LEASE = timedelta(seconds=60)
BATCH = 8  # deliveries claimed, and sent in parallel, per round
MAX_ERROR = 500  # characters of an error (or of a refusing reply's body) kept in the log
STATUSES = ("pending", "delivered", "failed")


class UnknownWebhook(NotFound):
    """No webhook subscription with this id in the program."""

    code = "unknown_webhook"


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 10 s, 20 s, 40 s, ... at most 1 h."""
    return min(FIRST_RETRY * (1 << min(max(attempts - 1, 0), 20)), MAX_RETRY)


# --- subscriptions --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Subscription:
    id: int
    url: str
    kinds: list[str]
    description: str | None
    active: bool
    created_at: datetime
    deactivated_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "kinds": self.kinds,
            "description": self.description,
            "active": self.active,
            "created_at": self.created_at.isoformat(),
            "deactivated_at": self.deactivated_at.isoformat() if self.deactivated_at else None,
        }


_COLUMNS = (
    webhook_subscriptions.c.id,
    webhook_subscriptions.c.url,
    webhook_subscriptions.c.kinds,
    webhook_subscriptions.c.description,
    webhook_subscriptions.c.active,
    webhook_subscriptions.c.created_at,
    webhook_subscriptions.c.deactivated_at,
)


def check_url(url: str) -> str:
    """An absolute http(s) URL with a host, or InvalidInput."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise InvalidInput(f"{url!r} is not a valid URL", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("the URL must be absolute, http:// or https://, with a host", field="url")
    if port == 0 or any(ord(c) < 33 or ord(c) == 127 for c in url) or len(url) > 2000:
        raise InvalidInput(f"{url!r} is not a valid URL", field="url")
    return url


def check_kinds(kinds: Sequence[str]) -> list[str]:
    """The kinds, each known, without repeats, in the order given."""
    if not kinds:
        raise InvalidInput(f"name at least one kind of message ({', '.join(KINDS)})", field="kinds")
    out: list[str] = []
    for i, kind in enumerate(kinds):
        if kind not in KINDS:
            raise InvalidInput(f"unknown kind {kind!r} (known: {', '.join(KINDS)})", field=f"kinds[{i}]")
        if kind not in out:
            out.append(kind)
    return out


def create(
    conn: Connection,
    program_id: int,
    *,
    url: str,
    kinds: Sequence[str],
    description: str | None = None,
    now: datetime,
) -> tuple[Subscription, str]:
    """Subscribe a URL to kinds of messages; the signing secret is returned here only."""
    url = check_url(url)
    wanted = check_kinds(kinds)
    secret = f"whsec_{secrets.token_urlsafe(32)}"
    sub_id = conn.execute(
        webhook_subscriptions.insert()
        .values(
            program_id=program_id,
            url=url,
            secret=secret,
            kinds=wanted,
            description=description,
            active=True,
            created_at=now,
        )
        .returning(webhook_subscriptions.c.id)
    ).scalar_one()
    return Subscription(sub_id, url, wanted, description, True, now, None), secret


def listing(conn: Connection, program_id: int) -> list[Subscription]:
    """The program's subscriptions, active and not, oldest first."""
    rows = conn.execute(
        select(*_COLUMNS).where(webhook_subscriptions.c.program_id == program_id).order_by(webhook_subscriptions.c.id)
    )
    return [Subscription(*r) for r in rows]


def get(conn: Connection, program_id: int, sub_id: int) -> Subscription:
    """One subscription of the program, or UnknownWebhook (another program's is not found either)."""
    row = conn.execute(
        select(*_COLUMNS).where(webhook_subscriptions.c.program_id == program_id, webhook_subscriptions.c.id == sub_id)
    ).first()
    if row is None:
        raise UnknownWebhook(f"no webhook {sub_id} in this program", field="webhook_id")
    return Subscription(*row)


def deactivate(conn: Connection, program_id: int, sub_id: int, *, now: datetime) -> Subscription:
    """Stop a subscription: no new messages, and its pending deliveries are dropped (marked
    failed). Its delivery log stays readable; deactivating twice changes nothing."""
    found = get(conn, program_id, sub_id)
    if not found.active:
        return found
    conn.execute(
        update(webhook_subscriptions)
        .where(webhook_subscriptions.c.id == sub_id)
        .values(active=False, deactivated_at=now)
    )
    conn.execute(
        update(webhook_deliveries)
        .where(webhook_deliveries.c.subscription_id == sub_id, webhook_deliveries.c.status == "pending")
        .values(status="failed", next_attempt_at=None, last_error="the subscription was deactivated")
    )
    return get(conn, program_id, sub_id)


def delivery_counts(conn: Connection, program_id: int) -> dict[int, dict[str, int]]:
    """Per subscription of the program: how many deliveries are pending, delivered and failed."""
    d, w = webhook_deliveries, webhook_subscriptions
    out: dict[int, dict[str, int]] = {}
    for sub_id, status, n in conn.execute(
        select(d.c.subscription_id, d.c.status, func.count())
        .join(w, w.c.id == d.c.subscription_id)
        .where(w.c.program_id == program_id)
        .group_by(d.c.subscription_id, d.c.status)
    ):
        out.setdefault(sub_id, dict.fromkeys(STATUSES, 0))[status] = int(n)
    return out


def delivery_log(
    conn: Connection,
    program_id: int,
    sub_id: int,
    *,
    before: int | None,
    limit: int,
    status: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of a subscription's deliveries, newest message first, each with every attempt;
    and the cursor of the next page."""
    get(conn, program_id, sub_id)
    d, o = webhook_deliveries, outbox
    query = (
        select(
            d.c.id,
            d.c.outbox_id,
            d.c.status,
            d.c.attempts,
            d.c.next_attempt_at,
            d.c.last_status_code,
            d.c.last_error,
            d.c.delivered_at,
            d.c.created_at,
            o.c.message_id,
            o.c.kind,
            o.c.payload,
        )
        .join(o, o.c.id == d.c.outbox_id)
        .where(d.c.subscription_id == sub_id)
        .order_by(d.c.outbox_id.desc())
        .limit(limit + 1)
    )
    if before is not None:
        query = query.where(d.c.outbox_id < before)
    if status is not None:
        query = query.where(d.c.status == status)
    rows = conn.execute(query).all()
    page = rows[:limit]
    attempts: dict[int, list[dict[str, Any]]] = {r.id: [] for r in page}
    for part in chunks(sorted(attempts)):
        for a in conn.execute(
            select(
                webhook_attempts.c.delivery_id,
                webhook_attempts.c.attempt,
                webhook_attempts.c.at,
                webhook_attempts.c.status_code,
                webhook_attempts.c.error,
                webhook_attempts.c.duration_ms,
            )
            .where(webhook_attempts.c.delivery_id.in_(part))
            .order_by(webhook_attempts.c.id)
        ):
            attempts[a.delivery_id].append(
                {
                    "attempt": a.attempt,
                    "at": a.at.isoformat(),
                    "status_code": a.status_code,
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                }
            )
    out = [
        {
            "id": r.id,
            "message_id": r.message_id,
            "kind": r.kind,
            "status": r.status,
            "attempts": r.attempts,
            "next_attempt_at": r.next_attempt_at.isoformat() if r.next_attempt_at else None,
            "last_status_code": r.last_status_code,
            "last_error": r.last_error,
            "delivered_at": r.delivered_at.isoformat() if r.delivered_at else None,
            "created_at": r.created_at.isoformat(),
            "payload": r.payload,
            "log": attempts[r.id],
        }
        for r in page
    ]
    next_cursor = str(page[-1].outbox_id) if len(rows) > limit else None
    return out, next_cursor


# --- delivery -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery taken by a worker for one attempt, with everything needed to send it."""

    delivery_id: int
    attempt: int  # the number of this attempt, from 1
    url: str
    secret: str
    message_id: str
    kind: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of sending one claimed delivery once."""

    delivery_id: int
    attempt: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(slots=True)
class Counts:
    claimed: int = 0
    delivered: int = 0
    retrying: int = 0
    failed: int = 0

    def add(self, other: Counts) -> None:
        self.claimed += other.claimed
        self.delivered += other.delivered
        self.retrying += other.retrying
        self.failed += other.failed

    def as_json(self) -> dict[str, int]:
        return {"delivered": self.delivered, "retrying": self.retrying, "failed": self.failed}


def body_of(message_id: str, kind: str, created_at: datetime, program: str, payload: Any) -> bytes:
    """The JSON body of a message as sent: an envelope around the payload."""
    envelope = {
        "id": message_id,
        "kind": kind,
        "created_at": created_at.isoformat(),
        "program": program,
        "data": payload,
    }
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def claim(conn: Connection, *, now: datetime, limit: int = BATCH, lease: timedelta = LEASE) -> list[Claimed]:
    """Take up to `limit` due deliveries for one attempt each: their next attempt moves a lease
    into the future, so that they come due again if the claimer dies. Commit before sending."""
    d = webhook_deliveries
    query = (
        select(d.c.id, d.c.attempts)
        .where(d.c.status == "pending", d.c.next_attempt_at <= now)
        .order_by(d.c.next_attempt_at, d.c.id)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    due = conn.execute(query).all()
    # A delivery whose last attempt was claimed and never recorded (its worker died) has had
    # its attempts; it is not sent again.
    spent = [r.id for r in due if r.attempts >= MAX_ATTEMPTS]
    if spent:
        conn.execute(
            update(d)
            .where(d.c.id.in_(spent))
            .values(
                status="failed",
                next_attempt_at=None,
                last_error=f"gave up after {MAX_ATTEMPTS} attempts (the outcome of the last was never recorded)",
            )
        )
    ids = sorted(r.id for r in due if r.attempts < MAX_ATTEMPTS)
    if not ids:
        return []
    conn.execute(update(d).where(d.c.id.in_(ids)).values(attempts=d.c.attempts + 1, next_attempt_at=now + lease))
    rows = conn.execute(
        select(
            d.c.id,
            d.c.attempts,
            webhook_subscriptions.c.url,
            webhook_subscriptions.c.secret,
            outbox.c.message_id,
            outbox.c.kind,
            outbox.c.payload,
            outbox.c.created_at,
            programs.c.key,
        )
        .join(webhook_subscriptions, webhook_subscriptions.c.id == d.c.subscription_id)
        .join(outbox, outbox.c.id == d.c.outbox_id)
        .join(programs, programs.c.id == outbox.c.program_id)
        .where(d.c.id.in_(ids))
        .order_by(d.c.id)
    ).all()
    return [
        Claimed(
            r.id,
            r.attempts,
            r.url,
            r.secret,
            r.message_id,
            r.kind,
            body_of(r.message_id, r.kind, r.created_at, r.key, r.payload),
        )
        for r in rows
    ]


def send(client: httpx.Client, claimed: Claimed, *, now: datetime) -> Attempt:
    """POST one claimed delivery, signed; never raises (a failure is an outcome to record)."""
    headers = {
        "content-type": "application/json",
        "user-agent": f"kinloop-webhooks/{__version__}",
        HEADER: signature_header(claimed.secret, int(now.timestamp()), claimed.body),
        "kinloop-message-id": claimed.message_id,
        "kinloop-event-kind": claimed.kind,
        "kinloop-attempt": str(claimed.attempt),
    }
    started = time.perf_counter()
    status: int | None = None
    error: str | None = None
    try:
        with client.stream("POST", claimed.url, content=claimed.body, headers=headers) as response:
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
                head = _read_some(response, MAX_ERROR)
                if head:
                    error += f": {head}"
    except Exception as exc:  # whatever went wrong is this attempt's outcome, not the worker's end
        error = f"{type(exc).__name__}: {exc}"
    elapsed = round((time.perf_counter() - started) * 1000)
    return Attempt(claimed.delivery_id, claimed.attempt, now, status, error[:MAX_ERROR] if error else None, elapsed)


def _read_some(response: httpx.Response, limit: int) -> str:
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return data[:limit].decode("utf-8", "replace").strip()


def record(conn: Connection, attempts: Sequence[Attempt], *, now: datetime) -> Counts:
    """Log each attempt and move its delivery on: delivered, due again later, or failed."""
    counts = Counts(claimed=len(attempts))
    if not attempts:
        return counts
    conn.execute(
        webhook_attempts.insert(),
        [
            {
                "delivery_id": a.delivery_id,
                "attempt": a.attempt,
                "at": a.at,
                "status_code": a.status_code,
                "error": a.error,
                "duration_ms": a.duration_ms,
            }
            for a in attempts
        ],
    )
    d = webhook_deliveries
    for a in sorted(attempts, key=lambda x: x.delivery_id):
        if a.ok:
            # Delivered is delivered, even if the lease ran out and someone else is retrying.
            conn.execute(
                update(d)
                .where(d.c.id == a.delivery_id, d.c.status != "delivered")
                .values(
                    status="delivered",
                    delivered_at=a.at,
                    next_attempt_at=None,
                    last_status_code=a.status_code,
                    last_error=None,
                )
            )
            counts.delivered += 1
            continue
        final = a.attempt >= MAX_ATTEMPTS
        # Only the latest claim decides what happens next: a worker whose lease ran out and
        # whose delivery was claimed again does not reschedule it.
        moved = conn.execute(
            update(d)
            .where(d.c.id == a.delivery_id, d.c.status == "pending", d.c.attempts == a.attempt)
            .values(
                status="failed" if final else "pending",
                next_attempt_at=None if final else now + backoff(a.attempt),
                last_status_code=a.status_code,
                last_error=a.error,
            )
        ).rowcount
        if moved and final:
            counts.failed += 1
        elif moved:
            counts.retrying += 1
    return counts


@dataclass
class Worker:
    """The delivery job. It owns its transactions: one to claim, one to record each round.

    `clock` and `transport` are injectable (tests pass a fixed clock and, if they like, an
    `httpx.MockTransport`)."""

    engine: Engine
    clock: Callable[[], datetime] = utcnow
    transport: httpx.BaseTransport | None = None
    batch: int = BATCH
    timeout: float = TIMEOUT
    lease: timedelta = LEASE
    _client: httpx.Client = field(init=False, repr=False)
    _pool: ThreadPoolExecutor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._client = httpx.Client(
            transport=self.transport,
            timeout=self.timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=self.batch),
        )
        self._pool = ThreadPoolExecutor(max_workers=self.batch, thread_name_prefix="kinloop-webhook")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def claim(self) -> list[Claimed]:
        with self.engine.begin() as conn:
            return claim(conn, now=self.clock(), limit=self.batch, lease=self.lease)

    def send(self, claimed: Sequence[Claimed]) -> list[Attempt]:
        if len(claimed) == 1:
            return [send(self._client, claimed[0], now=self.clock())]
        return list(self._pool.map(lambda c: send(self._client, c, now=self.clock()), claimed))

    def record(self, attempts: Sequence[Attempt]) -> Counts:
        with self.engine.begin() as conn:
            return record(conn, attempts, now=self.clock())

    def run_once(self) -> Counts:
        """One round: claim what is due (up to `batch`), send it, record the outcomes."""
        claimed = self.claim()
        if not claimed:
            return Counts()
        return self.record(self.send(claimed))

    def drain(self) -> Counts:
        """Rounds until nothing is due (failed attempts come due later, so this ends)."""
        total = Counts()
        while True:
            done = self.run_once()
            if not done.claimed:
                return total
            total.add(done)

    def run(
        self, stop: threading.Event, *, poll: float = 1.0, on_round: Callable[[Counts], None] | None = None
    ) -> None:
        """Deliver until `stop` is set, waiting `poll` seconds whenever nothing is due."""
        while not stop.is_set():
            try:
                done = self.run_once()
            except OperationalError as exc:  # the database went away: wait and try again
                log.warning("webhook worker: database unavailable (%s); retrying", exc.orig or exc)
                stop.wait(max(poll, 5.0))
                continue
            if on_round is not None and done.claimed:
                on_round(done)
            if not done.claimed:
                stop.wait(poll)
