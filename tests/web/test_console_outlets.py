"""Console outlets: the mall (edit, codes), the order queue and its state actions, draws and
campaigns — each page over the demo's data, each change done, audited and refused for the
wrong role with nothing written."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kinloop.clock import utcnow
from kinloop.services import orders, programs
from kinloop.store.db import connect
from kinloop.store.tables import audit_log, balances, draw_entries, draws, members, reward_codes, rewards
from kinloop.store.tables import orders as orders_table
from kinloop.web.console import outlets
from tests.web.conftest import browser_sign_in, csrf_of, screenshot

Console = Callable[[str], TestClient]


# --- helpers --------------------------------------------------------------------------------
def richest(url: str, n: int) -> list[str]:
    """The `n` members with the most Beans (enough to redeem a few rewards)."""
    with connect(url).connect() as conn:
        return list(
            conn.execute(
                select(members.c.member_id)
                .join(balances, balances.c.member_pk == members.c.id)
                .where(balances.c.currency == "beans")
                .order_by(balances.c.available.desc(), members.c.member_id)
                .limit(n)
            ).scalars()
        )


def place(url: str, member_id: str, reward: str, quantity: int = 1) -> int:
    with connect(url).begin() as conn:
        order = orders.place(conn, programs.active(conn), member_id, reward, quantity=quantity, key=None, now=utcnow())
        return order.id


def audits(url: str, action: str | None = None) -> list[Any]:
    with connect(url).connect() as conn:
        query = select(audit_log).order_by(audit_log.c.id)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        return list(conn.execute(query).all())


def reward_row(url: str, key: str) -> Any:
    with connect(url).connect() as conn:
        return conn.execute(select(rewards).where(rewards.c.key == key)).one()


def order_status(url: str, order_id: int) -> str:
    with connect(url).connect() as conn:
        return str(conn.execute(select(orders_table.c.status).where(orders_table.c.id == order_id)).scalar_one())


def beans(url: str, member_id: str) -> int:
    with connect(url).connect() as conn:
        return int(
            conn.execute(
                select(balances.c.available)
                .join(members, members.c.id == balances.c.member_pk)
                .where(members.c.member_id == member_id, balances.c.currency == "beans")
            ).scalar_one()
        )


def htmx(token: str) -> dict[str, str]:
    return {"HX-Request": "true", "X-CSRF-Token": token}


# --- the mall -------------------------------------------------------------------------------
def test_mall_lists_every_reward_with_price_stock_limits_and_gates(console_as: Console) -> None:
    html = console_as("viewer").get("/console/mall").text
    for name in ("Espresso", "Caffè latte", "Coffee Club mug", "Gold tumbler", "Cinema ticket"):
        assert name in html
    latte = _row(html, "latte")
    assert "90 Beans" in latte
    assert "on sale" in latte
    assert "regular 120 Beans" in latte
    assert "sold out" in _row(html, "tumbler")
    assert "Gold" in _row(html, "tumbler")  # the tier gate in the program's words
    assert "1 per day" in _row(html, "espresso")
    assert "unlimited" in _row(html, "espresso")
    assert re.search(r"250\s*</td>", _row(html, "mug").replace("<br>", "")) or ">250" in _row(html, "mug")
    assert "codes" in _row(html, "cinema")


def _row(html: str, key: str) -> str:
    found = re.search(rf'<tr data-[a-z]+="{re.escape(key)}">(.*?)</tr>', html, re.S)
    assert found, f"no row for {key}"
    return found.group(1)


def test_a_viewer_sees_no_edit_form_and_is_refused_an_edit(console_as: Console, demo_url: str) -> None:
    client = console_as("viewer")
    page = client.get("/console/mall/latte").text
    assert 'name="price"' not in page
    before = reward_row(demo_url, "latte")
    reply = client.post("/console/mall/latte", data={"csrf": csrf_of(page), "price": "1", "active": "1"})
    assert reply.status_code == 403
    assert reward_row(demo_url, "latte") == before
    assert audits(demo_url, "reward.update") == []


def test_an_operator_changes_price_stock_promo_and_availability(console_as: Console, demo_url: str) -> None:
    client = console_as("operator")
    token = csrf_of(client.get("/console/mall/mug").text)
    reply = client.post(
        "/console/mall/mug",
        data={
            "csrf": token,
            "price": "450",
            "stock": "300",
            "promo_starts": ["2026-12-24T00:00", ""],
            "promo_ends": ["2026-12-27T00:00", ""],
            "promo_price": ["350", ""],
            "hidden": "1",
        },
        follow_redirects=False,
    )
    assert reply.status_code == 303, reply.text
    row = reward_row(demo_url, "mug")
    assert (row.price, row.stock, row.active, row.hidden) == (450, 300, False, True)
    assert row.promos == [
        {"starts_at": "2026-12-24T00:00:00+01:00", "ends_at": "2026-12-27T00:00:00+01:00", "price": 350}
    ]
    [entry] = audits(demo_url, "reward.update")
    assert (entry.actor, entry.target) == ("console:operator", "mug")
    assert set(entry.details["changed"]) == {"price", "stock", "promos", "active", "hidden"}
    assert entry.details["changed"]["price"] == ["400", "450"]
    page = client.get(reply.headers["location"]).text
    assert "Saved." in page
    assert "350 Beans" in page


def test_an_edit_with_mistakes_shows_each_next_to_its_field_and_writes_nothing(
    console_as: Console, demo_url: str
) -> None:
    client = console_as("operator")
    token = csrf_of(client.get("/console/mall/latte").text)
    before = reward_row(demo_url, "latte")
    reply = client.post(
        "/console/mall/latte",
        data={
            "csrf": token,
            "price": "12.5",
            "stock": "lots",
            "promo_starts": ["", "2026-12-10T00:00"],
            "promo_ends": ["", "2026-12-01T00:00"],
            "promo_price": ["", "80"],
            "active": "1",
        },
    )
    assert reply.status_code == 422
    html = reply.text
    assert re.search(r'id="stock-error">a whole number', html)
    assert 'id="price"' in html
    assert 'value="12.5"' in html
    # Only the form's own mistakes are reported before the domain checks run; fix the stock:
    reply = client.post(
        "/console/mall/latte",
        data={
            "csrf": token,
            "price": "12.5",
            "stock": "",
            "promo_starts": ["", "2026-12-10T00:00"],
            "promo_ends": ["", "2026-12-01T00:00"],
            "promo_price": ["", "80"],
            "active": "1",
        },
    )
    assert reply.status_code == 422
    assert re.search(r'id="price-error">[^<]*decimal places', reply.text)
    # The promo was the form's second row: its error is shown on that row.
    assert re.search(r'id="promo-ends-1-error">must be after starts_at', reply.text)
    assert reward_row(demo_url, "latte") == before
    assert audits(demo_url, "reward.update") == []


def test_a_stock_below_what_is_sold_is_refused_at_the_stock_field(console_as: Console, demo_url: str) -> None:
    buyer = richest(demo_url, 1)[0]
    place(demo_url, buyer, "mug")
    place(demo_url, buyer, "mug")
    client = console_as("operator")
    token = csrf_of(client.get("/console/mall/mug").text)
    reply = client.post("/console/mall/mug", data={"csrf": token, "price": "400", "stock": "1", "active": "1"})
    assert reply.status_code == 422
    assert re.search(r'id="stock-error">stock 1 is below the 2 already sold', reply.text)
    assert reward_row(demo_url, "mug").stock == 250


def test_codes_are_uploaded_and_duplicates_refused(console_as: Console, demo_url: str) -> None:
    with connect(demo_url).connect() as conn:
        existing = conn.execute(select(reward_codes.c.code).limit(1)).scalar_one()
        count = conn.execute(select(func.count()).select_from(reward_codes)).scalar_one()
    client = console_as("operator")
    token = csrf_of(client.get("/console/mall/cinema").text)
    reply = client.post(
        "/console/mall/cinema/codes", data={"csrf": token, "codes": f"NEW-1\nNEW-2\n\nNEW-1\n{existing}\n"}
    )
    assert reply.status_code == 200
    assert "2 codes added" in reply.text
    assert "2 refused as duplicates" in reply.text
    with connect(demo_url).connect() as conn:
        assert conn.execute(select(func.count()).select_from(reward_codes)).scalar_one() == count + 2
    [entry] = audits(demo_url, "reward.codes")
    assert entry.actor == "console:operator"
    assert entry.details == {"added": 2, "refused": 2}


def test_codes_for_a_reward_without_codes_or_an_empty_upload_are_refused_inline(
    console_as: Console, demo_url: str
) -> None:
    client = console_as("owner")
    token = csrf_of(client.get("/console/mall/cinema").text)
    reply = client.post("/console/mall/cinema/codes", data={"csrf": token, "codes": "\n  \n"})
    assert reply.status_code == 422
    assert re.search(r'id="codes-error">no codes given', reply.text)
    reply = client.post("/console/mall/mug/codes", data={"csrf": token, "codes": "X"})
    assert reply.status_code == 422
    assert "does not issue codes" in reply.text
    assert audits(demo_url, "reward.codes") == []


def test_a_viewer_cannot_upload_codes(console_as: Console, demo_url: str) -> None:
    client = console_as("viewer")
    token = csrf_of(client.get("/console/mall/cinema").text)
    assert client.post("/console/mall/cinema/codes", data={"csrf": token, "codes": "V-1"}).status_code == 403
    with connect(demo_url).connect() as conn:
        assert conn.execute(select(reward_codes).where(reward_codes.c.code == "V-1")).first() is None
    assert audits(demo_url, "reward.codes") == []


def test_an_unknown_reward_is_a_404_page(console_as: Console) -> None:
    reply = console_as("viewer").get("/console/mall/no-such-reward")
    assert reply.status_code == 404
    assert "no reward" in reply.text


# --- orders ---------------------------------------------------------------------------------
@pytest.fixture
def queue(demo_url: str) -> dict[str, Any]:
    """Orders of three kinds: a physical mug, a digital cinema ticket with a code, a latte."""
    a, b, c = richest(demo_url, 3)
    return {
        "mug": place(demo_url, a, "mug"),
        "cinema": place(demo_url, b, "cinema"),
        "latte": place(demo_url, c, "latte"),
        "members": {"mug": a, "cinema": b, "latte": c},
    }


def test_the_queue_lists_orders_newest_first_and_filters_by_state(
    console_as: Console, demo_url: str, queue: dict[str, Any]
) -> None:
    client = console_as("viewer")
    html = client.get("/console/orders").text
    ids = [int(i) for i in re.findall(r'<tr id="order-(\d+)"', html)]
    assert ids == sorted([queue["mug"], queue["cinema"], queue["latte"]], reverse=True)
    assert f'href="/console/members/{queue["members"]["mug"]}"' in html
    assert 'name="csrf"' in html
    assert "Confirm</button>" not in html
    with connect(demo_url).begin() as conn:
        orders.transition(conn, programs.active(conn), queue["latte"], "confirm", actor="test", now=utcnow())
    confirmed = client.get("/console/orders?state=confirmed").text
    assert re.findall(r'<tr id="order-(\d+)"', confirmed) == [str(queue["latte"])]
    assert client.get("/console/orders?state=lost").status_code == 422


def test_the_queue_pages_back_with_a_cursor(
    console_as: Console, queue: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outlets, "ORDERS_PER_PAGE", 2)
    client = console_as("viewer")
    first = client.get("/console/orders").text
    assert len(re.findall(r'<tr id="order-', first)) == 2
    older = re.search(r'href="(/console/orders\?before=\d+)">Older', first)
    assert older
    second = client.get(older.group(1)).text
    assert re.findall(r'<tr id="order-(\d+)"', second) == [str(queue["mug"])]
    assert "Older" not in second
    assert "Newest" in second


def test_an_order_page_shows_member_reward_codes_and_history(console_as: Console, queue: dict[str, Any]) -> None:
    html = console_as("operator").get(f"/console/orders/{queue['cinema']}").text
    assert f'href="/console/members/{queue["members"]["cinema"]}"' in html
    assert 'href="/console/mall/cinema"' in html
    codes = re.search(r"<dt>Codes issued</dt><dd>(.*?)</dd>", html, re.S)
    assert codes
    assert "<code>" in codes.group(1)
    assert "placed" in html
    for action in ("Confirm", "Fulfil", "Cancel"):
        assert f">{action}</button>" in html
    assert ">Refund</button>" not in html
    assert ">Complete</button>" not in html


def test_an_operator_moves_an_order_through_its_states_with_htmx(
    console_as: Console, demo_url: str, queue: dict[str, Any]
) -> None:
    client = console_as("operator")
    order_id = queue["mug"]
    token = csrf_of(client.get(f"/console/orders/{order_id}").text)
    row = client.post(f"/console/orders/{order_id}/confirm", data={"view": "row"}, headers=htmx(token))
    assert row.status_code == 200
    assert row.text.lstrip().startswith(f'<tr id="order-{order_id}" data-status="confirmed">')
    # A physical reward needs a shipping reference: said next to the field, nothing changes.
    panel = client.post(f"/console/orders/{order_id}/fulfil", data={"view": "panel"}, headers=htmx(token))
    assert panel.status_code == 422
    assert re.search(r'id="fulfil-shipping_reference-error">a physical reward is fulfilled', panel.text)
    assert order_status(demo_url, order_id) == "confirmed"
    panel = client.post(
        f"/console/orders/{order_id}/fulfil",
        data={"view": "panel", "shipping_reference": "PARCEL-42"},
        headers=htmx(token),
    )
    assert panel.status_code == 200
    assert 'data-status="fulfilled"' in panel.text
    assert "PARCEL-42" in panel.text
    plain = client.post(f"/console/orders/{order_id}/complete", data={"csrf": token}, follow_redirects=False)
    assert plain.status_code == 303
    assert plain.headers["location"] == f"/console/orders/{order_id}?done=complete"
    assert order_status(demo_url, order_id) == "completed"
    moves = [
        (e.action, e.actor, e.target, e.details.get("to")) for e in audits(demo_url) if e.action.startswith("order.")
    ]
    assert moves == [
        ("order.confirm", "console:operator", str(order_id), "confirmed"),
        ("order.fulfil", "console:operator", str(order_id), "fulfilled"),
        ("order.complete", "console:operator", str(order_id), "completed"),
    ]


def test_an_illegal_transition_is_shown_inline_and_changes_nothing(
    console_as: Console, demo_url: str, queue: dict[str, Any]
) -> None:
    client = console_as("operator")
    order_id = queue["latte"]
    token = csrf_of(client.get(f"/console/orders/{order_id}").text)
    panel = client.post(f"/console/orders/{order_id}/complete", data={"view": "panel"}, headers=htmx(token))
    assert panel.status_code == 409
    assert re.search(r'id="action-error">an order that is placed cannot be completed', panel.text)
    assert panel.text.lstrip().startswith('<section id="order-panel"')  # the panel, not a page
    row = client.post(f"/console/orders/{order_id}/refund", data={"view": "row"}, headers=htmx(token))
    assert row.status_code == 409
    assert "cannot be refunded" in row.text
    assert row.text.lstrip().startswith("<tr")
    page = client.post(f"/console/orders/{order_id}/refund", data={"csrf": token})
    assert page.status_code == 409
    assert "<html" in page.text
    assert "cannot be refunded" in page.text
    assert order_status(demo_url, order_id) == "placed"
    assert [e for e in audits(demo_url) if e.action.startswith("order.")] == []


def test_cancelling_gives_the_points_and_stock_back_with_the_reason_audited(
    console_as: Console, demo_url: str, queue: dict[str, Any]
) -> None:
    member = queue["members"]["mug"]
    before = beans(demo_url, member)
    client = console_as("operator")
    token = csrf_of(client.get(f"/console/orders/{queue['mug']}").text)
    reply = client.post(
        f"/console/orders/{queue['mug']}/cancel",
        data={"view": "panel", "reason": "out of mugs in the shop"},
        headers=htmx(token),
    )
    assert reply.status_code == 200
    assert 'data-status="cancelled"' in reply.text
    assert beans(demo_url, member) == before + 400
    assert reward_row(demo_url, "mug").sold == 0
    [entry] = audits(demo_url, "order.cancel")
    assert entry.reason == "out of mugs in the shop"


def test_a_viewer_cannot_move_an_order(console_as: Console, demo_url: str, queue: dict[str, Any]) -> None:
    client = console_as("viewer")
    token = csrf_of(client.get("/console/orders").text)
    reply = client.post(f"/console/orders/{queue['latte']}/confirm", data={"csrf": token})
    assert reply.status_code == 403
    assert order_status(demo_url, queue["latte"]) == "placed"
    assert [e for e in audits(demo_url) if e.action.startswith("order.")] == []


def test_a_change_without_the_csrf_token_is_refused(console_as: Console, demo_url: str, queue: dict[str, Any]) -> None:
    reply = console_as("owner").post(f"/console/orders/{queue['latte']}/confirm", data={"view": "row"})
    assert reply.status_code == 403
    assert order_status(demo_url, queue["latte"]) == "placed"


# --- draws and campaigns ----------------------------------------------------------------------
def entries_of(url: str, draw_key: str) -> int:
    """How many entries the demo's simulation made in a draw (they depend on its random members)."""
    with connect(url).connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(draw_entries.join(draws, draws.c.id == draw_entries.c.draw_id))
                .where(draws.c.key == draw_key)
            ).scalar_one()
        )


def test_draws_show_commitment_odds_cost_entries_and_stock(console_as: Console, demo_url: str) -> None:
    entries = entries_of(demo_url, "coffee_wheel")
    assert entries > 0
    client = console_as("viewer")
    html = client.get("/console/draws").text
    row = _row(html, "coffee_wheel")
    assert "Coffee wheel" in row
    assert "open" in row
    assert re.search(r'<code class="hash" title="[0-9a-f]{64}">', row)
    assert "revealed at close" in row
    assert re.search(rf">\s*{entries}<br>", row)
    page = client.get("/console/draws/coffee_wheel").text
    assert "possible once the seed is revealed" in page
    assert "an entry pays out" in page
    assert "Close now" not in page


def test_an_operator_closes_a_draw_and_its_record_verifies(console_as: Console, demo_url: str) -> None:
    entries = entries_of(demo_url, "coffee_wheel")
    client = console_as("operator")
    token = csrf_of(client.get("/console/draws/coffee_wheel").text)
    reply = client.post("/console/draws/coffee_wheel/close", data={"csrf": token}, follow_redirects=False)
    assert reply.status_code == 303
    page = client.get(reply.headers["location"]).text
    assert "seed revealed" in page
    assert re.search(rf'<span class="badge on">verified</span> every one of the {entries} entries', page)
    [entry] = audits(demo_url, "draw.close")
    assert entry.actor == "console:operator"


def test_a_viewer_cannot_close_a_draw(console_as: Console, demo_url: str) -> None:
    client = console_as("viewer")
    token = csrf_of(client.get("/console/draws").text)
    assert client.post("/console/draws/coffee_wheel/close", data={"csrf": token}).status_code == 403
    assert "revealed at close" in client.get("/console/draws").text
    assert audits(demo_url, "draw.close") == []


def test_campaigns_are_grouped_into_running_coming_and_past(console_as: Console) -> None:
    html = console_as("viewer").get("/console/campaigns").text
    sections = dict(re.findall(r'<h2 id="campaigns-(\w+)">.*?</h2>(.*?)</section>', html, re.S))
    assert set(sections) == {"active", "upcoming", "past"}
    holding = [k for k, body in sections.items() if "Member day" in body]
    assert holding in (["active"], ["upcoming"])
    assert "×2 on purchase_beans" in sections[holding[0]]
    assert "None." in sections["past"]


# --- in a browser -----------------------------------------------------------------------------
def test_browser_moves_an_order_through_its_states(
    live_server: str, browser_page: Any, demo_url: str, queue: dict[str, Any]
) -> None:
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    browser_sign_in(page, live_server, "operator")
    for name in ("mall", "draws", "campaigns"):
        page.goto(f"{live_server}/console/{name}")
        screenshot(page, name)
    page.goto(f"{live_server}/console/orders")
    row = page.locator(f"#order-{queue['latte']}")
    row.get_by_role("button", name="Confirm").click()
    page.wait_for_selector(f"#order-{queue['latte']}[data-status='confirmed']")
    screenshot(page, "orders")
    page.goto(f"{live_server}/console/orders/{queue['mug']}")
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_selector("#order-panel[data-status='confirmed']")
    page.get_by_role("button", name="Fulfil").click()  # no shipping reference yet
    page.wait_for_selector("#fulfil-shipping_reference-error")
    page.get_by_label("Shipping reference").fill("PARCEL-7")
    page.get_by_role("button", name="Fulfil").click()
    page.wait_for_selector("#order-panel[data-status='fulfilled']")
    page.get_by_role("button", name="Complete").click()
    page.wait_for_selector("#order-panel[data-status='completed']")
    assert "PARCEL-7" in page.locator("#order-panel").inner_text()
    screenshot(page, "order")
    assert order_status(demo_url, queue["mug"]) == "completed"
    assert order_status(demo_url, queue["latte"]) == "confirmed"
