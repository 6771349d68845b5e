"""Console area: the dashboard. Headline cards and charts over a chosen period, read from the
rollups (`services/dashboard.py`), which it refreshes first when they are stale and not far
behind. Each chart is a canvas drawn by `static/dashboard.js` from JSON in the page, with its
numbers in a table beside it for anyone (or anything) that does not see the canvas."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import Engine

from kinloop.api.deps import run, state
from kinloop.clock import utcnow
from kinloop.domain import dashboard as D
from kinloop.domain.amounts import from_minor
from kinloop.domain.errors import InvalidInput
from kinloop.domain.program import Program
from kinloop.services import dashboard as S
from kinloop.services import programs
from kinloop.services.programs import LoadedProgram
from kinloop.web.console.session import Page
from kinloop.web.templating import render

router = APIRouter()
LAZY_WAIT = 0.2  # PostgreSQL: a page does not wait long for older transactions (the worker will)


@dataclass(slots=True)
class Card:
    label: str
    figure: str
    hint: str = ""


@dataclass(slots=True)
class Chart:
    """One chart: its Chart.js shape, and the same numbers as a table."""

    key: str
    title: str
    kind: str  # bar or line
    labels: list[str]
    datasets: list[tuple[str, list[Any]]]
    head: list[str]
    rows: list[list[Any]]
    stacked: bool = False
    note: str = ""
    empty: bool = field(init=False)

    def __post_init__(self) -> None:
        self.empty = not self.labels or not any(v for _, values in self.datasets for v in values)

    def spec(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "labels": self.labels,
            "stacked": self.stacked,
            "datasets": [{"label": label, "data": [str(v) for v in values]} for label, values in self.datasets],
        }


def _amount(minor: int, decimals: int) -> Decimal:
    return from_minor(minor, decimals)


def _cards(board: S.Board, program: Program) -> list[Card]:
    cards: list[Card] = []
    worth: Decimal | None = None
    valued: list[str] = []
    for key, c in program.currencies.items():
        total, reserved = board.owned_now.get(key, (0, 0))
        hint = "what members hold now"
        if reserved:
            hint += f", of which {c.display(reserved)} held or in flight"
        cards.append(Card(f"Outstanding {c.name}", c.display(total), hint))
        value = D.liability(total, c)
        if value is not None:
            worth = value if worth is None else worth + value
            valued.append(f"{c.name} at {c.money_value} {program.money_currency}")
    if worth is not None:
        cards.append(Card("Outstanding liability", f"{worth:,} {program.money_currency}", "; ".join(valued)))
    else:
        cards.append(Card("Outstanding liability", "–", "no currency has a money_value in the program file"))
    for key, c in program.currencies.items():
        if not c.spendable:
            continue
        cd = board.currencies.get(key)
        rate = D.burn_rate(cd.total()) if cd else None
        cards.append(Card(f"Burn rate, {c.name}", D.percent(rate), "redeemed and expired over issued, this period"))
    first = board.period.first.isoformat()
    cards.append(
        Card("Active members", f"{board.active_since_start:,}", f"of {board.members:,}; with an event since {first}")
    )
    cards.append(Card("New members", f"{sum(board.new_members.values()):,}", "joined this period"))
    return cards


def _tier_names(program: Program) -> dict[str, str]:
    names = {t.key: t.name for t in program.ladder.tiers} if program.ladder else {}
    names[""] = "No tier"
    return names


def _charts(board: S.Board, loaded: LoadedProgram) -> list[Chart]:
    program = loaded.program
    period = board.period
    days = [d.isoformat() for d in period.days]
    charts: list[Chart] = []
    for key, c in program.currencies.items():
        cd = board.currencies.get(key) or D.CurrencyDays(key, period)
        named = [("Issued", "issued"), ("Redeemed", "redeemed"), ("Expired", "expired")]
        if not c.spendable:
            named = named[:1]
        series = [(label, [_amount(v, c.decimals) for v in cd.series(name)]) for label, name in named]
        charts.append(
            Chart(
                f"flows-{key}",
                f"{c.name} issued, redeemed and expired per day" if c.spendable else f"{c.name} issued per day",
                "bar",
                days,
                series,
                ["Day", *[label for label, _ in series]],
                [[d, *[values[i] for _, values in series]] for i, d in enumerate(days)],
            )
        )
        level = [_amount(v, c.decimals) for v in cd.outstanding()]
        outstanding = Chart(
            f"outstanding-{key}",
            f"Outstanding {c.name} at the end of each day",
            "line",
            days,
            [(f"Outstanding ({c.unit})", level)],
            ["Day", f"Outstanding ({c.unit})"],
            [[d, level[i]] for i, d in enumerate(days)],
        )
        if cd.opening or cd.days:
            outstanding.empty = False  # a flat line is still a line: members hold what they held
        charts.append(outstanding)
    tiers = _tier_names(program)
    order = [*tiers]
    now = sorted(board.tiers_now.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    charts.append(
        Chart(
            "tiers-now",
            "Members per tier now",
            "bar",
            [tiers.get(k, k) for k, _ in now],
            [("Members", [n for _, n in now])],
            ["Tier", "Members"],
            [[tiers.get(k, k), n] for k, n in now],
        )
    )
    ups = [board.tier_moves.get(d, (0, 0))[0] for d in period.ordinals]
    downs = [board.tier_moves.get(d, (0, 0))[1] for d in period.ordinals]
    charts.append(
        Chart(
            "tier-moves",
            "Tier moves per day",
            "bar",
            days,
            [("Up", ups), ("Down", downs)],
            ["Day", "Up", "Down"],
            [[d, ups[i], downs[i]] for i, d in enumerate(days)],
            stacked=True,
        )
    )
    charts.append(_privileges(board, program, tiers))
    checkin = S.checkin_type(loaded)
    if checkin is not None:
        per_day = D.daily({day: n for (day, t), n in board.events.items() if t == checkin}, period)
        charts.append(
            Chart(
                "checkins",
                "Check-ins per day",
                "bar",
                days,
                [("Check-ins", per_day)],
                ["Day", "Check-ins"],
                [[d, per_day[i]] for i, d in enumerate(days)],
            )
        )
    types = sorted({t for _, t in board.events})
    activity = [(t, D.daily({day: n for (day, et), n in board.events.items() if et == t}, period)) for t in types]
    charts.append(
        Chart(
            "activity",
            "Events per day, by type",
            "bar",
            days,
            activity,
            ["Day", *types],
            [[d, *[values[i] for _, values in activity]] for i, d in enumerate(days)],
            stacked=True,
        )
    )
    task_names = {t.key: t.name for t in program.tasks}
    done = sorted(board.tasks.items(), key=lambda kv: (-kv[1], kv[0]))
    charts.append(
        Chart(
            "tasks",
            "Task completions",
            "bar",
            [task_names.get(k, k) for k, _ in done],
            [("Completions", [n for _, n in done])],
            ["Task", "Completions"],
            [[task_names.get(k, k), n] for k, n in done],
            note="Completions of tasks with a reward (each reward is one ledger entry).",
        )
    )
    charts.append(_earned(board, program))
    charts += _redemptions(board, program, tiers)
    charts.append(_draws(board, program))
    return charts


def _privileges(board: S.Board, program: Program, tiers: dict[str, str]) -> Chart:
    held_by = [(p, list(p.tiers)) for p in program.privileges]
    tier_keys = sorted({t for _, ts in held_by for t in ts}, key=lambda t: [*tiers].index(t) if t in tiers else 99)
    datasets: list[tuple[str, list[Any]]] = []
    for t in tier_keys:
        values: list[Any] = []
        for p, ts in held_by:
            r = D.rate(board.privilege_uses.get((p.key, t), 0), board.tiers_now.get(t, 0)) if t in ts else None
            values.append(r if r is not None else 0)
        datasets.append((tiers.get(t, t), values))
    rows = [
        [
            p.name,
            tiers.get(t, t),
            board.privilege_uses.get((p.key, t), 0),
            board.tiers_now.get(t, 0),
            D.rate(board.privilege_uses.get((p.key, t), 0), board.tiers_now.get(t, 0)) or "–",
        ]
        for p, ts in held_by
        for t in ts
    ]
    return Chart(
        "privileges",
        "Privilege use per member of each tier, this period",
        "bar",
        [p.name for p, _ in held_by],
        datasets,
        ["Privilege", "Tier", "Uses", "Members now", "Uses per member"],
        rows,
        note="Uses in the period by members of the tier, over the tier's members now.",
    )


def _earned(board: S.Board, program: Program) -> Chart:
    names = {r.key: r.name for r in program.rules}
    names.update({t.key: t.name for t in program.tasks})
    rows = []
    for award, (n, amount) in sorted(board.earned.items()):
        kind, _, key = award.partition(":")
        label = names.get(key, key) + ("" if kind == "rule" else f" ({kind.replace('_', ' ')})")
        rows.append((label, n, amount))
    return Chart(
        "earned",
        "Awards per rule, task and badge",
        "bar",
        [label for label, _, _ in rows],
        [("Awards", [n for _, n, _ in rows])],
        ["Award", "Awards", "Amount (minor units)"],
        [[label, n, amount] for label, n, amount in rows],
    )


def _redemptions(board: S.Board, program: Program, tiers: dict[str, str]) -> list[Chart]:
    by_reward: dict[str, list[int]] = {}
    by_tier: dict[str, int] = {}
    for (reward, tier, _currency), (quantity, _points) in board.orders.items():
        by_reward.setdefault(reward, [0, 0])[0] += quantity
        by_reward[reward][1] += _points
        by_tier[tier] = by_tier.get(tier, 0) + quantity
    ranked = sorted(by_reward.items(), key=lambda kv: (-kv[1][0], kv[0]))
    order = [*tiers]
    tier_rows = sorted(by_tier.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    return [
        Chart(
            "rewards",
            "Redemptions by reward",
            "bar",
            [board.reward_names.get(k, k) for k, _ in ranked],
            [("Redeemed", [q for _, (q, _) in ranked])],
            ["Reward", "Redeemed", "Points (minor units)"],
            [[board.reward_names.get(k, k), q, p] for k, (q, p) in ranked],
            note="Mall orders placed in the period (cancelled ones included; their points are back in the ledger).",
        ),
        Chart(
            "redemptions-tier",
            "Redemptions by tier",
            "bar",
            [tiers.get(k, k) for k, _ in tier_rows],
            [("Redeemed", [n for _, n in tier_rows])],
            ["Tier", "Redeemed"],
            [[tiers.get(k, k), n] for k, n in tier_rows],
        ),
    ]


def _draws(board: S.Board, program: Program) -> Chart:
    prizes = sorted(board.prizes.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1]))
    rows: list[list[Any]] = []
    for key, (entries, spent) in sorted(board.draws.items()):
        name, cur = board.draw_names.get(key, (key, ""))
        currency = program.currencies.get(cur)
        cost = currency.display(spent) if currency else f"{spent:,}"
        won = ", ".join(f"{prize} × {n}" for (k, prize), n in prizes if k == key)
        rows.append([name, entries, cost, won])
    several = len(board.draws) > 1
    return Chart(
        "draws",
        "Draw prizes won",
        "bar",
        [f"{board.draw_names.get(k, (k, ''))[0]}: {p}" if several else p for (k, p), _ in prizes],
        [("Entries that won it", [n for _, n in prizes])],
        ["Draw", "Entries", "Points spent", "Prizes"],
        rows,
    )


def _active(engine: Engine, key: str) -> LoadedProgram:
    with engine.connect() as conn:
        return programs.active(conn, key)


def _freshness(engine: Engine, program_id: int) -> S.Freshness:
    with engine.connect() as conn:
        return S.freshness(conn, program_id)


def _read(engine: Engine, loaded: LoadedProgram, period: D.Period) -> S.Board:
    with engine.connect() as conn:
        return S.read(conn, loaded, period)


@router.get("/dashboard")
async def dashboard(
    request: Request,
    page: Page,
    period: str | None = None,
    first: Annotated[str | None, Query(alias="from")] = None,
    last: Annotated[str | None, Query(alias="to")] = None,
) -> HTMLResponse:
    if page.program_key is None:
        return render(request, "console/dashboard.html", page=page, board=None)
    st = state(request)
    loaded = await run(request, _active, st.reader, page.program_key)
    now = utcnow()
    today = S.today(loaded, now)
    error: InvalidInput | None = None
    try:
        chosen = D.choose_period(period, today, first, last)
    except InvalidInput as exc:
        error = exc
        chosen = D.choose_period("30", today)
    fresh = await run(request, _freshness, st.reader, loaded.program_id)
    if fresh.stale(now) and fresh.behind <= S.LAZY_LIMIT:
        job = functools.partial(S.refresh, st.engine, loaded, now=now, wait=LAZY_WAIT)
        async with st.writer or contextlib.nullcontext():
            await run(request, job)
    board = await run(request, _read, st.reader, loaded, chosen)
    charts = _charts(board, loaded)
    return render(
        request,
        "console/dashboard.html",
        status_code=422 if error else 200,
        page=page,
        board=board,
        program=loaded.program,
        chosen=chosen,
        choice=period if error else chosen.choice,
        first=first if error else chosen.first.isoformat(),
        last=last if error else chosen.last.isoformat(),
        error=error,
        cards=_cards(board, loaded.program),
        charts=charts,
        chart_data={"charts": {c.key: c.spec() for c in charts if not c.empty}},
        as_of=board.freshness.refreshed_at,
        today=today,
    )
