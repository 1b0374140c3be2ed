"""Backlog position → priority: a quiet tenant's documents outrank a busy tenant's tail."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.fairness import HIGHEST, LOWEST, priority_for


def test_a_small_upload_outranks_the_tail_of_a_big_batch() -> None:
    small = [priority_for(i) for i in range(5)]
    big_tail = [priority_for(i) for i in range(300, 10_000, 97)]
    assert small[0] == HIGHEST
    assert max(small) < min(big_tail) == LOWEST


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_priority_never_rises_with_a_longer_backlog(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert HIGHEST <= priority_for(low) <= priority_for(high) <= LOWEST


def test_a_negative_position_is_a_bug() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        priority_for(-1)
