"""The console's dashboard: cards and charts from the rollups, the period chooser, and the
numbers under each chart matching the ledger."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kinloop.clock import utcnow
from kinloop.services import programs
from kinloop.store.db import connect
from kinloop.store.tables import balances, events, members
from tests.web.conftest import browser_sign_in, screenshot


def _ledger(demo_url: str) -> dict[str, Any]:
    engine = connect(demo_url)
    with engine.connect() as conn:
        loaded = programs.active(conn)
        beans = conn.execute(
            select(func.sum(balances.c.available + balances.c.pending)).where(balances.c.currency == "beans")
        ).scalar()
        tz = loaded.program.timezone
        check_ins: dict[str, int] = {}
        for (at,) in conn.execute(select(events.c.occurred_at).where(events.c.type == "check_in")):
            day = at.astimezone(tz).date().isoformat()
            check_ins[day] = check_ins.get(day, 0) + 1
        n_members = conn.execute(select(func.count()).select_from(members)).scalar()
    engine.dispose()
    return {"beans": int(beans or 0), "check_ins": check_ins, "members": int(n_members or 0)}


def _table(html: str, key: str) -> list[list[str]]:
    found = re.search(rf'<table data-numbers="{key}">(.*?)</table>', html, re.S)
    assert found, f"no table for {key}"
    body = found.group(1).split("<tbody>")[1]
    return [re.findall(r"<t[hd][^>]*>([^<]*)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)]


def test_a_viewer_sees_the_numbers_of_the_ledger(console_as: Callable[[str], TestClient], demo_url: str) -> None:
    reply = console_as("viewer").get("/console/dashboard")
    assert reply.status_code == 200
    html = reply.text
    ledger = _ledger(demo_url)
    assert f"{ledger['beans']:,} Beans" in html  # outstanding now
    assert "EUR" in html  # the liability, from the program's money value
    rows = _table(html, "checkins")
    assert len(rows) == 30
    shown = {day: int(n.replace(",", "")) for day, n in rows if n != "0"}
    assert shown
    assert shown == {d: n for d, n in ledger["check_ins"].items() if d in shown}
    assert sum(shown.values()) > 0
    data = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', html, re.S)
    assert data
    assert '"checkins"' in data.group(1)
    assert 'data-empty="rewards"' in html  # the demo places no mall orders: said so, no broken chart


def test_the_period_chooser(console_as: Callable[[str], TestClient]) -> None:
    client = console_as("viewer")
    week = client.get("/console/dashboard", params={"period": "7"})
    assert week.status_code == 200
    assert len(_table(week.text, "checkins")) == 7
    today = utcnow().date()
    first = (today - timedelta(days=3)).isoformat()
    custom = client.get("/console/dashboard", params={"period": "custom", "from": first, "to": today.isoformat()})
    assert custom.status_code == 200
    assert first in _table(custom.text, "checkins")[0][0]


def test_a_wrong_period_is_shown_at_its_field(console_as: Callable[[str], TestClient]) -> None:
    reply = console_as("viewer").get(
        "/console/dashboard", params={"period": "custom", "from": "2026-02-01", "to": "2026-01-01"}
    )
    assert reply.status_code == 422
    assert re.search(r'id="to-error">the last day comes before the first', reply.text)
    assert 'aria-describedby="to-error"' in reply.text
    assert 'value="2026-02-01"' in reply.text  # what was typed stays in the form


def test_the_dashboard_needs_a_signed_in_operator(demo_url: str) -> None:
    from kinloop.api.app import create_app

    reply = TestClient(create_app(demo_url)).get("/console/dashboard", follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"].startswith("/console/login")


def test_the_dashboard_shows_charts_with_data(live_server: str, browser_page: Any, demo_url: str) -> None:
    page = browser_page
    browser_sign_in(page, live_server, "viewer")
    page.goto(f"{live_server}/console/dashboard")
    page.wait_for_selector('canvas[data-chart="checkins"][data-drawn="true"]')
    drawn = page.locator('canvas[data-drawn="true"]')
    assert drawn.count() >= 8
    # The canvas has pixels on it, not just a size.
    painted = page.evaluate(
        """() => {
            const c = document.querySelector('canvas[data-chart="flows-beans"]');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 3; i < d.length; i += 4) { if (d[i]) n++; }
            return n;
        }"""
    )
    assert painted > 100
    ledger = _ledger(demo_url)
    page.get_by_text("Numbers").nth(0).click()  # the fallback of the first chart opens
    cards = page.locator(".card .figure").all_inner_texts()
    assert f"{ledger['beans']:,} Beans" in cards
    page.locator("#chart-checkins summary").click()
    cells = page.locator('table[data-numbers="checkins"] tbody tr td').all_inner_texts()
    first_day = page.locator('table[data-numbers="checkins"] tbody th').first.inner_text()
    shown = sum(int(c.replace(",", "")) for c in cells)
    assert shown > 0
    assert shown == sum(n for day, n in ledger["check_ins"].items() if day >= first_day)
    screenshot(page, "dashboard")
    page.get_by_label("Period", exact=True).select_option("7")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r".*period=7.*"))
    page.wait_for_selector('canvas[data-chart="checkins"][data-drawn="true"]')
    assert page.locator('table[data-numbers="checkins"] tbody tr').count() == 7
