"""Durations, parsed once and written two ways.

- ``parse_duration``: config and CLI input (``250ms``, ``30s``, ``5m``, ``2h``, ``30d``, ``1w`` or seconds).
- ``format_duration``: a compact, exact label for a window length (``300 -> "5m"``), used in rule names and
  metric labels, where it must round-trip through ``parse_duration``.
- ``human_duration``: prose for a person (``0.0123 -> "12 ms"``, ``95 -> "1.6 min"``), used in reasons, pages
  and reports.
"""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}
_LABEL_UNITS: tuple[tuple[str, int], ...] = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
_SHAPE = "a duration is a number of seconds or a string like '30s', '5m', '2h'"


def parse_duration(value: Any) -> float:
    """``"250ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"30d"`` or a bare number of seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError(_SHAPE)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration (examples: 250ms, 30s, 5m, 2h, 30d)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(_SHAPE)
    if not math.isfinite(seconds):
        raise ValueError("a duration must be finite")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """Compact label for a window length: ``300 -> "5m"``, ``3600 -> "1h"``, ``90 -> "90s"``.

    The largest unit that divides the length exactly, so the label parses back to the same length.
    """
    if not math.isfinite(seconds) or seconds <= 0:
        return "0s"
    if seconds != int(seconds):
        return f"{seconds:g}s"
    whole = int(seconds)
    for unit, size in _LABEL_UNITS:
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"  # unreachable: every integer is a whole number of seconds


def human_duration(seconds: float) -> str:
    """A duration for a person to read, with the unit that keeps the number small: ``12 ms``, ``3.4 ms``,
    ``45.2 s``, ``4.5 min``, ``3.2 h``, ``2.5 d``. Negative and non-finite inputs read as ``0 ms``."""
    if not math.isfinite(seconds) or seconds <= 0:
        return "0 ms"
    if seconds < 1:
        ms = seconds * 1000.0
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
