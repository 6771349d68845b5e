"""Holds: points reserved for a pending checkout, then captured or released.

    active -> captured     (capture: the points are spent; capturing again changes nothing)
    active -> released     (release: the points go back; releasing again changes nothing)
    active -> expired      (its time-out passed: the points go back, by the job or lazily)

A hold whose time-out has passed is expired even before anything recorded it: `status_at`
says so, and capture refuses it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from kinloop.domain.errors import HoldExpired, IllegalTransition, InvalidInput

HoldStatus = Literal["active", "captured", "released", "expired"]
MIN_TIMEOUT = timedelta(seconds=10)
MAX_TIMEOUT = timedelta(days=30)
DEFAULT_TIMEOUT = timedelta(minutes=15)


def timeout_of(seconds: int | None) -> timedelta:
    """A hold's time-out, from 10 seconds to 30 days (15 minutes when not given)."""
    if seconds is None:
        return DEFAULT_TIMEOUT
    given = timedelta(seconds=seconds)
    if not MIN_TIMEOUT <= given <= MAX_TIMEOUT:
        raise InvalidInput("a hold's time-out is from 10 seconds to 30 days", field="timeout_seconds")
    return given


def status_at(status: HoldStatus, expires_at: datetime, now: datetime) -> HoldStatus:
    """The hold's state at `now`: an active hold past its time-out is expired."""
    if status == "active" and expires_at <= now:
        return "expired"
    return status


Outcome = Literal["done", "repeat", "expire"]


def capture_outcome(status: HoldStatus, expires_at: datetime, now: datetime) -> Outcome:
    """What capturing does: capture (`done`), nothing (`repeat`: already captured), or
    `expire` (it timed out: release it as expired, then refuse). Released holds refuse."""
    effective = status_at(status, expires_at, now)
    if effective == "captured":
        return "repeat"
    if effective == "active":
        return "done"
    if effective == "expired":
        return "expire" if status == "active" else _refuse_expired()
    raise IllegalTransition("this hold was released; its points went back and it cannot be captured")


def release_outcome(status: HoldStatus, expires_at: datetime, now: datetime) -> Outcome:
    """What releasing does: release (`done`), nothing (`repeat`: already released or expired),
    or `expire` (it timed out unrecorded: record it as expired). Captured holds refuse."""
    effective = status_at(status, expires_at, now)
    if effective == "active":
        return "done"
    if effective in ("released",) or status == "expired":
        return "repeat"
    if effective == "expired":
        return "expire"
    raise IllegalTransition("this hold was captured: its points were spent; refund the purchase instead")


def _refuse_expired() -> Outcome:
    raise HoldExpired("this hold timed out and its points went back to the member")
