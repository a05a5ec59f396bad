"""An anytime-valid one-sided test for a rate: is the canary's bad-event rate above ``p0``?

H0: p ≤ p0 against H1: p > p0, for independent events each bad with probability p. The statistic is a
mixture of likelihood ratios over alternatives p_k > p0 with weights w_k (summing to 1)::

    E_n = Σ_k w_k · (p_k / p0)^S · ((1 − p_k) / (1 − p0))^(n − S)        (S bad events out of n)

For any true p ≤ p0 and any p_k > p0, one event multiplies the k-th ratio by
p·p_k/p0 + (1 − p)(1 − p_k)/(1 − p0) ≤ 1 (it is linear in p and equals 1 at p = p0), so every ratio, and
therefore E_n, is a nonnegative supermartingale starting at 1. Ville's inequality gives
P(E_n ≥ 1/α for some n) ≤ α: the false-positive rate is bounded by α however often we look and whenever
we stop. That is what lets the guard evaluate every second and flip on the first conclusive evidence,
with no fixed sample size and no burn-rate window to wait for.

The mirror test (is the rate *below* p0, for promotion) mixes alternatives p_k < p0 the same way.

Restarts (``RESTART_TIERS``): a test counted from a stage's start carries every healthy event of the stage;
they weigh against the large alternatives, so a hard fault 24 h into a stage needed 96 s instead of 8.
So besides the stage-long test the guard starts a fresh one every ``every`` seconds in each tier (5 s for
hard faults, 10 min for small ones) and judges the newest ``keep`` of them. Each restart is a test of its own,
valid from its start; the guard's α is spent as α/3 on the stage-long test and α/3 per day on each tier,
evenly over the day's restarts (``tier_alpha``), so by the union bound the false-rollback probability is at
most α per day of watching (one in a thousand days per rollout at the default). A restart needs more
evidence than the stage test (about 17 nats instead of 8 for the 5 s tier), which costs a hard fault about
one event; judging a day-old stage from its start cost a thousand.

Why not a library: ``confseq`` needs a C++/Boost build and pulls matplotlib and pandas into a daemon;
``ville`` 0.1 tests a two-sided point null over per-observation arrays (memory grows with traffic). This
needs only the counts, is O(len(grid)) per look, and is checked by simulation
(tests/test_canary_sequential.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ABOVE_MULTIPLIERS: tuple[float, ...] = (1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
"""Alternatives p_k = p0 × m (capped below 1): a small excess is caught slowly, a hard fault in a few
events."""
BELOW_MULTIPLIERS: tuple[float, ...] = (0.5, 0.25, 0.1, 0.01)
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class RestartTier:
    """Fresh tests started every ``every`` seconds; the newest ``keep`` are judged."""

    every: float
    keep: int


RESTART_TIERS: tuple[RestartTier, ...] = (RestartTier(5.0, 6), RestartTier(600.0, 6))
STAGE_SHARE = 1.0 / (1 + len(RESTART_TIERS))
"""The stage-long test's share of α (and each tier's share of α per day)."""


def stage_alpha(alpha: float) -> float:
    return alpha * STAGE_SHARE


def tier_alpha(alpha: float, tier: RestartTier) -> float:
    """One restart's α: the tier's daily share spread evenly over the day's restarts."""
    return alpha * STAGE_SHARE * tier.every / DAY_S


@dataclass(frozen=True, slots=True)
class RateEvidence:
    """What the test saw: ``bad`` of ``events``, against ``p0``, and whether it is conclusive at ``alpha``."""

    events: int
    bad: int
    p0: float
    alpha: float
    log_e: float

    @property
    def rate(self) -> float:
        return self.bad / self.events if self.events else 0.0

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e, 700.0))

    @property
    def conclusive(self) -> bool:
        return self.log_e >= math.log(1.0 / self.alpha)

    def describe(self, what: str) -> str:
        verdict = "conclusive" if self.conclusive else "not conclusive"
        return (
            f"{what}: {self.bad} of {self.events} ({self.rate:.3%}) against a limit of {self.p0:.3%}; "
            f"evidence {self.e_value:.3g} (needs {1 / self.alpha:g}: {verdict})"
        )


def _alternatives(p0: float, multipliers: Sequence[float], above: bool) -> list[float]:
    points = []
    for m in multipliers:
        p = p0 * m
        if above:
            p = min(p, 1.0 - 1e-9)
            if p > p0:
                points.append(p)
        elif 0.0 < p < p0:
            points.append(p)
    if not points:
        raise ValueError(f"no alternative on the {'upper' if above else 'lower'} side of p0={p0}")
    return sorted(set(points))


def _log_mixture(events: int, bad: int, p0: float, alternatives: Sequence[float]) -> float:
    if events < 0 or bad < 0 or bad > events:
        raise ValueError(f"need 0 <= bad <= events, got bad={bad}, events={events}")
    good = events - bad
    logs = []
    for p in alternatives:
        log_ratio = 0.0
        if bad:
            log_ratio += bad * math.log(p / p0)
        if good:
            log_ratio += good * (math.log1p(-p) - math.log1p(-p0))
        logs.append(log_ratio)
    top = max(logs)
    return top + math.log(sum(math.exp(x - top) for x in logs) / len(logs))


def rate_above(events: int, bad: int, p0: float, alpha: float) -> RateEvidence:
    """Evidence that the bad-event rate exceeds ``p0`` (0 < p0 < 1)."""
    _check(p0, alpha)
    return RateEvidence(
        events, bad, p0, alpha, _log_mixture(events, bad, p0, _alternatives(p0, ABOVE_MULTIPLIERS, True))
    )


def rate_below(events: int, bad: int, p0: float, alpha: float) -> RateEvidence:
    """Evidence that the bad-event rate is under ``p0``: the canary is good enough to promote."""
    _check(p0, alpha)
    return RateEvidence(
        events, bad, p0, alpha, _log_mixture(events, bad, p0, _alternatives(p0, BELOW_MULTIPLIERS, False))
    )


def _check(p0: float, alpha: float) -> None:
    if not 0.0 < p0 < 1.0:
        raise ValueError(f"p0 must be within (0, 1), got {p0}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be within (0, 1), got {alpha}")
