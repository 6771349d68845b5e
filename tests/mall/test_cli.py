"""`kinloop rewards|orders|holds|redemptions` and `kinloop member expiring`, in-process."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kinloop.cli import app as cli
from kinloop.cli import mall as mall_cli
from tests.conftest import EXAMPLES

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SEED = EXAMPLES / "mall" / "coffee-rewards.yaml"
CODES = EXAMPLES / "mall" / "cinema-codes.txt"
runner = CliRunner()


def kl(*args: object) -> Any:
    result = runner.invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "400"})
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def ok(*args: object) -> Any:
    result = kl(*args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else result.stdout


@pytest.fixture
def shop(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The coffee program and its mall, m1 with 1,000 Beans."""
    monkeypatch.setattr(cli, "utcnow", lambda: NOW)
    monkeypatch.setattr(mall_cli, "utcnow", lambda: NOW)
    ok("init", EXAMPLES / "coffee.yaml", "--db", db_url)
    ok("rewards", "load", SEED, "--db", db_url)
    ok("rewards", "codes", "upload", "cinema", CODES, "--db", db_url)
    ok("adjust", "m1", "beans", 1000, "--reason", "seed", "--actor", "test", "--db", db_url)
    return db_url


def test_the_coffee_mall_has_a_sold_out_item_and_a_promotion(shop: str) -> None:
    listed = {r["key"]: r for r in ok("rewards", "list", "--db", shop, "--json")}
    assert listed["tumbler"]["sold_out"] is True
    assert (listed["latte"]["price"], listed["latte"]["regular_price"], listed["latte"]["on_sale"]) == (90, 120, True)
    assert listed["cinema"]["left"] == 20
    again = ok("rewards", "load", SEED, "--db", shop, "--json")
    assert set(again.values()) == {"updated"}


def test_an_order_from_placing_to_refund(shop: str) -> None:
    placed = ok("orders", "place", "m1", "mug", "--id", "o1", "--db", shop, "--json")
    assert (placed["status"], placed["points"]) == ("placed", 400)
    assert ok("orders", "place", "m1", "mug", "--id", "o1", "--db", shop, "--json")["replayed"] is True
    refused = kl("orders", "fulfil", placed["order_id"], "--db", shop)
    assert (refused.exit_code, refused.stderr.strip()) == (
        2,
        "error invalid_input (shipping_reference): a physical reward is fulfilled with a shipping reference",
    )
    ok("orders", "fulfil", placed["order_id"], "--shipping-reference", "P-1", "--db", shop)
    refunded = ok("orders", "refund", placed["order_id"], "--reason", "broken", "--db", shop, "--json")
    assert [h["status"] for h in refunded["history"]] == ["placed", "fulfilled", "refunded"]
    assert ok("member", "show", "m1", "--db", shop, "--json")["balances"]["beans"] == 1000
    assert ok("verify", "--db", shop).startswith("ok:")


def test_refusals_exit_with_the_refused_code(shop: str) -> None:
    gated = kl("orders", "place", "m1", "tumbler", "--db", shop)
    assert (gated.exit_code, gated.stderr.strip()) == (
        1,
        "error tier_gated (reward): Gold tumbler is for Gold members only",
    )
    code = ok("orders", "place", "m1", "cinema", "--db", shop, "--json")["codes"]
    assert code == ["CINE-5FECEB66FF"]
    ok("orders", "place", "m1", "cinema", "--db", shop)
    limited = kl("orders", "place", "m1", "cinema", "--db", shop)
    assert limited.exit_code == 1
    assert "limited to 2 per month per member" in limited.stderr


def test_holds_and_expiring_and_redemptions(shop: str) -> None:
    hold = ok("holds", "create", "m1", "beans", 100, "--reference", "cart-1", "--db", shop, "--json")
    assert ok("member", "show", "m1", "--db", shop, "--json")["holds"]["held"] == {"beans": 100}
    assert ok("holds", "capture", hold["hold_id"], "--db", shop, "--json")["status"] == "captured"
    assert ok("holds", "capture", hold["hold_id"], "--db", shop, "--json")["replayed"] is True
    assert ok("holds", "expire", "--db", shop, "--json") == {"released": {}}
    soon = ok("member", "expiring", "m1", "--days", "400", "--db", shop, "--json")
    assert soon["expiring"][0]["text"] == "900 Beans expire on 2027-03-01"
    ok("orders", "place", "m1", "espresso", "--db", shop)
    report = ok("redemptions", "--since", "2026-03-01T00:00:00+00:00", "--db", shop, "--json")
    assert [(r["key"], r["units"], r["points"]) for r in report["by_reward"]] == [("espresso", 1, 50)]


def test_a_bad_seed_names_the_reward_and_field(shop: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rewards:\n  cup: {name: Cup, currency: beans, price: -3, tiers: [platinum]}\n", encoding="utf-8")
    result = kl("rewards", "load", bad, "--db", shop)
    assert result.exit_code == 2
    assert "rewards.cup: price: must be greater than 0, got -3; tiers[0]: unknown tier 'platinum'" in result.stderr
