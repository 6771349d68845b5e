"""`kinloop privileges use` and `kinloop privileges usage`, in-process on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kinloop.cli.privileges as privileges_cli
from tests.cli.test_cli import CLI_NOW, kl, purchase, ready, write_jsonl

__all__ = ["ready"]


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(privileges_cli, "utcnow", lambda: CLI_NOW)
    monkeypatch.setattr("kinloop.cli.app.utcnow", lambda: CLI_NOW)


def test_use_then_usage(ready: str, tmp_path: Path) -> None:
    events = write_jsonl(tmp_path / "e.jsonl", [purchase("p1", "ada", 1000), purchase("p2", "bob", 1000)])
    assert kl("ingest", events, "--db", ready).exit_code == 0
    r = kl("privileges", "use", "ada", "free_drink", "--id", "k1", "--db", ready)
    assert (r.exit_code, r.stdout) == (0, "ada: Free drink used; 1 of 2 left this month\n")
    r = kl("privileges", "use", "ada", "free_drink", "--id", "k1", "--db", ready)
    assert r.stdout == "ada: Free drink used; 1 of 2 left this month (already done; nothing changed)\n"
    r = kl("privileges", "use", "ada", "birthday_drink", "--id", "k2", "--db", ready)
    assert r.exit_code == 1
    assert "privilege_outside_window" in r.stderr
    r = kl("privileges", "usage", "--db", ready, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    rows = {(x["privilege"], x["tier"]): (x["members"], x["uses"], x["use_rate"]) for x in report["rows"]}
    assert rows[("free_drink", "gold")] == (2, 1, "0.5000")
    shown = kl("member", "show", "ada", "--db", ready)
    assert shown.stdout.endswith(
        "  Birthday drink: 1 of 1 left this year; usable in your birthday month; add your birthday to your profile\n"
        "  Free drink: 1 of 2 left this month\n"
        "  Priority pickup: unlimited\n"
    )
    table = kl("privileges", "usage", "--db", ready)
    assert "Free drink" in table.stdout
    assert "50%" in table.stdout
    bad = kl("privileges", "usage", "--period", "decade", "--db", ready)
    assert bad.exit_code == 2
    assert "unknown period 'decade'" in bad.stderr
