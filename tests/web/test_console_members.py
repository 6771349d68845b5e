"""Console members: search, a member's page and timeline, manual adjustments (roles, CSRF,
inline errors, the audit log), and a browser finding a member and adjusting them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kinloop.clock import utcnow
from kinloop.services import members, programs
from kinloop.store.db import connect
from kinloop.store.tables import audit_log, balances, entries, events
from kinloop.store.tables import members as member_rows
from kinloop.web.console.members import TIMELINE_SIZE
from tests.web.conftest import browser_sign_in, csrf_of, screenshot

MEMBER = "member-00012"


def _counts(url: str) -> tuple[int, int]:
    """(ledger entries, audit rows): a refused change must leave both as they were."""
    with connect(url).connect() as conn:
        n_entries = conn.execute(select(func.count()).select_from(entries)).scalar_one()
        n_audit = conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
    return n_entries, n_audit


def _beans(url: str, member_id: str) -> int:
    with connect(url).connect() as conn:
        value = conn.execute(
            select(balances.c.available)
            .join(member_rows, member_rows.c.id == balances.c.member_pk)
            .where(member_rows.c.member_id == member_id, balances.c.currency == "beans")
        ).scalar()
    return int(value or 0)


def _set_profile(url: str, member_id: str, profile: dict[str, Any]) -> None:
    with connect(url).begin() as conn:
        loaded = programs.active(conn)
        members.set_profile(conn, loaded.program_id, member_id, profile, now=utcnow())


# --- search -----------------------------------------------------------------------------------


def test_search_by_id_prefix_lists_matching_members_with_tier_and_balance(
    console_as: Callable[[str], TestClient],
) -> None:
    page = console_as("viewer").get("/console/members", params={"q": "member-0001"})
    assert page.status_code == 200
    ids = re.findall(r'href="/console/members/(member-\d+)"', page.text)
    assert ids == [f"member-{i:05d}" for i in range(10, 20)]
    assert '<th scope="col" class="num">Beans</th>' in page.text
    assert re.search(r"<td>(Green|Jade|Gold|Reserve)</td>", page.text)


def test_search_by_profile_words_ignores_case_and_field_names(
    demo_url: str, console_as: Callable[[str], TestClient]
) -> None:
    _set_profile(demo_url, "member-00007", {"display_name": "Zoë Martin", "city": "Lyon"})
    _set_profile(demo_url, "member-00031", {"display_name": "Léa Lyonnais"})
    client = console_as("viewer")

    def found(q: str) -> list[str]:
        return re.findall(r'href="/console/members/(member-\d+)"', client.get("/console/members", params={"q": q}).text)

    assert found("LYON") == ["member-00007", "member-00031"]
    assert found("zoË") == ["member-00007"]  # non-ASCII, any case
    assert found("display_name") == []  # a field's name is not its value
    assert "No member matches" in client.get("/console/members", params={"q": "nobody-like-this"}).text


def test_search_pages_follow_each_other_without_gaps_or_repeats(demo_url: str) -> None:
    with connect(demo_url).connect() as conn:
        loaded = programs.active(conn)
        seen: list[str] = []
        after = None
        while True:
            page, after = members.search(conn, loaded.program_id, "member-000", currency="beans", after=after, limit=7)
            seen += [f.member_id for f in page]
            if after is None:
                break
    assert seen == [f"member-{i:05d}" for i in range(1, 100) if i <= 80 and f"member-{i:05d}".startswith("member-000")]


def test_htmx_gets_the_results_only_and_a_next_page_link(console_as: Callable[[str], TestClient]) -> None:
    client = console_as("viewer")
    part = client.get("/console/members", params={"q": "member-"}, headers={"HX-Request": "true"})
    assert part.status_code == 200
    assert "<html" not in part.text
    assert "<table" in part.text
    nxt = re.search(r'href="(/console/members\?q=member-&amp;after=[^"]+)"', part.text)
    assert nxt, "80 members fill more than one page"
    second = client.get(nxt.group(1).replace("&amp;", "&"), headers={"HX-Request": "true"}).text
    first_ids = re.findall(r'href="/console/members/(member-\d+)"', part.text)
    second_ids = re.findall(r'href="/console/members/(member-\d+)"', second)
    assert first_ids[-1] < second_ids[0]


# --- one member -------------------------------------------------------------------------------


def test_member_page_shows_balances_tier_progress_timeline_and_orders(
    demo_url: str, console_as: Callable[[str], TestClient]
) -> None:
    with connect(demo_url).connect() as conn:
        loaded = programs.active(conn)
        from kinloop.services import member_view, orders

        view = member_view.show(conn, loaded, MEMBER, now=utcnow())
        placed, _ = orders.listing(conn, loaded, member_id=MEMBER, status=None, before=None, limit=5)
    html = console_as("viewer").get(f"/console/members/{MEMBER}").text
    assert f'id="balance-beans">{view.display["beans"]}<' in html
    if view.tier:
        assert view.tier["name"] in html
    if view.next_tier:
        assert view.next_tier["text"] in html  # "3 ★ to Gold"
    assert 'class="timeline"' in html
    assert "tl-event" in html
    for order in placed:
        assert f'href="/console/orders/{order.id}"' in html
    assert "Tier history" in html
    assert "Privileges" in html
    assert "Badges" in html


def test_unknown_member_is_a_404_page(console_as: Callable[[str], TestClient]) -> None:
    reply = console_as("viewer").get("/console/members/nobody-at-all")
    assert reply.status_code == 404
    assert "no member" in reply.text


def test_timeline_pages_cover_every_event_and_entry_once(demo_url: str) -> None:
    with connect(demo_url).connect() as conn:
        loaded = programs.active(conn)
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            page, cursor = members.timeline(conn, loaded, MEMBER, before=cursor, limit=4)
            items += page
            if cursor is None:
                break
        member_pk = members.get(conn, loaded.program_id, MEMBER).pk
        all_entries = set(conn.execute(select(entries.c.id).where(entries.c.member_pk == member_pk)).scalars())
    shown = [e["entry_id"] for i in items for e in i.get("entries", [])] + [
        i["entry_id"] for i in items if i["item"] == "entry"
    ]
    assert sorted(shown) == sorted(all_entries)  # each entry once, under its event or alone
    times = [i["at"] for i in items]
    assert times == sorted(times, reverse=True)


def _busiest(url: str) -> tuple[str, int]:
    """The demo member with the most events, and how many (the simulation draws them at random)."""
    with connect(url).connect() as conn:
        member_id, n = conn.execute(
            select(member_rows.c.member_id, func.count(events.c.id))
            .join(events, events.c.member_pk == member_rows.c.id)
            .group_by(member_rows.c.member_id)
            .order_by(func.count(events.c.id).desc(), member_rows.c.member_id)
            .limit(1)
        ).one()
    return str(member_id), int(n)


def test_load_more_returns_the_next_items_for_htmx(console_as: Callable[[str], TestClient], demo_url: str) -> None:
    member_id, n = _busiest(demo_url)
    assert n > TIMELINE_SIZE  # more than one page of the timeline
    client = console_as("viewer")
    html = client.get(f"/console/members/{member_id}").text
    more = re.search(r'hx-get="(/console/members/[^"]+/timeline\?before=[^"]+)"', html)
    assert more
    url = more.group(1).replace("&amp;", "&")
    part = client.get(url, headers={"HX-Request": "true"}).text
    assert "<html" not in part
    assert '<li class="tl-' in part
    assert "<html" in client.get(url).text  # without htmx: a page of its own


# --- adjustments ------------------------------------------------------------------------------


def _adjust(client: TestClient, **form: str) -> Any:
    token = csrf_of(client.get(f"/console/members/{MEMBER}").text)
    return client.post(f"/console/members/{MEMBER}/adjustments", data={"csrf": token, **form}, follow_redirects=False)


@pytest.mark.parametrize("role", ["operator", "owner"])
def test_an_adjustment_changes_the_balance_and_is_audited(
    role: str, demo_url: str, console_as: Callable[[str], TestClient]
) -> None:
    client = console_as(role)
    before = _beans(demo_url, MEMBER)
    reply = _adjust(client, currency="beans", amount="25", reason="coffee spilled", key="k-1")
    assert reply.status_code == 303
    page = client.get(reply.headers["location"]).text
    assert "Adjustment recorded: +25 Beans (coffee spilled)" in page
    assert _beans(demo_url, MEMBER) == before + 25
    assert f'id="balance-beans">{before + 25} Beans<' in page
    with connect(demo_url).connect() as conn:
        row = conn.execute(select(audit_log).order_by(audit_log.c.id.desc()).limit(1)).one()
    assert (row.actor, row.action, row.target, row.reason) == (f"console:{role}", "adjust", MEMBER, "coffee spilled")
    assert row.details["amount"] == 25
    assert row.details["currency"] == "beans"


def test_a_debit_and_a_resent_form_count_once(demo_url: str, console_as: Callable[[str], TestClient]) -> None:
    client = console_as("operator")
    before = _beans(demo_url, MEMBER)
    first = _adjust(client, currency="beans", amount="-5", reason="duplicate earn", key="same-form")
    again = _adjust(client, currency="beans", amount="-5", reason="duplicate earn", key="same-form")
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    assert _beans(demo_url, MEMBER) == before - 5


@pytest.mark.parametrize(
    ("form", "field", "words"),
    [
        ({"currency": "beans", "amount": "10", "reason": "   "}, "reason", "a reason is required"),
        ({"currency": "beans", "amount": "ten", "reason": "x"}, "amount", "is not a number"),
        ({"currency": "beans", "amount": "0", "reason": "x"}, "amount", "must not be 0"),
        ({"currency": "beans", "amount": "1.5", "reason": "x"}, "amount", "decimal places"),
        ({"currency": "beans", "amount": "-1000000", "reason": "x"}, "amount", "available balance is"),
        ({"currency": "gold", "amount": "1", "reason": "x"}, "currency", "unknown currency"),
    ],
)
def test_bad_adjustments_show_the_error_next_to_the_field_and_write_nothing(
    form: dict[str, str], field: str, words: str, demo_url: str, console_as: Callable[[str], TestClient]
) -> None:
    client = console_as("operator")
    client.get(f"/console/members/{MEMBER}")
    before = _counts(demo_url)
    reply = _adjust(client, key="k-bad", **form)
    assert reply.status_code == 422
    error = re.search(rf'<p class="field-error" id="adjust-{field}-error">([^<]*)</p>', reply.text)
    assert error
    assert words in error.group(1)
    assert f'value="{form["amount"]}"' in reply.text  # what was typed stays
    assert _counts(demo_url) == before


def test_a_viewer_sees_no_form_and_is_refused(demo_url: str, console_as: Callable[[str], TestClient]) -> None:
    client = console_as("viewer")
    page = client.get(f"/console/members/{MEMBER}").text
    assert "Adjust a balance" not in page
    assert "/adjustments" not in page
    before = _counts(demo_url)
    reply = client.post(
        f"/console/members/{MEMBER}/adjustments",
        data={"csrf": csrf_of(page), "currency": "beans", "amount": "100", "reason": "free beans"},
    )
    assert reply.status_code == 403
    assert _counts(demo_url) == before


def test_an_adjustment_without_the_csrf_token_is_refused(
    demo_url: str, console_as: Callable[[str], TestClient]
) -> None:
    client = console_as("owner")
    before = _counts(demo_url)
    reply = client.post(
        f"/console/members/{MEMBER}/adjustments", data={"currency": "beans", "amount": "100", "reason": "forged"}
    )
    assert reply.status_code == 403
    assert _counts(demo_url) == before


# --- in a browser -----------------------------------------------------------------------------


def test_browser_finds_a_member_and_adjusts_them(live_server: str, browser_page: Any, demo_url: str) -> None:
    page = browser_page
    browser_sign_in(page, live_server, "operator")
    page.goto(f"{live_server}/console/members")
    page.get_by_label("Find a member").fill("member-0001")
    # htmx swaps the results in as the operator types.
    page.locator("#member-results caption", has_text="matching “member-0001”").wait_for()
    assert page.locator("#member-results a", has_text="member-00021").count() == 0
    assert page.locator("#member-results a", has_text="member-00011").count() == 1
    assert "q=member-0001" in page.url  # the search is in the address, to share or reload
    screenshot(page, "members-search")
    page.locator("#member-results a", has_text="member-00012").click()
    page.wait_for_url(re.compile(r".*/console/members/member-00012$"))
    before = _beans(demo_url, MEMBER)
    assert page.locator("#balance-beans").inner_text() == f"{before} Beans"
    page.get_by_label("Currency").select_option("beans")
    page.get_by_label("Amount").fill("40")
    page.get_by_label("Reason").fill("birthday goodwill")
    page.get_by_role("button", name="Record adjustment").click()
    page.wait_for_url(re.compile(r".*adjusted=\d+"))
    assert page.locator("#balance-beans").inner_text() == f"{before + 40} Beans"
    assert "birthday goodwill" in page.locator(".flash").inner_text()
    screenshot(page, "member-page")


def test_browser_viewer_is_refused_a_change(live_server: str, browser_page: Any, demo_url: str) -> None:
    page = browser_page
    browser_sign_in(page, live_server, "viewer")
    page.goto(f"{live_server}/console/members/{MEMBER}")
    assert page.get_by_role("button", name="Record adjustment").count() == 0
    # Even a hand-made request from the viewer's own session is refused.
    token = page.locator('input[name="csrf"]').first.get_attribute("value")
    before = _counts(demo_url)
    status = page.evaluate(
        """async ([url, token]) => (await fetch(url, {method: 'POST', headers: {'X-CSRF-Token': token},
            body: new URLSearchParams({currency: 'beans', amount: '500', reason: 'me'})})).status""",
        [f"/console/members/{MEMBER}/adjustments", token],
    )
    assert status == 403
    assert _counts(demo_url) == before
