"""Ledger arithmetic: accounts, lots and the order in which they are consumed.

Every ledger entry moves an amount of one currency from one account to another, so the
postings of an entry always sum to zero. Member accounts are `available` and `pending`;
the others belong to the program.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

AVAILABLE = "available"
PENDING = "pending"
ISSUANCE = "issuance"
REDEMPTION = "redemption"
EXPIRY = "expiry"
ADJUSTMENT = "adjustment"
WRITE_OFF = "write_off"
HELD = "held"  # points reserved by holds: the member's, but not spendable until released
TRANSFER = "transfer"  # points in flight between members: red envelopes not yet claimed
FEES = "fees"  # transfer fees the program keeps
DONATION = "donation"  # points given to shared goals
MEMBER_ACCOUNTS = (AVAILABLE, PENDING)

EntryKind = Literal[
    "earn",  # a rule's award: issuance -> available (or pending)
    "release",  # a pending amount becomes spendable: pending -> available
    "spend",  # available -> redemption
    "expire",  # available -> expiry
    "reversal",  # an award taken back: available/pending -> issuance
    "adjustment",  # manual: adjustment <-> available
    "write_off",  # the part of a reversal that could not be taken back: write_off -> issuance
    "hold",  # points reserved for a checkout: available -> held (lots consumed like a spend)
    "capture",  # a hold's points spent: held -> redemption
    "restore",  # a cancelled order's or released hold's points back into the lots they came from
    "lapse",  # the part of a restore whose lot expired meanwhile: redemption/held -> expiry
    "transfer_out",  # a member sends an envelope: available -> transfer
    "transfer_in",  # a member receives (a share of) an envelope: transfer -> available
    "transfer_return",  # the unclaimed rest goes back to the sender: transfer -> available
    "fee",  # a transfer fee: available -> fees
    "donate",  # a donation to a shared goal: available -> donation
]
LotStatus = Literal["available", "pending"]


@dataclass(slots=True)
class Lot:
    """The part of an earned amount that can still be spent.

    `remaining` is the lot's amount plus its movements. A debt lot (amount < 0) records a
    clawback that the balance could not cover; later earnings pay it off first.
    """

    id: int
    currency: str
    amount: int
    remaining: int
    earned_at: datetime
    expires_at: datetime | None = None
    status: LotStatus = "available"
    event_id: int | None = None

    @property
    def is_debt(self) -> bool:
        return self.amount < 0


def consumption_order(lot: Lot) -> tuple[bool, datetime, datetime, int]:
    """Soonest-expiring first; lots that never expire last; then oldest, then by id."""
    far = lot.expires_at or lot.earned_at
    return (lot.expires_at is None, far, lot.earned_at, lot.id)


Take = tuple[int, int]  # (lot id, amount taken)


def allocate(lots: Iterable[Lot], amount: int) -> tuple[list[Take], int]:
    """Take `amount` from spendable lots, soonest-expiring first; return takes and shortfall."""
    takes: list[Take] = []
    left = amount
    spendable = [lot for lot in lots if lot.status == AVAILABLE and lot.remaining > 0]
    for lot in sorted(spendable, key=consumption_order):
        if left == 0:
            break
        take = min(lot.remaining, left)
        takes.append((lot.id, take))
        left -= take
    return takes, left


def settle_debts(debts: Iterable[Lot], amount: int) -> list[Take]:
    """Pay off debt lots, oldest first, from a newly earned amount; takes are repayments."""
    takes: list[Take] = []
    left = amount
    for lot in sorted((d for d in debts if d.remaining < 0), key=lambda d: (d.earned_at, d.id)):
        if left == 0:
            break
        pay = min(-lot.remaining, left)
        takes.append((lot.id, pay))
        left -= pay
    return takes


@dataclass(frozen=True, slots=True)
class Clawback:
    """How a reversal takes an amount back: from lots, as new debt, and what stays lost."""

    takes: list[Take]
    debt: int
    unrecovered: int

    @property
    def recovered(self) -> int:
        return sum(t for _, t in self.takes) + self.debt


def plan_clawback(own: list[Lot], others: Iterable[Lot], amount: int, allow_negative: bool) -> Clawback:
    """Take back `amount`: first from the lots the event created, then from the member's
    other lots (soonest-expiring first); what is still missing becomes debt where the
    currency allows a negative balance, and is otherwise recorded as unrecovered."""
    own_takes: list[Take] = []
    left = amount
    for lot in own:
        if left == 0:
            break
        if lot.remaining > 0 and lot.status == AVAILABLE:
            take = min(lot.remaining, left)
            own_takes.append((lot.id, take))
            left -= take
    own_ids = {lot.id for lot in own}
    more, left = allocate((lot for lot in others if lot.id not in own_ids), left)
    if allow_negative:
        return Clawback(own_takes + more, left, 0)
    return Clawback(own_takes + more, 0, left)
