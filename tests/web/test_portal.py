"""The member portal: entering with a member link, what a member sees, and the changes they make
(check-in, redeem, red envelopes), over a copy of the demo database.

The demo simulates the 30 days before today, so a member's check-in streak may be alive
(checked in yesterday) and nobody has checked in today yet.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from kinloop.api.app import create_app
from kinloop.cli.app import app as cli
from kinloop.clock import utcnow
from kinloop.domain.errors import UnknownMember
from kinloop.program.loader import parse_program
from kinloop.services import checkin as checkin_svc
from kinloop.services import keys, members, programs
from kinloop.store.db import connect
from kinloop.store.tables import balances, checkin_states, entries, envelopes, events, orders, rewards
from kinloop.store.tables import members as members_table
from kinloop.web.portal.access import COOKIE
from kinloop.web.portal.links import portal_link
from tests.web.conftest import ROOT, csrf_of, screenshot


@pytest.fixture
def no_checkin_url(demo_url: str) -> str:
    """The demo copy with a version of the coffee program that has no daily check-in."""
    source = (ROOT / "examples" / "coffee.yaml").read_text(encoding="utf-8")
    without, n = re.subn(r"\ncheckin:\n(  .*\n)+", "\n", source)
    assert n == 1, "the coffee program's check-in section has moved; update this fixture"
    engine = connect(demo_url)
    with engine.begin() as conn:
        programs.load(conn, parse_program(without), without, now=utcnow())
    engine.dispose()
    return demo_url


@pytest.fixture
def engine(demo_url: str) -> Iterator[Engine]:
    e = connect(demo_url)
    yield e
    e.dispose()


def beans(engine: Engine, member_id: str) -> int:
    with engine.connect() as conn:
        row = members.get(conn, programs.active(conn).program_id, member_id)
        found = conn.execute(
            select(balances.c.available).where(balances.c.member_pk == row.pk, balances.c.currency == "beans")
        ).scalar()
    return int(found or 0)


def by_beans(engine: Engine) -> list[str]:
    """Member ids, richest in Beans first."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(members_table.c.member_id)
                .join(balances, balances.c.member_pk == members_table.c.id)
                .where(balances.c.currency == "beans")
                .order_by(balances.c.available.desc(), members_table.c.member_id)
            ).scalars()
        )


def link_for(engine: Engine, member_id: str, **kw: Any) -> str:
    with engine.begin() as conn:
        pid = programs.active(conn).program_id
        return portal_link(conn, pid, member_id, "http://testserver", now=kw.pop("now", utcnow()), **kw)


def entered(url: str, engine: Engine, member_id: str) -> TestClient:
    """A client that opened the portal through the member's link."""
    client = TestClient(create_app(url))
    reply = client.get(link_for(engine, member_id), follow_redirects=False)
    assert reply.status_code == 303, reply.text
    return client


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


# --- entering -------------------------------------------------------------------------------


def test_a_member_link_sets_the_cookie_and_leaves_the_address_bar(demo_url: str, engine: Engine) -> None:
    client = TestClient(create_app(demo_url))
    link = link_for(engine, "member-00001")
    reply = client.get(urlsplit(link).path + "?" + urlsplit(link).query, follow_redirects=False)
    assert reply.status_code == 303
    assert reply.headers["location"] == "/portal"
    assert reply.headers["referrer-policy"] == "no-referrer"
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=klm_")
    for part in ("HttpOnly", "SameSite=lax", "Path=/portal"):
        assert part in cookie
    home = client.get("/portal")
    assert home.status_code == 200
    assert "member-00001" in home.text
    assert re.search(r"\d+ ★ to (Jade|Gold)|the highest tier you can earn", home.text)


def test_without_a_token_the_portal_asks_for_the_link(demo_url: str) -> None:
    client = TestClient(create_app(demo_url))
    for path in ("/portal", "/portal/history", "/portal/enter", "/portal/enter?token="):
        reply = client.get(path)
        assert reply.status_code == 401, path
        assert "Open your membership from the app" in reply.text


def test_an_expired_or_forged_link_is_refused(demo_url: str, engine: Engine) -> None:
    client = TestClient(create_app(demo_url))
    old = link_for(engine, "member-00001", now=utcnow() - timedelta(hours=2), ttl=timedelta(hours=1))
    reply = client.get(old.removeprefix("http://testserver"), follow_redirects=False)
    assert reply.status_code == 401
    assert "your link has expired" in reply.text
    assert "set-cookie" not in reply.headers
    forged_token, _ = keys.mint_token(b"not the secret", 1, "member-00001", now=utcnow())
    reply = client.get(f"/portal/enter?token={forged_token}", follow_redirects=False)
    assert reply.status_code == 401
    assert "this link is not valid" in reply.text
    # An expired token kept in the cookie stops working too.
    client.cookies.set(COOKIE, urlsplit(old).query.removeprefix("token="), path="/portal")
    assert client.get("/portal").status_code == 401


def test_a_webview_may_send_the_token_as_a_bearer_header(demo_url: str, engine: Engine) -> None:
    client = TestClient(create_app(demo_url))
    token = urlsplit(link_for(engine, "member-00002")).query.removeprefix("token=")
    reply = client.get("/portal", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200
    assert "member-00002" in reply.text
    with engine.begin() as conn:
        api_key, _ = keys.create(conn, programs.active(conn).program_id, "admin", name="t", now=utcnow())
    assert client.get("/portal", headers={"Authorization": f"Bearer {api_key}"}).status_code == 401


def test_a_link_names_a_member_of_the_program(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(UnknownMember):
        portal_link(conn, programs.active(conn).program_id, "nobody", "http://x", now=utcnow())


def test_the_cli_prints_a_link_that_opens_the_portal(demo_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["member", "link", "member-00003", "--hours", "2", "--base", "http://testserver/", "--db", demo_url]
    )
    assert result.exit_code == 0, result.output
    link = result.output.strip()
    assert link.startswith("http://testserver/portal/enter?token=klm_")
    client = TestClient(create_app(demo_url))
    assert "member-00003" in client.get(link.removeprefix("http://testserver")).text
    refused = CliRunner().invoke(cli, ["member", "link", "nobody", "--db", demo_url])
    assert refused.exit_code == 3


def test_leaving_forgets_the_member_on_this_device(demo_url: str, engine: Engine) -> None:
    client = entered(demo_url, engine, "member-00001")
    page = client.get("/portal").text
    assert client.post("/portal/leave", data={}).status_code == 403  # a change like any other
    left = client.post("/portal/leave", data={"csrf": csrf_of(page)})
    assert left.status_code == 200
    assert "You have left your membership page" in left.text
    assert client.get("/portal").status_code == 401


def test_a_new_member_sees_a_whole_page_with_nothing_yet(demo_url: str, engine: Engine) -> None:
    with engine.begin() as conn:
        members.set_profile(conn, programs.active(conn).program_id, "newcomer", {"display_name": "Ada"}, now=utcnow())
    page = entered(demo_url, engine, "newcomer").get("/portal")
    assert page.status_code == 200
    assert "Ada" in page.text
    assert "4 ★ to Jade" in page.text  # Green is reached with 0 ★
    assert "Nothing yet: what you earn and spend shows here." in page.text
    assert re.search(r'id="streak">0<', page.text)


# --- only the member's own data --------------------------------------------------------------


def test_history_shows_the_members_own_entries_only(demo_url: str, engine: Engine) -> None:
    client = entered(demo_url, engine, "member-00004")
    with engine.connect() as conn:
        lp = programs.active(conn)
        own = {e["entry_id"] for e in members.history(conn, lp, "member-00004", before=None, limit=1000)[0]}
        others = {e["entry_id"] for e in members.history(conn, lp, "member-00005", before=None, limit=1000)[0]}
    seen: set[int] = set()
    before = ""
    while True:
        page = client.get(f"/portal/history{before}", headers={"HX-Request": "true"}).text
        seen |= {int(i) for i in re.findall(r'data-entry="(\d+)"', page)}
        more = re.search(r'href="/portal/history\?before=(\d+)"', page)
        if not more:
            break
        before = f"?before={more.group(1)}"
    assert seen == own
    assert not seen & others


def test_history_pages_add_up_to_the_balances(demo_url: str, engine: Engine) -> None:
    """Every entry appears exactly once across the pages: their signed amounts sum to the card's balances."""
    member = by_beans(engine)[0]
    client = entered(demo_url, engine, member)
    totals = {"Beans": Decimal(0), "★": Decimal(0)}
    before = ""
    pages = 0
    while True:
        page = client.get(f"/portal/history{before}").text
        pages += 1
        for sign, amount, unit in re.findall(r'class="num amount \w+">([+−]?)([\d,.]+) (Beans|★)<', page):
            totals[unit] += (-1 if sign == "−" else 1 if sign == "+" else 0) * Decimal(amount.replace(",", ""))
        more = re.search(r'href="/portal/history\?before=(\d+)"', page)
        if not more:
            break
        before = f"?before={more.group(1)}"
    assert pages > 1, "pick a member with more than one page of history"
    assert totals["Beans"] == beans(engine, member)


def test_a_token_never_opens_another_members_page(demo_url: str, engine: Engine) -> None:
    client = entered(demo_url, engine, "member-00006")
    # The portal's routes take no member id: only the token says who, and the cookie is signed.
    cookie = client.cookies.get(COOKIE)
    assert cookie is not None
    body, sig = cookie.removeprefix("klm_").split(".")
    other = keys._b64(keys._unb64(body).replace(b"member-00006", b"member-00007"))
    client.cookies.set(COOKIE, f"klm_{other}.{sig}", path="/portal")
    assert client.get("/portal").status_code == 401


# --- CSRF -----------------------------------------------------------------------------------


def test_changes_need_the_pages_csrf_value(demo_url: str, engine: Engine) -> None:
    member = by_beans(engine)[0]
    client = entered(demo_url, engine, member)
    before = (count(engine, events), count(engine, orders), beans(engine, member))
    other = entered(demo_url, engine, "member-00002")
    foreign = csrf_of(other.get("/portal").text)
    click = "abcdefgh1234"
    for data in ({}, {"csrf": "0" * 64}, {"csrf": foreign}):
        assert client.post("/portal/check-in", data=data).status_code == 403
        reply = client.post("/portal/mall/espresso/redeem", data={**data, "click": click})
        assert reply.status_code == 403
        assert "did not come from your membership page" in reply.text
    assert (count(engine, events), count(engine, orders), beans(engine, member)) == before


# --- check-in -------------------------------------------------------------------------------


def streak_of(page: str) -> int:
    found = re.search(r'id="streak">(\d+)<', page)
    assert found
    return int(found.group(1))


def test_checking_in_twice_a_day_awards_once(demo_url: str, engine: Engine) -> None:
    member = "member-00008"
    client = entered(demo_url, engine, member)
    page = client.get("/portal").text
    streak = streak_of(page)
    start = beans(engine, member)
    first = client.post("/portal/check-in", data={"csrf": csrf_of(page)})
    assert first.status_code == 200
    assert streak_of(first.text) == streak + 1
    assert f"Checked in: day {streak + 1} in a row" in first.text
    assert "Checked in today" in first.text
    second = client.post("/portal/check-in", data={"csrf": csrf_of(page)})
    assert second.status_code == 200
    assert "You have already checked in today." in second.text
    assert streak_of(second.text) == streak + 1
    assert beans(engine, member) == start + 1
    with engine.connect() as conn:
        pk = members.get(conn, 1, member).pk
        days = conn.execute(select(checkin_states.c.days).where(checkin_states.c.member_pk == pk)).scalar()
    assert (days or 0) >= 1


def test_the_streak_grows_from_yesterday(demo_url: str, engine: Engine) -> None:
    member = "member-00009"
    with engine.begin() as conn:
        now = utcnow()
        checkin_svc.check_in(conn, programs.active(conn), member, at=now - timedelta(days=1), now=now)
    client = entered(demo_url, engine, member)
    page = client.get("/portal").text
    streak = streak_of(page)
    assert streak >= 1  # alive: checked in yesterday
    assert f"Today: day {streak + 1}: 1 Beans" in page
    done = client.post("/portal/check-in", data={"csrf": csrf_of(page)}).text
    assert streak_of(done) == streak + 1
    assert f"Tomorrow: day {streak + 2}: 1 Beans" in done


def test_without_a_check_in_section_there_is_no_check_in(no_checkin_url: str, engine: Engine) -> None:
    client = entered(no_checkin_url, engine, "member-00001")
    page = client.get("/portal").text
    assert 'id="checkin"' not in page
    reply = client.post("/portal/check-in", data={"csrf": csrf_of(page)})
    assert reply.status_code == 409
    assert "this program has no daily check-in" in reply.text


# --- the mall -------------------------------------------------------------------------------


def _click(page: str, reward: str) -> str:
    found = re.search(rf'action="/portal/mall/{reward}/redeem#mall".*?name="click" value="([^"]+)"', page, re.S)
    assert found
    return found.group(1)


def test_redeeming_without_enough_beans_is_refused_inline_and_writes_nothing(demo_url: str, engine: Engine) -> None:
    member = by_beans(engine)[-1]
    client = entered(demo_url, engine, member)
    page = client.get("/portal").text
    assert re.search(r'<button type="submit" disabled aria-describedby="why-mug">', page)
    assert re.search(r"Not enough Beans: [\d,]+ Beans more needed", page)
    state = (count(engine, orders), count(engine, entries), beans(engine, member))
    with engine.connect() as conn:
        sold = conn.execute(select(rewards.c.sold).where(rewards.c.key == "mug")).scalar_one()
    reply = client.post("/portal/mall/mug/redeem", data={"csrf": csrf_of(page), "click": _click(page, "mug")})
    assert reply.status_code == 422
    assert re.search(r'<p class="field-error" id="failed-mug" role="alert">available balance is', reply.text)
    assert (count(engine, orders), count(engine, entries), beans(engine, member)) == state
    with engine.connect() as conn:
        assert conn.execute(select(rewards.c.sold).where(rewards.c.key == "mug")).scalar_one() == sold


def test_redeeming_shows_the_code_and_the_new_balance_once_per_click(demo_url: str, engine: Engine) -> None:
    member = by_beans(engine)[0]
    client = entered(demo_url, engine, member)
    start = beans(engine, member)
    assert start >= 300
    page = client.get("/portal").text
    form = {"csrf": csrf_of(page), "click": _click(page, "cinema")}
    done = client.post("/portal/mall/cinema/redeem", data=form)
    assert done.status_code == 200
    assert "Redeemed: 1 × Cinema ticket for 300 Beans: placed" in done.text
    code = re.search(r'<code class="code">([^<]+)</code>', done.text)
    assert code
    assert f'<strong class="balance-now">{start - 300:,} Beans</strong>' in done.text
    again = client.post("/portal/mall/cinema/redeem", data=form)
    assert "Already redeemed" in again.text
    assert f'<code class="code">{code.group(1)}</code>' in again.text
    assert beans(engine, member) == start - 300
    with engine.connect() as conn:
        pk = members.get(conn, 1, member).pk
        assert conn.execute(select(func.count()).where(orders.c.member_pk == pk)).scalar_one() == 1


def test_a_tier_gate_and_sold_out_are_shown_and_refused(demo_url: str, engine: Engine) -> None:
    client = entered(demo_url, engine, by_beans(engine)[0])
    page = client.get("/portal").text
    assert '<p class="why" id="why-tumbler">Sold out</p>' in page
    reply = client.post("/portal/mall/tumbler/redeem", data={"csrf": csrf_of(page), "click": _click(page, "tumbler")})
    assert reply.status_code == 422
    assert 'id="failed-tumbler"' in reply.text


# --- red envelopes --------------------------------------------------------------------------


def test_sending_an_envelope_moves_beans_and_refusals_stay_inline(demo_url: str, engine: Engine) -> None:
    sender, friend = by_beans(engine)[:2]
    client = entered(demo_url, engine, sender)
    page = client.get("/portal").text
    key = re.search(r'name="key" value="(p-[0-9a-f]+)"', page)
    assert key
    base = {"csrf": csrf_of(page), "key": key.group(1), "kind": "one"}
    before = (beans(engine, sender), beans(engine, friend), count(engine, envelopes))
    to_self = client.post("/portal/envelopes", data={**base, "to": sender, "amount": "10"})
    assert to_self.status_code == 422
    assert 'id="envelope-to-error">a member cannot send an envelope to themselves' in to_self.text
    nobody = client.post("/portal/envelopes", data={**base, "to": "nobody", "amount": "10"})
    assert "no member &#39;nobody&#39; in this program" in nobody.text
    too_much = client.post("/portal/envelopes", data={**base, "to": friend, "amount": "5000"})
    assert too_much.status_code == 422
    assert 'id="envelope-amount-error"' in too_much.text
    assert 'value="5000"' in too_much.text  # the form keeps what was typed
    assert (beans(engine, sender), beans(engine, friend), count(engine, envelopes)) == before
    sent = client.post("/portal/envelopes", data={**base, "to": friend, "amount": "10", "message": "thanks"})
    assert sent.status_code == 200
    assert f"Sent 10 Beans to {friend} (fee 1 Beans)." in sent.text
    assert beans(engine, sender) == before[0] - 11
    assert beans(engine, friend) == before[1] + 10


def test_a_group_envelope_is_claimed_by_its_code(demo_url: str, engine: Engine) -> None:
    sender, friend = by_beans(engine)[:2]
    client = entered(demo_url, engine, sender)
    page = client.get("/portal").text
    key = re.search(r'name="key" value="(p-[0-9a-f]+)"', page)
    assert key
    sent = client.post(
        "/portal/envelopes",
        data={"csrf": csrf_of(page), "key": key.group(1), "kind": "group", "shares": "2", "amount": "20"},
    )
    assert f"Share its code so others can claim it: {key.group(1)}" in sent.text
    own = client.post("/portal/envelopes/claim", data={"csrf": csrf_of(page), "envelope": key.group(1)})
    assert own.status_code == 422
    assert "the sender cannot claim their own envelope" in own.text
    other = entered(demo_url, engine, friend)
    before = beans(engine, friend)
    csrf = csrf_of(other.get("/portal").text)
    got = other.post("/portal/envelopes/claim", data={"csrf": csrf, "envelope": key.group(1)})
    assert got.status_code == 200
    assert "You received 10 Beans." in got.text
    assert beans(engine, friend) == before + 10


# --- in a phone's browser -------------------------------------------------------------------


@pytest.fixture
def phone(chromium: Any) -> Iterator[Any]:
    """A browser page the size of a phone (390 by 844, touch), with its own cookies."""
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def test_a_member_checks_in_redeems_and_sees_it_in_history(live_server: str, engine: Engine, phone: Any) -> None:
    from playwright.sync_api import expect

    member = by_beans(engine)[0]
    with engine.begin() as conn:
        now = utcnow()
        checkin_svc.check_in(conn, programs.active(conn), member, at=now - timedelta(days=1), now=now)
    start = beans(engine, member)
    with engine.begin() as conn:
        link = portal_link(conn, programs.active(conn).program_id, member, live_server, now=utcnow())

    phone.goto(link)
    expect(phone).to_have_url(f"{live_server}/portal")
    expect(phone.locator("#to-next")).to_have_text(re.compile(r"[\d,]+ ★ to \w+|the highest tier you can earn"))
    expect(phone.locator("[data-currency=beans] dd")).to_have_text(f"{start:,} Beans")
    screenshot(phone, "portal-card")

    streak = int(phone.locator("#streak").inner_text())
    assert streak >= 1  # checked in yesterday
    phone.get_by_role("button", name="Check in").click()
    expect(phone.locator("#streak")).to_have_text(str(streak + 1))
    expect(phone.get_by_role("button", name="Checked in today")).to_be_disabled()
    expect(phone.locator("#checkin .flash")).to_contain_text(f"Checked in: day {streak + 1} in a row")
    expect(phone.locator("[data-currency=beans] dd")).to_have_text(f"{start + 1:,} Beans")  # the card, swapped too
    assert phone.url == f"{live_server}/portal"  # updated in place, not a new page
    screenshot(phone, "portal-checkin")

    phone.get_by_role("button", name="Redeem Cinema ticket").click()
    expect(phone.locator("#mall .flash")).to_contain_text("Redeemed: 1 × Cinema ticket for 300 Beans")
    expect(phone.locator("#mall code.code")).to_have_count(1)
    expect(phone.locator("[data-currency=beans] dd")).to_have_text(f"{start + 1 - 300:,} Beans")
    expect(phone.locator(".balance-now")).to_have_text(f"{start + 1 - 300:,} Beans")
    expect(phone.locator("#history tbody tr").first).to_contain_text("−300 Beans")
    phone.evaluate("window.scrollTo(0, 0)")  # full-page shots show the sticky header where the view is
    screenshot(phone, "portal-mall")

    phone.get_by_role("link", name="All history").click()
    expect(phone).to_have_url(f"{live_server}/portal/history")
    first = phone.locator("tbody tr").first
    expect(first).to_contain_text("Redeemed")
    expect(first).to_contain_text("1 × Cinema ticket")
    expect(first).to_contain_text("−300 Beans")
    rows = phone.locator("tbody tr[data-entry]").count()
    phone.get_by_role("link", name="Older entries").click()  # the next page, appended in place
    expect(phone.locator("tbody tr[data-entry]")).to_have_count(rows + min(20, len(entries_of(engine, member)) - rows))
    screenshot(phone, "portal-history")
    assert beans(engine, member) == start + 1 - 300


def entries_of(engine: Engine, member_id: str) -> list[int]:
    with engine.connect() as conn:
        pk = members.get(conn, 1, member_id).pk
        return list(conn.execute(select(entries.c.id).where(entries.c.member_pk == pk)).scalars())


def test_a_refused_redeem_shows_its_reason_beside_the_reward(live_server: str, engine: Engine, phone: Any) -> None:
    from playwright.sync_api import expect

    member = by_beans(engine)[-1]
    with engine.begin() as conn:
        link = portal_link(conn, programs.active(conn).program_id, member, live_server, now=utcnow())
    phone.goto(link)
    mug = phone.get_by_role("button", name="Redeem Coffee Club mug")
    expect(mug).to_be_disabled()
    expect(phone.locator("#why-mug")).to_contain_text("Not enough Beans")
    # The server refuses too, should the button be pressed anyway (a stale page, a script).
    phone.evaluate("document.querySelector('#offer-mug button').disabled = false")
    mug.click()
    expect(phone.locator("#failed-mug")).to_contain_text("available balance is")
    assert phone.url == f"{live_server}/portal"


def test_a_link_that_ends_while_the_page_is_open_shows_why(live_server: str, engine: Engine, phone: Any) -> None:
    from playwright.sync_api import expect

    with engine.begin() as conn:
        link = portal_link(conn, programs.active(conn).program_id, "member-00010", live_server, now=utcnow())
    phone.goto(link)
    expect(phone.get_by_role("button", name="Check in")).to_be_enabled()
    phone.context.clear_cookies()
    phone.get_by_role("button", name="Check in").click()
    expect(phone.get_by_role("heading", level=1)).to_have_text("Open your membership from the app")
    expect(phone.get_by_role("alert")).to_contain_text("open your membership from your link or from the app")
