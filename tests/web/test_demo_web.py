"""What `kinloop demo` prints to get a newcomer into the console and the portal."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient

from kinloop.api.app import create_app
from kinloop.clock import utcnow
from kinloop.demo import web_access
from kinloop.services import keys
from kinloop.store.db import connect
from tests.web.conftest import sign_in


def test_the_demo_login_signs_in_and_a_second_run_replaces_it(demo_url: str) -> None:
    engine = connect(demo_url)
    first = web_access(engine, "http://127.0.0.1:8000", now=utcnow())
    second = web_access(engine, "http://127.0.0.1:8000", now=utcnow())
    assert first.console_url == "http://127.0.0.1:8000/console"
    app = create_app(demo_url)
    client = sign_in(TestClient(app), second.username, second.password)
    assert client.get("/console/dashboard", follow_redirects=False).status_code == 200
    stale = TestClient(app)
    token = re.search(r'name="login_token" value="([^"]+)"', stale.get("/console/login").text)
    assert token
    refused = stale.post(
        "/console/login",
        data={"username": first.username, "password": first.password, "login_token": token.group(1)},
    )
    assert refused.status_code == 401  # the first run's password no longer opens the console


def test_portal_links_speak_for_different_members_of_the_program(demo_url: str) -> None:
    engine = connect(demo_url)
    access = web_access(engine, "http://127.0.0.1:8000", now=utcnow())
    assert len(access.portal_links) == 2
    with engine.begin() as conn:
        secret = keys.token_secret(conn, utcnow())
    members = set()
    for member_id, link in access.portal_links:
        parts = urlsplit(link)
        assert parts.path == "/portal/enter"
        who = keys.read_token(secret, parse_qs(parts.query)["token"][0], now=utcnow())
        assert who.member_id == member_id
        members.add(member_id)
    assert len(members) == 2
