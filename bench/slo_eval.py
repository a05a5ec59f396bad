"""SLO engine cost: 1,000 SLOs over 30-day windows, per evaluation tick, and its independence from the number
of recorded probe results.

    .venv/bin/python bench/slo_eval.py                 # everything (about 3-4 minutes, ~1 GB peak RSS)
    .venv/bin/python bench/slo_eval.py --quick         # smaller, for a smoke run

Scenarios (each in a fresh SQLite store in a temporary directory, written through ``StateStore.record`` and
then pruned like the daemon does, so raw results are gone and only minute aggregates remain):

- ``dense``: every probe series has a result in every minute of the last 30 days (the realistic worst case for
  the startup read); the headline per-tick number for 1,000 SLOs.
- ``1e4`` / ``1e6``: the same set of minute rows (one every 43 minutes per series over 30 days), holding 10^4
  results in one and 10^6 in the other (100 per minute row). Store size, startup load and per-tick cost must
  not follow the number of results.

A tick = advance the FakeClock 5 s, record one new result per series (the live load), ``await
engine.evaluate()``. Only ``evaluate()`` is timed (perf_counter), after a warm-up of 12 ticks; the timed ticks
cross several minute boundaries.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from watchdog.config.slo import SloConfig  # noqa: E402
from watchdog.core.clock import FakeClock  # noqa: E402
from watchdog.core.results import Observation, Outcome, ProbeResult  # noqa: E402
from watchdog.slo import SloEngine  # noqa: E402
from watchdog.store.base import LATENCY_BUCKETS_S  # noqa: E402
from watchdog.store.sqlite import SqliteStore  # noqa: E402

DAY = 86400.0
START = 1_767_225_600.0 + 40 * DAY  # 2026-02-10, so a calendar month window is a full one
TIMEZONES = ("UTC", "Asia/Taipei", "America/New_York", "Europe/Berlin", "Asia/Kathmandu")


def series_of(probes: int) -> list[tuple[str, dict[str, str]]]:
    """Probe series: half the probes have two cohorts (labels), so label selection is exercised."""
    out: list[tuple[str, dict[str, str]]] = []
    for p in range(probes):
        name = f"probe-{p:02d}"
        if p % 2:
            out += [(name, {"cohort": "yaml"}), (name, {"cohort": "db"})]
        else:
            out.append((name, {}))
    return out


def make_slos(n: int, probes: int) -> list[SloConfig]:
    """n SLOs spread over the probes; almost every one a distinct SLI (kind x parameters x labels)."""
    variants: list[dict[str, Any]] = []
    for threshold in LATENCY_BUCKETS_S:
        for bad in (True, False):
            variants.append({"kind": "latency", "threshold": threshold, "count_failures_as_bad": bad})
    variants += [{"kind": "availability", "degraded_is_good": g} for g in (True, False)]
    variants += [{"kind": "uptime", "minute_good_ratio": r} for r in (1.0, 0.9, 0.5)]
    variants += [
        {"kind": "metric_threshold", "observation": "cpu", "below": b, "aggregate": a}
        for b in (70, 80, 90) for a in ("max", "avg")
    ]
    objectives = (99.9, 99.5, 99.0, 99.95, 95.0)
    slos: list[SloConfig] = []
    i = 0
    while len(slos) < n:
        probe = i % probes
        variant = dict(variants[(i // probes) % len(variants)])
        if probe % 2 and (i // (probes * len(variants))) % 2 == 0:
            variant["labels"] = {"cohort": "db"}
        window: dict[str, Any] = {"kind": "rolling", "length": 30 * DAY}
        if i % 10 == 7:
            window = {"kind": "calendar_month", "timezone": TIMEZONES[i % len(TIMEZONES)]}
        no_data = ("ignore", "alert", "bad")[i % 3]
        slos.append(SloConfig.model_validate({
            "name": f"slo-{i:04d}",
            "objective": objectives[i % len(objectives)],
            "sli": {"probe": f"probe-{probe:02d}", **variant},
            "window": window,
            "no_data": no_data,
        }))
        i += 1
    return slos


def result(probe: str, labels: dict[str, str], t: float, rng: random.Random) -> ProbeResult:
    r = rng.random()
    outcome = Outcome.FAILED if r < 0.002 else Outcome.DEGRADED if r < 0.01 else Outcome.OK
    return ProbeResult(
        probe=probe, kind="http", target="bench", outcome=outcome, latency_s=rng.lognormvariate(-2.5, 0.8),
        started_at=t, labels=labels, observations=(Observation("cpu", rng.uniform(20, 95)),),
    )


async def fill(store: SqliteStore, series: list[tuple[str, dict[str, str]]], minutes: list[int],
               per_minute: int, rng: random.Random) -> int:
    """Record ``per_minute`` results for every series in each of ``minutes``; returns results written."""
    batch: list[ProbeResult] = []
    written = 0
    for m in minutes:
        for probe, labels in series:
            for k in range(per_minute):
                batch.append(result(probe, labels, m * 60 + (k * 59.0) / max(1, per_minute), rng))
        if len(batch) >= 50_000:
            await store.record(batch)
            written += len(batch)
            batch = []
    if batch:
        await store.record(batch)
        written += len(batch)
    return written


def used_mb(path: Path) -> float:
    """Bytes in use by the SQLite file (pages minus free pages: prune does not shrink the file)."""
    conn = sqlite3.connect(path)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return float((pages - free) * size) / 1e6


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


async def scenario(name: str, slos: list[SloConfig], probes: int, minutes: list[int], per_minute: int,
                   ticks: int, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    series = series_of(probes)
    path = workdir / f"{name}.db"
    # Raw results kept 60 s only, so that after prune the store holds just the minute aggregates.
    store = SqliteStore(path, raw_retention_s=60.0)
    await store.open()
    rng = random.Random(42)
    t0 = time.perf_counter()
    written = await fill(store, series, minutes, per_minute, rng)
    await store.prune(START)  # raw results go; minute aggregates (35-day retention) stay
    fill_s = time.perf_counter() - t0
    size_mb = used_mb(path)
    log(f"[{name}] {written:,} results in {len(minutes):,} minutes x {len(series)} series, "
        f"{fill_s:.1f} s to write; {size_mb:.1f} MB of store pages in use after prune")

    clock = FakeClock(START)
    engine = SloEngine(slos, store, clock)
    # What the startup read costs the store alone: the same day-sized range reads, nothing done with them.
    t0 = time.perf_counter()
    first = int(START // 60) - engine_span_minutes(engine)
    for a in range(first, int(START // 60) + 1, 1440):
        await store.minutes(a, min(a + 1440, int(START // 60) + 1))
        await store.observation_minutes(a, min(a + 1440, int(START // 60) + 1))
    store_read_s = time.perf_counter() - t0
    gc.collect()
    t0 = time.perf_counter()
    await engine.evaluate()  # the startup read of the whole span
    load_s = time.perf_counter() - t0
    log(f"[{name}] startup load of {engine.source_count} SLI sources: {load_s:.1f} s "
        f"(the store's reads alone: {store_read_s:.1f} s), peak RSS {rss_mb():.0f} MB")

    async def run_ticks(count: int) -> tuple[list[float], list[float]]:
        durations: list[float] = []
        reads: list[float] = []
        for i in range(12 + count):
            clock.advance(5.0)
            now = clock.now()
            await store.record([result(p, labels, now - rng.random(), rng) for p, labels in series])
            t0 = time.perf_counter()
            await engine.evaluate()
            elapsed = time.perf_counter() - t0
            if i >= 12:
                durations.append(elapsed)
                t1 = time.perf_counter()
                await store.minutes(int(now // 60) - 2, int(now // 60) + 1)
                await store.observation_minutes(int(now // 60) - 2, int(now // 60) + 1)
                reads.append(time.perf_counter() - t1)
        durations.sort()
        return durations, reads

    durations, reads = await run_ticks(ticks)
    # The same after gc.freeze(): long-lived objects (config, loaded counters) leave the collector's scans.
    gc.collect()
    gc.freeze()
    frozen, _ = await run_ticks(ticks)
    gc.unfreeze()
    ev = engine.last
    assert ev is not None
    await store.close()
    stats = {
        "scenario": name,
        "slos": len(slos),
        "sources": engine.source_count,
        "results": written,
        "minute_rows": len(minutes) * len(series),
        "store_mb": size_mb,
        "load_s": load_s,
        "store_read_s": store_read_s,
        "frozen_p50_ms": statistics.median(frozen) * 1e3,
        "frozen_p95_ms": frozen[int(0.95 * (len(frozen) - 1))] * 1e3,
        "tick_p50_ms": statistics.median(durations) * 1e3,
        "tick_p95_ms": durations[int(0.95 * (len(durations) - 1))] * 1e3,
        "tick_max_ms": durations[-1] * 1e3,
        "store_read_p50_ms": statistics.median(reads) * 1e3,
        "statuses": len(ev.statuses),
    }
    log(f"[{name}] tick p50 {stats['tick_p50_ms']:.1f} ms, p95 {stats['tick_p95_ms']:.1f} ms, "
        f"max {stats['tick_max_ms']:.1f} ms (3-minute store read: {stats['store_read_p50_ms']:.1f} ms); "
        f"after gc.freeze(): p50 {stats['frozen_p50_ms']:.1f} ms, p95 {stats['frozen_p95_ms']:.1f} ms")
    return stats


def engine_span_minutes(engine: SloEngine) -> int:
    return engine._span_minutes


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slos", type=int, default=1000)
    ap.add_argument("--probes", type=int, default=10, help="probes (odd ones have two cohorts: 15 series)")
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--ticks", type=int, default=120)
    ap.add_argument("--quick", action="store_true", help="200 SLOs, 3 days, 40 ticks")
    ap.add_argument("--only", choices=["dense", "events"], help="run one part only")
    args = ap.parse_args()
    if args.quick:
        args.slos, args.days, args.ticks = 200, 3.0, 40

    def log(msg: str) -> None:
        print(msg, flush=True)

    cpu = platform.processor() or platform.machine()
    log(f"python {platform.python_version()}, {os.cpu_count()} CPUs ({cpu}), "
        f"{args.slos} SLOs over {args.probes} probes, {args.days:g}-day data")
    slos = make_slos(args.slos, args.probes)
    end_minute = int(START // 60)
    span = int(args.days * 1440)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="slo-bench-") as tmp:
        work = Path(tmp)
        if args.only in (None, "dense"):
            dense = list(range(end_minute - span, end_minute))
            rows.append(await scenario("dense", slos, args.probes, dense, 1, args.ticks, work, log))
        if args.only in (None, "events"):
            sparse = list(range(end_minute - span, end_minute, 43))
            n_series = len(series_of(args.probes))
            per_minute_small = max(1, round(10_000 / (len(sparse) * n_series)))
            for name, per_minute in (("1e4", per_minute_small), ("1e6", per_minute_small * 100)):
                row = await scenario(name, slos, args.probes, sparse, per_minute, args.ticks, work, log)
                rows.append(row)
    print()
    print("| scenario | SLOs | SLI sources | results recorded | minute rows | store MB in use "
          "| startup load s (store reads) | tick p50 ms | tick p95 ms | tick max ms "
          "| p50 / p95 ms after gc.freeze() |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['slos']} | {r['sources']} | {r['results']:,} | {r['minute_rows']:,} "
              f"| {r['store_mb']:.1f} | {r['load_s']:.1f} ({r['store_read_s']:.1f}) | {r['tick_p50_ms']:.1f} "
              f"| {r['tick_p95_ms']:.1f} | {r['tick_max_ms']:.1f} "
              f"| {r['frozen_p50_ms']:.1f} / {r['frozen_p95_ms']:.1f} |")
    print(f"\npeak RSS {rss_mb():.0f} MB")


if __name__ == "__main__":
    asyncio.run(main())
