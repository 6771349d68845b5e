"""Console program: the active version, uploading (problems at their path and line), the diff,
activation and roll back (roles, CSRF, the audit log), and the same in a browser."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kinloop.services import programs
from kinloop.store.db import connect
from kinloop.store.tables import audit_log, members, program_versions
from tests.web.conftest import browser_sign_in, csrf_of, screenshot

COFFEE = (Path(__file__).resolve().parents[2] / "src/kinloop/examples/coffee.yaml").read_text(encoding="utf-8")
BROKEN = COFFEE.replace("per: 10, amount: 1}", "per: 0, amount: 1}")
DOUBLE_CHECK_IN = COFFEE.replace("per: 10, amount: 1}", "per: 10, amount: 2}")
HARD_GOLD = COFFEE.replace("{key: gold, name: Gold, threshold: 16}", "{key: gold, name: Gold, threshold: 100000}")


def _state(url: str) -> tuple[int, int | None, int]:
    """(versions stored, the active version, audit rows)."""
    with connect(url).connect() as conn:
        n = conn.execute(select(func.count()).select_from(program_versions)).scalar_one()
        active = conn.execute(select(program_versions.c.version).where(program_versions.c.active)).scalar()
        audits = conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
    return n, active, audits


def _last_audit(url: str) -> Any:
    with connect(url).connect() as conn:
        return conn.execute(select(audit_log).order_by(audit_log.c.id.desc()).limit(1)).one()


def _upload(client: TestClient, source: str, **files: Any) -> Any:
    token = csrf_of(client.get("/console/program").text)
    return client.post(
        "/console/program/versions", data={"csrf": token, "source": source}, files=files or None, follow_redirects=False
    )


def _activate(client: TestClient, number: int, **form: str) -> Any:
    token = csrf_of(client.get("/console/program").text)
    return client.post(
        f"/console/program/versions/{number}/activate", data={"csrf": token, **form}, follow_redirects=False
    )


def test_the_program_page_shows_the_active_version_and_its_file(console_as: Callable[[str], TestClient]) -> None:
    html = console_as("viewer").get("/console/program").text
    assert 'id="active-number">1<' in html
    assert "Coffee Club" in html
    assert "key: coffee" in html
    assert "Upload a new version" not in html  # a viewer may not configure
    assert "Roll back" not in html


def test_a_broken_file_shows_each_problem_at_its_path_and_line_and_stores_nothing(
    demo_url: str, console_as: Callable[[str], TestClient]
) -> None:
    client = console_as("operator")
    before = _state(demo_url)
    reply = _upload(client, BROKEN)
    assert reply.status_code == 422
    assert re.search(r'<code class="issue-path">rules\[1\]\.rate\.per</code>: must be greater than 0', reply.text)
    line = BROKEN.splitlines().index("    rate: {attribute: amount, per: 0, amount: 1}") + 1
    assert f'href="#src-{line}">line {line}</a>' in reply.text
    marked = re.search(rf'<li id="src-{line}"[^>]*class="has-issue">(.*?)</li>', reply.text)
    assert marked
    assert "must be greater than 0" in marked.group(1)
    assert "per: 0, amount: 1" in reply.text.split('id="program-source"')[1]  # the text stays to be fixed
    assert _state(demo_url) == before


def test_a_yaml_error_and_an_empty_form_are_shown_inline(
    demo_url: str, console_as: Callable[[str], TestClient]
) -> None:
    client = console_as("owner")
    before = _state(demo_url)
    reply = _upload(client, "key: coffee\nname: [unclosed\n")
    assert reply.status_code == 422
    assert "not valid YAML" in reply.text
    empty = _upload(client, "  ")
    assert empty.status_code == 422
    assert 'id="program-source-error">paste the program' in empty.text
    other = _upload(client, COFFEE.replace("key: coffee", "key: tea"))
    assert other.status_code == 422
    assert "this key belongs to program" in other.text
    assert _state(demo_url) == before


def test_a_good_file_is_stored_inactive_with_its_diff_then_activated_and_rolled_back(
    demo_url: str, console_as: Callable[[str], TestClient]
) -> None:
    client = console_as("operator")
    reply = _upload(client, "", file=("coffee.yaml", DOUBLE_CHECK_IN.encode(), "text/yaml"))
    assert reply.status_code == 303
    assert reply.headers["location"] == "/console/program/versions/2?uploaded=1"
    assert _state(demo_url)[:2] == (2, 1)  # stored, not active
    audit = _last_audit(demo_url)
    assert (audit.actor, audit.action, audit.target) == ("console:operator", "program.upload", "version 2")

    review = client.get(reply.headers["location"]).text
    assert "rules &#39;purchase_beans&#39; changed (rate)" in review
    assert '<span class="del">-    rate: {attribute: amount, per: 10, amount: 1}</span>' in review
    assert '<span class="add">+    rate: {attribute: amount, per: 10, amount: 2}</span>' in review

    assert _activate(client, 2, reason="double check-in week").headers["location"] == "/console/program?activated=2"
    assert _state(demo_url)[1] == 2
    audit = _last_audit(demo_url)
    assert (audit.action, audit.reason, audit.details) == (
        "program.activate",
        "double check-in week",
        {"from_version": 1, "to_version": 2},
    )

    confirm = client.get("/console/program/rollback")
    assert confirm.status_code == 200
    assert "Roll back to version 1" in confirm.text
    assert (
        '<span class="add">+    rate: {attribute: amount, per: 10, amount: 1}</span>' in confirm.text
    )  # what returning changes
    _activate(client, 1, rollback="true", reason="too generous")
    assert _state(demo_url)[1] == 1
    audit = _last_audit(demo_url)
    assert (audit.actor, audit.action, audit.reason) == ("console:operator", "program.rollback", "too generous")
    assert client.get("/console/program/rollback").status_code == 404  # version 1 is the first


def test_the_same_file_again_stores_nothing_new(demo_url: str, console_as: Callable[[str], TestClient]) -> None:
    client = console_as("owner")
    first = _upload(client, DOUBLE_CHECK_IN)
    again = _upload(client, DOUBLE_CHECK_IN)
    assert again.headers["location"] == "/console/program/versions/2?unchanged=1"
    assert first.headers["location"].startswith("/console/program/versions/2")
    assert _state(demo_url)[0] == 2


def test_activating_a_new_ladder_re_evaluates_tiers_as_the_api_does(
    demo_url: str, console_as: Callable[[str], TestClient]
) -> None:
    with connect(demo_url).connect() as conn:
        gold = conn.execute(select(func.count()).select_from(members).where(members.c.tier == "gold")).scalar_one()
    assert gold > 0, "the demo has Gold members"
    client = console_as("owner")
    _upload(client, HARD_GOLD)
    done = client.get(_activate(client, 2).headers["location"]).text
    assert re.search(r"Tiers re-evaluated: [\d,]+ members changed tier", done)
    with connect(demo_url).connect() as conn:
        still = conn.execute(select(func.count()).select_from(members).where(members.c.tier == "gold")).scalar_one()
        assert programs.active(conn).version == 2
    assert still < gold


def test_a_viewer_may_not_upload_or_activate(demo_url: str, console_as: Callable[[str], TestClient]) -> None:
    owner = console_as("owner")
    _upload(owner, DOUBLE_CHECK_IN)
    viewer = console_as("viewer")
    token = csrf_of(viewer.get("/console/program").text)
    assert "Activate version" not in viewer.get("/console/program/versions/2").text
    before = _state(demo_url)
    assert viewer.post("/console/program/versions", data={"csrf": token, "source": HARD_GOLD}).status_code == 403
    assert viewer.post("/console/program/versions/2/activate", data={"csrf": token}).status_code == 403
    assert viewer.get("/console/program/rollback").status_code == 403
    assert _state(demo_url) == before


def test_changes_need_the_csrf_token(demo_url: str, console_as: Callable[[str], TestClient]) -> None:
    client = console_as("owner")
    before = _state(demo_url)
    assert client.post("/console/program/versions", data={"source": DOUBLE_CHECK_IN}).status_code == 403
    assert client.post("/console/program/versions/1/activate").status_code == 403
    assert _state(demo_url) == before


def test_an_unknown_version_is_a_404_page(console_as: Callable[[str], TestClient]) -> None:
    client = console_as("owner")
    assert client.get("/console/program/versions/99").status_code == 404
    assert _activate(client, 99).status_code == 404


def test_browser_uploads_a_broken_then_a_good_version_activates_and_rolls_back(
    live_server: str, browser_page: Any, demo_url: str
) -> None:
    page = browser_page
    browser_sign_in(page, live_server, "owner")
    page.goto(f"{live_server}/console/program")
    screenshot(page, "program")
    page.get_by_label("Program YAML").fill(BROKEN)
    page.get_by_role("button", name="Check and upload").click()
    issues = page.locator("#program-issues")
    issues.wait_for()
    assert "rules[1].rate.per: must be greater than 0" in issues.inner_text()
    assert "must be greater than 0" in page.locator("li.has-issue").inner_text()
    screenshot(page, "program-upload-error")

    page.get_by_label("Program YAML").fill(DOUBLE_CHECK_IN)
    page.get_by_role("button", name="Check and upload").click()
    page.wait_for_url(re.compile(r".*/console/program/versions/2\?uploaded=1"))
    assert "purchase_beans" in page.locator(".program-changes").inner_text()
    assert page.locator("pre.diff .add", has_text="per: 10, amount: 2").count() == 1
    screenshot(page, "program-diff")

    page.get_by_role("button", name="Activate version 2").click()
    page.wait_for_url(re.compile(r".*/console/program\?activated=2"))
    assert page.locator("#active-number").inner_text() == "2"
    page.get_by_role("link", name=re.compile("Roll back to version 1")).click()
    page.get_by_label("Why (for the audit log)").fill("back to one Bean")
    page.get_by_role("button", name="Roll back to version 1").click()
    page.wait_for_url(re.compile(r".*/console/program\?activated=1"))
    assert page.locator("#active-number").inner_text() == "1"
    assert _state(demo_url)[:2] == (2, 1)
