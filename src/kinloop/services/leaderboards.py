"""Leaderboards: scores kept set-based during ingestion, lowered by reversals, read as ranks.

Each member has one row per board and period holding its score, so that reading a top N is a
scan of the ranking index, never a scan of the ledger.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select, update

from kinloop.domain import leaderboards as D
from kinloop.domain.amounts import from_minor
from kinloop.domain.errors import InvalidInput, UnknownLeaderboard
from kinloop.domain.events import Event
from kinloop.domain.periods import local_day
from kinloop.domain.program import Leaderboard, Program
from kinloop.domain.rules import Award
from kinloop.services import members as member_svc
from kinloop.services.programs import LoadedProgram, version_program
from kinloop.store.bulk import add_rows
from kinloop.store.tables import entries, events
from kinloop.store.tables import leaderboard_scores as scores

ORDER = "score (highest first), then who reached it first, then member_id"


@dataclass(slots=True)
class Scores:
    """The score changes of one ingestion batch, summed per member, board and period."""

    program: Program
    program_id: int
    rows: dict[tuple[str, str, int], dict[str, Any]]

    @classmethod
    def of(cls, program: Program, program_id: int) -> Scores | None:
        """A collector for the batch, or None when the program has no leaderboards (costs nothing)."""
        return cls(program, program_id, {}) if program.leaderboards else None

    def add(self, member: member_svc.MemberRow, ev: Event, awards: Iterable[Award]) -> None:
        """Count one booked event and what it awarded."""
        earned: dict[str, int] = {}
        for award in awards:
            earned[award.currency] = earned.get(award.currency, 0) + award.amount
        self._apply(member, ev.type, ev.occurred_at, earned)

    def take(self, member: member_svc.MemberRow, occurred_at: datetime, currency: str, amount: int) -> None:
        """Lower the scores of an earlier event that lost `amount` of an award (a moved first-time bonus)."""
        self._apply(member, "", occurred_at, {currency: -amount})

    def _apply(self, member: member_svc.MemberRow, event_type: str, at: datetime, earned: dict[str, int]) -> None:
        day = local_day(at, self.program.timezone)
        for d in D.deltas(
            self.program.leaderboards, event_type=event_type, day=day, earned=earned, profile=member.profile
        ):
            row = self.rows.get((d.board, d.period, member.pk))
            if row is None:
                self.rows[(d.board, d.period, member.pk)] = {
                    "program_id": self.program_id,
                    "board": d.board,
                    "period": d.period,
                    "member_pk": member.pk,
                    "grp": d.group,
                    "member_id": member.member_id,
                    "score": d.amount,
                    "reached_at": at,
                }
                continue
            row["score"] += d.amount
            if d.amount > 0:  # a score is reached by raising it
                row["reached_at"] = max(row["reached_at"], at)

    def flush(self, conn: Connection) -> None:
        """Add the batch's changes to the stored scores in one statement."""
        rows = [self.rows[k] for k in sorted(self.rows)]  # key order: concurrent batches lock alike
        add_rows(conn, scores, rows, ("program_id", "board", "period", "member_pk"), add="score", latest="reached_at")
        self.rows.clear()


def lower_for_reversal(
    conn: Connection,
    program_id: int,
    scored_by: Program,
    *,
    member_pk: int,
    event_type: str,
    occurred_at: datetime,
    clawed: dict[str, int],
    whole: bool,
) -> None:
    """Take a reversed event's clawed-back amounts off the boards (of the program version that
    scored it) in the period it happened; an event reversed in full no longer counts either."""
    if not scored_by.leaderboards:
        return
    day = local_day(occurred_at, scored_by.timezone)
    negative = {k: -v for k, v in clawed.items()}
    for board in scored_by.leaderboards:
        amount = (
            (-1 if whole and board.event == event_type else 0) if board.event else negative.get(board.currency or "", 0)
        )
        if not amount:
            continue
        conn.execute(
            update(scores)
            .where(
                scores.c.program_id == program_id,
                scores.c.board == board.key,
                scores.c.period == D.board_period_key(board, day),
                scores.c.member_pk == member_pk,
            )
            .values(score=scores.c.score + amount)
        )


def board_of(program: Program, key: str) -> Leaderboard:
    """The program's leaderboard with this key, or UnknownLeaderboard naming the ones it has."""
    for board in program.leaderboards:
        if board.key == key:
            return board
    known = ", ".join(b.key for b in program.leaderboards) or "none"
    raise UnknownLeaderboard(f"no leaderboard {key!r} in this program (leaderboards: {known})", field="key")


def _number(program: Program, board: Leaderboard, score: int) -> int | str:
    decimals = program.currencies[board.currency].decimals if board.currency else 0
    return score if decimals == 0 else str(from_minor(score, decimals))


def _head(program: Program, board: Leaderboard, day: Any, group: str | None) -> dict[str, Any]:
    return {
        "board": board.key,
        "name": board.name,
        "period": D.period_name(board, day),
        "group": group,
        "measure": {"currency": board.currency} if board.currency else {"event": board.event, "unit": board.unit},
        "order": ORDER,
    }


def _day(program: Program, period: str | None, now: datetime) -> Any:
    return D.day_of_period(period) if period else local_day(now, program.timezone)


def top(
    conn: Connection,
    loaded: LoadedProgram,
    key: str,
    *,
    period: str | None,
    group: str | None,
    limit: int,
    now: datetime,
) -> dict[str, Any]:
    """The first `limit` members of a board's period (today's period by default), in ranking order."""
    program = loaded.program
    board = board_of(program, key)
    if board.group_by and not group:
        raise InvalidInput(f"{board.name} ranks members per {board.group_by}: give a group", field="group")
    if not board.group_by and group:
        raise InvalidInput(f"{board.name} ranks the whole program; it has no groups", field="group")
    day = _day(program, period, now)
    where = (
        scores.c.program_id == loaded.program_id,
        scores.c.board == board.key,
        scores.c.period == D.board_period_key(board, day),
        scores.c.grp == (group or ""),
    )
    rows = conn.execute(
        select(scores.c.member_id, scores.c.score, scores.c.reached_at)
        .where(*where)
        .order_by(scores.c.score.desc(), scores.c.reached_at, scores.c.member_id)
        .limit(limit)
    ).all()
    total = conn.execute(select(func.count()).select_from(scores).where(*where)).scalar_one()
    entries = [
        {
            "rank": i,
            "member_id": r.member_id,
            "score": _number(program, board, r.score),
            "reached_at": r.reached_at.isoformat(),
            "text": D.score_text(program, board, r.score),
        }
        for i, r in enumerate(rows, start=1)
    ]
    return {**_head(program, board, day, group), "members": total, "entries": entries}


def standing(
    conn: Connection, loaded: LoadedProgram, key: str, member_id: str, *, period: str | None, now: datetime
) -> dict[str, Any]:
    """A member's rank and score on a board's period (in the member's own group), in words."""
    program = loaded.program
    board = board_of(program, key)
    member = member_svc.get(conn, loaded.program_id, member_id)
    day = _day(program, period, now)
    mine = (
        scores.c.program_id == loaded.program_id,
        scores.c.board == board.key,
        scores.c.period == D.board_period_key(board, day),
    )
    row = conn.execute(
        select(scores.c.grp, scores.c.score, scores.c.reached_at).where(*mine, scores.c.member_pk == member.pk)
    ).first()
    group = row.grp if row is not None else D.group_of(board, member.profile)
    peers = (*mine, scores.c.grp == group)
    total = conn.execute(select(func.count()).select_from(scores).where(*peers)).scalar_one()
    rank = None
    score = 0
    if row is not None:
        score = row.score
        ahead = or_(
            scores.c.score > row.score,
            and_(scores.c.score == row.score, scores.c.reached_at < row.reached_at),
            and_(scores.c.score == row.score, scores.c.reached_at == row.reached_at, scores.c.member_id < member_id),
        )
        rank = 1 + conn.execute(select(func.count()).select_from(scores).where(*peers, ahead)).scalar_one()
    if board.group_by and not group:
        rank = None  # without the attribute a member is in no group, so has no rank
    return {
        **_head(program, board, day, group or None),
        "member_id": member_id,
        "rank": rank,
        "of": total,
        "score": _number(program, board, score),
        "text": D.rank_text(program, board, rank, total, score, day),
    }


def recompute(conn: Connection, loaded: LoadedProgram) -> dict[tuple[str, str, int], int]:
    """Every score as the ledger says it should be, by (board, period, member_pk).

    Each event counts on the boards of the program version that booked it: its net award
    (earned less clawed back) of the board's currency, or 1 on a count board unless a reversal
    took back everything it earned."""
    earned = case((entries.c.kind == "earn", entries.c.amount), else_=0)
    taken = case((entries.c.kind.in_(("reversal", "write_off")), entries.c.amount), else_=0)
    query = (
        select(
            events.c.id,
            events.c.member_pk,
            events.c.type,
            events.c.occurred_at,
            events.c.program_version_id,
            events.c.refunded,
            entries.c.currency,
            func.coalesce(func.sum(earned), 0),
            func.coalesce(func.sum(earned - taken), 0),
        )
        .select_from(events.outerjoin(entries, entries.c.event_pk == events.c.id))
        .where(events.c.program_id == loaded.program_id)
        .group_by(
            events.c.id,
            events.c.member_pk,
            events.c.type,
            events.c.occurred_at,
            events.c.program_version_id,
            events.c.refunded,
            entries.c.currency,
        )
        .order_by(events.c.id)
    )
    out: dict[tuple[str, str, int], int] = {}
    versions: dict[int, Program] = {}
    current: tuple[Any, ...] | None = None
    nets: dict[str, int] = {}
    gross = 0

    def settle() -> None:
        if current is None:
            return
        _, pk, etype, at, version_id, refunded = current
        if version_id not in versions:
            versions[version_id] = version_program(conn, version_id)
        program = versions[version_id]
        if not program.leaderboards:
            return
        undone = refunded is not None and gross > 0 and all(v <= 0 for v in nets.values())
        day = local_day(at, program.timezone)
        for board in program.leaderboards:
            amount = (0 if undone else int(board.event == etype)) if board.event else nets.get(board.currency or "", 0)
            if amount:
                key = (board.key, D.board_period_key(board, day), pk)
                out[key] = out.get(key, 0) + amount

    for ev_pk, pk, etype, at, version_id, refunded, currency, gross_part, net in conn.execute(query):
        if current is None or current[0] != ev_pk:
            settle()
            current, nets, gross = (ev_pk, pk, etype, at, version_id, refunded), {}, 0
        if currency is not None:
            nets[currency] = int(net)
            gross += int(gross_part)
    settle()
    return {k: v for k, v in out.items() if v}


def mismatches(conn: Connection, loaded: LoadedProgram) -> list[tuple[str, int, int, int]]:
    """(board/period, member_pk, expected, stored) wherever a stored score differs from the ledger."""
    stored = {
        (board, period, pk): int(score)
        for board, period, pk, score in conn.execute(
            select(scores.c.board, scores.c.period, scores.c.member_pk, scores.c.score).where(
                scores.c.program_id == loaded.program_id
            )
        )
    }
    if not stored and not loaded.program.leaderboards:
        return []  # nothing kept, nothing to prove
    expected = recompute(conn, loaded)
    return [
        (f"{k[0]}/{k[1]}", k[2], expected.get(k, 0), stored.get(k, 0))
        for k in sorted(set(stored) | set(expected))
        if expected.get(k, 0) != stored.get(k, 0)
    ]
