"""The privilege endpoints over HTTP: use (idempotent, refusals as 409 problems with nothing
written), the member view's `privileges`, and utilisation."""

from __future__ import annotations

from tests.api.conftest import Api, assert_problem, event, row_counts

USES = "/v1/members/{member}/privileges/{key}/uses"


def use(api: Api, member: str, key: str, idem: str, kind: str = "ingest") -> object:
    return api.client.post(USES.format(member=member, key=key), json={"idempotency_key": idem}, headers=api.auth(kind))


def test_use_replay_conflict_and_quota(api: Api) -> None:
    api.post_event(event("gold", "m1", 1000))  # 20 ★: Gold
    r = use(api, "m1", "free_drink", "order-1")
    assert r.status_code == 200, r.text
    first = r.json()
    assert (first["remaining"], first["text"], first["replayed"]) == (
        1,
        "Free drink used; 1 of 2 left this month",
        False,
    )
    again = use(api, "m1", "free_drink", "order-1").json()
    assert again == {**first, "replayed": True}
    assert_problem(use(api, "m1", "priority_pickup", "order-1"), 409, "idempotency_conflict")
    assert use(api, "m1", "free_drink", "order-2").json()["remaining"] == 0
    before = row_counts(api.engine)
    body = assert_problem(use(api, "m1", "free_drink", "order-3"), 409, "privilege_quota_exhausted")
    assert body["detail"] == "Free drink: none of 2 left this month"
    assert row_counts(api.engine) == before
    member = api.client.get("/v1/members/m1", headers=api.auth("read")).json()
    assert [(p["key"], p["text"]) for p in member["privileges"]] == [
        ("birthday_drink", "1 of 1 left this year; usable in your birthday month; add your birthday to your profile"),
        ("free_drink", "none of 2 left this month"),
        ("priority_pickup", "unlimited"),
    ]


def test_refusals_are_typed(api: Api) -> None:
    api.post_event(event("green", "m1", 100))  # Green
    assert_problem(use(api, "m1", "free_drink", "k1"), 409, "privilege_not_granted")
    api.post_event(event("jade", "m1", 200))  # 6 ★: Jade
    assert_problem(use(api, "m1", "birthday_drink", "k1"), 409, "privilege_outside_window")
    assert_problem(use(api, "m1", "spa", "k1"), 404, "unknown_privilege")
    assert_problem(use(api, "nobody", "free_drink", "k1"), 404, "unknown_member")
    r = api.client.post(USES.format(member="m1", key="free_drink"), json={}, headers=api.auth("ingest"))
    assert assert_problem(r, 422, "invalid_request")["field"] == "idempotency_key"


def test_usage_report(api: Api) -> None:
    api.post_event(event("g1", "m1", 1000))
    api.post_event(event("g2", "m2", 1000))
    use(api, "m1", "free_drink", "a")
    r = api.client.get("/v1/program/privileges/usage?period=month", headers=api.auth("read"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["period"], body["from"], body["to"]) == ("month", "2026-03-01", "2026-03-31")
    gold = next(x for x in body["rows"] if (x["privilege"], x["tier"]) == ("free_drink", "gold"))
    assert (gold["members"], gold["uses"], gold["users"], gold["use_rate"]) == (2, 1, 1, "0.5000")
    assert_problem(
        api.client.get("/v1/program/privileges/usage?on=soon", headers=api.auth("read")), 422, "invalid_input"
    )
    assert_problem(
        api.client.get("/v1/program/privileges/usage?period=decade", headers=api.auth("read")), 422, "invalid_request"
    )
