"""`kinloop draws`, `kinloop envelopes` and `kinloop goals`, end to end on SQLite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import kinloop.cli.app as cli
from kinloop.cli import draws as draws_cli
from kinloop.cli import envelopes as envelopes_cli
from tests.conftest import EXAMPLES, NOW

runner = CliRunner()


def kl(*args: object) -> Any:
    result = runner.invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "400"})
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for module in (cli, draws_cli, envelopes_cli):
        monkeypatch.setattr(module, "utcnow", lambda: NOW)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    assert kl("init", EXAMPLES / "coffee.yaml", "--db", url).exit_code == 0
    for member, amount in (("m1", 500), ("m2", 100)):
        r = kl("adjust", member, "beans", amount, "--reason", "seed", "--actor", "t", "--db", url)
        assert r.exit_code == 0, r.output
    return url


def test_a_draw_from_its_file_to_its_verification(db: str, tmp_path: Path) -> None:
    r = kl("draws", "create", EXAMPLES / "draws" / "coffee_wheel.yaml", "--db", db)
    assert r.exit_code == 0, r.output
    assert "an entry pays out 15 Beans on average for 20 Beans (ratio 0.7350)" in r.output
    assert "seed: revealed when the draw closes" in r.output
    for i in range(3):
        r = kl("draws", "enter", "coffee_wheel", "m1", "--key", f"e{i}", "--db", db)
        assert r.exit_code == 0, r.output
        assert r.output.startswith("paid 20 Beans; won ")
    r = kl("draws", "enter", "coffee_wheel", "m1", "--key", "e4", "--db", db)
    assert (r.exit_code, "3 entries a day" in r.output) == (1, True)
    assert kl("draws", "verify", "coffee_wheel", "--db", db).exit_code == 1  # not revealed yet
    assert kl("draws", "close", "coffee_wheel", "--db", db).exit_code == 0
    r = kl("draws", "verify", "coffee_wheel", "--db", db)
    assert (r.exit_code, r.output.strip()) == (
        0,
        "coffee_wheel: all 3 entries recomputed from the revealed seed; they match",
    )
    record = json.loads(kl("draws", "record", "coffee_wheel", "--db", db).output)
    record["entries"][0]["roll"] = str(int(record["entries"][0]["roll"]) + 1)
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(record))
    r = kl("draws", "verify", forged, "--json")
    assert r.exit_code == 1
    assert json.loads(r.output)["problems"][0].startswith("entry 1: recorded number differs")
    stats = json.loads(kl("draws", "stats", "--db", db, "--json").output)
    assert (stats[0]["entries"], stats[0]["collected"]) == (3, 60)
    assert kl("verify", "--db", db).exit_code == 0


def test_a_bad_draw_file_names_the_problem(db: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (EXAMPLES / "draws" / "coffee_wheel.yaml").read_text().replace('odds: "0.75"', 'odds: "0.70"')
    bad.write_text(text)
    r = kl("draws", "create", bad, "--db", db)
    assert r.exit_code == 2
    assert "prizes: the odds sum to 0.95, not 1 as declared" in r.output


def test_envelope_jobs_and_compensation(db: str) -> None:
    r = kl("envelopes", "compensate", "m2", "--amount", 30, "--reason", "late order", "--key", "c1", "--db", db)
    assert r.exit_code == 0, r.output
    assert "compensation compensation:c1 to m2: 30 Beans" in r.output
    assert json.loads(kl("envelopes", "birthdays", "--db", db, "--json").output) == {"birthdays": {"sent": 0}}
    assert json.loads(kl("envelopes", "close", "--db", db, "--json").output) == {"closed": {"closed": 0, "returned": 0}}
    assert json.loads(kl("envelopes", "daily", "--db", db, "--json").output) == {"daily": {"sent": 0}}
    r = kl("envelopes", "stats", "--db", db)
    assert "compensation: 1 envelopes, 30 Beans sent, 30 Beans claimed (claim rate 1.0000)" in r.output


def test_goals(db: str) -> None:
    r = kl("goals", "create", "tree", "--name", "Plant a tree", "--currency", "beans", "--target", 100, "--db", db)
    assert (r.exit_code, r.output.strip()) == (0, "100 Beans to Plant a tree (round 1)")
    r = kl("goals", "donate", "tree", "m1", "--amount", 150, "--key", "d1", "--db", db)
    assert r.output.strip() == "you gave 100 Beans to Plant a tree; Plant a tree reached"
    r = kl("goals", "show", "tree", "--db", db)
    assert "round 1 reached" in r.output
    assert kl("goals", "donate", "tree", "m2", "--amount", 1, "--key", "d2", "--db", db).exit_code == 1
