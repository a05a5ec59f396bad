"""The sequential test's promise, checked by simulation: under the null (the rate at its limit) the chance
of ever declaring a breach, looking after every single event, stays under alpha; real breaches are caught,
hard faults within a handful of events."""

from __future__ import annotations

import math
import random

import pytest

from watchdog.canary.sequential import rate_above, rate_below


def _ever_conclusive(rng: random.Random, p: float, p0: float, alpha: float, events: int) -> int | None:
    bad = 0
    for n in range(1, events + 1):
        bad += rng.random() < p
        if rate_above(n, bad, p0, alpha).conclusive:
            return n
    return None


def test_false_positive_rate_is_bounded_under_continuous_monitoring() -> None:
    rng = random.Random(20261202)
    alpha, p0 = 0.05, 0.01
    runs = 400
    false = sum(_ever_conclusive(rng, p0, p0, alpha, 2000) is not None for _ in range(runs))
    # Ville: P(ever) <= alpha; allow binomial noise on 400 runs (3 sigma above 5 %).
    assert false / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs), false


def test_a_healthy_canary_below_its_limit_never_trips() -> None:
    rng = random.Random(7)
    # 0.05 % background errors against the 0.1 % limit, 200,000 events, looked at every 100.
    bad = 0
    for n in range(1, 200_001):
        bad += rng.random() < 0.0005
        if n % 100 == 0:
            assert not rate_above(n, bad, 0.001, 0.001).conclusive, (n, bad)


@pytest.mark.parametrize(("rate", "within"), [(1.0, 2), (0.2, 60), (0.05, 400), (0.01, 3000)])
def test_breaches_are_caught(rate: float, within: int) -> None:
    rng = random.Random(3)
    found = [_ever_conclusive(rng, rate, 0.001, 0.001, within) for _ in range(20)]
    assert all(n is not None for n in found), found


def test_hard_fault_is_conclusive_on_two_failures_at_alpha_one_in_a_thousand() -> None:
    assert not rate_above(1, 1, 0.001, 0.001).conclusive
    assert rate_above(2, 2, 0.001, 0.001).conclusive


def test_promotion_needs_enough_clean_events() -> None:
    assert not rate_below(1000, 0, 0.001, 0.001).conclusive
    assert rate_below(10_000, 0, 0.001, 0.001).conclusive
    assert not rate_below(10_000, 10, 0.001, 0.001).conclusive


def test_bad_arguments_are_refused() -> None:
    for p0, alpha in ((0.0, 0.01), (1.0, 0.01), (0.01, 0.0), (0.01, 1.0)):
        with pytest.raises(ValueError):
            rate_above(10, 1, p0, alpha)
    with pytest.raises(ValueError):
        rate_above(1, 2, 0.01, 0.01)
