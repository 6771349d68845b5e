"""The ASGI application: `kinloop serve` runs it under uvicorn."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import Lock, to_thread
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url
from swagger_ui_bundle import swagger_ui_path

from kinloop import __version__, web
from kinloop.api import (
    checkin,
    draws,
    envelopes,
    goals,
    leaderboards,
    mall,
    metrics,
    privileges,
    problems,
    tasks,
    tiers,
    webhooks,
)
from kinloop.api.batching import EventBatcher
from kinloop.api.deps import ApiState, BodyLimit, keep_for_good
from kinloop.api.routes import lean, router
from kinloop.domain.errors import InvalidInput
from kinloop.store import migrate
from kinloop.store.db import Checkpointer, autocommit_reads, connect, database_url, readonly
from kinloop.web import errors as web_errors

DEFAULT_RATE_LIMIT = 2000
DEFAULT_MAX_BODY = 2 * 1024 * 1024
# Threads for the endpoints on SQLite. Its work is CPU in this process, so more threads only
# contend for the GIL (with 40, the default, a read cost 2.4 ms of CPU instead of 1.2). Two:
# a writer waiting for another process's write lock (the writer queue lets one through at a
# time) leaves a thread to the readers.
SQLITE_THREADS = 2
# Connections a worker keeps open on PostgreSQL (KINLOOP_POOL_SIZE), and how many more it may
# open at a peak and close again. Workers times both must stay under the server's
# max_connections (100 by default).
PG_POOL_SIZE = 20
PG_POOL_OVERFLOW = 20

DESCRIPTION = """
kinloop's HTTP API for brands' apps and partner platforms: send what members do, read where
they stand, spend and return points.

Authenticate with `Authorization: Bearer <key>` (create keys with `kinloop keys create`).
Scopes: `read` reads; `ingest` posts events, spends, reverses and mints member tokens;
`admin` does everything, including adjustments and program versions. A member token
(`POST /v1/members/{id}/tokens`) lets a member's own app read that member only.

Errors are RFC 9457 problem details (`application/problem+json`) with a stable `code`.
"""


ENV_SETTINGS = {"KINLOOP_RATE_LIMIT": DEFAULT_RATE_LIMIT, "KINLOOP_POOL_SIZE": PG_POOL_SIZE}


def env_int(name: str, default: int) -> int:
    """A positive whole number from the environment, or `default` when unset."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidInput(f"{name} must be a whole number greater than 0, not {raw!r}", field=name)
    return value


def check_env() -> None:
    """Refuse bad settings before any worker starts (each would fail on its own otherwise)."""
    for name, default in ENV_SETTINGS.items():
        env_int(name, default)


def create_app(db: str | None = None, *, rate_limit: int | None = None, max_body: int | None = None) -> FastAPI:
    """Build the application for a database URL (`--db`, `KINLOOP_DATABASE_URL`, or the default)."""
    url = database_url(db)
    sqlite = url.startswith("sqlite")
    options: dict[str, Any] = {}
    sqlite_file = sqlite and make_url(url).database not in (None, "", ":memory:")
    if sqlite:
        options["connect_args"] = {"check_same_thread": False}
        if sqlite_file:
            # Connections are opened on the event loop, which must never wait for the pool.
            options["max_overflow"] = -1
            # Checkpoints in a thread of their own (`Checkpointer`), not inside a post's commit.
            options["wal_autocheckpoint"] = False
    else:
        # As many kept connections as requests in flight: SQLAlchemy's default (5, and 10 more
        # opened and closed again) made every request beyond the fifth start a PostgreSQL
        # backend and end it, a few milliseconds each.
        options["pool_size"] = env_int("KINLOOP_POOL_SIZE", PG_POOL_SIZE)
        options["max_overflow"] = PG_POOL_OVERFLOW
    engine = connect(url, **options)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if sqlite:
            to_thread.current_default_thread_limiter().total_tokens = SQLITE_THREADS
        yield
        _app.state.kinloop.close()

    app = FastAPI(
        lifespan=lifespan,
        title="kinloop",
        version=__version__,
        description=DESCRIPTION,
        docs_url=None,
        redoc_url=None,
    )
    app.state.kinloop = ApiState(
        engine=engine,
        reader=readonly(engine),
        autocommit_reader=autocommit_reads(engine),
        rate_limit=rate_limit or env_int("KINLOOP_RATE_LIMIT", DEFAULT_RATE_LIMIT),
        max_body=max_body or DEFAULT_MAX_BODY,
        writer=Lock() if sqlite else None,
        in_process=sqlite,
        checkpointer=Checkpointer(engine) if sqlite_file else None,
    )
    app.state.kinloop.batcher = EventBatcher(app.state.kinloop)
    problems.install(app, pages=web_errors)
    app.add_middleware(BodyLimit, max_body=app.state.kinloop.max_body)
    app.add_middleware(metrics.Middleware)  # outermost: it times and counts every reply

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:  # async: answering costs no thread
        return {"status": "alive"}

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            ready = "alembic_version" in inspect(engine).get_table_names() and migrate.is_current(engine)
        except Exception as exc:  # the point of this endpoint is to report, not to raise
            return problems.problem(503, "not_ready", f"database unreachable: {type(exc).__name__}")
        if not ready:
            return problems.problem(503, "not_ready", "database schema is not current; run `kinloop init`")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    def prometheus() -> Any:
        return metrics.exposition()

    # After the probes: routes are matched in order, and every route before the match costs a
    # request a few microseconds (/healthz was three quarters routing). The routers' routes join
    # the app's own list rather than being included: FastAPI matches an included router through
    # a layer of its own on every request (6.6% of a member read's instructions). An APIRouter
    # bakes its prefix and tags into each route as it is added, so the app and its OpenAPI
    # document are the same either way.
    # The hottest route first: a request pays for every route matched before its own.
    for routes_of in (
        lean,
        router,
        webhooks.router,
        tasks.router,
        checkin.router,
        tiers.router,
        draws.router,
        envelopes.router,
        goals.router,
        privileges.router,
        leaderboards.router,
        mall.router,
    ):
        app.router.routes.extend(routes_of.routes)
    # The docs work offline: Swagger UI's files are served by kinloop itself.
    web.install(app)
    app.mount("/static/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="kinloop API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )

    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn workers (`kinloop serve --workers N` re-imports it in each)."""
    app = create_app(os.environ.get("KINLOOP_DATABASE_URL"))
    keep_for_good()  # what the worker built lives as long as the worker
    return app
