"""The draw scheme, pure: mapping, odds, stock, guarantee, expected cost and replay."""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from kinloop.domain import draws as D

SEED = bytes(range(32))


def pool(*spec: tuple[str, int, int | None]) -> list[D.Prize]:
    return [D.Prize(k, k, "nothing" if k == "nothing" else "reward", w, s, reward=k) for k, w, s in spec]


def test_the_roll_is_the_documented_hmac() -> None:
    expected = int.from_bytes(hmac.new(SEED, b"wheel:7:abc", hashlib.sha256).digest(), "big")
    assert D.roll(SEED, "wheel", 7, "abc") == expected
    assert D.commitment(SEED) == hashlib.sha256(SEED).hexdigest()


def test_pick_walks_the_cumulative_weights_of_prizes_in_stock() -> None:
    prizes = pool(("a", 1, None), ("b", 2, 0), ("c", 3, None))  # b is out of stock
    assert [D.pick(prizes, {}, n).key for n in range(8)] == ["a", "c", "c", "c", "a", "c", "c", "c"]  # type: ignore[union-attr]
    assert D.pick(pool(("a", 1, 0)), {}, 5) is None


def test_probabilities_become_exact_integer_weights() -> None:
    weights, issues = D.weights_from([Decimal("0.25"), Decimal("0.005"), Decimal("0.745")], declared=None, path="p")
    assert (weights, issues) == ([250, 5, 745], [])
    weights, issues = D.weights_from([Decimal(3), Decimal(7)], declared=Decimal(10), path="p")
    assert (weights, issues) == ([3, 7], [])


def test_expected_cost_counts_points_at_their_amount_and_others_at_their_value() -> None:
    prizes = [
        D.Prize("p", "p", "points", 1, amount=100, currency="beans"),
        D.Prize("m", "m", "reward", 1, reward="mug", value=50),
        D.Prize("n", "n", "nothing", 2),
    ]
    assert D.expected_value(prizes, "beans") == Decimal("37.5")
    assert D.probabilities(prizes) == {"p": Decimal("0.25"), "m": Decimal("0.25"), "n": Decimal("0.5")}


def test_distribution_matches_the_odds_over_many_entries() -> None:
    """Deterministic: fixed seeds; each prize's share within 1.5 percentage points of its odds."""
    prizes = pool(("gold", 5, None), ("silver", 15, None), ("bronze", 30, None), ("nothing", 50, None))
    counts: Counter[str] = Counter()
    n = 0
    for s in range(4):
        seed = hashlib.sha256(f"seed {s}".encode()).digest()
        for seq in range(1, 5001):
            prize = D.pick(prizes, {}, D.roll(seed, "wheel", seq, f"entry-{seq}"))
            assert prize is not None
            counts[prize.key] += 1
            n += 1
    for p in prizes:
        assert abs(counts[p.key] / n - p.weight / 100) < 0.015, (p.key, counts[p.key] / n)


stocks = st.lists(st.tuples(st.integers(0, 5), st.one_of(st.none(), st.integers(0, 4))), min_size=1, max_size=5)


@settings(max_examples=200)
@given(spec=stocks, entries=st.integers(0, 40), seed=st.binary(min_size=32, max_size=32))
def test_stock_never_goes_negative_and_limited_prizes_stop_at_their_stock(
    spec: list[tuple[int, int | None]], entries: int, seed: bytes
) -> None:
    prizes = [D.Prize(f"p{i}", f"p{i}", "reward", w, s, reward="r") for i, (w, s) in enumerate(spec)]
    stock: dict[str, int | None] = {p.key: p.stock for p in prizes}
    given_: Counter[str] = Counter()
    for seq in range(1, entries + 1):
        result = D.decide(prizes, stock, D.roll(seed, "d", seq, str(seq)), losses=0, guarantee=None)
        if result.prize is None:
            assert D.in_stock(prizes, stock) == []
            break
        D.take(stock, result.prize)
        given_[result.prize.key] += 1
    for p in prizes:
        left = stock[p.key]
        assert left is None or left >= 0
        if p.stock is not None:
            assert given_[p.key] <= p.stock
            assert left == p.stock - given_[p.key]


@settings(max_examples=100)
@given(after=st.integers(1, 5), seed=st.binary(min_size=32, max_size=32))
def test_no_member_loses_more_than_the_guarantee_allows(after: int, seed: bytes) -> None:
    prizes = [D.Prize("mug", "mug", "reward", 1, reward="mug"), D.Prize("nothing", "nothing", "nothing", 1000)]
    guarantee = D.Guarantee(after, "mug")
    losses = longest = 0
    for seq in range(1, 40):
        result = D.decide(prizes, {}, D.roll(seed, "d", seq, str(seq)), losses=losses, guarantee=guarantee)
        assert result.prize is not None
        losses = losses + 1 if result.prize.is_loss else 0
        longest = max(longest, losses)
    assert longest <= after


def test_replay_recomputes_a_draw_and_names_what_differs() -> None:
    prizes = pool(("a", 1, 2), ("nothing", 3, None))
    stock: dict[str, int | None] = {p.key: p.stock for p in prizes}
    published = []
    for seq in range(1, 11):
        number = D.roll(SEED, "d", seq, f"e{seq}")
        seen = dict(stock)
        result = D.decide(prizes, stock, number, losses=0, guarantee=None)
        assert result.prize is not None
        D.take(stock, result.prize)
        published.append(D.PublicEntry(seq, f"e{seq}", "m", 1, result.prize.key, number, False, seen))
    assert D.replay("d", SEED, D.commitment(SEED), {1: prizes}, None, published) == []
    forged = [
        *published[:3],
        D.PublicEntry(4, "e4", "m", 1, "a", published[3].roll + 1, False, published[3].stock_seen),
    ]
    problems = D.replay("d", SEED, D.commitment(SEED), {1: prizes}, None, forged)
    assert problems[0] == "entry 4: recorded number differs from HMAC(seed, d:4:e4)"


def test_odds_finer_than_a_billionth_are_refused() -> None:
    weights, issues = D.weights_from([Decimal("1e-10"), Decimal(1) - Decimal("1e-10")], declared=None, path="p")
    assert (weights, [str(i) for i in issues]) == ([], ["p: odds have at most 9 decimal places"])
