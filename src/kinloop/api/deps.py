"""Request plumbing: the database transaction, the caller's identity, scopes and rate limits."""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from anyio import CapacityLimiter, Lock, to_thread
from fastapi import Depends, HTTPException, Request
from sqlalchemy import Connection, Engine

from kinloop.clock import utcnow
from kinloop.domain.errors import UnknownMember
from kinloop.services import keys, programs
from kinloop.services.keys import Forbidden, Principal, Unauthorized
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import select_in
from kinloop.store.db import Checkpointer
from kinloop.store.tables import program_versions

if TYPE_CHECKING:
    from kinloop.api.batching import EventBatcher

T = TypeVar("T")

# Checking a key costs a query; a recently seen key is trusted for this long (so a revoked
# key stops working within these seconds on every worker).
KEY_CACHE_SECONDS = 5.0


# Threads for member reads on PostgreSQL. A read is mostly Python (about 1 ms of CPU, a tenth
# of it waiting on the server), so a few threads keep a worker busy and more only contend for
# the GIL: with 64 requests in flight, 40 threads gave 562-657 reads/s at p99 304-332 ms, four
# gave 751-752 at 123-132 ms (16 in flight: 679-776 against 733-801).
READ_THREADS = 4


@dataclass
class ApiState:
    engine: Engine
    reader: Engine
    # Reads of one statement, which need no transaction around them (`autocommit_read`).
    autocommit_reader: Engine
    rate_limit: int  # requests per second per key, per worker process
    max_body: int
    token_secret: bytes | None = None
    # Threads that open and close transactions, apart from the endpoints' threads: a request
    # holding a lock can always commit and let go of it, however many others wait for it.
    opening: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(16))
    closing: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(16))
    # Threads of `autocommit_read` on PostgreSQL.
    reading: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(READ_THREADS))
    # SQLite has one write lock per database. Writers of this process queue for it here, in
    # the event loop, in order, instead of each holding a thread while SQLite's busy handler
    # polls with sleeps (which starves some for seconds). None on PostgreSQL (row locks).
    writer: Lock | None = None
    # SQLite is a library in this process: opening, committing and closing take microseconds
    # and never wait (the pool never runs dry), so they run on the event loop, not in a thread.
    in_process: bool = False
    # Group commit of posted events (api/batching.py); set by create_app.
    batcher: EventBatcher | None = None
    # On SQLite, the reads that run on the event loop (one at a time, none awaits) share one
    # connection kept open: taking one from the pool and giving it back (checkout, reset,
    # return) was 7% of a member read's instructions.
    loop_reader: Connection | None = None
    # SQLite files: the WAL is checkpointed in a thread of its own, not inside a commit.
    checkpointer: Checkpointer | None = None

    def committed(self) -> None:
        """A write was committed (on SQLite, a checkpoint may be due)."""
        if self.checkpointer is not None:
            self.checkpointer.committed()

    def close(self) -> None:
        """Let go of the kept connection (the pools are the engine's)."""
        if self.loop_reader is not None:
            self.loop_reader.close()
            self.loop_reader = None


def state(request: Request) -> ApiState:
    return request.app.state.kinloop  # type: ignore[no-any-return]


def _commit(conn: Connection) -> None:
    try:
        conn.commit()
    finally:
        conn.close()


async def _call(st: ApiState, limiter: CapacityLimiter, fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)`, in a thread of `limiter` when it may wait on the network."""
    if st.in_process:
        return fn(*args)
    return await to_thread.run_sync(fn, *args, limiter=limiter)


@contextlib.asynccontextmanager
async def _transaction(st: ApiState, engine: Engine) -> AsyncIterator[Connection]:
    conn = await _call(st, st.opening, engine.connect)
    try:
        yield conn
    except BaseException:
        await _call(st, st.closing, conn.close)  # closing rolls back
        raise
    await _call(st, st.closing, _commit, conn)
    st.committed()


async def run(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """A synchronous service call from an async endpoint: inline on SQLite (its work is CPU in
    this process and the writer queue already serialises writes, so a thread hop only costs),
    in a worker thread on PostgreSQL (where it waits on the network)."""
    st = state(request)
    if st.in_process:
        return fn(*args)
    return await to_thread.run_sync(fn, *args)


async def autocommit_read(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """`fn(conn, *args)` on a connection in autocommit (`store.db.autocommit_reads`): each
    statement is a transaction of its own, so what one statement reads is consistent and
    separate statements each see their moment. For the hottest read, which reads in one
    statement: cheaper than a `ReadConn` dependency (FastAPI's exit stack for it cost a tenth of
    a member read on SQLite), and on PostgreSQL BEGIN and COMMIT were two of its four round
    trips (with the pool's ping and the read itself)."""
    st = state(request)
    if st.in_process:
        return _read_on_loop(st, fn, *args)
    # In one of its few threads (on PostgreSQL), not the opening ones: a read is not an opening.
    return await to_thread.run_sync(_read_now, st.autocommit_reader, fn, *args, limiter=st.reading)


def _read_now(engine: Engine, fn: Callable[..., T], *args: Any) -> T:
    with engine.connect() as conn:
        out = fn(conn, *args)
        conn.commit()
    return out


def _read_on_loop(st: ApiState, fn: Callable[..., T], *args: Any) -> T:
    """`fn(conn, *args)` on the event loop's kept connection, any transaction it began ended after."""
    conn = st.loop_reader
    if conn is None or conn.closed:
        conn = st.loop_reader = st.autocommit_reader.connect()
    try:
        out = fn(conn, *args)
    except BaseException:
        conn.rollback()
        raise
    if conn.in_transaction():
        conn.commit()
    return out


async def transaction(request: Request) -> AsyncIterator[Connection]:
    """One transaction per request: committed when the endpoint returns (before the reply is
    sent, so an acknowledged write is a committed one), rolled back on error."""
    st = state(request)
    async with st.writer or contextlib.nullcontext(), _transaction(st, st.engine) as conn:
        yield conn


async def reading(request: Request) -> AsyncIterator[Connection]:
    """A read-only transaction (on SQLite it does not take the write lock)."""
    st = state(request)
    async with _transaction(st, st.reader) as conn:
        yield conn


# scope="function": the transaction ends before the response is sent (FastAPI's default for
# dependencies with yield is after it, when an error can no longer be reported).
Conn = Annotated[Connection, Depends(transaction, scope="function")]
ReadConn = Annotated[Connection, Depends(reading, scope="function")]


class _Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: dict[str, tuple[float, Principal]] = {}

    def get(self, key: str) -> Principal | None:
        with self.lock:
            hit = self.items.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: str, principal: Principal) -> None:
        with self.lock:
            if len(self.items) > 10_000:
                self.items.clear()
            self.items[key] = (time.monotonic() + KEY_CACHE_SECONDS, principal)


class RateLimiter:
    """A token bucket per key: `rate` requests a second, bursts up to one second's worth."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, who: str, rate: int) -> float:
        """0 when allowed; otherwise the seconds to wait."""
        now = time.monotonic()
        with self.lock:
            tokens, at = self.buckets.get(who, (float(rate), now))
            tokens = min(float(rate), tokens + (now - at) * rate)
            if tokens >= 1:
                self.buckets[who] = (tokens - 1, now)
                return 0.0
            self.buckets[who] = (tokens, now)
            return (1 - tokens) / rate


_cache = _Cache()
limiter = RateLimiter()


async def principal(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer <key or member token>`.

    Async: a cached key or a member token is checked in the event loop, and only a key not
    seen for a while costs a thread and a query."""
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("send Authorization: Bearer <API key or member token>")
    credential = credential.strip()
    st = state(request)
    found = _cache.get(credential)
    if found is None:
        if credential.startswith("klm_"):  # tokens carry their own expiry; they are checked every time
            if st.token_secret is None:
                st.token_secret = await _call(st, st.opening, _token_secret, st.reader)
            found = keys.read_token(st.token_secret, credential, now=utcnow())
        else:
            found = await _call(st, st.opening, _authenticate, st.reader, credential)
            _cache.put(credential, found)
    wait = limiter.take(credential, found.rate_limit or st.rate_limit)
    if wait:
        raise HTTPException(429, "too many requests for this key", headers={"Retry-After": str(max(1, round(wait)))})
    return found


def _token_secret(engine: Engine) -> bytes:
    with engine.begin() as conn:
        return keys.token_secret(conn, utcnow())


def _authenticate(engine: Engine, credential: str) -> Principal:
    with engine.begin() as conn:
        return keys.authenticate(conn, credential)


# What each scope may do; `admin` may do everything. `member_read` is reading one member
# (its state, ledger and events): a member token may, but only for its own member, which
# `member_visible` checks against the member in the path. `member_act` is a member's own move
# in an outlet (enter a draw, send or claim an envelope, donate): the brand's backend with an
# ingest key, or the member's app with a token, on that member's behalf only.
ALLOWED: dict[str, set[str]] = {
    "read": {"read", "member_read"},
    "ingest": {"ingest", "member_act"},
    "member": {"member_read", "member_act"},
}


def require(action: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting callers whose scope allows `action` (read, member_read, ingest, admin)."""

    # The caller found here, not through a dependency of its own: FastAPI's resolving of a
    # nested dependency was 3.4% of a member read's instructions. Async: no thread for a set lookup.
    async def check(request: Request) -> Principal:
        who = await principal(request)
        if who.scope == "admin" or action in ALLOWED.get(who.scope, set()):
            return who
        holder = {"member": "a member token", "ingest": "an ingest key"}.get(who.scope, f"a {who.scope} key")
        raise Forbidden(f"{holder} may not {_verbs.get(action, action)}")

    return check


_verbs = {
    "read": "read this",
    "member_read": "read this",
    "ingest": "post events or change balances",
    "member_act": "act for a member",
    "admin": "do this (admin only)",
}

# The callers an endpoint admits, by what they may do (see ALLOWED).
Read = Annotated[Principal, Depends(require("read"))]
MemberRead = Annotated[Principal, Depends(require("member_read"))]
MemberAct = Annotated[Principal, Depends(require("member_act"))]
Ingest = Annotated[Principal, Depends(require("ingest"))]
Admin = Annotated[Principal, Depends(require("admin"))]


_loaded: dict[tuple[int, int, str], LoadedProgram] = {}
# The key in `_loaded` of the version of each program this process last found active.
_recent: dict[int, tuple[int, int, str]] = {}
# Whether this process hides what it keeps for good from the garbage collector (`keep_for_good`).
_freezing = False


def keep_for_good() -> None:
    """Move every object alive now out of the cyclic garbage collector's sight, and do the same
    after each program version this process loads from now on. For served processes only.

    A server keeps a large, lasting heap (the application, SQLAlchemy, pydantic, compiled
    programs: some 180,000 objects) and each request leaves a few objects that outlive the
    young collections; every couple of seconds they set off a full collection, which walked the
    whole heap for 70-120 ms and found nothing to free, while every request waited: the paced
    benchmark's event p99 was those pauses. Frozen objects are still freed by reference
    counting; only cycles among them would stay (the kept objects live as long as the process)."""
    global _freezing
    _freezing = True
    gc.freeze()


def program_of(conn: Connection, who: Principal) -> LoadedProgram:
    """The active version of the caller's program. This process keeps each version it has
    loaded, by ids and digest (the same content under the same ids, whatever the database);
    the query says which one is active now."""
    # Without the source (kilobytes of YAML), straight to the driver: through SQLAlchemy's
    # statement machinery this one-row read was a tenth of a single event's transaction.
    rows = select_in(conn, program_versions, ("id", "digest"), "program_id", [who.program_id], also=("active", [True]))
    key = (who.program_id, rows[0][0], rows[0][1]) if rows else None
    found = _loaded.get(key) if key is not None else None
    if found is None:
        found = programs.active_by_id(conn, who.program_id)  # or UnknownProgram
        if key is not None and found.version_id == key[1]:
            _loaded[key] = found
            if _freezing:
                gc.freeze()  # the compiled program is kept as long as the process
    if key is not None and _loaded.get(key) is found:
        _recent[who.program_id] = key
    return found


def recent_program(who: Principal) -> tuple[tuple[int, str], LoadedProgram] | None:
    """The version of the caller's program last found active here, to be checked by the caller
    in its own read (None before the first `program_of`)."""
    key = _recent.get(who.program_id)
    return None if key is None else ((key[1], key[2]), _loaded[key])


def member_visible(who: Principal, member_id: str) -> None:
    """A member token sees its own member only; anything else is as if it did not exist."""
    if who.scope == "member" and who.member_id != member_id:
        raise UnknownMember(f"no member {member_id!r} in this program", field="member_id")


class BodyLimit:
    """ASGI middleware refusing request bodies over `max_body` bytes, declared or streamed."""

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise HTTPException(413, f"the body is larger than {self.max_body} bytes")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from kinloop.api.problems import problem

        response = problem(413, "payload_too_large", f"the body is larger than {self.max_body} bytes")
        await response(scope, receive, send)
