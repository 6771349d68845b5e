"""Goal arithmetic, pure: a donation never overshoots the target."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kinloop.domain.goals import donate


@given(target=st.integers(1, 10_000), amounts=st.lists(st.integers(1, 3_000), max_size=30))
def test_raised_never_exceeds_the_target_and_reaching_it_is_reported_once(target: int, amounts: list[int]) -> None:
    raised = 0
    reached = 0
    for a in amounts:
        if raised >= target:
            break
        d = donate(target=target, raised=raised, amount=a)
        assert 0 < d.accepted <= a
        assert d.raised == raised + d.accepted <= target
        raised = d.raised
        reached += d.reached
    assert reached == (1 if raised == target else 0)
