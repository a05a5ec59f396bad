"""CPU and memory of this host from /proc, for a database running on the same machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from watchdog.sources.base import MetricSourceError, Sample

QUERIES = ("cpu_percent", "memory_percent", "load1")


def _cpu_times(root: Path) -> tuple[float, float]:
    """(busy, total) jiffies from the aggregate ``cpu`` line of /proc/stat."""
    with (root / "stat").open() as f:
        first = f.readline().split()
    if not first or first[0] != "cpu":
        raise MetricSourceError(f"unexpected {root / 'stat'} format")
    values = [float(v) for v in first[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest time is already in user/nice.
    total = sum(values[:8])
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    return total - idle, total


def _memory_percent(root: Path) -> float:
    info: dict[str, float] = {}
    with (root / "meminfo").open() as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                info[key] = float(parts[0])
    total = info.get("MemTotal")
    available = info.get("MemAvailable")
    if not total or available is None:
        raise MetricSourceError(f"{root / 'meminfo'} has no MemTotal/MemAvailable")
    return 100.0 * (1.0 - available / total)


def _load1(root: Path) -> float:
    with (root / "loadavg").open() as f:
        return float(f.read().split()[0])


class ProcMetricSource:
    """Queries: ``cpu_percent`` (busy share of all CPUs since the previous query; the first query measures
    over ``first_window_s``), ``memory_percent`` ((MemTotal − MemAvailable) ÷ MemTotal), ``load1``."""

    name = "proc"

    def __init__(self, root: str | Path = "/proc", *, first_window_s: float = 0.1) -> None:
        self.root = Path(root)
        self.first_window_s = first_window_s
        self._last_cpu: tuple[float, float] | None = None
        self._last_value: float | None = None

    async def query(self, query: str, *, timeout_s: float = 5.0) -> Sequence[Sample]:
        name = query.strip()
        try:
            if name == "memory_percent":
                return [Sample(_memory_percent(self.root), timestamp=time.time())]
            if name == "load1":
                return [Sample(_load1(self.root), timestamp=time.time())]
            if name == "cpu_percent":
                return [Sample(await self._cpu_percent(timeout_s), timestamp=time.time())]
        except OSError as exc:
            raise MetricSourceError(f"cannot read {self.root}: {exc.strerror or exc}") from None
        except (ValueError, IndexError) as exc:  # a file that is not what the kernel writes
            raise MetricSourceError(f"unexpected contents under {self.root}: {exc}") from None
        raise MetricSourceError(f"proc source knows {', '.join(QUERIES)}; not {query!r}")

    async def _cpu_percent(self, timeout_s: float) -> float:
        now = _cpu_times(self.root)
        previous = self._last_cpu
        if previous is not None and now[1] <= previous[1] and self._last_value is not None:
            return self._last_value  # no clock tick since the previous query: nothing new to say
        if previous is None or now[1] <= previous[1]:
            previous = now
            await asyncio.sleep(min(self.first_window_s, timeout_s / 2))
            now = _cpu_times(self.root)
        self._last_cpu = now
        busy, total = now[0] - previous[0], now[1] - previous[1]
        value = 0.0 if total <= 0 else max(0.0, min(100.0, 100.0 * busy / total))
        self._last_value = value
        return value

    async def aclose(self) -> None:
        self._last_cpu = None
        self._last_value = None
