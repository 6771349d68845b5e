"""Prometheus metrics: requests, latencies, events ingested and awards by currency.

Each worker process keeps its own counters (scrape every worker, or run one per container).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cache
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kinloop.domain.program import Program
from kinloop.services.ingest import IngestResult

registry = CollectorRegistry()
REQUESTS = Counter("kinloop_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry)
LATENCY = Histogram(
    "kinloop_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=registry,
)
EVENTS = Counter("kinloop_events_ingested_total", "Events by outcome", ["program", "status"], registry=registry)
AWARDS = Counter("kinloop_awards_total", "Amounts awarded, in minor units", ["program", "currency"], registry=registry)


@cache  # `labels()` checks and locks on every call: 3% of a posted event's instructions
def _series(metric: Any, *labels: str) -> Any:
    """The series of `metric` with these label values (there are few: routes, programs, currencies)."""
    return metric.labels(*labels)


def record_ingest(program: Program, results: Sequence[IngestResult]) -> None:
    for r in results:
        _series(EVENTS, program.key, r.status).inc()
        if r.status == "accepted":
            for award in r.outcome.get("awards", []):
                _series(AWARDS, program.key, award[1]).inc(award[2])


class Middleware:
    """Counts requests and times them, by route template (not by path, which would make a
    series per member). Plain ASGI: Starlette's BaseHTTPMiddleware would cost a task and a
    stream per request, which on a small machine was a third of the cost of /healthz."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the application fails before it answers

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            _series(LATENCY, scope["method"], path).observe(time.perf_counter() - started)
            _series(REQUESTS, scope["method"], path, str(status)).inc()


def exposition() -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
