"""One error hierarchy with stable codes; the CLI and the HTTP API translate it at the edge."""

from __future__ import annotations

from dataclasses import dataclass


class KinloopError(Exception):
    """Base of every error kinloop reports to a user."""

    code = "error"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidInput(KinloopError, ValueError):
    """A request or record that cannot be accepted as given."""

    code = "invalid_input"


class UnknownEventType(InvalidInput):
    """The event's type is not declared by the program."""

    code = "unknown_event_type"


class InvalidAttribute(InvalidInput):
    """An event attribute is missing or of the wrong type."""

    code = "invalid_attribute"


class UnknownCurrency(InvalidInput):
    """The currency is not declared by the program."""

    code = "unknown_currency"


class InvalidAmount(InvalidInput):
    """An amount that is not a positive number with the currency's precision."""

    code = "invalid_amount"


class UnknownTier(InvalidInput):
    """The tier is not on the program's ladder (or the program has no ladder)."""

    code = "unknown_tier"


class NotFound(KinloopError, LookupError):
    """Something named by the caller does not exist."""

    code = "not_found"


class UnknownMember(NotFound):
    """No member with this id in the program."""

    code = "unknown_member"


class UnknownEvent(NotFound):
    """No event with this id in the program."""

    code = "unknown_event"


class UnknownProgram(NotFound):
    """No program loaded under this key (or none at all)."""

    code = "unknown_program"


class Refused(KinloopError):
    """A well-formed request that the program's rules do not allow."""

    code = "refused"


class InsufficientBalance(Refused):
    """The available balance is short of the amount asked for."""

    code = "insufficient_balance"


class NotSpendable(Refused):
    """Growth currencies qualify for tiers and are never spent."""

    code = "currency_not_spendable"


class AlreadyReversed(Refused):
    """The event has nothing left to reverse."""

    code = "already_reversed"


class CheckinNotOffered(Refused):
    """The program has no daily check-in."""

    code = "checkin_not_offered"


class MakeupRefused(Refused):
    """A make-up card cannot be used for that day (none left, or not a missed day)."""

    code = "makeup_refused"


class NotPurchasable(Refused):
    """The tier cannot be bought: it has no paid term."""

    code = "tier_not_purchasable"


class UnknownPrivilege(NotFound):
    """The program has no privilege with this key."""

    code = "unknown_privilege"


class PrivilegeNotGranted(Refused):
    """The member's current tier does not hold this privilege."""

    code = "privilege_not_granted"


class QuotaExhausted(Refused):
    """The member has used up this privilege for the period."""

    code = "privilege_quota_exhausted"


class OutsideWindow(Refused):
    """The privilege can be used only at certain times (the member's birthday month)."""

    code = "privilege_outside_window"


class UnknownLeaderboard(NotFound):
    """The program has no leaderboard with this key."""

    code = "unknown_leaderboard"


class IdempotencyConflict(KinloopError):
    """An idempotency key was reused for a different request."""

    code = "idempotency_conflict"


# --- mall, orders and holds ---------------------------------------------------------------
class InvalidReward(InvalidInput):
    """A reward definition that cannot be accepted (price, stock, gates, windows)."""

    code = "invalid_reward"


class UnknownReward(NotFound):
    """No reward with this key in the program."""

    code = "unknown_reward"


class UnknownOrder(NotFound):
    """No order with this id in the program."""

    code = "unknown_order"


class UnknownHold(NotFound):
    """No hold with this id in the program."""

    code = "unknown_hold"


class RewardUnavailable(Refused):
    """The reward is not active, or not priced in a currency the program still has."""

    code = "reward_unavailable"


class SoldOut(Refused):
    """The reward's stock (or its pool of codes) cannot cover the order."""

    code = "sold_out"


class LimitReached(Refused):
    """A per-member limit is used up: a reward's redemptions in the period, a draw's entries or
    the envelopes sent in a day."""

    code = "limit_reached"


class TierGated(Refused):
    """The reward is reserved for tiers the member is not in."""

    code = "tier_gated"


class IllegalTransition(Refused):
    """An order or hold cannot move from its state to the one asked for."""

    code = "illegal_transition"


class HoldExpired(Refused):
    """The hold timed out; its points went back to the member."""

    code = "hold_expired"


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a program file, at a path such as `rules[3].cap.per_day`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ProgramInvalid(KinloopError, ValueError):
    """A program file with one or more problems, all reported at once."""

    code = "program_invalid"

    def __init__(self, issues: list[Issue], *, source: str | None = None) -> None:
        self.issues = issues
        self.source = source
        head = f"{source}: " if source else ""
        noun = "problem" if len(issues) == 1 else "problems"
        super().__init__(f"{head}{len(issues)} {noun}\n" + "\n".join(f"  {i}" for i in issues))


class NotInitialised(KinloopError):
    """The database has no kinloop schema (or an older one) yet."""

    code = "not_initialised"


class AddressInUse(KinloopError):
    """`kinloop serve` cannot listen on the address asked for."""

    code = "address_in_use"


# --- draws, red envelopes, shared goals ---


class InvalidPrizePool(InvalidInput):
    """A draw's prize pool cannot be used as given (odds, stock, keys); every problem at once."""

    code = "invalid_prize_pool"

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("; ".join(str(i) for i in issues), field=issues[0].path if issues else None)
        self.issues = issues


class NotTransferable(InvalidInput):
    """The currency is not marked transferable by the program."""

    code = "currency_not_transferable"


class SelfTransfer(InvalidInput):
    """A member cannot send an envelope to themselves."""

    code = "self_transfer"


class OutletClosed(Refused):
    """A draw outside its window, a closed envelope, a goal already reached."""

    code = "closed"


class OutOfStock(Refused):
    """No prize of the pool has stock left."""

    code = "out_of_stock"
