"""Fixtures of the web tests: a small demo database, signed-in console clients, a live server
and a headless Chromium (the system's, never a downloaded one).

The demo database is built once per session; every test gets its own copy, so tests may change
it freely. Browser tests need /usr/bin/chromium (`apt-get install -y chromium`; .ci/run does):
without it they are skipped, except under CI=true, where a missing browser is a failure.
"""

from __future__ import annotations

import io
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from rich.console import Console

from kinloop.api.app import create_app
from kinloop.clock import utcnow
from kinloop.demo import run_demo
from kinloop.services import operators
from kinloop.store.db import connect

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("KINLOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# One operator per role; the password is the same for all (at least 10 characters).
PASSWORD = "demo-password-1"
ROLES = ("owner", "operator", "viewer")


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo database (coffee program, 80 members over 30 days, the mall and outlets) and one
    operator per role (`owner`, `operator`, `viewer`, password PASSWORD), built once."""
    path = tmp_path_factory.mktemp("web-demo") / "demo.db"
    quiet = Console(file=io.StringIO())
    run_demo(f"sqlite:///{path}", members_n=80, days=30, seed=11, console=quiet, progress_console=quiet)
    engine = connect(f"sqlite:///{path}")
    with engine.begin() as conn:
        for role in ROLES:
            operators.create(conn, role, role, PASSWORD, now=utcnow())
    engine.dispose()
    return path


@pytest.fixture
def demo_url(demo_template: Path, tmp_path: Path) -> str:
    """A copy of the demo database of this test's own."""
    path = tmp_path / "demo.db"
    # SQLite's backup, not a file copy: the template's last writes may still be in its WAL file.
    with sqlite3.connect(demo_template) as source, sqlite3.connect(path) as target:
        source.backup(target)
    return f"sqlite:///{path}"


def csrf_of(html: str) -> str:
    """The CSRF token a console page carries (forms and htmx send it back)."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    """Sign a test client in to the console through the sign-in form."""
    form = client.get("/console/login")
    token = re.search(r'name="login_token" value="([^"]+)"', form.text)
    assert token
    reply = client.post(
        "/console/login",
        data={"username": username, "password": password, "login_token": token.group(1), "next": "/console"},
        follow_redirects=False,
    )
    assert reply.status_code == 303, reply.text
    return client


@pytest.fixture
def console_as(demo_url: str) -> Callable[[str], TestClient]:
    """`console_as("viewer")`: a TestClient signed in as that role's operator."""
    app = create_app(demo_url)

    def make(role: str) -> TestClient:
        return sign_in(TestClient(app), role)

    return make


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def live_server(demo_url: str) -> Iterator[str]:
    """`kinloop serve` on a free loopback port over this test's demo copy; yields the base URL."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(demo_url), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless system Chromium driven by Playwright."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs it with apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context and page (own cookies), closed after the test."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artefact (test-artifacts/screenshots/NAME.png)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def browser_sign_in(page: Any, base: str, username: str, password: str = PASSWORD) -> None:
    """Sign in through the console's form, as a person would."""
    page.goto(f"{base}/console/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/console/(?!login).*"))
