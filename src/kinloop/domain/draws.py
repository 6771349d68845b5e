"""Draws: a prize pool with odds and stock, and results anyone can recompute.

The scheme (published with every draw):

1. When a draw is created, kinloop picks a secret 32-byte `seed` and publishes
   `commitment = sha256(seed)` (hex). The seed is revealed when the draw closes.
2. Entries are numbered 1, 2, 3, ... in the order they are accepted (`seq`). An entry's
   `roll` is `int(HMAC-SHA256(key=seed, msg=f"{draw}:{seq}:{entry_id}"), big-endian)`, a
   uniform integer below 2**256.
3. The prizes in force (the odds table version named on the entry) that still have stock,
   in their declared order, each cover `weight` consecutive numbers; the entry wins the
   prize covering `roll % total_weight_in_stock` (the modulo bias is below total / 2**256).
4. Guarantee: when a draw promises a prize after N losses, a member's entry that follows N
   losses in a row in that draw wins the guaranteed prize instead (if it has stock).

With the seed, the odds tables and the entries (seq, entry id, guarantee flag), anyone can
replay the draw from the first entry: the stock each entry saw and every prize follow.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from kinloop.domain.errors import InvalidInput, Issue

PrizeKind = Literal["points", "reward", "coupon", "nothing"]
PRIZE_KINDS: tuple[PrizeKind, ...] = ("points", "reward", "coupon", "nothing")
MAX_ODDS_PLACES = 9  # probabilities as fine as one in a billion


@dataclass(frozen=True, slots=True)
class Prize:
    """One line of a prize pool: what is won, its weight in the odds, and its stock (None: unlimited)."""

    key: str
    name: str
    kind: PrizeKind
    weight: int
    stock: int | None = None
    amount: int = 0  # points prizes: minor units of `currency`
    currency: str | None = None
    reward: str | None = None  # reward or coupon: an opaque key
    value: int = 0  # what the prize costs the program, in minor units of the draw's currency

    @property
    def is_loss(self) -> bool:
        return self.kind == "nothing"


@dataclass(frozen=True, slots=True)
class Guarantee:
    """After `after` losses in a row, the member's next entry wins `prize`."""

    after: int
    prize: str


def commitment(seed: bytes) -> str:
    """What a draw publishes before its first entry: sha256 of the seed, hex."""
    return hashlib.sha256(seed).hexdigest()


def roll(seed: bytes, draw: str, seq: int, entry_id: str) -> int:
    """The entry's uniform number: HMAC-SHA256(seed, f"{draw}:{seq}:{entry_id}") as an integer."""
    digest = hmac.new(seed, f"{draw}:{seq}:{entry_id}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest, "big")


def in_stock(prizes: Sequence[Prize], stock: Mapping[str, int | None]) -> list[Prize]:
    """The prizes that can still be given, in declared order (stock None: unlimited)."""
    out = []
    for p in prizes:
        left = stock.get(p.key, p.stock)
        if p.weight > 0 and (left is None or left > 0):
            out.append(p)
    return out


def pick(prizes: Sequence[Prize], stock: Mapping[str, int | None], number: int) -> Prize | None:
    """The prize covering `number % total weight` among the prizes in stock (None: pool empty)."""
    available = in_stock(prizes, stock)
    total = sum(p.weight for p in available)
    if total == 0:
        return None
    point = number % total
    for p in available:
        if point < p.weight:
            return p
        point -= p.weight
    raise AssertionError("unreachable: point is below the total weight")


def take(stock: dict[str, int | None], prize: Prize) -> None:
    """Count one prize given; limited stock never goes below zero."""
    left = stock.get(prize.key, prize.stock)
    if left is None:
        return
    if left <= 0:
        raise InvalidInput(f"prize {prize.key!r} is out of stock")
    stock[prize.key] = left - 1


@dataclass(frozen=True, slots=True)
class Result:
    prize: Prize | None
    roll: int
    guaranteed: bool


def decide(
    prizes: Sequence[Prize],
    stock: Mapping[str, int | None],
    number: int,
    *,
    losses: int,
    guarantee: Guarantee | None,
) -> Result:
    """An entry's prize: the guaranteed one after enough losses (if in stock), else by the number."""
    if guarantee is not None and losses >= guarantee.after:
        promised = next((p for p in in_stock(prizes, stock) if p.key == guarantee.prize), None)
        if promised is not None:
            return Result(promised, number, True)
    return Result(pick(prizes, stock, number), number, False)


def probabilities(prizes: Sequence[Prize]) -> dict[str, Decimal]:
    """Each prize's chance with full stock, as an exact fraction rounded to 6 places."""
    total = sum(p.weight for p in prizes)
    if total == 0:
        return {p.key: Decimal(0) for p in prizes}
    return {p.key: (Decimal(p.weight) / Decimal(total)).quantize(Decimal("0.000001")) for p in prizes}


def expected_value(prizes: Sequence[Prize], currency: str) -> Decimal:
    """What an entry costs the program on average, in minor units of `currency`, with full stock:
    points prizes in that currency at their amount, other prizes at their declared value."""
    total = sum(p.weight for p in prizes)
    if total == 0:
        return Decimal(0)
    paid = sum(Decimal(p.weight) * _cost(p, currency) for p in prizes)
    return paid / Decimal(total)


def _cost(prize: Prize, currency: str) -> Decimal:
    if prize.kind == "points" and prize.currency == currency:
        return Decimal(prize.amount)
    return Decimal(prize.value)


def weights_from(
    odds: Sequence[Decimal | int], *, declared: Decimal | None, path: str
) -> tuple[list[int], list[Issue]]:
    """Integer weights from the odds as given: integers are weights; decimals are probabilities
    and are scaled to integers exactly. The odds must sum to `declared` when one is given
    (probabilities always sum to 1 unless declared otherwise)."""
    issues: list[Issue] = []
    values = [Decimal(o) for o in odds]
    if not values:
        return [], [Issue(path, "a draw needs at least one prize")]
    for i, v in enumerate(values):
        if v < 0:
            issues.append(Issue(f"{path}[{i}].odds", f"odds must not be negative, got {v}"))
    fractional = any(v != v.to_integral_value() for v in values)
    total = sum(values, Decimal(0))
    want = declared if declared is not None else (Decimal(1) if fractional else None)
    if want is not None and total != want:
        issues.append(Issue(f"{path}", f"the odds sum to {total.normalize():f}, not {want.normalize():f} as declared"))
    if total <= 0:
        issues.append(Issue(path, "the odds sum to 0: no prize could ever be drawn"))
    if issues:
        return [], issues
    places = max((-int(v.normalize().as_tuple().exponent) for v in values), default=0)
    if places > MAX_ODDS_PLACES:
        return [], [Issue(path, f"odds have at most {MAX_ODDS_PLACES} decimal places")]
    scale = Decimal(10) ** max(places, 0)
    return [int(v * scale) for v in values], []


def check_pool(prizes: Sequence[Prize], guarantee: Guarantee | None, path: str) -> list[Issue]:
    """Problems with a pool: duplicate keys, no winnable prize, a guarantee naming no prize."""
    issues: list[Issue] = []
    seen: set[str] = set()
    for i, p in enumerate(prizes):
        if p.key in seen:
            issues.append(Issue(f"{path}[{i}].key", f"duplicate prize key {p.key!r}"))
        seen.add(p.key)
        if p.stock is not None and p.stock < 0:
            issues.append(Issue(f"{path}[{i}].stock", "stock must not be negative"))
        if p.kind == "points" and p.amount <= 0:
            issues.append(Issue(f"{path}[{i}].amount", "a points prize needs an amount greater than 0"))
    if guarantee is not None:
        promised = next((p for p in prizes if p.key == guarantee.prize), None)
        if promised is None:
            issues.append(Issue("guarantee.prize", f"no prize {guarantee.prize!r} in the pool"))
        elif promised.is_loss:
            issues.append(Issue("guarantee.prize", "the guaranteed prize cannot be 'nothing'"))
        if guarantee.after < 1:
            issues.append(Issue("guarantee.after", "must be at least 1"))
    return issues


@dataclass(frozen=True, slots=True)
class PublicEntry:
    """What a draw publishes about one entry, enough to recompute it."""

    seq: int
    entry_id: str
    member: str  # an opaque handle: the same for every entry of one member
    odds_version: int
    prize: str | None
    roll: int
    guaranteed: bool
    stock_seen: Mapping[str, int | None]


def replay(
    draw: str,
    seed: bytes,
    published: str,
    odds: Mapping[int, Sequence[Prize]],
    guarantee: Guarantee | None,
    entries: Iterable[PublicEntry],
) -> list[str]:
    """Recompute every entry of a closed draw from public data; the problems found (none: verified).

    An odds table comes into force with the stock it declares."""
    problems: list[str] = []
    if commitment(seed) != published:
        problems.append("the revealed seed does not match the published commitment")
    stock: dict[str, int | None] = {}
    version = 0
    losses: dict[str, int] = {}
    for e in sorted(entries, key=lambda x: x.seq):
        if e.odds_version != version:
            if e.odds_version not in odds:
                problems.append(f"entry {e.seq}: unknown odds table {e.odds_version}")
                continue
            version = e.odds_version
            stock = {p.key: p.stock for p in odds[version]}
        prizes = odds[version]
        number = roll(seed, draw, e.seq, e.entry_id)
        if number != e.roll:
            problems.append(f"entry {e.seq}: recorded number differs from HMAC(seed, {draw}:{e.seq}:{e.entry_id})")
        if dict(e.stock_seen) != {k: stock.get(k) for k in e.stock_seen}:
            problems.append(f"entry {e.seq}: recorded stock differs from the replayed stock")
        result = decide(prizes, stock, number, losses=losses.get(e.member, 0), guarantee=guarantee)
        got = result.prize.key if result.prize else None
        if got != e.prize or result.guaranteed != e.guaranteed:
            problems.append(f"entry {e.seq}: recorded prize {e.prize!r}, recomputed {got!r}")
        if result.prize is not None:
            take(stock, result.prize)
        lost = result.prize is None or result.prize.is_loss
        losses[e.member] = losses.get(e.member, 0) + 1 if lost else 0
    return problems
