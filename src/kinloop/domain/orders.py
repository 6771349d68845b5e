"""Orders of the points mall: the state machine, and how a cancelled order gives points back.

    placed -> confirmed -> fulfilled -> completed
    placed | confirmed -> cancelled      (points and stock go back)
    fulfilled | completed -> refunded    (points go back; the goods left, so the stock does not)

Points go back into the very lots the order's spend took them from, so they keep their
original expiry; the part of a lot that has expired in the meantime lapses at once instead
(it would have expired had it never been spent).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kinloop.domain.errors import IllegalTransition, InvalidInput

OrderStatus = Literal["placed", "confirmed", "fulfilled", "completed", "cancelled", "refunded"]
Action = Literal["confirm", "fulfil", "complete", "cancel", "refund"]
ACTIONS: tuple[Action, ...] = ("confirm", "fulfil", "complete", "cancel", "refund")

# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[Action, tuple[frozenset[OrderStatus], OrderStatus]] = {
    "confirm": (frozenset({"placed"}), "confirmed"),
    "fulfil": (frozenset({"placed", "confirmed"}), "fulfilled"),
    "complete": (frozenset({"fulfilled"}), "completed"),
    "cancel": (frozenset({"placed", "confirmed"}), "cancelled"),
    "refund": (frozenset({"fulfilled", "completed"}), "refunded"),
}
GIVES_BACK_POINTS: frozenset[OrderStatus] = frozenset({"cancelled", "refunded"})


def actions_from(status: str) -> tuple[Action, ...]:
    """The actions an order in `status` may take, in the order of ACTIONS (none once final)."""
    return tuple(a for a in ACTIONS if status in TRANSITIONS[a][0])


def next_status(status: OrderStatus, action: Action, *, kind: str, shipping_reference: str | None) -> OrderStatus:
    """The state `action` leads to from `status`, or IllegalTransition (a 409) saying why not."""
    if action not in TRANSITIONS:
        raise InvalidInput(f"unknown action {action!r} (one of {', '.join(ACTIONS)})", field="action")
    sources, target = TRANSITIONS[action]
    if status not in sources:
        allowed = ", ".join(a for a, (src, _) in TRANSITIONS.items() if status in src) or "none: it is final"
        raise IllegalTransition(f"an order that is {status} cannot be {target} (possible now: {allowed})")
    if action == "fulfil" and kind == "physical" and not (shipping_reference or "").strip():
        raise InvalidInput("a physical reward is fulfilled with a shipping reference", field="shipping_reference")
    return target


@dataclass(frozen=True, slots=True)
class Taken:
    """What a spend took from one lot."""

    lot_id: int
    amount: int
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Restore:
    """How taken points go back: into their lots, and the part that lapses (its lot expired)."""

    into_lots: tuple[tuple[int, int], ...]  # (lot id, amount)
    lapsed: int

    @property
    def total(self) -> int:
        return sum(a for _, a in self.into_lots) + self.lapsed


def plan_restore(taken: Iterable[Taken], now: datetime) -> Restore:
    """Give back exactly what was taken: each lot its own amount, unless it has expired by `now`."""
    into: dict[int, int] = {}
    lapsed = 0
    for t in taken:
        if t.amount <= 0:
            continue
        if t.expires_at is not None and t.expires_at <= now:
            lapsed += t.amount
        else:
            into[t.lot_id] = into.get(t.lot_id, 0) + t.amount
    return Restore(tuple(sorted(into.items())), lapsed)
