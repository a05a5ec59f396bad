"""Pure SLO math: windows (calendar months across DST), burn rates, budgets, the rule state machine and the
cumulative per-minute counters."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watchdog.config.slo import CalendarWindow, RollingWindow
from watchdog.core.durations import format_duration
from watchdog.slo import messages
from watchdog.slo.budget import budget, exhaustion_at
from watchdog.slo.burn import NoDataPolicy, RuleState, WindowStats, rule_conditions, step_rule, window_stats
from watchdog.slo.series import MISSING, TOTAL, CumulativeSeries
from watchdog.slo.windows import calendar_month_bounds, day_starts, slo_period


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, tz: str = "UTC") -> float:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(tz)).timestamp()


# -- windows --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "year", "month", "hours"),
    [
        ("America/New_York", 2026, 3, 743),  # spring forward on 8 March
        ("America/New_York", 2026, 11, 721),  # fall back on 1 November (30-day month + 1 h)
        ("Europe/Berlin", 2026, 10, 745),  # fall back on 25 October
        ("Europe/Berlin", 2026, 3, 743),
        ("Asia/Taipei", 2026, 3, 744),  # no DST
        ("UTC", 2026, 2, 672),
        ("UTC", 2028, 2, 696),  # leap year
    ],
)
def test_calendar_month_length_follows_dst(tz: str, year: int, month: int, hours: int) -> None:
    start, end = calendar_month_bounds(ts(year, month, 15, 12, tz=tz), tz)
    assert start == ts(year, month, 1, tz=tz)
    assert end - start == hours * 3600


def test_calendar_month_boundary_is_local_midnight() -> None:
    tz = "America/New_York"
    april_1 = ts(2026, 4, 1, tz=tz)
    assert april_1 == ts(2026, 4, 1, 4)  # 00:00 EDT is 04:00 UTC
    # One second before local midnight is still March, although it is already 1 April in UTC.
    start, end = calendar_month_bounds(april_1 - 1, tz)
    assert (start, end) == (ts(2026, 3, 1, tz=tz), april_1)
    assert datetime.fromtimestamp(april_1 - 1, UTC).day == 1
    # At local midnight exactly the new month begins with an empty window.
    p = slo_period(CalendarWindow(kind="calendar_month", timezone=tz), april_1)
    assert p.start == april_1 and p.elapsed == 0 and p.length == 720 * 3600
    assert p.period_end == ts(2026, 5, 1, tz=tz) and not p.rolling


def test_calendar_month_year_rollover_and_taipei() -> None:
    start, end = calendar_month_bounds(ts(2026, 12, 31, 20, tz="Asia/Taipei"), "Asia/Taipei")
    assert start == ts(2026, 12, 1, tz="Asia/Taipei") == ts(2026, 11, 30, 16)
    assert end == ts(2027, 1, 1, tz="Asia/Taipei")


def test_rolling_period() -> None:
    p = slo_period(RollingWindow(length=30 * 86400), 1_000_000.0)
    assert (p.start, p.end, p.length, p.rolling) == (1_000_000.0 - 2_592_000, 1_000_000.0, 2_592_000, True)
    assert p.label == "30d"


def test_day_starts_across_dst() -> None:
    tz = "America/New_York"
    days = day_starts(ts(2026, 3, 7, tz=tz), ts(2026, 3, 10, tz=tz), tz)
    assert days == [ts(2026, 3, 7, tz=tz), ts(2026, 3, 8, tz=tz), ts(2026, 3, 9, tz=tz)]
    assert days[2] - days[1] == 23 * 3600  # the day clocks spring forward
    fall = day_starts(ts(2026, 11, 1, tz=tz), ts(2026, 11, 3, tz=tz), tz)
    assert fall[1] - fall[0] == 25 * 3600
    # A start in the middle of a day: the first entry is the start itself.
    assert day_starts(ts(2026, 1, 1, 13), ts(2026, 1, 2, 1)) == [ts(2026, 1, 1, 13), ts(2026, 1, 2)]


def test_format_duration() -> None:
    assert [format_duration(x) for x in (300, 3600, 21600, 259200, 2592000, 90, 1.5, 0)] == [
        "5m", "1h", "6h", "3d", "30d", "90s", "1.5s", "0s"
    ]


# -- burn rates ----------------------------------------------------------------------------------------


def stats(seconds: float, good: float, total: float, events: float, missing: float, data: float,
          no_data: NoDataPolicy = "ignore", slices: bool = False) -> WindowStats:
    return window_stats(seconds, good, total, events, missing, data, budget_ratio=0.001, min_events=8,
                        no_data=no_data, time_slices=slices)


def test_burn_rate_is_error_ratio_over_allowed() -> None:
    w = stats(3600.0, 985.6, 1000, 1000, 0, 60, "ignore")
    assert w.error_ratio == pytest.approx(0.0144)
    assert w.burn_rate == pytest.approx(14.4)
    assert w.state == "ok" and w.counts and w.exceeds(14.0) and not w.exceeds(14.5)


def test_empty_window_is_no_data_not_nan() -> None:
    w = stats(300.0, 0, 0, 0, 0, 0, "ignore")
    assert (w.error_ratio, w.burn_rate, w.state, w.counts) == (0.0, 0.0, "no_data", False)
    nan = stats(300.0, math.nan, math.inf, math.nan, math.nan, math.nan, "bad")
    assert all(math.isfinite(x) for x in (nan.good, nan.total, nan.error_ratio, nan.burn_rate))


def test_low_traffic_guard() -> None:
    w = stats(300.0, 0, 1, 1, 0, 1, "ignore")
    assert w.burn_rate == pytest.approx(1000) and w.state == "low_traffic" and not w.counts
    w = stats(300.0, 9, 10, 10, 0, 5, "ignore")
    assert w.state == "ok" and w.counts


def test_no_data_bad_counts_missing_minutes_as_bad() -> None:
    # Time slices: a missing minute is a bad minute.
    w = stats(3600.0, 55, 55, 110, 5, 55, "bad", slices=True)
    assert (w.total, w.good) == (60, 55) and w.error_ratio == pytest.approx(5 / 60)
    # Events: a missing minute is as many bad events as an average minute with data had (12 here).
    w = stats(3600.0, 660, 660, 660, 5, 55, "bad")
    assert w.total == pytest.approx(720) and w.error_ratio == pytest.approx(60 / 720)
    # A window without any data under "bad" is a total outage and counts despite the guard.
    w = stats(300.0, 0, 0, 0, 5, 0, "bad")
    assert (w.error_ratio, w.state, w.counts) == (1.0, "no_data", True)
    # The same window under "ignore" is nothing.
    w = stats(300.0, 0, 0, 0, 5, 0, "ignore")
    assert (w.error_ratio, w.counts) == (0.0, False)


def test_partly_covered_window_is_read_as_a_share_of_the_budget() -> None:
    """Data covering c seconds of a window of length L: the burn divides the bad events by the total a full
    window would hold, total * L / c (c floored at a minute); the counts themselves are what was seen."""
    # 1 failure among 75 results in 150 s: 13.3x observed, 0.56x over an hour, 0.09x over 6 h.
    w = window_stats(3600.0, 74, 75, 75, 0, 3, budget_ratio=0.001, min_events=8, no_data="ignore",
                     time_slices=False, covered=150.0)
    assert (w.good, w.total, w.bad, w.covered) == (74, 75, 1, 150.0)
    assert w.error_ratio == pytest.approx(1 / 75)
    assert w.burn_rate == pytest.approx(1 / (75 * 3600 / 150) / 0.001)
    assert w.state == "ok" and w.counts and not w.exceeds(1.0)
    # A total outage 52 s long in a fresh hour: exactly the Workbook's 14.4x.
    w = window_stats(3600.0, 15, 41, 41, 0, 2, budget_ratio=0.001, min_events=8, no_data="ignore",
                     time_slices=False, covered=82.0)
    assert w.burn_rate == pytest.approx(26 / 41 * 82 / 3600 / 0.001)
    # Coverage under a minute counts as a minute: at most L / 60 s of extrapolation.
    w = window_stats(3600.0, 0, 10, 10, 0, 1, budget_ratio=0.001, min_events=8, no_data="ignore",
                     time_slices=False, covered=5.0)
    assert w.burn_rate == pytest.approx(1000 * 60 / 3600)
    # Fully covered (or None, or more than the window, or NaN): no normalisation.
    for covered in (None, 3600.0, 7200.0, math.nan):
        w = window_stats(3600.0, 985.6, 1000, 1000, 0, 60, budget_ratio=0.001, min_events=8,
                         no_data="ignore", time_slices=False, covered=covered)
        assert w.burn_rate == pytest.approx(14.4) and w.covered == 3600.0
    # Time slices: 1 bad minute of 4 over an hour at 99 %: 25x observed, 1/60 of the hour's slices: 1.7x.
    w = window_stats(3600.0, 3, 4, 120, 0, 4, budget_ratio=0.01, min_events=8, no_data="ignore",
                     time_slices=True, covered=240.0)
    assert w.burn_rate == pytest.approx(1 / 60 / 0.01)


def test_rule_conditions_need_the_gate_window() -> None:
    """A rule fires (and stays firing) only while its gate, the severity's shortest window, is over the rate
    too: the stale errors left in a long and a 30-minute window neither hold nor re-fire it."""
    over = stats(1800.0, 990, 1000, 1000, 0, 30)  # 10x
    under = stats(300.0, 150, 150, 150, 0, 5)  # 0x: the errors stopped
    also_over = stats(300.0, 148, 150, 150, 0, 5)  # 13.3x
    assert rule_conditions(over, over, 6.0) == (True, False)
    assert rule_conditions(over, over, 6.0, also_over) == (True, False)
    assert rule_conditions(over, over, 6.0, under) == (False, True)
    assert rule_conditions(over, under, 6.0, also_over) == (False, True)


def test_incident_cost_words() -> None:
    assert messages.incident_cost(0.041, 83, "30d", time_slices=False) == (
        "the incident spent 4.1 % of the 30d budget (83 bad results)"
    )
    assert messages.incident_cost(2.34, 1, "30d", time_slices=True) == (
        "the incident spent 2.3x the 30d budget (1 bad minute)"
    )
    left = "95.9% of the 30d budget left"
    assert messages.burn_resolved("api", "page", left, "the incident spent 4.1 %") == (
        f"api: burn rate back under the page thresholds; the incident spent 4.1 %; {left}"
    )


def test_rule_fires_at_once_and_resolves_after_hold() -> None:
    state = RuleState()
    assert step_rule(state, fire=False, clear=True, now=0, hold=30) is None
    assert step_rule(state, fire=True, clear=False, now=5, hold=30) == "fired"
    assert state.firing and state.since == 5
    # Clear for less than the hold, then above again: still firing, the hold restarts.
    assert step_rule(state, fire=False, clear=True, now=10, hold=30) is None
    assert step_rule(state, fire=False, clear=True, now=35, hold=30) is None
    assert step_rule(state, fire=True, clear=False, now=39, hold=30) is None
    assert state.clear_since is None
    assert step_rule(state, fire=False, clear=True, now=40, hold=30) is None
    assert step_rule(state, fire=False, clear=True, now=69, hold=30) is None
    assert step_rule(state, fire=False, clear=True, now=70, hold=30) == "resolved"
    assert not state.firing and state.since is None


# -- budgets -------------------------------------------------------------------------------------------


def test_event_budget() -> None:
    b = budget(999_500, 1_000_000, budget_ratio=0.001)
    assert b.allowed == pytest.approx(1000) and b.spent == 500 and b.remaining == pytest.approx(0.5)
    over = budget(997_000, 1_000_000, budget_ratio=0.001)
    assert over.remaining == pytest.approx(-2.0)  # spent 300 %: reported, not clamped
    empty = budget(0, 0, budget_ratio=0.001)
    assert (empty.allowed, empty.spent, empty.remaining) == (0, 0, 1.0)


def test_time_slice_budget_uses_the_whole_window() -> None:
    # 30 days at 99.9 %: 43.2 bad minutes allowed, whatever share of the minutes had data.
    b = budget(1000 - 10, 1000, budget_ratio=0.001, slice_minutes=43200)
    assert b.allowed == pytest.approx(43.2) and b.remaining == pytest.approx(1 - 10 / 43.2)
    march_ny = budget(0, 0, budget_ratio=0.001, slice_minutes=743 * 60)
    assert march_ny.allowed == pytest.approx(44.58)


def test_exhaustion_forecast() -> None:
    day = 86400.0
    # Half the budget left, burning 10x on a 30-day window: 1.5 days.
    at = exhaustion_at(0.5, 10, now=0, period_length=30 * day, rolling=True, period_end=0)
    assert at == pytest.approx(1.5 * day)
    assert exhaustion_at(0.5, 0.9, now=0, period_length=30 * day, rolling=True, period_end=0) is None
    assert exhaustion_at(0.5, 0.0, now=0, period_length=30 * day, rolling=True, period_end=0) is None
    assert exhaustion_at(-0.1, 0.0, now=7, period_length=30 * day, rolling=True, period_end=0) == 7
    # Calendar: slow burns exhaust the budget only if that happens before the month ends.
    assert exhaustion_at(0.5, 0.9, now=0, period_length=30 * day, rolling=False, period_end=20 * day) == (
        pytest.approx(0.5 * 30 * day / 0.9)
    )
    assert exhaustion_at(0.5, 0.5, now=0, period_length=30 * day, rolling=False, period_end=20 * day) is None
    assert exhaustion_at(math.nan, 5, now=0, period_length=day, rolling=True, period_end=0) is None


# -- cumulative series ---------------------------------------------------------------------------------


def test_series_interpolates_the_oldest_minute_and_hour() -> None:
    s = CumulativeSeries(0, 3 * 1440, 64)
    for _ in range(3 * 1440):
        s.push((1.0, 2.0, 2.0, 0.0, 1.0))
    end = 3 * 1440 * 60.0
    assert s.total()[TOTAL] == 2 * 3 * 1440
    # Inside the fine ring: exact minutes plus a pro-rated partial minute.
    assert s.at(end - 300)[TOTAL] == pytest.approx(s.total()[TOTAL] - 10)
    assert s.at(end - 330)[TOTAL] == pytest.approx(s.total()[TOTAL] - 11)
    # Far back: hour samples, interpolated (exact here because the rate is constant).
    assert s.at(end - 86400 - 1800)[TOTAL] == pytest.approx(s.total()[TOTAL] - 2 * (1440 + 30))
    assert s.at(-5)[TOTAL] == 0 and s.at(end + 999)[TOTAL] == s.total()[TOTAL]


def test_series_rewind_and_extend() -> None:
    s = CumulativeSeries(0, 600, 64)
    for _ in range(10):
        s.push((1, 1, 1, 0, 1))
    s.rewind(8)
    assert s.hi == 8 and s.total()[TOTAL] == 8
    s.push((5, 5, 5, 0, 1))
    assert s.total()[TOTAL] == 13
    missing = [0.0, 0.0] + [1.0] * 198  # minutes 9..208, the first two tolerated
    s.extend((None, None, None, missing, None))
    assert s.hi == 209 and s.total()[MISSING] == 198 and s.total()[TOTAL] == 13
    assert s.at(60 * 60)[MISSING] == pytest.approx(60 - 11)  # an hour sample written by extend
    assert s.at_minute(150)[MISSING] == 139
    with pytest.raises(ValueError, match="cannot rewind"):
        s.rewind(5)


def test_series_fine_floor_skips_only_unread_samples() -> None:
    """With fine_floor at what the ring keeps at the end, a bulk load equals minute-by-minute pushes."""
    bulk = CumulativeSeries(0, 3000, 64)
    bulk.fine_floor = 3000 - bulk.fine_minutes
    one = CumulativeSeries(0, 3000, 64)
    cols = [[float((m * 7) % 5) for m in range(3000)] for _ in range(5)]
    for chunk in range(0, 3000, 700):
        bulk.extend([c[chunk : chunk + 700] for c in cols])
    for m in range(3000):
        one.push([c[m] for c in cols])
    for t in [0.0, 61.5 * 60, 2000 * 60.0, (3000 - 64) * 60.0, (3000 - 30.5) * 60, 2999.9 * 60, 3100 * 60.0]:
        assert bulk.at(t) == pytest.approx(one.at(t)), t


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(min_value=0, max_value=9), min_size=1, max_size=400),
    queries=st.lists(st.floats(min_value=-100.0, max_value=420 * 60.0), min_size=1, max_size=20),
)
def test_series_matches_brute_force(values: list[int], queries: list[float]) -> None:
    """C(t) equals the brute-force sum with linear interpolation inside the minute (fine ring) or the hour."""
    fine = 64
    s = CumulativeSeries(0, 420, fine)
    s.extend([[float(v) for v in values]] * 3 + [None, [1.0 if v else 0.0 for v in values]])
    hi = len(values)
    prefix = [0]
    for v in values:
        prefix.append(prefix[-1] + v)

    def c_at_minute(b: int) -> float:
        return float(prefix[min(max(b, 0), hi)])

    for t in queries:
        x = t / 60.0
        if x >= hi:
            want = float(prefix[-1])
        elif x <= 0:
            want = 0.0
        elif math.floor(x) > hi - (fine + 1):
            m0 = math.floor(x)
            want = c_at_minute(m0) + (c_at_minute(m0 + 1) - c_at_minute(m0)) * (x - m0)
        else:
            h0 = math.floor(x / 60)
            f = x / 60 - h0
            want = c_at_minute(60 * h0) + (c_at_minute(60 * h0 + 60) - c_at_minute(60 * h0)) * f
        assert s.at(t)[TOTAL] == pytest.approx(want, abs=1e-6)
