"""SLO windows: rolling (the last N days) or the calendar month in an IANA time zone.

Time is epoch seconds; a minute is ``int(t // 60)`` as in the store. Window anchoring (decided here, used
everywhere):

- Event SLIs (availability, error rate, latency): the window is exactly ``[now - length, now]``. The current,
  still-growing minute counts with everything recorded so far; the oldest minute, only partly inside, counts
  pro rata (its events are assumed spread evenly over it). So a 1-hour window after 52 s of a total outage
  holds 52/3600 = 1.44 % errors, the Workbook's 14.4x at 99.9 %.
- Time-slice SLIs (uptime, metric threshold): a minute is a slice that counts once it is over, so the window
  ends at the last minute boundary: ``[floor_minute(now) - length, floor_minute(now)]``.
- Calendar months start at local midnight on the 1st; their length follows DST (743 h for March in
  America/New_York, 721 h for its November, 745 h for October in Europe/Berlin, 744 h in Asia/Taipei).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from watchdog.config.slo import CalendarWindow, RollingWindow
from watchdog.core.durations import format_duration

__all__ = [
    "Period",
    "calendar_month_bounds",
    "day_starts",
    "format_duration",
    "minute_of",
    "slo_period",
]


def minute_of(t: float) -> int:
    return int(t // 60)


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def calendar_month_bounds(now: float, timezone: str) -> tuple[float, float]:
    """(start, end) epoch seconds of the calendar month holding ``now`` in ``timezone``: local midnight on
    the 1st of this month and of the next. A local midnight that does not exist (a DST jump at 00:00) maps
    to the moment of the jump."""
    tz = _zone(timezone)
    local = datetime.fromtimestamp(now, tz)
    start = datetime(local.year, local.month, 1, tzinfo=tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    end = datetime(year, month, 1, tzinfo=tz)
    return start.timestamp(), end.timestamp()


@dataclass(slots=True)
class Period:
    """The SLO window at one evaluation."""

    start: float
    """Window start (rolling: ``end - length``; calendar: the month's first local midnight)."""
    end: float
    """Window end: now for event SLIs, the last minute boundary for time-slice SLIs."""
    length: float
    """Full window length: the rolling length, or the whole calendar month (DST-aware)."""
    period_end: float
    """When the budget period ends: ``end`` for rolling windows (it moves), the next month for calendar."""
    rolling: bool
    label: str
    timezone: str = "UTC"

    @property
    def elapsed(self) -> float:
        return max(0.0, self.end - self.start)


def slo_period(window: RollingWindow | CalendarWindow, end: float) -> Period:
    if isinstance(window, RollingWindow):
        return Period(
            start=end - window.length,
            end=end,
            length=window.length,
            period_end=end,
            rolling=True,
            label=format_duration(window.length),
        )
    start, month_end = calendar_month_bounds(end, window.timezone)
    # At exactly local midnight the new month has just begun: an empty window, full budget.
    return Period(
        start=start,
        end=end,
        length=month_end - start,
        period_end=month_end,
        rolling=False,
        label=f"calendar month ({window.timezone})",
        timezone=window.timezone,
    )


def day_starts(start: float, end: float, timezone: str = "UTC") -> list[float]:
    """Local midnights in ``timezone`` that fall in ``(start, end)``, preceded by ``start``: the boundaries
    of the (local) days a window spans. Days across DST changes are 23 or 25 hours long."""
    tz = _zone(timezone)
    out = [start]
    local = datetime.fromtimestamp(start, tz)
    day = datetime(local.year, local.month, local.day, tzinfo=tz)
    while True:
        nxt = (day.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=tz)
        t = nxt.timestamp()
        if t >= end:
            return out
        if t > out[-1]:
            out.append(t)
        day = nxt


def utc_iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
