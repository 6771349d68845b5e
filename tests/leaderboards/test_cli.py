"""`kinloop leaderboard KEY`, in-process on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kinloop.cli.leaderboard as leaderboard_cli
from tests.cli.test_cli import CLI_NOW, kl, purchase, ready, write_jsonl

__all__ = ["ready"]


@pytest.fixture(autouse=True)
def fixed_now(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leaderboard_cli, "utcnow", lambda: CLI_NOW)


def test_top_and_a_members_rank(ready: str, tmp_path: Path) -> None:
    at = "2026-02-20T09:00:00Z"
    rows = [purchase("p1", "ada", 1000, at), purchase("p2", "bob", 2000, at), purchase("p3", "cy", 1000, at)]
    assert kl("ingest", write_jsonl(tmp_path / "e.jsonl", rows), "--db", ready).exit_code == 0
    r = kl("leaderboard", "monthly_stars", "--period", "2026-02", "--top", "2", "--db", ready, "--json")
    assert r.exit_code == 0, r.output
    board = json.loads(r.stdout)
    assert [(e["rank"], e["member_id"], e["text"]) for e in board["entries"]] == [
        (1, "bob", "40 ★"),
        (2, "ada", "20 ★"),
    ]
    assert board["members"] == 3
    r = kl("leaderboard", "monthly_stars", "--period", "2026-02", "--member", "cy", "--db", ready)
    assert r.stdout == "cy: 3rd of 3 on Star collectors this month (2026-02), with 20 ★\n"
    table = kl("leaderboard", "monthly_stars", "--period", "2026-02", "--db", ready)
    assert "bob" in table.stdout
    assert "3 member(s) on the board" in table.stdout
    r = kl("leaderboard", "weekly", "--db", ready)
    assert r.exit_code == 3
    assert "unknown_leaderboard" in r.stderr
