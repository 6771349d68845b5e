"""`kinloop bench api` with a tiny load: it serves, drives, reports and cleans up."""

from __future__ import annotations

import asyncio
import json

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from kinloop.bench import API_SCHEMA, run_api_bench
from kinloop.bench_load import load
from kinloop.cli.app import app
from kinloop.store.db import connect

KEYS = {
    "database",
    "workers",
    "concurrency",
    "events",
    "events_per_s",
    "event_p50_ms",
    "event_p99_ms",
    "reads",
    "reads_per_s",
    "read_p50_ms",
    "read_p99_ms",
    "ceiling_per_s",
    "ceiling_p50_ms",
    "ceiling_p99_ms",
    "events_ratio",
    "reads_ratio",
    "errors",
    "phases",
}


def test_run_api_bench(db_url: str) -> None:
    result = run_api_bench(db_url, events=50, reads=50, concurrency=4, event_rate=0, read_rate=0)
    assert result.keys() >= KEYS
    assert result["database"] == ("sqlite" if db_url.startswith("sqlite") else "postgresql")
    assert result["errors"] == 0, result["phases"]
    assert (result["events"], result["reads"]) == (50, 50)
    assert result["events_per_s"] > 0
    assert result["reads_per_s"] > 0
    assert 0 < result["event_p50_ms"] <= result["event_p99_ms"]
    assert result["phases"]["events"]["statuses"] == {"200": 50}
    if not db_url.startswith("sqlite"):  # its schema is gone, the rest of the database untouched
        engine = connect(db_url)
        with engine.connect() as conn:
            schemas = conn.execute(text("SELECT schema_name FROM information_schema.schemata")).scalars().all()
        engine.dispose()
        assert API_SCHEMA not in schemas


def test_cli_bench_api_json() -> None:
    args = ["bench", "api", "--json", "--events", "20", "--reads", "20", "--workers", "2", "--paced-seconds", "0.2"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert (result["database"], result["workers"], result["errors"]) == ("sqlite", 2, 0)


PACED_KEYS = {
    "event_rate",
    "paced_events_per_s",
    "paced_event_p50_ms",
    "paced_event_p99_ms",
    "read_rate",
    "paced_reads_per_s",
    "paced_read_p50_ms",
    "paced_read_p99_ms",
}


def test_paced_phases_send_at_their_rate(db_url: str) -> None:
    result = run_api_bench(db_url, events=30, reads=30, concurrency=2, event_rate=40, read_rate=80, paced_seconds=1)
    assert result.keys() >= PACED_KEYS
    assert result["errors"] == 0, result["phases"]
    paced_events, paced_reads = result["phases"]["paced_events"], result["phases"]["paced_reads"]
    assert (paced_events["requests"], paced_reads["requests"]) == (40, 80)
    assert paced_events["statuses"] == {"200": 40}
    # The last request is due only 1 - 1/rate seconds in: an unpaced load would be far faster.
    assert result["paced_events_per_s"] <= 40 * 1.03
    assert result["paced_reads_per_s"] <= 80 * 1.03


@pytest.mark.parametrize(("rate", "seconds"), [(0, 5.0), (1, 0.5)])
def test_a_paced_phase_with_nothing_to_send_is_skipped(rate: float, seconds: float) -> None:
    """Not reported as a phase of no requests at 0 ms."""
    result = run_api_bench(
        None, events=20, reads=20, concurrency=2, event_rate=rate, read_rate=rate, paced_seconds=seconds
    )
    assert result["phases"].keys() == {"ceiling", "events", "reads"}
    assert result["paced_event_p99_ms"] is None
    assert result["paced_read_p99_ms"] is None


def test_paced_latency_runs_from_when_a_request_was_due() -> None:
    """A server slower than the rate: each request waits for the one before it, and that wait
    is part of its latency (a closed-loop client would report the server's 40 ms every time)."""

    async def scenario() -> list[float]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.readuntil(b"\r\n\r\n"):
                await asyncio.sleep(0.04)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"
        try:
            latencies, errors, _, _ = await load(port, [request] * 10, rate=100, connections=1, time_limit=30.0)
        finally:
            server.close()
        assert errors == 0
        return latencies

    latencies = asyncio.run(scenario())
    # Request i is due at 10·i ms and answered near 40·(i+1) ms: the last waited ~300 ms more.
    assert latencies[0] < 0.2
    assert latencies[-1] > 0.3
    assert latencies == sorted(latencies)
