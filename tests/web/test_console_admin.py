"""Console admin pages: webhooks and their delivery log, API keys, operators (owners only) and
the audit log — each change done, audited, and refused for the wrong role with nothing written;
secrets shown once."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from kinloop.api.app import create_app
from kinloop.clock import utcnow
from kinloop.domain.errors import KinloopError
from kinloop.services import audit, keys, operators, orders, programs
from kinloop.store.db import connect
from kinloop.store.tables import api_keys, audit_log, webhook_subscriptions
from tests.web.conftest import PASSWORD, browser_sign_in, csrf_of, screenshot, sign_in
from tests.web.test_console_outlets import audits, place, richest

Console = Callable[[str], TestClient]


def count(url: str, table: Any) -> int:
    with connect(url).connect() as conn:
        return len(conn.execute(select(table)).all())


# --- webhooks -------------------------------------------------------------------------------
def test_webhooks_are_for_owners_only(console_as: Console, demo_url: str) -> None:
    operator = console_as("operator")
    assert operator.get("/console/webhooks").status_code == 403
    token = csrf_of(operator.get("/console/mall").text)
    reply = operator.post(
        "/console/webhooks", data={"csrf": token, "url": "https://example.com/hook", "kinds": ["order.placed"]}
    )
    assert reply.status_code == 403
    assert count(demo_url, webhook_subscriptions) == 0
    assert audits(demo_url, "webhook.create") == []


def test_an_owner_creates_a_webhook_and_sees_its_secret_once(console_as: Console, demo_url: str) -> None:
    client = console_as("owner")
    token = csrf_of(client.get("/console/webhooks").text)
    reply = client.post(
        "/console/webhooks",
        data={
            "csrf": token,
            "url": "https://example.com/hook",
            "kinds": ["order.placed", "tier.changed"],
            "description": "the shop",
        },
    )
    assert reply.status_code == 200
    secret = re.search(r'id="webhook-secret">(whsec_[^<]+)<', reply.text)
    assert secret
    with connect(demo_url).connect() as conn:
        row = conn.execute(select(webhook_subscriptions)).one()
    assert (row.url, row.kinds, row.secret) == ("https://example.com/hook", ["order.placed", "tier.changed"], secret[1])
    again = client.get("/console/webhooks").text
    assert secret[1] not in again
    assert "https://example.com/hook" in again
    [entry] = audits(demo_url, "webhook.create")
    assert entry.actor == "console:owner"
    assert secret[1] not in str(entry.details)


def test_a_bad_url_or_no_kinds_is_shown_at_its_field(console_as: Console, demo_url: str) -> None:
    client = console_as("owner")
    token = csrf_of(client.get("/console/webhooks").text)
    reply = client.post("/console/webhooks", data={"csrf": token, "url": "ftp://x", "kinds": ["order.placed"]})
    assert reply.status_code == 422
    assert re.search(r'id="url-error">the URL must be absolute', reply.text)
    assert 'value="ftp://x"' in reply.text
    reply = client.post("/console/webhooks", data={"csrf": token, "url": "https://example.com/h"})
    assert reply.status_code == 422
    assert re.search(r'id="kinds-error">name at least one kind', reply.text)
    reply = client.post(
        "/console/webhooks", data={"csrf": token, "url": "https://example.com/h", "kinds": ["order.lost"]}
    )
    assert reply.status_code == 422
    assert "unknown kind" in reply.text
    assert count(demo_url, webhook_subscriptions) == 0
    assert audits(demo_url, "webhook.create") == []


def test_the_delivery_log_shows_each_delivery_and_disabling_drops_the_pending(
    console_as: Console, demo_url: str
) -> None:
    client = console_as("owner")
    token = csrf_of(client.get("/console/webhooks").text)
    client.post("/console/webhooks", data={"csrf": token, "url": "https://example.com/hook", "kinds": ["order.placed"]})
    place(demo_url, richest(demo_url, 1)[0], "latte")
    listing = client.get("/console/webhooks").text
    row = re.search(r'<tr data-webhook="1">(.*?)</tr>', listing, re.S)
    assert row
    assert re.search(r'<td class="num">1</td>\s*<td class="num">0</td>\s*<td class="num">0</td>', row[1])
    log = client.get("/console/webhooks/1").text
    assert "order.placed" in log
    assert "state-pending" in log
    assert "data-delivery=" not in client.get("/console/webhooks/1?status=delivered").text
    reply = client.post("/console/webhooks/1/disable", data={"csrf": token}, follow_redirects=False)
    assert reply.status_code == 303
    page = client.get(reply.headers["location"]).text
    assert "disabled" in page
    assert "state-failed" in client.get("/console/webhooks/1").text
    [entry] = audits(demo_url, "webhook.disable")
    assert (entry.actor, entry.target) == ("console:owner", "1")
    assert client.get("/console/webhooks/99").status_code == 404


# --- API keys -------------------------------------------------------------------------------
def test_an_owner_creates_a_key_that_works_and_is_shown_once(console_as: Console, demo_url: str) -> None:
    client = console_as("owner")
    token = csrf_of(client.get("/console/keys").text)
    reply = client.post("/console/keys", data={"csrf": token, "name": "the shop", "scope": "ingest"})
    assert reply.status_code == 200
    found = re.search(r'id="new-key">(kl_[0-9a-f]+_[^<]+)<', reply.text)
    assert found
    key = found[1]
    with connect(demo_url).connect() as conn:
        who = keys.authenticate(conn, key)
    assert (who.scope, who.name) == ("ingest", "the shop")
    prefix = key.split("_")[1]
    again = client.get("/console/keys").text
    assert key not in again
    assert f"kl_{prefix}_…" in again
    [entry] = audits(demo_url, "key.create")
    assert (entry.actor, entry.target, entry.details) == (
        "console:owner",
        prefix,
        {"scope": "ingest", "name": "the shop"},
    )


def test_a_key_with_an_unknown_scope_is_refused_at_the_field(console_as: Console, demo_url: str) -> None:
    client = console_as("owner")
    token = csrf_of(client.get("/console/keys").text)
    reply = client.post("/console/keys", data={"csrf": token, "name": "x", "scope": "root"})
    assert reply.status_code == 422
    assert re.search(r'id="scope-error">unknown scope', reply.text)
    assert count(demo_url, api_keys) == 0


def test_an_owner_revokes_a_key(console_as: Console, demo_url: str) -> None:
    with connect(demo_url).begin() as conn:
        key, info = keys.create(conn, programs.active(conn).program_id, "read", name="old", now=utcnow())
    client = console_as("owner")
    token = csrf_of(client.get("/console/keys").text)
    reply = client.post(f"/console/keys/{info.prefix}/revoke", data={"csrf": token}, follow_redirects=False)
    assert reply.status_code == 303
    with connect(demo_url).connect() as conn, pytest.raises(KinloopError, match="revoked"):
        keys.authenticate(conn, key)
    [entry] = audits(demo_url, "key.revoke")
    assert entry.target == info.prefix
    assert client.post("/console/keys/nope/revoke", data={"csrf": token}).status_code == 404


def test_keys_are_for_owners_only(console_as: Console, demo_url: str) -> None:
    with connect(demo_url).begin() as conn:
        key, info = keys.create(conn, programs.active(conn).program_id, "read", name="old", now=utcnow())
    operator = console_as("operator")
    assert operator.get("/console/keys").status_code == 403
    token = csrf_of(operator.get("/console/mall").text)
    assert operator.post("/console/keys", data={"csrf": token, "name": "x", "scope": "admin"}).status_code == 403
    assert operator.post(f"/console/keys/{info.prefix}/revoke", data={"csrf": token}).status_code == 403
    assert count(demo_url, api_keys) == 1
    with connect(demo_url).connect() as conn:
        keys.authenticate(conn, key)  # still valid
    assert audits(demo_url, "key.create") == audits(demo_url, "key.revoke") == []


# --- operators ------------------------------------------------------------------------------
def test_an_owner_creates_an_operator_who_can_sign_in(console_as: Console, demo_url: str) -> None:
    client = console_as("owner")
    page = client.get("/console/operators").text
    for name in ("owner", "operator", "viewer"):
        assert f'data-operator="{name}"' in page
    reply = client.post(
        "/console/operators",
        data={"csrf": csrf_of(page), "username": "barista", "role": "viewer", "password": "a-long-password"},
        follow_redirects=False,
    )
    assert reply.status_code == 303
    assert "The operator can sign in now." in client.get(reply.headers["location"]).text
    sign_in(TestClient(create_app(demo_url)), "barista", "a-long-password")
    [entry] = audits(demo_url, "operator.create")
    assert (entry.actor, entry.target, entry.details, entry.program_id) == (
        "console:owner",
        "barista",
        {"role": "viewer"},
        None,
    )


def test_operator_mistakes_are_shown_at_their_field_and_the_password_never_echoed(
    console_as: Console, demo_url: str
) -> None:
    client = console_as("owner")
    token = csrf_of(client.get("/console/operators").text)
    reply = client.post(
        "/console/operators", data={"csrf": token, "username": "new-one", "role": "operator", "password": "short-pw"}
    )
    assert reply.status_code == 422
    assert re.search(r'id="password-error">password must be at least 10', reply.text)
    assert "short-pw" not in reply.text
    assert 'value="new-one"' in reply.text
    reply = client.post(
        "/console/operators", data={"csrf": token, "username": "viewer", "role": "viewer", "password": PASSWORD}
    )
    assert reply.status_code == 422
    assert re.search(r'id="username-error">an operator &#39;viewer&#39; exists', reply.text)
    reply = client.post(
        "/console/operators", data={"csrf": token, "username": "x", "role": "king", "password": PASSWORD}
    )
    assert reply.status_code == 422
    assert re.search(r'id="role-error">role must be one of', reply.text)
    with connect(demo_url).connect() as conn:
        assert [o.username for o in operators.listing(conn)] == ["operator", "owner", "viewer"]
    assert audits(demo_url, "operator.create") == []


def test_an_owner_disables_an_operator_who_is_signed_out_at_once(console_as: Console, demo_url: str) -> None:
    victim = console_as("operator")
    assert victim.get("/console/mall").status_code == 200
    client = console_as("owner")
    token = csrf_of(client.get("/console/operators").text)
    reply = client.post("/console/operators/operator/disable", data={"csrf": token}, follow_redirects=False)
    assert reply.status_code == 303
    assert victim.get("/console/mall", follow_redirects=False).status_code == 303  # back to sign-in
    [entry] = audits(demo_url, "operator.disable")
    assert (entry.actor, entry.target) == ("console:owner", "operator")


def test_an_owner_cannot_disable_themselves(console_as: Console, demo_url: str) -> None:
    client = console_as("owner")
    token = csrf_of(client.get("/console/operators").text)
    reply = client.post("/console/operators/owner/disable", data={"csrf": token})
    assert reply.status_code == 422
    assert re.search(r'id="disable-error">you cannot disable your own account', reply.text)
    assert client.get("/console/operators").status_code == 200
    assert audits(demo_url, "operator.disable") == []


def test_operators_are_managed_by_owners_only(console_as: Console, demo_url: str) -> None:
    client = console_as("operator")
    assert client.get("/console/operators").status_code == 403
    token = csrf_of(client.get("/console/mall").text)
    reply = client.post(
        "/console/operators", data={"csrf": token, "username": "mole", "role": "owner", "password": PASSWORD}
    )
    assert reply.status_code == 403
    assert client.post("/console/operators/viewer/disable", data={"csrf": token}).status_code == 403
    with connect(demo_url).connect() as conn:
        assert [(o.username, o.disabled_at) for o in operators.listing(conn)] == [
            ("operator", None),
            ("owner", None),
            ("viewer", None),
        ]
    assert [e for e in audits(demo_url) if e.action.startswith("operator.")] == []


# --- the audit log --------------------------------------------------------------------------
def test_the_audit_log_lists_newest_first_and_filters(console_as: Console, demo_url: str) -> None:
    buyer = richest(demo_url, 1)[0]
    order_id = place(demo_url, buyer, "latte")
    with connect(demo_url).begin() as conn:
        orders.transition(conn, programs.active(conn), order_id, "cancel", reason="typo", actor="t", now=utcnow())
        audit.record(
            conn, None, actor="console:owner", action="order.cancel", target=str(order_id), reason="typo", now=utcnow()
        )
    client = console_as("viewer")  # anyone signed in may read the log
    html = client.get("/console/audit").text
    ids = [int(i) for i in re.findall(r'data-audit="(\d+)"', html)]
    assert ids == sorted(ids, reverse=True)
    assert len(ids) == len(audits(demo_url))
    assert '<option value="order.cancel"' in html
    only = client.get("/console/audit?actor=owner&action=order.cancel").text
    assert len(re.findall(r"data-audit=", only)) == 1
    assert "typo" in only
    assert len(re.findall(r"data-audit=", client.get("/console/audit?target=member-").text)) >= 1
    assert "No entries match" in client.get("/console/audit?actor=nobody_100%25").text


def test_the_audit_log_pages_back(demo_url: str, console_as: Console, monkeypatch: pytest.MonkeyPatch) -> None:
    from kinloop.web.console import admin

    monkeypatch.setattr(admin, "AUDIT_PAGE", 4)
    total = len(audits(demo_url))
    assert total > 4
    client = console_as("viewer")
    seen: list[int] = []
    url: str | None = "/console/audit?action="
    while url:
        html = client.get(url).text
        seen += [int(i) for i in re.findall(r'data-audit="(\d+)"', html)]
        older = re.search(r'href="([^"]+)">Older', html)
        url = older[1].replace("&amp;", "&") if older else None
    with connect(demo_url).connect() as conn:
        expected = list(conn.execute(select(audit_log.c.id).order_by(audit_log.c.id.desc())).scalars())
    assert seen == expected


# --- in a browser -----------------------------------------------------------------------------
def test_browser_creates_an_api_key(live_server: str, browser_page: Any, demo_url: str) -> None:
    page = browser_page
    browser_sign_in(page, live_server, "owner")
    page.goto(f"{live_server}/console/keys")
    page.get_by_label("Name (who or what uses it)").fill("loyalty app")
    page.get_by_label("Scope").select_option("read")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").inner_text()
    assert key.startswith("kl_")
    with connect(demo_url).connect() as conn:
        assert keys.authenticate(conn, key).scope == "read"
    assert page.locator(f"tr[data-key='{key.split('_')[1]}']").count() == 1
    screenshot(page, "keys")
    page.goto(f"{live_server}/console/webhooks")
    page.get_by_label("URL (http:// or https://)").fill("https://example.com/kinloop")
    page.get_by_label("order.placed").check()
    page.get_by_role("button", name="Create webhook").click()
    assert page.locator("#webhook-secret").inner_text().startswith("whsec_")
    screenshot(page, "webhooks")
    page.goto(f"{live_server}/console/operators")
    screenshot(page, "operators")
    page.goto(f"{live_server}/console/audit")
    assert page.locator("td", has_text="key.create").count() == 1
    screenshot(page, "audit")
