"""The words of SLO signals: what a page or a resolve says. Kept apart from the math so the wording can
change (and be tested) without touching evaluation."""

from __future__ import annotations

from watchdog.core.durations import human_duration


def burn_rate(x: float) -> str:
    """``14.4x``; three significant figures at most."""
    return f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def budget_left(remaining: float, window_label: str) -> str:
    return f"{remaining:.1%} of the {window_label} budget left"


def burn_firing(
    slo: str,
    severity: str,
    long_rate: float,
    long_label: str,
    short_rate: float,
    short_label: str,
    threshold: float,
    left: str,
) -> str:
    return (
        f"{slo}: error budget burning {burn_rate(long_rate)} over {long_label}"
        f" and {burn_rate(short_rate)} over {short_label}"
        f" ({severity} above {burn_rate(threshold)}); {left}"
    )


def burn_resolved(slo: str, severity: str, left: str) -> str:
    return f"{slo}: burn rate back under the {severity} thresholds; {left}"


def no_data_firing(slo: str, probe: str, silent_for_s: float | None) -> str:
    since = "ever" if silent_for_s is None else human_duration(silent_for_s)
    return f"{slo}: no data from probe {probe} for {since} (no_data: alert)"


def no_data_resolved(slo: str, probe: str) -> str:
    return f"{slo}: data from probe {probe} is back"
