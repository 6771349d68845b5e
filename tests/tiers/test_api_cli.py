"""The tier endpoints and the `kinloop tiers` commands, end to end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

import kinloop.api.tiers as tiers_api
import kinloop.cli.app as cli
from kinloop.api import deps, routes
from kinloop.store.tables import audit_log, tier_purchases
from tests.api.conftest import Api, assert_problem, build_api, event, row_counts
from tests.conftest import EXAMPLES, NOW

runner = CliRunner()
COFFEE = EXAMPLES / "coffee.yaml"


@pytest.fixture
def api(engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    for module in (routes, deps, tiers_api):
        monkeypatch.setattr(module, "utcnow", lambda: NOW)
    yield from build_api(engine, db_url)


def test_buying_a_paid_tier_is_idempotent(api: Api) -> None:
    api.post_event(event("p1", "m1", 250))  # Jade
    body = {"tier": "reserve", "idempotency_key": "order-77"}
    r = api.client.post("/v1/members/m1/tier-purchases", json=body, headers=api.auth("ingest"))
    assert r.status_code == 201, r.text
    assert r.json() == {
        "member_id": "m1",
        "tier": "reserve",
        "starts_at": "2026-03-01T12:00:00+00:00",
        "ends_at": "2027-03-01T12:00:00+00:00",
        "created": True,
    }
    again = api.client.post("/v1/members/m1/tier-purchases", json=body, headers=api.auth("ingest"))
    assert again.json() == {**r.json(), "created": False}
    member = api.client.get("/v1/members/m1", headers=api.auth("read")).json()
    assert member["tier"] == {"key": "reserve", "name": "Reserve"}
    assert member["tier_status"]["source"] == "paid"
    assert member["tier_status"]["earned"] == "jade"
    with api.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tier_purchases)).scalar() == 1


def test_refused_purchases_are_4xx_and_write_nothing(api: Api) -> None:
    api.post_event(event("p1", "m1", 250))
    before = row_counts(api.engine)
    r = api.client.post(
        "/v1/members/m1/tier-purchases", json={"tier": "gold", "idempotency_key": "k1"}, headers=api.auth("ingest")
    )
    assert_problem(r, 409, "tier_not_purchasable")
    r = api.client.post(
        "/v1/members/m1/tier-purchases", json={"tier": "diamond", "idempotency_key": "k2"}, headers=api.auth("ingest")
    )
    assert_problem(r, 422, "unknown_tier")
    r = api.client.post("/v1/members/m1/tier-purchases", json={"tier": "reserve"}, headers=api.auth("ingest"))
    assert r.status_code == 422
    assert row_counts(api.engine) == before


def test_an_admin_sets_a_tier_with_a_reason_and_it_is_in_the_history(api: Api) -> None:
    api.post_event(event("p1", "m1", 250))  # Jade at once
    r = api.client.put(
        "/v1/members/m1/tier",
        json={"tier": "gold", "reason": "press guest", "until": "2026-04-01T00:00:00Z"},
        headers=api.auth("admin"),
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"member_id": "m1", "tier": "gold", "changed": True}
    member = api.client.get("/v1/members/m1", headers=api.auth("read")).json()
    assert member["tier_status"]["manual"] == {
        "tier": "gold",
        "name": "Gold",
        "until": "2026-04-01T00:00:00+00:00",
        "text": "Gold until 2026-04-01",
        "locked": False,
    }
    history = api.client.get("/v1/members/m1/tier-history", headers=api.auth("read"))
    assert history.json() == {
        "member_id": "m1",
        "changes": [
            {
                "from": {"key": "jade", "name": "Jade"},
                "to": {"key": "gold", "name": "Gold"},
                "reason": "set by admin key: press guest",
                "at": "2026-03-01T12:00:00+00:00",
            },
            {
                "from": None,
                "to": {"key": "jade", "name": "Jade"},
                "reason": "event p1",
                "at": "2026-02-10T09:00:00+00:00",
            },
        ],
    }
    with api.engine.connect() as conn:
        assert conn.execute(select(audit_log.c.actor, audit_log.c.reason)).all() == [("admin key", "press guest")]


def test_bad_manual_tiers_are_refused_without_a_write(api: Api) -> None:
    before = row_counts(api.engine)
    r = api.client.put("/v1/members/m1/tier", json={"tier": "gold"}, headers=api.auth("admin"))
    assert r.status_code == 422  # the reason is required
    r = api.client.put("/v1/members/m1/tier", json={"tier": "nope", "reason": "x"}, headers=api.auth("admin"))
    assert_problem(r, 422, "unknown_tier")
    r = api.client.put(
        "/v1/members/m1/tier",
        json={"tier": "gold", "reason": "x", "lock": True, "until": "2026-04-01T00:00:00Z"},
        headers=api.auth("admin"),
    )
    assert_problem(r, 422, "invalid_input")
    r = api.client.put(
        "/v1/members/m1/tier",
        json={"tier": "gold", "reason": "x", "until": "2020-01-01T00:00:00Z"},
        headers=api.auth("admin"),
    )
    assert_problem(r, 422, "invalid_input")
    assert row_counts(api.engine) == before


def test_a_member_token_reads_its_own_tier_history_only(api: Api) -> None:
    api.post_event(event("p1", "m1", 250))
    api.post_event(event("p2", "m2", 250))
    token = {"Authorization": f"Bearer {api.member_token('m1')}"}
    assert api.client.get("/v1/members/m1/tier-history", headers=token).status_code == 200
    assert_problem(api.client.get("/v1/members/m2/tier-history", headers=token), 404, "unknown_member")


# --- CLI ------------------------------------------------------------------------------------------


def kl(*args: object) -> Any:
    result = runner.invoke(cli.app, [str(a) for a in args], env={"COLUMNS": "400"})
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def purchase(event_id: str, member: str, amount: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "member_id": member,
        "type": "purchase",
        "occurred_at": "2025-06-02T09:00:00Z",
        "attributes": {"amount": amount},
    }


@pytest.fixture
def ready(db_url: str, tmp_path: Path) -> str:
    assert kl("init", COFFEE, "--db", db_url).exit_code == 0
    rows = [purchase("a", "m1", 50), purchase("b", "m2", 250), purchase("c", "m3", 450), purchase("d", "m4", 900)]
    assert kl("ingest", jsonl(tmp_path / "e.jsonl", rows), "--db", db_url).exit_code == 0
    return db_url


def test_cli_preview_then_activation_with_grandfathering(ready: str, tmp_path: Path) -> None:
    harder = tmp_path / "coffee.yaml"
    harder.write_text(COFFEE.read_text(encoding="utf-8").replace("threshold: 4}", "threshold: 8}"), encoding="utf-8")
    result = kl("tiers", "preview", harder, "--db", ready, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "program": "coffee",
        "matrix": {"green": {"green": 1}, "jade": {"green": 1, "jade": 1}, "gold": {"gold": 1}},
    }
    table = kl("tiers", "preview", harder, "--db", ready)
    assert "from \\ to" in table.stdout
    assert kl("init", harder, "--db", ready, "--keep-tiers-until", "2099-01-01").exit_code == 0
    lines = kl("member", "show", "m2", "--db", ready).stdout.splitlines()
    assert lines[:4] == ["m2 — Jade", "  Stars: 5 ★", "  Beans: 25 Beans", "  Jade until 2099-01-01"]
    m2 = json.loads(kl("member", "show", "m2", "--db", ready, "--json").stdout)
    assert m2["tier"] == {"key": "jade", "name": "Jade"}
    assert m2["tier_status"]["kept"]["text"] == "Jade until 2099-01-01"
    evaluated = kl("tiers", "evaluate", "--db", ready, "--now", "2099-01-02T00:00:00+00:00", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["moves"] == {"jade→green": 1}


def test_cli_set_and_clear_a_manual_tier(ready: str) -> None:
    result = kl("tiers", "set", "m1", "gold", "--reason", "influencer", "--actor", "ana", "--lock", "--db", ready)
    assert result.exit_code == 0, result.output
    assert result.stdout == "m1: gold\n"
    assert kl("tiers", "set", "m1", "none", "--reason", "ended", "--db", ready).stdout == "m1: green\n"
    bad = kl("tiers", "set", "m1", "diamond", "--reason", "x", "--db", ready)
    assert bad.exit_code != 0
    assert "diamond" in bad.output
    both = kl("tiers", "set", "m1", "gold", "--reason", "x", "--lock", "--until", "2099-01-01", "--db", ready)
    assert both.exit_code != 0


def test_cli_evaluate_prints_the_moves(ready: str) -> None:
    result = kl("tiers", "evaluate", "--db", ready, "--now", "2027-01-01")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("4 members reviewed, 0 moved")
    assert kl("tiers", "evaluate", "--db", ready, "--now", "yesterday").exit_code != 0


def test_uploading_a_new_ladder_re_evaluates_members_with_grandfathering(api: Api) -> None:
    api.post_event(event("p1", "m1", 250))  # 5 ★: Jade
    api.post_event(event("p2", "m2", 250))
    harder = COFFEE.read_text(encoding="utf-8").replace("threshold: 4}", "threshold: 8}")
    r = api.client.post(
        "/v1/program/versions",
        json={"source": harder, "keep_tiers_until": "2026-06-01T00:00:00Z"},
        headers=api.auth("admin"),
    )
    assert r.status_code == 201, r.text
    member = api.client.get("/v1/members/m1", headers=api.auth("read")).json()
    assert member["tier"] == {"key": "jade", "name": "Jade"}
    assert member["tier_status"]["source"] == "kept"
    # Back to the first version, without grandfathering: Jade again by the old thresholds.
    r = api.client.post("/v1/program/versions/1/activate", headers=api.auth("admin"))
    assert r.status_code == 200, r.text
    assert api.client.get("/v1/members/m2", headers=api.auth("read")).json()["tier_status"]["source"] == "earned"
