"""The real daemon at scale: N http probes at one interval in one ``watchdog run`` process.

Targets: 500 probes at 10 s intervals in one daemon: scheduler lag p99 < 100 ms, RSS < 80 MB.

What runs (loopback only; everything started here is stopped by pid):

* a loopback target process (``bench/_loopback.py``; ``--target demo`` for the reference service),
* ``python -m watchdog.cli.main run --config TMP --listen 127.0.0.1:PORT --state TMP/state.db`` with
  ``--probes`` http probes (default 500) at ``--interval`` (default 10 s), default phase spread and
  settings
  otherwise (SQLite store, flush every 1 s, INFO JSON logs to a file),
* a Prometheus-like scraper that GETs ``/metrics`` every ``--scrape-interval`` seconds (default 15, like a
  Prometheus job; its render cost is part of the daemon's load and can delay probe starts).

After a warm-up of one interval plus a margin (every probe has run at least once), the measured period
(``--duration``, default 90 s) reads, from outside the daemon:

* RSS: ``VmRSS`` sampled every second from /proc/<pid>/status (steady = median, and max) and ``VmHWM``
  (the kernel's peak over the whole life of the process, startup included),
* CPU: utime+stime of the daemon from /proc/<pid>/stat over the period (% of one core, and ms per run),
* scheduler lag: the delta of the daemon's ``watchdog_scheduler_lag_seconds`` histogram over the period
  (delay from a run's scheduled time to the moment the probe coroutine starts),
  quantiles interpolated within buckets as ``histogram_quantile`` does,
* honesty checks: the delta of ``watchdog_probe_results_total`` per probe (every probe must have produced
  about duration/interval results, all ok), runs skipped, results dropped, error lines in the log.

Run::

    .venv/bin/python bench/daemon_scale.py                              # 500 probes, 10 s, 90 s measured
    .venv/bin/python bench/daemon_scale.py --probes 500 --duration 90 --runs 3
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loopback import (
    cpu_seconds,
    free_port,
    proc_status_kb,
    start_target,
    stop_process,
    wait_for_port,
)

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    at: float
    samples: dict[tuple[str, Labels], float]
    render_s: float
    size: int


@dataclass
class RunResult:
    probes: int
    interval_s: float
    duration_s: float
    startup_s: float
    rss_after_start_mb: float
    rss_steady_mb: float
    rss_trend_mb: tuple[float, float]
    """Median RSS over the first and the last tenth of the measured period (growth shows here)."""
    rss_max_mb: float
    hwm_mb: float
    rss_anon_mb: float
    rss_file_mb: float
    cpu_pct: float
    cpu_ms_per_run: float
    runs: int
    lag: dict[str, float] = field(default_factory=dict)
    lag_count: int = 0
    lag_over_100ms: int = 0
    scrape_ms: list[float] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def write_config(root: Path, probes: int, interval_s: float, url: str) -> None:
    (root / "probes").mkdir(parents=True)
    (root / "watchdog.yaml").write_text(f"defaults:\n  interval: {interval_s:g}s\nlog_level: INFO\n")
    lines = ["probes:"]
    for i in range(probes):
        lines += [
            f"  - name: bench-{i:04d}",
            "    kind: http",
            f"    url: {url}",
            "    expect:",
            "      status: [200]",
        ]
    (root / "probes" / "bench.yaml").write_text("\n".join(lines) + "\n")


def http_get(url: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def scrape(base: str) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    t0 = time.monotonic()
    status, body = http_get(base + "/metrics")
    render_s = time.monotonic() - t0
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    samples: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return Scrape(time.time(), samples, render_s, len(body))


def histogram_delta(before: Scrape, after: Scrape, name: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of a label-less histogram over the interval, ascending."""
    out: list[tuple[float, float]] = []
    for (sample, labels), value in after.samples.items():
        if sample != f"{name}_bucket":
            continue
        le = dict(labels)["le"]
        bound = math.inf if le == "+Inf" else float(le)
        out.append((bound, value - before.samples.get((sample, labels), 0.0)))
    return sorted(out)


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding the rank."""
    total = buckets[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is all we know
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return buckets[-1][0]


def per_probe(before: Scrape, after: Scrape, metric: str) -> dict[tuple[str, str], float]:
    """(probe, outcome) → delta of a per-probe counter."""
    out: dict[tuple[str, str], float] = defaultdict(float)
    for (sample, labels), value in after.samples.items():
        if sample != metric:
            continue
        d = dict(labels)
        out[(d.get("probe", ""), d.get("outcome", ""))] += value - before.samples.get((sample, labels), 0.0)
    return out


def one_run(args: argparse.Namespace, run_no: int) -> RunResult:
    workdir = Path(tempfile.mkdtemp(prefix="daemon-scale-"))
    target_proc, url = start_target(args.target)
    daemon: subprocess.Popen[bytes] | None = None
    try:
        config = workdir / "config"
        write_config(config, args.probes, args.interval, url)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = workdir / "daemon.log"
        with log_path.open("wb") as log:
            started = time.monotonic()
            daemon = subprocess.Popen(
                [
                    *(sys.executable, "-m", "watchdog.cli.main", "run", "--config", str(config)),
                    *("--listen", f"127.0.0.1:{port}", "--state", str(workdir / "state.db")),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(port, daemon, deadline_s=60.0)
        while http_get(base + "/readyz")[0] != 200:
            if daemon.poll() is not None:
                raise RuntimeError(f"daemon exited with {daemon.returncode}; see {log_path}")
            time.sleep(0.05)
        startup_s = time.monotonic() - started
        rss_after_start = proc_status_kb(daemon.pid, "VmRSS")["VmRSS"] / 1024

        warmup = args.warmup if args.warmup is not None else args.interval + 2.0 + 3.0
        print(f"run {run_no}: daemon pid {daemon.pid} ready in {startup_s:.2f} s; warm-up {warmup:g} s")
        time.sleep(warmup)

        first = scrape(base)
        cpu0, t0 = cpu_seconds(daemon.pid), time.monotonic()
        rss: list[float] = []
        scrape_ms: list[float] = []
        next_scrape = t0 + args.scrape_interval if args.scrape_interval > 0 else math.inf
        end = t0 + args.duration
        while (now := time.monotonic()) < end:
            if daemon.poll() is not None:
                raise RuntimeError(f"daemon exited with {daemon.returncode} during the run; see {log_path}")
            rss.append(proc_status_kb(daemon.pid, "VmRSS")["VmRSS"] / 1024)
            if now >= next_scrape:
                scrape_ms.append(scrape(base).render_s * 1000)
                next_scrape += args.scrape_interval
            time.sleep(max(0.0, min(1.0, end - time.monotonic())))
        cpu1, t1 = cpu_seconds(daemon.pid), time.monotonic()
        last = scrape(base)
        scrape_ms.append(last.render_s * 1000)
        status = proc_status_kb(daemon.pid, "VmRSS", "VmHWM", "RssAnon", "RssFile")

        lag_buckets = histogram_delta(first, last, "watchdog_scheduler_lag_seconds")
        lag_count = lag_buckets[-1][1] if lag_buckets else 0.0
        under_100 = next((c for b, c in lag_buckets if b == 0.1), math.nan)
        results = per_probe(first, last, "watchdog_probe_results_total")
        by_probe: dict[str, float] = defaultdict(float)
        for (probe, _outcome), n in results.items():
            by_probe[probe] += n
        runs = int(sum(by_probe.values()))
        problems: list[str] = []
        # Each probe runs at a fixed phase, exactly once per interval.
        expected = max(1, math.floor((t1 - t0) / args.interval) - 1)
        short = sorted(p for p in (f"bench-{i:04d}" for i in range(args.probes)) if by_probe[p] < expected)
        if short:
            problems.append(f"{len(short)} probes produced fewer than {expected} results, e.g. {short[:5]}")
        expected_total = args.probes * (t1 - t0) / args.interval
        # Tolerance: each probe's first and last run in the window may fall either side of its edges.
        if abs(runs - expected_total) > args.probes + 0.05 * expected_total:
            problems.append(f"{runs} results, expected about {expected_total:.0f}")
        not_ok = {k: v for k, v in results.items() if k[1] != "ok" and v}
        if not_ok:
            problems.append(f"non-ok results: {sum(not_ok.values()):g}, e.g. {list(not_ok.items())[:3]}")
        skipped = sum(v for (n, _), v in last.samples.items() if n == "watchdog_probe_runs_skipped_total")
        if skipped:
            problems.append(f"{skipped:g} runs skipped (previous run still going)")
        dropped = last.samples.get(("watchdog_results_dropped_total", ()), 0.0)
        if dropped:
            problems.append(f"{dropped:g} results dropped")
        if lag_count and abs(lag_count - runs) > args.probes:
            problems.append(f"lag observations {lag_count:g} vs results {runs}: more than one interval apart")

        result = RunResult(
            probes=args.probes,
            interval_s=args.interval,
            duration_s=t1 - t0,
            startup_s=startup_s,
            rss_after_start_mb=rss_after_start,
            rss_steady_mb=statistics.median(rss),
            rss_trend_mb=(
                statistics.median(rss[: max(1, len(rss) // 10)]),
                statistics.median(rss[-max(1, len(rss) // 10) :]),
            ),
            rss_max_mb=max(max(rss), status["VmRSS"] / 1024),
            hwm_mb=status["VmHWM"] / 1024,
            rss_anon_mb=status["RssAnon"] / 1024,
            rss_file_mb=status["RssFile"] / 1024,
            cpu_pct=(cpu1 - cpu0) / (t1 - t0) * 100,
            cpu_ms_per_run=(cpu1 - cpu0) * 1000 / max(runs, 1),
            runs=runs,
            lag={
                "p50": quantile(lag_buckets, 0.5),
                "p90": quantile(lag_buckets, 0.9),
                "p99": quantile(lag_buckets, 0.99),
                "p99.9": quantile(lag_buckets, 0.999),
            }
            if lag_count
            else {},
            lag_count=int(lag_count),
            lag_over_100ms=int(lag_count - under_100) if not math.isnan(under_100) else -1,
            scrape_ms=scrape_ms,
            problems=problems,
        )
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            code: int | None
            try:
                code = daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=10)
                code = None
            if code != 0:
                print(f"daemon exited with {code} on SIGTERM", flush=True)
        stop_process(target_proc)
    errors = [
        line for line in (workdir / "daemon.log").read_text().splitlines() if '"severity": "ERROR"' in line
    ]
    if errors:
        result.problems.append(f"{len(errors)} ERROR lines in the daemon log, e.g. {errors[0][:300]}")
    if args.keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def fmt_ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.2f}"


def print_run(r: RunResult) -> None:
    lag = " ".join(f"{k}={fmt_ms(v)}" for k, v in r.lag.items())
    period = r.probes * r.duration_s / max(r.runs, 1)
    print(
        f"  probes={r.probes} interval={r.interval_s:g}s measured={r.duration_s:.0f}s runs={r.runs} "
        f"({r.runs / r.duration_s:.1f}/s, mean period per probe {period:.2f} s) startup={r.startup_s:.2f}s\n"
        f"  RSS MB: after start {r.rss_after_start_mb:.1f}, steady {r.rss_steady_mb:.1f} "
        f"(first/last tenth {r.rss_trend_mb[0]:.1f}/{r.rss_trend_mb[1]:.1f}), "
        f"max {r.rss_max_mb:.1f}, VmHWM {r.hwm_mb:.1f} (at the end: anon {r.rss_anon_mb:.1f} + file "
        f"{r.rss_file_mb:.1f})\n"
        f"  CPU: {r.cpu_pct:.1f} % of one core, {r.cpu_ms_per_run:.3f} ms per probe run (everything)\n"
        f"  scheduler lag ms ({r.lag_count} runs): {lag}; runs with lag > 100 ms: {r.lag_over_100ms}\n"
        f"  /metrics scrape ms: median {statistics.median(r.scrape_ms):.1f}, max {max(r.scrape_ms):.1f}"
    )
    for p in r.problems:
        print(f"  PROBLEM: {p}")
    if not r.problems:
        print("  checks: every probe produced its results, all ok; nothing skipped, dropped or logged")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--interval", type=float, default=10.0, help="probe interval, seconds")
    parser.add_argument("--duration", type=float, default=90.0, help="measured period, seconds (>= 60)")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (default: interval + 5)")
    parser.add_argument("--scrape-interval", type=float, default=15.0, help="GET /metrics this often; 0: off")
    parser.add_argument("--runs", type=int, default=1, help="repeat the whole run (fresh daemon) this often")
    parser.add_argument("--target", choices=["aiohttp", "demo"], default="aiohttp")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (config, log, state.db)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    results: list[RunResult] = []
    for run_no in range(1, args.runs + 1):
        r = one_run(args, run_no)
        print_run(r)
        results.append(r)
    if len(results) > 1:
        print(f"median over {len(results)} runs:")
        med = statistics.median
        print(
            f"  RSS steady {med(r.rss_steady_mb for r in results):.1f} MB, "
            f"VmHWM {med(r.hwm_mb for r in results):.1f} MB, CPU {med(r.cpu_pct for r in results):.1f} %, "
            f"{med(r.cpu_ms_per_run for r in results):.3f} ms/run, "
            f"lag p50 {fmt_ms(med(r.lag.get('p50', math.nan) for r in results))} ms, "
            f"p99 {fmt_ms(med(r.lag.get('p99', math.nan) for r in results))} ms"
        )
    worst_p99 = max(r.lag.get("p99", math.inf) for r in results)
    worst_rss = max(r.hwm_mb for r in results)
    print(
        f"targets: lag p99 < 100 ms: {'met' if worst_p99 < 0.1 else 'MISSED'} "
        f"(worst {fmt_ms(worst_p99)} ms); "
        f"RSS < 80 MB: {'met' if worst_rss < 80 else 'MISSED'} (worst VmHWM {worst_rss:.1f} MB)"
    )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))


if __name__ == "__main__":
    main()
