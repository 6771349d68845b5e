"""The demo's points outlets: the coffee wheel draw, a shared goal, envelopes and birthdays.

Run after the simulated period (with its own random stream, so the period's figures do not
change), through the same services as production."""

from __future__ import annotations

import dataclasses
import random
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from kinloop.domain.errors import Refused, UnknownMember
from kinloop.services import draws, envelopes, goals, members
from kinloop.services.programs import LoadedProgram

DRAW_FILE = Path(__file__).parent / "examples" / "draws" / "coffee_wheel.yaml"


def seed_outlets(
    engine: Engine, loaded: LoadedProgram, member_ids: list[str], *, seed: int, now: datetime
) -> dict[str, Any]:
    """Create the coffee wheel and the tree goal; some members play, donate and gift."""
    from kinloop.cli.draws import read_draw  # the draw file is read as `kinloop draws create` reads it

    rng = random.Random(seed + 1)
    spec = read_draw(DRAW_FILE)
    spec = dataclasses.replace(spec, opens_at=now - timedelta(days=1), closes_at=now + timedelta(days=30))
    with engine.begin() as conn:
        draws.create(conn, loaded, spec, now=now, actor="demo")
        goals.create(
            conn,
            loaded,
            key="plant_a_tree",
            name="Plant a tree",
            currency_key="beans",
            target=Decimal(1000),
            repeat=True,
            now=now,
            actor="demo",
        )
    played = donated = gifted = 0
    for member_id in member_ids:
        with engine.begin() as conn:
            played += _play(conn, loaded, rng, member_id, now)
            donated += _donate(conn, loaded, rng, member_id, now)
            gifted += _gift(conn, loaded, rng, member_id, member_ids, now)
    with engine.begin() as conn:
        today = now.astimezone(loaded.program.timezone).date()
        for member_id in rng.sample(member_ids, k=min(3, len(member_ids))):
            members.set_profile(conn, loaded.program_id, member_id, {"birthday": f"1990-{today:%m-%d}"}, now=now)
        birthdays = envelopes.birthdays(conn, loaded, now=now)["sent"]
    return {"entries": played, "donations": donated, "envelopes": gifted, "birthday_envelopes": birthdays}


def _play(conn: Any, loaded: LoadedProgram, rng: random.Random, member_id: str, now: datetime) -> int:
    if rng.random() > 0.3:
        return 0
    try:
        with conn.begin_nested():
            draws.enter(conn, loaded, "coffee_wheel", member_id, entry_key=f"demo-{member_id}", now=now, actor="demo")
    except (Refused, UnknownMember):  # short of Beans, limit reached, not a member yet
        return 0
    return 1


def _donate(conn: Any, loaded: LoadedProgram, rng: random.Random, member_id: str, now: datetime) -> int:
    if rng.random() > 0.2:
        return 0
    try:
        with conn.begin_nested():
            goals.donate(
                conn,
                loaded,
                "plant_a_tree",
                member_id,
                amount=rng.choice((5, 10, 20)),
                donation_key=f"demo-{member_id}",
                now=now,
                actor="demo",
            )
    except (Refused, UnknownMember):
        return 0
    return 1


def _gift(
    conn: Any, loaded: LoadedProgram, rng: random.Random, member_id: str, everyone: list[str], now: datetime
) -> int:
    if rng.random() > 0.05:
        return 0
    friend = rng.choice(everyone)
    if friend == member_id:
        return 0
    try:
        with conn.begin_nested():
            envelopes.send(
                conn, loaded, member_id, key=f"demo-{member_id}", amount=10, to=friend, now=now, actor="demo"
            )
    except (Refused, UnknownMember):
        return 0
    return 1
