"""The leaderboard endpoints over HTTP: a member token reads boards and its own rank only."""

from __future__ import annotations

from tests.api.conftest import Api, assert_problem, event


def test_a_member_token_reads_the_board_and_its_own_rank(api: Api) -> None:
    api.post_event(event("a", "m1", 1000, occurred_at="2026-02-27T09:00:00Z"))  # February
    api.post_event(event("b", "m1", 500))  # 10 ★ in the default event month (February)
    api.post_event(event("c", "m2", 2000))
    token = {"Authorization": f"Bearer {api.member_token('m1')}"}
    r = api.client.get("/v1/leaderboards/monthly_stars?period=2026-02&limit=5", headers=token)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["period"], body["members"]) == ("Star collectors this month", "2026-02", 2)
    assert [(e["rank"], e["member_id"], e["score"], e["text"]) for e in body["entries"]] == [
        (1, "m2", 40, "40 ★"),
        (2, "m1", 30, "30 ★"),
    ]
    r = api.client.get("/v1/leaderboards/monthly_stars/members/m1?period=2026-02", headers=token)
    assert r.status_code == 200, r.text
    mine = r.json()
    assert (mine["rank"], mine["of"], mine["score"]) == (2, 2, 30)
    assert mine["text"] == "2nd of 2 on Star collectors this month (2026-02), with 30 ★"
    # Another member's rank: as if that member did not exist.
    assert_problem(api.client.get("/v1/leaderboards/monthly_stars/members/m2", headers=token), 404, "unknown_member")
    # The default period is the current one (March at the fixed clock): empty.
    assert api.client.get("/v1/leaderboards/monthly_stars", headers=token).json()["entries"] == []


def test_bad_requests(api: Api) -> None:
    read = api.auth("read")
    assert_problem(api.client.get("/v1/leaderboards/nope", headers=read), 404, "unknown_leaderboard")
    assert_problem(api.client.get("/v1/leaderboards/monthly_stars?period=2026-13", headers=read), 422, "invalid_input")
    assert_problem(api.client.get("/v1/leaderboards/monthly_stars?period=soon", headers=read), 422, "invalid_request")
    assert_problem(api.client.get("/v1/leaderboards/monthly_stars?limit=0", headers=read), 422, "invalid_request")
    assert_problem(api.client.get("/v1/leaderboards/monthly_stars?group=x", headers=read), 422, "invalid_input")
