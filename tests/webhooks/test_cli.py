"""`kinloop remind` and `kinloop worker`, end to end against a real receiver."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

import kinloop.cli.app as cli
from kinloop.services import ingest
from kinloop.services.programs import LoadedProgram
from kinloop.services.webhooks import Worker
from tests.conftest import NOW
from tests.webhooks.conftest import Receiver, deliveries, purchase, subscribe, verified

runner = CliRunner()


def kl(*args: object) -> Any:
    result = runner.invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "400"})
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


@pytest.fixture(autouse=True)
def fixed_cli_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "utcnow", lambda: NOW)


def test_remind_then_worker_delivers_the_reminders(
    db_url: str, engine: Engine, coffee: LoadedProgram, receiver: Receiver
) -> None:
    _, secret = subscribe(engine, coffee, url=receiver.url, kinds=("points.expiring",))
    with engine.begin() as conn:
        ingest.ingest(
            conn,
            coffee,
            [purchase("a", amount=120, at="2025-03-10T09:00:00Z"), purchase("b", "m2", 80, "2025-03-25T09:00:00Z")],
            now=NOW,
        )
    first = kl("remind", "--days", 30, "--db", db_url, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.output) == {"written": 2, "already_sent": 0, "subscribed": True}
    again = kl("remind", "--days", 30, "--db", db_url)
    assert again.output.strip() == "reminders: 0 written, 2 already sent"

    # The worker reads the wall clock, which is past NOW: the deliveries are due.
    sent = kl("worker", "--once", "--db", db_url, "--json")
    assert sent.exit_code == 0, sent.output
    assert json.loads(sent.output) == {"delivered": 2, "retrying": 0, "failed": 0}
    texts = sorted(json.loads(r.body)["data"]["text"] for r in receiver.received)
    assert texts == ["12 Beans expire on 2026-03-10", "8 Beans expire on 2026-03-25"]
    assert all(verified(r, secret, time.time()) for r in receiver.received)
    idle = kl("worker", "--once", "--db", db_url)
    assert idle.output.strip() == "delivered 0, retrying 0, failed 0"


def test_remind_without_a_subscription_says_so(db_url: str, coffee: LoadedProgram) -> None:
    result = kl("remind", "--db", db_url)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "no webhook subscription wants points.expiring; nothing written"


def test_the_commands_refuse_an_uninitialised_database(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    for command in (["worker", "--once"], ["remind"]):
        result = kl(*command, "--db", url)
        assert result.exit_code == 1
        assert "run `kinloop init PROGRAM.yaml` first" in result.output


def test_a_running_worker_delivers_until_stopped(engine: Engine, coffee: LoadedProgram, receiver: Receiver) -> None:
    subscribe(engine, coffee, url=receiver.url, kinds=("award.created",))
    stop = threading.Event()
    with Worker(engine) as worker:
        thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"poll": 0.01})
        thread.start()
        try:
            with engine.begin() as conn:
                ingest.ingest(conn, coffee, [purchase("e1")], now=NOW)
            for _ in range(500):
                if receiver.received:
                    break
                time.sleep(0.01)
        finally:
            stop.set()
            thread.join(timeout=10)
    assert not thread.is_alive()
    assert [r.status for r in receiver.received] == [200]
    assert [d["status"] for d in deliveries(engine)] == ["delivered"]
