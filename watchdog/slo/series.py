"""Cumulative per-minute counters of one SLI, cheap to query over any window.

The engine keeps, per SLI source, five running totals (good, total, events, missing minutes, minutes with
data) and samples them at time boundaries: at every minute boundary for the recent ``fine_minutes`` and at
every hour boundary for the whole span (30 days and more). The sum of a quantity over a window [a, b] is then
``C(b) - C(a)``: two lookups, whatever the window length or the number of events behind it.

``C`` at a time between two samples is interpolated linearly. Inside the fine ring that pro-rates the oldest,
partly covered minute of a window (a window is exactly its length, not a whole number of minutes); beyond it,
for the far edge of 3-day and 30-day windows, it pro-rates the oldest, partly covered hour.

Memory per source: 5 x 8 bytes x (fine_minutes + span_hours); about 30 KB for a 30-day SLO with the default
alerts. Cost does not depend on how many events were recorded (storage grows with minutes, not events).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from itertools import accumulate

GOOD, TOTAL, EVENTS, MISSING, DATA = range(5)
NQ = 5
"""Quantities per minute: good (events or slices), total (events or valid slices), events behind them (probe
results / observations, for the low-traffic guard), missing minutes (no data, for the no-data policy),
minutes with data (for the event rate used by ``no_data: bad``)."""

Values = tuple[float, float, float, float, float]
ZERO: Values = (0.0, 0.0, 0.0, 0.0, 0.0)


class CumulativeSeries:
    """Running totals sampled at minute boundaries (recent) and hour boundaries (whole span).

    Minutes are added in order (``push`` one, ``extend`` many); ``rewind`` steps back a few minutes so the
    still-growing tail can be re-read from the store and added again.
    """

    __slots__ = ("_coarse", "_cur", "_fine", "_hi", "_hs", "_ms", "_origin", "fine_floor")

    def __init__(self, origin_minute: int, span_minutes: int, fine_minutes: int) -> None:
        if origin_minute % 60:
            raise ValueError("origin_minute must be on an hour boundary")
        # At least 61 fine boundaries: an hour-level lookup then always finds its upper hour sample written.
        self._ms = max(int(fine_minutes), 64) + 1
        self._hs = max(int(span_minutes), 60) // 60 + 3
        self._fine = array("d", bytes(8 * NQ * self._ms))
        self._coarse = array("d", bytes(8 * NQ * self._hs))
        self._origin = origin_minute
        self._hi = origin_minute
        self._cur: list[float] = [0.0] * NQ
        self.fine_floor = origin_minute
        """Minute boundaries before this are not written to the fine ring (the startup read sets it to what
        the ring will still hold at the end, so older minutes skip a write that would be overwritten)."""

    @property
    def origin(self) -> int:
        return self._origin

    @property
    def hi(self) -> int:
        """The newest boundary: every minute before it has been pushed."""
        return self._hi

    @property
    def fine_minutes(self) -> int:
        return self._ms - 1

    def total(self) -> Values:
        """C at the newest boundary: everything pushed so far."""
        c = self._cur
        return (c[0], c[1], c[2], c[3], c[4])

    def _write(self) -> None:
        b = self._hi
        cur = self._cur
        i = (b % self._ms) * NQ
        fine = self._fine
        fine[i], fine[i + 1], fine[i + 2], fine[i + 3], fine[i + 4] = cur
        if b % 60 == 0:
            j = ((b // 60) % self._hs) * NQ
            coarse = self._coarse
            coarse[j], coarse[j + 1], coarse[j + 2], coarse[j + 3], coarse[j + 4] = cur

    def push(self, values: Sequence[float]) -> None:
        """Add minute ``hi`` with these per-minute values and advance one minute."""
        cur = self._cur
        for q in range(NQ):
            cur[q] += values[q]
        self._hi += 1
        self._write()

    def extend(
        self, columns: Sequence[Sequence[float] | None], prefixes: dict[int, list[float]] | None = None
    ) -> None:
        """Add ``n`` minutes starting at ``hi`` at once: one column per quantity (None: all zeros).

        Running sums come from ``itertools.accumulate``; only the samples that are kept are written: every
        hour boundary still inside the coarse ring, and the minute boundaries at or after ``fine_floor`` that
        are still inside the fine ring. So a 30-day startup read costs a few C-level passes per source.
        ``prefixes`` caches the running sums of column objects shared by several series (keyed by ``id``;
        the caller keeps the columns alive while the cache is in use).
        """
        n = next((len(c) for c in columns if c is not None), 0)
        if n <= 0:
            return
        start = self._hi
        end = start + n
        cache: dict[int, list[float]] = {} if prefixes is None else prefixes
        sums: list[list[float] | None] = []
        for col in columns:
            if col is None:
                sums.append(None)
                continue
            pre = cache.get(id(col))
            if pre is None:
                pre = cache[id(col)] = list(accumulate(col, initial=0.0))
            sums.append(pre)
        cur = self._cur
        # Hour samples still inside the coarse ring afterwards, then minute samples still in the fine ring.
        h0 = max(start // 60 + 1, end // 60 - self._hs + 1)
        h1 = end // 60
        if h0 <= h1:
            self._write_run(self._coarse, self._hs, h0, h1 - h0 + 1, sums, cur, 60 * h0 - start, 60)
        b0 = max(start + 1, end - self._ms + 1, self.fine_floor)
        if b0 <= end:
            self._write_run(self._fine, self._ms, b0, end - b0 + 1, sums, cur, b0 - start, 1)
        self._cur = [c if pre is None else c + pre[n] for c, pre in zip(cur, sums, strict=True)]
        self._hi = end

    @staticmethod
    def _write_run(
        buf: array[float], size: int, first: int, count: int, sums: Sequence[list[float] | None],
        cur: Sequence[float], k0: int, step: int,
    ) -> None:
        """Write samples ``first .. first + count - 1`` of a ring of ``size`` slots (wrapping), quantity by
        quantity with strided slice assignment; sample ``first + i`` is ``cur + sums[k0 + i * step]``."""
        if count > size:
            skip = count - size
            first, count, k0 = first + skip, size, k0 + skip * step
        p0 = first % size
        head = min(count, size - p0)
        for q in range(NQ):
            pre, c = sums[q], cur[q]
            if pre is None:
                values = array("d", [c]) * count
            else:
                values = array("d", map(c.__add__, pre[k0 : k0 + (count - 1) * step + 1 : step]))
            buf[p0 * NQ + q : (p0 + head) * NQ : NQ] = values[:head]
            if head < count:
                buf[q : (count - head) * NQ : NQ] = values[head:]

    def can_rewind_to(self, boundary: int) -> bool:
        return max(self._origin, self._hi - self._ms + 1) <= boundary <= self._hi

    def rewind(self, boundary: int) -> None:
        """Forget the minutes from ``boundary`` on (they will be pushed again)."""
        if not self.can_rewind_to(boundary):
            kept = f"{max(self._origin, self._hi - self._ms + 1)}..{self._hi}"
            raise ValueError(f"cannot rewind to minute {boundary}: kept {kept}")
        i = (boundary % self._ms) * NQ
        self._cur = list(self._fine[i : i + NQ])
        self._hi = boundary

    def at_minute(self, boundary: int) -> Values:
        """C at a minute boundary (exact inside the fine ring)."""
        return self.at(boundary * 60.0)

    def at(self, t: float) -> Values:
        """C at time ``t`` (epoch seconds), interpolated between samples; 0 before the origin, the running
        total after the newest boundary, the oldest kept sample before that."""
        x = t / 60.0
        hi = self._hi
        if x >= hi:
            return self.total()
        if x <= self._origin:
            return ZERO
        m0 = math.floor(x)
        f = x - m0
        if m0 > hi - self._ms:
            ms = self._ms
            buf = self._fine
            i = (m0 % ms) * NQ
            if f == 0.0:
                return (buf[i], buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4])
            j = ((m0 + 1) % ms) * NQ
        else:
            hx = x / 60.0
            h0 = math.floor(hx)
            f = hx - h0
            oldest = hi // 60 - self._hs + 1
            hs = self._hs
            buf = self._coarse
            if h0 < oldest:
                i = (oldest % hs) * NQ
                return (buf[i], buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4])
            i = (h0 % hs) * NQ
            if f == 0.0:
                return (buf[i], buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4])
            j = ((h0 + 1) % hs) * NQ
        a0, a1, a2, a3, a4 = buf[i], buf[i + 1], buf[i + 2], buf[i + 3], buf[i + 4]
        return (
            a0 + (buf[j] - a0) * f,
            a1 + (buf[j + 1] - a1) * f,
            a2 + (buf[j + 2] - a2) * f,
            a3 + (buf[j + 3] - a3) * f,
            a4 + (buf[j + 4] - a4) * f,
        )
