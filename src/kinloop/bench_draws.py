"""The draw and transfer phases of `kinloop bench outlets`.

Setup (`seed`): members `d…` (who enter the draw) and `t…` (who send and claim envelopes) with
`balance` Beans each (one in ten with only 100, so balances run short), and a draw whose two
prizes (one in ten entries) have only `scarce` units each and whose others are unlimited. Phases, each run by
several processes at once:
- draws: enter the draw for random members (2 Beans an entry);
- transfers: send a group envelope of 3 shares from a random member, then claim a share of a
  recent envelope as two other members, one of them twice (the repeat must change nothing).

`audit` counts from the database what must never happen: prizes given beyond their stock, entry
numbers not consecutive, and claims beyond an envelope's shares or total.
"""

from __future__ import annotations

import random
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from kinloop.clock import utcnow
from kinloop.domain.errors import InsufficientBalance, LimitReached, OutletClosed
from kinloop.services import draws, envelopes, ingest, programs
from kinloop.store.tables import draw_entries, draw_odds, envelope_claims
from kinloop.store.tables import draws as draws_table
from kinloop.store.tables import envelopes as envelopes_table

DRAW = "bench_wheel"
START_TIMEOUT = 300.0


def seed(engine: Engine, *, members: int, balance: int, scarce: int) -> None:
    """Members with Beans for both phases, and the bench wheel (two scarce prizes)."""
    now = utcnow()
    with engine.begin() as conn:
        loaded = programs.active(conn, "coffee")
        events = [
            {
                "event_id": f"seed-{group}{i}",
                "member_id": f"{group}{i:05d}",
                "type": "purchase",
                "occurred_at": now.isoformat(),
                "attributes": {"amount": (100 if i % 10 == 0 else balance) * 10},
            }
            for group in ("d", "t")
            for i in range(members)
        ]
        ingest.ingest(conn, loaded, events, now=now)
        prize = draws.PrizeIn
        spec = draws.DrawIn(
            key=DRAW,
            name="Bench wheel",
            currency="beans",
            cost=Decimal(2),
            opens_at=now - timedelta(minutes=1),
            closes_at=now + timedelta(days=1),
            prizes=[
                prize("mug", "Mug", "reward", Decimal(5), stock=scarce, reward="mug"),
                prize("beans_50", "50 Beans", "points", Decimal(5), stock=scarce, amount=Decimal(50)),
                prize("beans_1", "1 Bean", "points", Decimal(20), amount=Decimal(1)),
                prize("thanks", "Thanks for playing", "nothing", Decimal(70)),
            ],
        )
        draws.create(conn, loaded, spec, now=now, actor="bench")


def draw_worker(start: Any, url: str, seed_: int, seconds: float, attempts: int, members: int) -> dict[str, int]:
    """Enter the bench wheel for random members until the time or the attempts run out."""
    from kinloop.bench_outlets import _engine

    rng = random.Random(seed_)
    engine = _engine(url)
    counts = {"entries": 0, "short": 0}
    try:
        with engine.connect() as conn:
            loaded = programs.active(conn, "coffee")
        start.wait(START_TIMEOUT)
        start_at = time.time()
        for n in range(attempts):
            if time.time() - start_at >= seconds:
                break
            member_id = f"d{rng.randrange(members):05d}"
            try:
                with engine.begin() as conn:
                    draws.enter(conn, loaded, DRAW, member_id, entry_key=f"{seed_}-{n}", now=utcnow(), actor="bench")
                counts["entries"] += 1
                counts["elapsed_ms"] = int((time.time() - start_at) * 1000)
            except InsufficientBalance:
                counts["short"] += 1
        return counts
    finally:
        engine.dispose()


def transfer_worker(start: Any, url: str, seed_: int, seconds: float, attempts: int, members: int) -> dict[str, int]:
    """Send group envelopes and claim shares of them (one claimer twice)."""
    from kinloop.bench_outlets import _engine

    rng = random.Random(seed_)
    engine = _engine(url)
    counts = {"sent": 0, "claimed": 0, "claim_repeats": 0, "short": 0, "refused": 0}
    try:
        with engine.connect() as conn:
            loaded = programs.active(conn, "coffee")
        start.wait(START_TIMEOUT)
        start_at = time.time()
        for n in range(attempts):
            if time.time() - start_at >= seconds:
                break
            sender, first, second = (f"t{i:05d}" for i in rng.sample(range(members), 3))
            key = f"b{seed_}-{n}"
            try:
                with engine.begin() as conn:
                    envelopes.send(conn, loaded, sender, key=key, amount=9, shares=3, now=utcnow(), actor="bench")
                counts["sent"] += 1
            except InsufficientBalance:
                counts["short"] += 1
                continue
            except LimitReached:
                counts["refused"] += 1
                continue
            for claimer in (first, first, second):
                try:
                    with engine.begin() as conn:
                        claim = envelopes.claim(conn, loaded, key, claimer, now=utcnow())
                    counts["claim_repeats" if claim.replayed else "claimed"] += 1
                except OutletClosed:
                    counts["refused"] += 1
            counts["elapsed_ms"] = int((time.time() - start_at) * 1000)
        return counts
    finally:
        engine.dispose()


def audit(engine: Engine) -> dict[str, int]:
    """Prizes given beyond stock (oversold); claims beyond shares or total, gaps in entry numbers
    (double spent); and how many limited prizes were given."""
    with engine.connect() as conn:
        oversold = scarce_given = 0
        for draw_id, prizes in conn.execute(select(draw_odds.c.draw_id, draw_odds.c.prizes)):
            stock = {p["key"]: p["stock"] for p in draws._json(prizes) if p["stock"] is not None}
            given: dict[str, int] = dict(
                conn.execute(
                    select(draw_entries.c.prize, func.count())
                    .where(draw_entries.c.draw_id == draw_id)
                    .group_by(draw_entries.c.prize)
                ).all()
            )
            oversold += sum(max(0, int(given.get(k, 0)) - s) for k, s in stock.items())
            scarce_given += sum(int(given.get(k, 0)) for k in stock)
        gaps = 0
        for n, top in conn.execute(
            select(func.count(draw_entries.c.id), draws_table.c.entries)
            .select_from(draws_table.outerjoin(draw_entries, draw_entries.c.draw_id == draws_table.c.id))
            .group_by(draws_table.c.id, draws_table.c.entries)
        ):
            gaps += int(n != top)
        claims = {
            envelope_id: (int(n), int(amount))
            for envelope_id, n, amount in conn.execute(
                select(envelope_claims.c.envelope_id, func.count(), func.sum(envelope_claims.c.amount)).group_by(
                    envelope_claims.c.envelope_id
                )
            )
        }
        over_claimed = 0
        for envelope_id, shares, total in conn.execute(
            select(envelopes_table.c.id, envelopes_table.c.shares, envelopes_table.c.total)
        ):
            n, claimed = claims.get(envelope_id, (0, 0))
            over_claimed += int(n > len(envelopes._json(shares)) or claimed > total)
    return {"oversold": oversold, "double_spent": gaps + over_claimed, "scarce_prizes_given": scarce_given}
