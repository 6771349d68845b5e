"""Sign-in, sessions, roles and CSRF of the console."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from kinloop.api.app import create_app
from tests.web.conftest import PASSWORD, browser_sign_in, csrf_of, screenshot, sign_in


def test_pages_need_a_session(demo_url: str) -> None:
    client = TestClient(create_app(demo_url))
    reply = client.get("/console/dashboard", follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/console/login?next=/console/dashboard"


def test_wrong_password_is_refused_without_telling_which_part(demo_url: str) -> None:
    client = TestClient(create_app(demo_url))
    form = client.get("/console/login").text
    token = re.search(r'name="login_token" value="([^"]+)"', form)
    assert token
    for username, password in (("owner", "not-the-password"), ("nobody-here", PASSWORD)):
        reply = client.post(
            "/console/login", data={"username": username, "password": password, "login_token": token.group(1)}
        )
        assert reply.status_code == 401
        assert "wrong username or password" in reply.text
    assert "kinloop_console" not in client.cookies


def test_sign_in_form_needs_its_own_token(demo_url: str) -> None:
    client = TestClient(create_app(demo_url))
    reply = client.post("/console/login", data={"username": "owner", "password": PASSWORD, "login_token": "forged"})
    assert reply.status_code == 403
    assert "kinloop_console" not in client.cookies


def test_next_never_leaves_the_console(demo_url: str) -> None:
    client = TestClient(create_app(demo_url))
    token = re.search(r'name="login_token" value="([^"]+)"', client.get("/console/login").text)
    assert token
    reply = client.post(
        "/console/login",
        data={
            "username": "owner",
            "password": PASSWORD,
            "login_token": token.group(1),
            "next": "https://evil.example/",
        },
        follow_redirects=False,
    )
    assert reply.headers["location"] == "/console"


def test_a_change_without_the_csrf_token_is_refused(console_as: Callable[[str], TestClient]) -> None:
    client = console_as("owner")
    assert client.post("/console/logout", follow_redirects=False).status_code == 403
    assert client.get("/console/dashboard", follow_redirects=False).status_code == 200  # still signed in
    token = csrf_of(client.get("/console/dashboard").text)
    assert client.post("/console/logout", headers={"X-CSRF-Token": token}, follow_redirects=False).status_code == 303


def test_sign_out_ends_the_session_on_the_server(console_as: Callable[[str], TestClient]) -> None:
    client = console_as("viewer")
    cookie = client.cookies["kinloop_console"]
    token = csrf_of(client.get("/console/dashboard").text)
    client.post("/console/logout", data={"csrf": token}, follow_redirects=False)
    client.cookies.set("kinloop_console", cookie)  # a copy of the cookie kept elsewhere
    assert client.get("/console/dashboard", follow_redirects=False).status_code == 303


def test_a_disabled_operator_is_signed_out(demo_url: str) -> None:
    from kinloop.clock import utcnow
    from kinloop.services import operators
    from kinloop.store.db import connect

    app = create_app(demo_url)
    client = sign_in(TestClient(app), "operator")
    with connect(demo_url).begin() as conn:
        operators.disable(conn, "operator", now=utcnow())
    assert client.get("/console/dashboard", follow_redirects=False).status_code == 303


def test_browser_signs_in_and_out(live_server: str, browser_page: Any) -> None:
    browser_sign_in(browser_page, live_server, "owner")
    assert browser_page.get_by_role("heading", level=1).inner_text() == "Dashboard"
    screenshot(browser_page, "console-signed-in")
    browser_page.get_by_role("button", name="Sign out").click()
    browser_page.wait_for_url(re.compile(r".*/console/login"))
