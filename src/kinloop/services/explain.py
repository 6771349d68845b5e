"""`kinloop explain`: why an event earned what it earned (or did not)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from kinloop.domain.errors import UnknownEvent
from kinloop.domain.rules import RuleOutcome, describe
from kinloop.services.programs import LoadedProgram, version_program
from kinloop.store.tables import entries, events, members, program_versions


@dataclass(frozen=True, slots=True)
class Explanation:
    event_id: str
    member_id: str
    type: str
    occurred_at: datetime
    received_at: datetime
    version: int
    attributes: dict[str, Any]
    rules: list[dict[str, Any]]
    entries: list[dict[str, Any]]
    tier: list[str | None] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "member_id": self.member_id,
            "type": self.type,
            "occurred_at": self.occurred_at.isoformat(),
            "received_at": self.received_at.isoformat(),
            "program_version": self.version,
            "attributes": self.attributes,
            "rules": self.rules,
            "entries": self.entries,
            "tier_changed": self.tier,
        }


def explain(conn: Connection, loaded: LoadedProgram, event_id: str) -> Explanation:
    """The stored decision of every rule for a past event, and the entries it caused since."""
    row = conn.execute(
        select(events, members.c.member_id.label("mid"), program_versions.c.version)
        .join(members, members.c.id == events.c.member_pk)
        .join(program_versions, program_versions.c.id == events.c.program_version_id)
        .where(events.c.program_id == loaded.program_id, events.c.event_id == event_id)
    ).first()
    if row is None:
        raise UnknownEvent(f"no event {event_id!r} in this program", field="event_id")
    program = version_program(conn, row.program_version_id)
    rules = []
    for stored in row.outcome.get("rules", []):
        outcome = RuleOutcome.from_row(stored)
        key, status, amount, bonus = outcome.rule, outcome.status, outcome.amount, outcome.bonus
        detail = describe(program, outcome)
        rule = program.rule(key)
        campaign = program.campaign(key) if rule is None else None  # a campaign's bonus
        currency_key = rule.currency if rule else campaign.bonus.grant.currency if campaign and campaign.bonus else ""
        currency = program.currencies.get(currency_key)
        rules.append(
            {
                "rule": key,
                "name": rule.name if rule else campaign.name if campaign else key,
                "status": status,
                "detail": detail,
                "amount": amount,
                "bonus": bonus,
                "currency": currency.key if currency else None,
            }
        )
    rules.extend(_checkin_line(row.outcome))
    if not rules:
        rules.append(
            {
                "rule": None,
                "name": "(no rule)",
                "status": "no_rule",
                "detail": f"no rule listens to {row.type!r} events",
                "amount": 0,
                "bonus": 0,
                "currency": None,
            }
        )
    moves = []
    for e in conn.execute(select(entries).where(entries.c.event_pk == row.id).order_by(entries.c.id)):
        c = program.currencies.get(e.currency)
        moves.append(
            {
                "entry_id": e.id,
                "kind": e.kind,
                "rule": e.rule,
                "currency": e.currency,
                "amount": e.amount,
                "from": e.from_account,
                "to": e.to_account,
                "text": c.display(e.amount) if c else str(e.amount),
                "reason": e.reason,
                "at": e.created_at.isoformat(),
            }
        )
    return Explanation(
        row.event_id,
        row.mid,
        row.type,
        row.occurred_at,
        row.received_at,
        row.version,
        dict(row.attributes),
        rules,
        moves,
        row.outcome.get("tier"),
    )


def _checkin_line(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """The daily check-in's decision (it is not a rule): its awards (ladder step, milestone,
    first-day gift) or why it gave nothing (already checked in that day), from the stored outcome."""
    checkin = outcome.get("checkin")
    if not checkin:
        return []
    given = [(currency, amount) for key, currency, amount, *_ in outcome.get("awards", []) if key == "checkin"]
    currencies = {c for c, _ in given}
    return [
        {
            "rule": "checkin",
            "name": "Daily check-in",
            "status": checkin.get("status", ""),
            "detail": checkin.get("text", ""),
            "amount": sum(a for _, a in given),
            "bonus": 0,
            "currency": currencies.pop() if len(currencies) == 1 else None,
        }
    ]
