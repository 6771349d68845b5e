"""Tiers on a real database (SQLite and PostgreSQL), with the clock injected: year-end review,
grace, one-level drop, paid terms, manual tiers, previews and grandfathering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from kinloop.domain.errors import IdempotencyConflict, NotPurchasable, UnknownTier
from kinloop.program.loader import compile_program, parse_program
from kinloop.services import member_view, members, programs, webhooks
from kinloop.services import tiers as tier_svc
from kinloop.services.ingest import ingest
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import audit_log, outbox, tier_changes, tier_purchases, tier_qualification
from tests.conftest import EXAMPLES, NOW, load_example

SHANGHAI_MORNING = "T02:00:00Z"  # 10:00 in Asia/Shanghai


def at(day: str) -> datetime:
    return datetime.fromisoformat(day + SHANGHAI_MORNING.replace("Z", "+00:00"))


def car(event_id: str, day: str, member: str = "m1") -> dict[str, Any]:
    return {"event_id": event_id, "member_id": member, "type": "car_purchase", "occurred_at": day + SHANGHAI_MORNING}


def feed(engine: Engine, lp: LoadedProgram, raws: list[dict[str, Any]], now: datetime | None = None) -> None:
    """Ingest events, received an hour after the last of them (or at NOW)."""
    if now is None:
        last = max(datetime.fromisoformat(r["occurred_at"].replace("Z", "+00:00")) for r in raws)
        now = max(NOW, last + timedelta(hours=1))
    with engine.begin() as conn:
        results = ingest(conn, lp, raws, now=now)
    assert all(r.status == "accepted" for r in results), [r.error for r in results]


def evaluate(engine: Engine, lp: LoadedProgram, day: str) -> tier_svc.Evaluated:
    with engine.begin() as conn:
        return tier_svc.evaluate(conn, lp, now=at(day))


def tier_of(engine: Engine, lp: LoadedProgram, member: str = "m1") -> str | None:
    with engine.connect() as conn:
        return members.get(conn, lp.program_id, member).tier


def history(engine: Engine, lp: LoadedProgram, member: str = "m1") -> list[tuple[str | None, str | None, str]]:
    with engine.connect() as conn:
        return [
            (h["from"] and h["from"]["key"], h["to"] and h["to"]["key"], h["reason"])
            for h in tier_svc.history(conn, lp, member)
        ]


def messages(engine: Engine, kind: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [p for (p,) in conn.execute(select(outbox.c.payload).where(outbox.c.kind == kind).order_by(outbox.c.id))]


def subscribe(engine: Engine, lp: LoadedProgram, *kinds: str) -> None:
    with engine.begin() as conn:
        webhooks.create(conn, lp.program_id, url="https://example.com/hooks", kinds=list(kinds), now=NOW)


@pytest.fixture
def ev(engine: Engine) -> LoadedProgram:
    return load_example(engine, "ev_community")


# --- earned tiers over calendar years -----------------------------------------------------------


def test_upgrade_is_at_once_and_counts_only_the_calendar_year(engine: Engine, ev: LoadedProgram) -> None:
    feed(engine, ev, [car("c1", "2026-01-10")])  # 1000 N: Co-builder at once
    assert tier_of(engine, ev) == "co_builder"
    feed(engine, ev, [car("c2", "2027-02-10"), car("c3", "2027-03-10"), car("c4", "2027-04-10")])
    # 1500 N in 2027 is not 2500: a new window; the tier stays (reviews only demote on 1 January).
    assert tier_of(engine, ev) == "co_builder"
    with engine.connect() as conn:
        view = member_view.show(conn, ev, "m1", now=at("2027-05-01"))
    assert view.tier_status is not None
    assert view.tier_status["qualification_text"] == "1,500 N in the current window"
    assert view.next_tier == {
        "key": "inner_circle",
        "name": "Inner Circle",
        "missing": 1500,
        "text": "1,500 N to Inner Circle",
    }


def test_year_end_review_with_grace_warning_and_one_level_drop(engine: Engine, ev: LoadedProgram) -> None:
    subscribe(engine, ev, "tier.will_change", "tier.changed")
    feed(engine, ev, [car("c1", "2026-01-10")])
    assert evaluate(engine, ev, "2026-12-31").changed == 0
    # 1 January 2027 reviews 2026: 1000 N keeps Co-builder.
    assert evaluate(engine, ev, "2027-01-01").changed == 0
    assert tier_of(engine, ev) == "co_builder"
    with engine.connect() as conn:
        view = member_view.show(conn, ev, "m1", now=at("2027-06-01"))
    assert view.tier_status is not None
    assert view.tier_status["keep"]["text"] == "earn 1,000 N by 2027-12-31 to keep Co-builder"
    # 1 January 2028 reviews an empty 2027: grace for 31 days, no move yet.
    assert evaluate(engine, ev, "2028-01-01").changed == 0
    assert tier_of(engine, ev) == "co_builder"
    assert messages(engine, "tier.will_change") == []
    # 14 days before the grace ends: one warning, however often the job runs.
    evaluate(engine, ev, "2028-01-18")
    evaluate(engine, ev, "2028-01-19")
    [warning] = messages(engine, "tier.will_change")
    assert (warning["on"], warning["to"]["key"]) == ("2028-02-01", "voice")
    # The grace ends: down one level only (0 N would be Fan).
    result = evaluate(engine, ev, "2028-02-01")
    assert (result.changed, result.moves) == (1, {"co_builder→voice": 1})
    assert tier_of(engine, ev) == "voice"
    assert history(engine, ev)[0] == ("co_builder", "voice", "retention review")
    assert [m["to"]["key"] for m in messages(engine, "tier.changed")] == ["co_builder", "voice"]


def test_requalifying_during_grace_keeps_the_tier(engine: Engine, ev: LoadedProgram) -> None:
    feed(engine, ev, [car("c1", "2026-01-10")])
    evaluate(engine, ev, "2027-12-31")
    evaluate(engine, ev, "2028-01-01")  # 2027 was empty: grace until 1 February
    feed(engine, ev, [car("c2", "2028-01-10"), car("c3", "2028-01-20")], now=at("2028-01-20"))  # 500 + 500 N
    assert evaluate(engine, ev, "2028-02-01").changed == 0
    assert tier_of(engine, ev) == "co_builder"
    with engine.connect() as conn:
        view = member_view.show(conn, ev, "m1", now=at("2028-02-02"))
    assert view.tier_status is not None
    assert view.tier_status["grace_until"] is None


def test_the_evaluation_is_set_based(engine: Engine) -> None:
    """The same number of statements for 3 members as for 30: no query per member."""
    source = (EXAMPLES / "ev_community.yaml").read_text(encoding="utf-8")

    def statements(n: int) -> int:
        text = source.replace("key: ev_community", f"key: ev_{n}")
        with engine.begin() as conn:
            lp = programs.load(conn, parse_program(text), text, now=NOW).loaded
        feed(engine, lp, [car(f"c{i}", "2026-01-10", f"n{i}") for i in range(n)])
        count = 0

        def seen(*_: object) -> None:
            nonlocal count
            count += 1

        event.listen(engine, "before_cursor_execute", seen)
        try:
            result = evaluate(engine, lp, "2028-01-01")  # 2027 was empty: everyone enters grace
        finally:
            event.remove(engine, "before_cursor_execute", seen)
        assert result.members == n
        return count

    assert statements(3) == statements(30)


# --- paid tiers ---------------------------------------------------------------------------------


def test_a_paid_tier_lasts_its_term_then_the_earned_tier_returns(engine: Engine, coffee: LoadedProgram) -> None:
    subscribe(engine, coffee, "tier.expiring", "tier.changed")
    feed(
        engine,
        coffee,
        [
            {
                "event_id": "p1",
                "member_id": "m1",
                "type": "purchase",
                "occurred_at": "2026-02-01T09:00:00Z",
                "attributes": {"amount": 250},
            }
        ],
    )
    assert tier_of(engine, coffee) == "jade"
    with engine.begin() as conn:
        bought = tier_svc.purchase(conn, coffee, "m1", "reserve", key="order-1", actor="shop", now=NOW)
    assert (bought.ends_at, bought.created) == (NOW + timedelta(days=365), True)
    assert tier_of(engine, coffee) == "reserve"
    with engine.begin() as conn:
        again = tier_svc.purchase(
            conn, coffee, "m1", "reserve", key="order-1", actor="shop", now=NOW + timedelta(days=1)
        )
    assert (again.ends_at, again.created) == (bought.ends_at, False)
    with engine.connect() as conn:
        view = member_view.show(conn, coffee, "m1", now=NOW)
    assert view.tier == {"key": "reserve", "name": "Reserve"}
    assert view.tier_status is not None
    assert view.tier_status["source"] == "paid"
    assert view.tier_status["paid"]["text"] == "Reserve until 2027-03-01"
    # Two weeks before the end: one reminder.
    with engine.begin() as conn:
        tier_svc.evaluate(conn, coffee, now=NOW + timedelta(days=355))
        tier_svc.evaluate(conn, coffee, now=NOW + timedelta(days=356))
    [reminder] = messages(engine, "tier.expiring")
    assert reminder["text"] == "Reserve membership ends on 2027-03-01"
    assert tier_of(engine, coffee) == "reserve"
    with engine.begin() as conn:
        result = tier_svc.evaluate(conn, coffee, now=NOW + timedelta(days=365, seconds=1))
    assert result.moves == {"reserve→jade": 1}
    assert history(engine, coffee)[0] == ("reserve", "jade", "paid term ended")


def test_a_second_term_extends_the_first(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn:
        tier_svc.purchase(conn, coffee, "m1", "reserve", key="a", actor=None, now=NOW)
        second = tier_svc.purchase(conn, coffee, "m1", "reserve", key="b", actor=None, now=NOW + timedelta(days=100))
    assert (second.starts_at, second.ends_at) == (NOW + timedelta(days=365), NOW + timedelta(days=730))


def test_refused_purchases_change_nothing(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn:
        tier_svc.purchase(conn, coffee, "m1", "reserve", key="a", actor=None, now=NOW)
    for tier, key, error in (("gold", "x", NotPurchasable), ("platinum", "y", UnknownTier), ("reserve", "a", None)):
        with pytest.raises(error or IdempotencyConflict), engine.begin() as conn:
            tier_svc.purchase(conn, coffee, "m2" if error is None else "m1", tier, key=key, actor=None, now=NOW)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(tier_changes)).scalar() == 1


def test_a_paid_tier_bought_by_event(engine: Engine) -> None:
    source = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")
    source = source.replace(
        "paid: {term_days: 365, remind_days: 14}", "paid: {term_days: 30, event: reserve_bought}"
    ).replace("  - key: check_in\n", "  - key: reserve_bought\n  - key: check_in\n")
    with engine.begin() as conn:
        lp = programs.load(conn, parse_program(source), source, now=NOW).loaded
    feed(
        engine,
        lp,
        [{"event_id": "b1", "member_id": "m1", "type": "reserve_bought", "occurred_at": "2026-02-01T09:00:00Z"}],
    )
    assert tier_of(engine, lp) == "reserve"
    with engine.connect() as conn:
        (ends,) = conn.execute(select(tier_purchases.c.ends_at)).one()
    assert ends == datetime(2026, 3, 3, 9, tzinfo=UTC)  # 30 days from the event
    with engine.begin() as conn:
        assert tier_svc.evaluate(conn, lp, now=datetime(2026, 3, 4, tzinfo=UTC)).moves == {"reserve→green": 1}


# --- manual tiers -------------------------------------------------------------------------------


def test_a_manual_floor_until_a_date_then_the_earned_tier(engine: Engine, coffee: LoadedProgram) -> None:
    until = NOW + timedelta(days=10)
    with engine.begin() as conn:
        done = tier_svc.set_manual(conn, coffee, "m1", "gold", reason="launch guest", actor="ana", until=until, now=NOW)
    assert (done.tier, done.changed) == ("gold", True)
    with engine.connect() as conn:
        ((actor, action, reason),) = conn.execute(
            select(audit_log.c.actor, audit_log.c.action, audit_log.c.reason)
        ).all()
    assert (actor, action, reason) == ("ana", "set_tier", "launch guest")
    assert history(engine, coffee)[0] == (None, "gold", "set by ana: launch guest")
    with engine.begin() as conn:
        assert tier_svc.evaluate(conn, coffee, now=until).moves == {"gold→green": 1}


def test_a_locked_tier_holds_whatever_is_earned(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn:
        tier_svc.set_manual(conn, coffee, "m1", "jade", reason="staff", actor="ana", lock=True, now=NOW)
    feed(
        engine,
        coffee,
        [
            {
                "event_id": "p1",
                "member_id": "m1",
                "type": "purchase",
                "occurred_at": "2026-02-01T09:00:00Z",
                "attributes": {"amount": 1000},
            }
        ],
    )
    assert tier_of(engine, coffee) == "jade"  # 20 ★ would be Gold
    with engine.begin() as conn:
        tier_svc.set_manual(conn, coffee, "m1", None, reason="left staff", actor="ana", now=NOW)
    assert tier_of(engine, coffee) == "gold"


def test_an_unknown_tier_is_refused_and_nothing_is_written(engine: Engine, coffee: LoadedProgram) -> None:
    with pytest.raises(UnknownTier), engine.begin() as conn:
        tier_svc.set_manual(conn, coffee, "m1", "diamond", reason="x", actor="ana", now=NOW)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar() == 0


# --- ladder changes -----------------------------------------------------------------------------

HARDER = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8").replace("threshold: 4}", "threshold: 8}")


def stars(engine: Engine, lp: LoadedProgram, amounts: dict[str, int]) -> None:
    feed(
        engine,
        lp,
        [
            {
                "event_id": f"s-{m}",
                "member_id": m,
                "type": "purchase",
                "occurred_at": "2026-02-01T09:00:00Z",
                "attributes": {"amount": 50 * n},
            }
            for m, n in amounts.items()
        ],
    )


def test_preview_shows_who_would_move_where(engine: Engine, coffee: LoadedProgram) -> None:
    stars(engine, coffee, {"a": 1, "b": 5, "c": 6, "d": 9, "e": 20})
    with engine.connect() as conn:
        matrix = tier_svc.preview(conn, coffee, compile_program(parse_program(HARDER)), now=NOW)
    assert matrix == {"green": {"green": 1}, "jade": {"green": 2, "jade": 1}, "gold": {"gold": 1}}


def test_activation_re_evaluates_everyone_or_keeps_tiers_until_a_date(engine: Engine, coffee: LoadedProgram) -> None:
    stars(engine, coffee, {"b": 5, "d": 9})
    keep = NOW + timedelta(days=30)
    with engine.begin() as conn:
        before = tier_svc.active_program(conn, "coffee")
        lp = programs.load(conn, parse_program(HARDER), HARDER, now=NOW).loaded
        result = tier_svc.on_activation(conn, before, lp, now=NOW, keep_until=keep)
    assert result is not None
    assert result.changed == 0
    assert tier_of(engine, lp, "b") == "jade"
    with engine.begin() as conn:
        assert tier_svc.evaluate(conn, lp, now=keep).moves == {"jade→green": 1}
    assert tier_of(engine, lp, "d") == "jade"


def test_activation_without_grandfathering_moves_members_at_once(engine: Engine, coffee: LoadedProgram) -> None:
    stars(engine, coffee, {"b": 5})
    with engine.begin() as conn:
        before = tier_svc.active_program(conn, "coffee")
        lp = programs.load(conn, parse_program(HARDER), HARDER, now=NOW).loaded
        result = tier_svc.on_activation(conn, before, lp, now=NOW)
    assert result is not None
    assert result.moves == {"jade→green": 1}
    assert history(engine, lp, "b")[0] == ("jade", "green", "ladder changed")


def test_a_new_version_with_the_same_ladder_moves_nobody(engine: Engine, coffee: LoadedProgram) -> None:
    source = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8").replace("name: Coffee Club", "name: Coffee Club+")
    with engine.begin() as conn:
        before = tier_svc.active_program(conn, "coffee")
        lp = programs.load(conn, parse_program(source), source, now=NOW).loaded
        assert tier_svc.on_activation(conn, before, lp, now=NOW) is None


# --- qualification ------------------------------------------------------------------------------


def test_awards_that_do_not_qualify_are_kept_out_of_tiers(engine: Engine, coffee: LoadedProgram) -> None:
    from kinloop.services.book import Book

    with engine.begin() as conn:
        row = members.ensure(conn, coffee.program_id, ["m1"], NOW)["m1"]
        book = Book(conn, coffee.program_id, coffee.version_id, NOW)
        tier_svc.track(book, coffee.program)
        stars_currency = coffee.program.currencies["stars"]
        book.earn(row.pk, stars_currency, 5, earned_at=NOW, qualifies=False)
        book.earn(row.pk, stars_currency, 2, earned_at=NOW)
        book.flush()
    with engine.connect() as conn:
        assert conn.execute(select(func.sum(tier_qualification.c.amount))).scalar() == 2
