"""Does heavy /metrics scraping move the probes' measured latency? (issue 8)

The real daemon (``python -m watchdog run``) runs ``--probes`` HTTP probes every ``--interval`` seconds
against a loopback target (``bench/_loopback.py``, its own process). The run has two phases of
``--phase`` seconds:

* quiet: nothing but the probes,
* scraped: a separate loader process sends ``--rate`` GET /metrics per second on ``--connections``
  keep-alive connections, paced (not as fast as possible), and counts answers and errors.

Afterwards the probe results recorded in the daemon's SQLite store are split by phase and their recorded
latency is summarised (p50, p99, max). ``--source DIR`` runs the daemon from another checkout (e.g. a git
worktree of an older commit) to compare before and after on this machine in one sitting.

Run::

    .venv/bin/python bench/scrape_load.py                        # ~70 s
    git worktree add /tmp/before <commit> && .venv/bin/python bench/scrape_load.py --source /tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _loopback import free_port, start_target, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parent.parent


def _cli_module(source: Path) -> str:
    # The command moved from watchdog/cli.py to watchdog/cli/main.py in the restructure (issue 7).
    return "watchdog.cli.main" if (source / "watchdog" / "cli" / "main.py").exists() else "watchdog.cli"


def write_config(root: Path, probes: int, interval_s: float, url: str, listen: str) -> None:
    (root / "probes").mkdir(parents=True)
    lines = ["probes:"]
    for i in range(probes):
        lines += [f"  - name: p{i:03d}", "    kind: http", f"    url: {url}", f"    interval: {interval_s}s"]
    (root / "probes" / "load.yaml").write_text("\n".join(lines) + "\n")
    (root / "watchdog.yaml").write_text(f"state: {root / 'state.db'}\nlisten: {listen}\n")


async def load(port: int, rate: float, connections: int, duration_s: float) -> tuple[int, int, list[float]]:
    """Paced GET /metrics over keep-alive connections; returns (ok, errors, per-request seconds)."""
    request = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    ok = errors = 0
    times: list[float] = []
    queue: asyncio.Queue[float] = asyncio.Queue()

    async def worker() -> None:
        nonlocal ok, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                due = await queue.get()
                if due < 0:
                    return
                t0 = time.perf_counter()
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next(
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    await reader.readexactly(length)
                    ok += 1
                    times.append(time.perf_counter() - t0)
                except (OSError, asyncio.IncompleteReadError, StopIteration):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    start = time.perf_counter()
    n = int(rate * duration_s)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(time.perf_counter())
    for _ in workers:
        queue.put_nowait(-1.0)
    await asyncio.gather(*workers)
    return ok, errors, times


def latencies(db: Path, start: float, end: float) -> list[float]:
    # Read the store's own table directly: the --source checkout may be older than this script.
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "select result from raw_result where started_at >= ? and started_at < ?", (start, end)
        )
        return [json.loads(r[0])["latency_s"] for r in rows]


def summary(values: list[float]) -> str:
    if not values:
        return "no results"
    values = sorted(values)

    def p(q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))]

    return (
        f"n={len(values):5d}  p50 {p(0.5) * 1000:6.2f} ms  p99 {p(0.99) * 1000:7.2f} ms  "
        f"max {values[-1] * 1000:7.2f} ms  mean {statistics.fmean(values) * 1000:6.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--phase", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--rate", type=float, default=500.0, help="/metrics requests per second")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to run the daemon from")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="watchdog-scrape-") as tmp:
        root = Path(tmp)
        target, url = start_target("aiohttp")
        port = free_port()
        write_config(root, args.probes, args.interval, url, f"127.0.0.1:{port}")
        env = {**os.environ, "PYTHONPATH": str(args.source.resolve())}
        log = (root / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [sys.executable, "-m", _cli_module(args.source), "run", "--config", str(root)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
        try:
            wait_for_port(port, daemon)
            time.sleep(args.interval * 2 + 3)  # every probe has run and its connection is warm
            quiet_start = time.time()
            time.sleep(args.phase)
            quiet_end = scraped_start = time.time()
            ok, errors, times = asyncio.run(load(port, args.rate, args.connections, args.phase))
            scraped_end = time.time()
            time.sleep(args.interval + 2)  # the last results are flushed
        finally:
            stop_process(daemon)
            stop_process(target)
            log.close()
        db = root / "state.db"
        quiet = latencies(db, quiet_start, quiet_end)
        scraped = latencies(db, scraped_start, scraped_end)
        served = ok / max(1e-9, scraped_end - scraped_start)
        print(f"daemon from {args.source.resolve()}; {args.probes} probes every {args.interval:g} s")
        print(f"probe latency, quiet   : {summary(quiet)}")
        print(f"probe latency, scraped : {summary(scraped)}")
        print(
            f"/metrics: {ok} answered ({served:.0f}/s of {args.rate:g}/s asked), {errors} errors, "
            f"answer p50 {statistics.median(times) * 1000 if times else float('nan'):.2f} ms"
        )


if __name__ == "__main__":
    main()
