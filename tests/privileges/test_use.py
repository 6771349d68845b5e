"""Using privileges against a real store (SQLite and PostgreSQL): quotas per period in the
program's time zone, the birthday window, withdrawal on leaving a tier, idempotency, the
member view and utilisation. Refused uses write nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from kinloop.domain.errors import (
    IdempotencyConflict,
    OutsideWindow,
    PrivilegeNotGranted,
    QuotaExhausted,
    UnknownMember,
    UnknownPrivilege,
)
from kinloop.services import ingest, ledger, member_view, members, privileges
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import privilege_uses

MARCH = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
LAST_OF_MARCH = datetime(2026, 3, 31, 21, 59, 59, tzinfo=UTC)  # 23:59:59 in Paris
FIRST_OF_APRIL = datetime(2026, 3, 31, 22, 0, tzinfo=UTC)  # midnight in Paris


def purchase(engine: Engine, lp: LoadedProgram, event_id: str, member_id: str, amount: int) -> None:
    """A purchase: 1 ★ per 50 (Jade from 4 ★ = 200, Gold from 16 ★ = 800)."""
    raw = {
        "event_id": event_id,
        "member_id": member_id,
        "type": "purchase",
        "occurred_at": "2026-03-01T09:00:00Z",
        "attributes": {"amount": amount},
    }
    with engine.begin() as conn:
        [result] = ingest.ingest(conn, lp, [raw], now=MARCH)
    assert result.status == "accepted"


def use(engine: Engine, lp: LoadedProgram, member_id: str, key: str, idem: str, at: datetime) -> dict[str, Any]:
    with engine.begin() as conn:
        return privileges.use(conn, lp, member_id, key, key=idem, now=at)


def uses(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(privilege_uses)).scalar_one())


def set_birthday(engine: Engine, lp: LoadedProgram, member_id: str, birthday: str) -> None:
    with engine.begin() as conn:
        members.set_profile(conn, lp.program_id, member_id, {"birthday": birthday}, now=MARCH)


def test_a_monthly_quota_resets_at_midnight_in_the_program_time_zone(engine: Engine, coffee: LoadedProgram) -> None:
    purchase(engine, coffee, "p1", "ada", 1000)  # 20 ★: Gold
    first = use(engine, coffee, "ada", "free_drink", "u1", MARCH)
    assert first == {
        "member_id": "ada",
        "privilege": "free_drink",
        "name": "Free drink",
        "kind": "preferential",
        "tier": "gold",
        "used_at": MARCH.isoformat(),
        "remaining": 1,
        "text": "Free drink used; 1 of 2 left this month",
        "replayed": False,
    }
    assert use(engine, coffee, "ada", "free_drink", "u2", LAST_OF_MARCH)["remaining"] == 0
    with pytest.raises(QuotaExhausted, match="Free drink: none of 2 left this month"):
        use(engine, coffee, "ada", "free_drink", "u3", LAST_OF_MARCH)
    assert uses(engine) == 2  # the refused use wrote nothing
    # A second later it is April in Paris: the quota is whole again.
    assert use(engine, coffee, "ada", "free_drink", "u3", FIRST_OF_APRIL)["text"] == (
        "Free drink used; 1 of 2 left this month"
    )


def test_a_replayed_key_returns_the_first_reply_and_a_reused_one_conflicts(
    engine: Engine, coffee: LoadedProgram
) -> None:
    purchase(engine, coffee, "p1", "ada", 1000)
    purchase(engine, coffee, "p2", "bob", 1000)
    first = use(engine, coffee, "ada", "free_drink", "order-7", MARCH)
    again = use(engine, coffee, "ada", "free_drink", "order-7", MARCH + timedelta(days=3))
    assert again == {**first, "replayed": True}
    assert uses(engine) == 1
    with pytest.raises(IdempotencyConflict):
        use(engine, coffee, "ada", "priority_pickup", "order-7", MARCH)
    with pytest.raises(IdempotencyConflict):
        use(engine, coffee, "bob", "free_drink", "order-7", MARCH)
    assert uses(engine) == 1


def test_privileges_come_with_the_tier_and_go_with_it(engine: Engine, coffee: LoadedProgram) -> None:
    purchase(engine, coffee, "small", "ada", 100)  # 2 ★: Green
    with pytest.raises(PrivilegeNotGranted, match="Priority pickup is not a privilege of Green"):
        use(engine, coffee, "ada", "priority_pickup", "u1", MARCH)
    purchase(engine, coffee, "big", "ada", 900)  # 20 ★: Gold
    assert use(engine, coffee, "ada", "priority_pickup", "u1", MARCH)["remaining"] is None
    # A refund of the big purchase takes the stars, and the tier, away again.
    with engine.begin() as conn:
        reversal = ledger.reverse(conn, coffee, "big", amount=None, reason="refund", actor="t", now=MARCH)
    assert reversal.tier == ("gold", "green")
    with pytest.raises(PrivilegeNotGranted):
        use(engine, coffee, "ada", "priority_pickup", "u2", MARCH)
    with engine.connect() as conn:
        assert member_view.show(conn, coffee, "ada", now=MARCH).privileges == []
    assert uses(engine) == 1


def test_the_birthday_privilege_is_usable_in_the_birthday_month_only(engine: Engine, coffee: LoadedProgram) -> None:
    purchase(engine, coffee, "p1", "ada", 300)  # 6 ★: Jade
    with pytest.raises(OutsideWindow, match="once the member's birthday is known"):
        use(engine, coffee, "ada", "birthday_drink", "b1", MARCH)
    set_birthday(engine, coffee, "ada", "1990-04-17")
    with pytest.raises(OutsideWindow, match=r"\(in April\)"):
        use(engine, coffee, "ada", "birthday_drink", "b1", LAST_OF_MARCH)
    assert use(engine, coffee, "ada", "birthday_drink", "b1", FIRST_OF_APRIL)["text"] == (
        "Birthday drink used; none of 1 left this year"
    )
    with pytest.raises(QuotaExhausted):
        use(engine, coffee, "ada", "birthday_drink", "b2", FIRST_OF_APRIL + timedelta(days=10))
    assert uses(engine) == 1


def test_unknown_privilege_or_member(engine: Engine, coffee: LoadedProgram) -> None:
    purchase(engine, coffee, "p1", "ada", 1000)
    with pytest.raises(UnknownPrivilege, match="privileges: birthday_drink, free_drink, priority_pickup"):
        use(engine, coffee, "ada", "spa_day", "x", MARCH)
    with pytest.raises(UnknownMember):
        use(engine, coffee, "nobody", "free_drink", "x", MARCH)
    assert uses(engine) == 0


def test_the_member_view_lists_held_privileges_with_what_is_left(engine: Engine, coffee: LoadedProgram) -> None:
    purchase(engine, coffee, "p1", "ada", 1000)
    set_birthday(engine, coffee, "ada", "1990-04-17")
    use(engine, coffee, "ada", "free_drink", "u1", MARCH)
    with engine.connect() as conn:
        view = member_view.show(conn, coffee, "ada", now=MARCH).as_json()
    assert [(p["key"], p["remaining"], p["usable_now"], p["text"]) for p in view["privileges"]] == [
        ("birthday_drink", 1, False, "1 of 1 left this year; usable in your birthday month (April)"),
        ("free_drink", 1, True, "1 of 2 left this month"),
        ("priority_pickup", None, True, "unlimited"),
    ]
    assert view["privileges"][1] == {
        "key": "free_drink",
        "name": "Free drink",
        "kind": "preferential",
        "description": "A coupon for any handcrafted drink.",
        "quota": {"uses": 2, "per": "month"},
        "window": "always",
        "used": 1,
        "remaining": 1,
        "usable_now": True,
        "text": "1 of 2 left this month",
    }


def test_usage_is_uses_per_member_of_the_tier_in_the_period(engine: Engine, coffee: LoadedProgram) -> None:
    for i, amount in enumerate([1000, 1000, 1000, 1000, 300]):  # four Gold members, one Jade
        purchase(engine, coffee, f"p{i}", f"m{i}", amount)
    use(engine, coffee, "m0", "free_drink", "a", MARCH)
    use(engine, coffee, "m0", "free_drink", "b", MARCH)
    use(engine, coffee, "m1", "free_drink", "c", MARCH)
    use(engine, coffee, "m1", "free_drink", "d", FIRST_OF_APRIL)  # another month
    with engine.connect() as conn:
        report = privileges.usage(conn, coffee, per="month", now=MARCH)
    assert (report["period"], report["from"], report["to"]) == ("month", "2026-03-01", "2026-03-31")
    row = {(r["privilege"], r["tier"]): r for r in report["rows"]}
    assert row[("free_drink", "gold")] == {
        "privilege": "free_drink",
        "name": "Free drink",
        "tier": "gold",
        "tier_name": "Gold",
        "members": 4,
        "uses": 3,
        "users": 2,
        "use_rate": "0.7500",
        "text": "Free drink: 3 uses by 2 of 4 Gold members (75% use rate)",
    }
    assert (row[("birthday_drink", "jade")]["members"], row[("birthday_drink", "jade")]["uses"]) == (1, 0)
    assert list(row) == [
        ("birthday_drink", "jade"),
        ("birthday_drink", "gold"),
        ("free_drink", "gold"),
        ("priority_pickup", "gold"),
    ]
    with engine.connect() as conn:
        april = privileges.usage(conn, coffee, per="year", on=date(2026, 4, 1), now=MARCH)
    assert {(r["privilege"], r["tier"]): r["uses"] for r in april["rows"]}[("free_drink", "gold")] == 4
