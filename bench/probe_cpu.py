"""CPU per HTTP probe, watchdog (probe + recording to SQLite) vs prometheus-blackbox-exporter.

Target: CPU per probe *including recording to the store* <= 0.5x blackbox_exporter's, both against the same
loopback target in one run.

What runs (all loopback; everything started here is stopped by pid at the end):

* ONE target process (``bench/_loopback.py``, a minimal aiohttp app; ``--target demo`` uses the reference
  service instead). Its CPU is not measured.
* ``prometheus-blackbox-exporter`` on a free port with a ``http_2xx`` module (config in a temp dir), driven
  via ``GET /probe?module=http_2xx&target=<url>``; each answer is checked for ``probe_success 1``. Its CPU
  is utime+stime of its pid from ``/proc/<pid>/stat`` (all threads), divided by the number of probes.
* watchdog's ``HttpProbe`` (built from an ``HttpProbeConfig`` by the daemon's ``ProbeBuilder``, so the probes
  share one pooled client as in the daemon; transport ``auto`` = aiohttp, and ``httpx``'s default transport
  with a client per probe for comparison), every result added to a ``ResultBuffer`` over a real
  ``SqliteStore`` in a temp dir with the daemon's ``ProbeMetrics.on_recorded`` hook. Its CPU is
  ``time.process_time()`` (all threads of this process: the event loop *and* the SQLite worker thread),
  flushes included, divided by the number of probes.

Modes (every measurement is preceded by a warm-up):

* ``sequential``: one probe at a time, back to back; flush every ``--batch`` results (default 50: what one
  1 s ``flush_interval`` holds at 500 probes / 10 s).
* ``concurrent``: ``--concurrency`` in flight (watchdog: that many probes; blackbox: that many concurrent
  ``/probe`` requests); flush every ``--batch`` results.
* ``paced``: the daemon's shape. ``--paced-rate`` probes per second started on a fixed schedule, round-robin
  over ``--paced-probes`` distinct probe instances (their objects as cold in the caches as in the daemon),
  flushed by a 1 s timer, each start placed on the daemon's 100 ms start grid
  (``watchdog.runtime.daemon.START_GRID_S``) as its scheduler places them; blackbox gets ``/probe`` requests
  at the same rate, each at its own moment, as Prometheus spreads its scrapes. This mode includes the
  driver's scheduling work on the watchdog side (as the daemon's scheduler would be), so it is the
  conservative number.

Rounds alternate the order of the probers so drift hits all alike; the table shows median and min.

Run::

    .venv/bin/python bench/probe_cpu.py                 # n=2000 (paced: 1000 at 50/s), 3 rounds, ~4 min
    .venv/bin/python bench/probe_cpu.py --n 5000 --rounds 5 --modes sequential,concurrent --target demo
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _loopback import cpu_seconds, free_port, start_target, stop_process, wait_for_port

if TYPE_CHECKING:
    from watchdog.probes.http import HttpProbe

BLACKBOX_YML = """\
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
      valid_status_codes: []   # 2xx
"""

PROBERS = ("blackbox", "watchdog-aiohttp", "watchdog-httpx")


@dataclass(frozen=True)
class Mode:
    kind: str  # sequential | concurrent | paced
    n: int
    warmup: int
    concurrency: int = 1
    rate: float = 0.0
    probes: int = 1

    @property
    def label(self) -> str:
        if self.kind == "concurrent":
            return f"concurrent-{self.concurrency}"
        if self.kind == "paced":
            return f"paced-{self.rate:g}/s"
        return self.kind


@dataclass
class Sample:
    cpu_ms: float
    store_ms: float | None = None


@dataclass
class Series:
    values: dict[str, list[Sample]] = field(default_factory=dict)

    def add(self, mode: str, sample: Sample) -> None:
        self.values.setdefault(mode, []).append(sample)


async def _back_to_back(n: int, concurrency: int, call: Callable[[], Awaitable[None]]) -> None:
    remaining = n

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    await asyncio.gather(*(worker() for _ in range(max(concurrency, 1))))


async def _paced(
    n: int, rate: float, call: Callable[[int], Coroutine[Any, Any, None]], grid_s: float = 0.0
) -> None:
    """Start call(i) at t0 + i / rate as its own task (like a scheduler), then wait for all. With ``grid_s``
    each start is rounded up to that grid, as the daemon's scheduler places probe starts."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    t0 = loop.time()
    for i in range(n):
        due = i / rate if grid_s <= 0 else math.ceil(i / rate / grid_s) * grid_s
        delay = t0 + due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(call(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*tasks)


# --- blackbox_exporter ----------------------------------------------------------------------------------


def blackbox_binary() -> str:
    for name in ("prometheus-blackbox-exporter", "blackbox_exporter"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("prometheus-blackbox-exporter not found (apt-get install prometheus-blackbox-exporter)")


def blackbox_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0] if first else "unknown"


def start_blackbox(binary: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    config = workdir / "blackbox.yml"
    config.write_text(BLACKBOX_YML)
    port = free_port()
    with (workdir / "blackbox.log").open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc, port


async def measure_blackbox(pid: int, port: int, target: str, mode: Mode) -> Sample:
    import aiohttp

    url = f"http://127.0.0.1:{port}/probe?" + urllib.parse.urlencode(
        {"module": "http_2xx", "target": target}
    )
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def probe(_: int = 0) -> None:
            async with session.get(url) as response:
                body = await response.read()
            if response.status != 200 or b"\nprobe_success 1\n" not in body:
                raise RuntimeError(f"blackbox probe failed: HTTP {response.status}\n{body.decode()[:2000]}")

        await _back_to_back(mode.warmup, mode.concurrency, probe)
        before = cpu_seconds(pid)
        if mode.kind == "paced":
            await _paced(mode.n, mode.rate, probe)
        else:
            await _back_to_back(mode.n, mode.concurrency, probe)
        after = cpu_seconds(pid)
    return Sample((after - before) * 1000.0 / mode.n)


# --- watchdog -------------------------------------------------------------------------------------------


async def measure_watchdog(transport: str, target: str, workdir: Path, mode: Mode, batch: int) -> Sample:
    from watchdog.config.probes import HttpProbeConfig
    from watchdog.config.settings import ProbeDefaults
    from watchdog.core.clock import SystemClock
    from watchdog.probes._client import make_client
    from watchdog.probes.http import HttpProbe, keepalive_for
    from watchdog.probes.registry import ProbeBuilder
    from watchdog.runtime.buffer import ResultBuffer
    from watchdog.runtime.daemon import START_GRID_S
    from watchdog.store.sqlite import SqliteStore
    from watchdog.web.metrics import build_registry

    clock = SystemClock()
    defaults = ProbeDefaults()
    probes: list[HttpProbe] = []
    owned_clients = []
    interval = mode.probes / mode.rate if mode.kind == "paced" else 10.0
    configs = [
        HttpProbeConfig.model_validate(
            {"kind": "http", "name": f"bench-{i}", "url": target, "interval": interval, "timeout": 5.0}
        )
        for i in range(mode.probes if mode.kind == "paced" else mode.concurrency)
    ]
    # The daemon's shape: probes built by the daemon's ProbeBuilder share one pooled client per TLS mode.
    builder = ProbeBuilder(defaults=defaults, clock=clock)
    if transport == "auto":
        probes.extend(p for p in builder.build_all(configs) if isinstance(p, HttpProbe))
    else:  # httpx's own transport, for comparison: each probe gets an injected client the bench owns
        for config in configs:
            client = make_client(
                5.0, transport="httpx", keepalive_s=keepalive_for(interval), max_connections=4
            )
            owned_clients.append(client)
            probes.append(HttpProbe(config, defaults=defaults, clock=clock, client=client))

    store = SqliteStore(workdir / f"state-{transport}-{mode.kind}-{time.monotonic_ns()}.db")
    await store.open()
    _registry, metrics, _snapshot = build_registry()
    buffer = ResultBuffer(store, on_recorded=metrics.on_recorded)
    flush_cpu = 0.0
    failures: list[str] = []

    async def flush() -> None:
        nonlocal flush_cpu
        t0 = time.process_time()
        await buffer.flush()
        flush_cpu += time.process_time() - t0

    async def run_one(probe: HttpProbe) -> None:
        results = await probe.run()
        failures.extend(r.reason for r in results if not r.ok)
        buffer.add(results)

    async def back_to_back(total: int) -> None:
        remaining = total

        async def worker(probe: HttpProbe) -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await run_one(probe)
                if buffer.pending >= batch:
                    await flush()

        await asyncio.gather(*(worker(p) for p in probes))
        await flush()

    async def paced(total: int) -> None:
        async def flusher() -> None:
            while True:  # the daemon's flush job: every flush_interval (1 s)
                await asyncio.sleep(1.0)
                await buffer.flush()

        flushing = asyncio.create_task(flusher())
        try:
            await _paced(
                total, mode.rate, lambda i: run_one(probes[i % len(probes)]), grid_s=START_GRID_S
            )
        finally:
            flushing.cancel()
        await buffer.flush()

    try:
        if mode.kind == "paced":
            # Every probe once (connections open, as in a daemon past its first interval), then the warm-up.
            await asyncio.gather(*(run_one(p) for p in probes))
            await back_to_back(mode.warmup)
        else:
            await back_to_back(mode.warmup)
        flush_cpu = 0.0
        start = time.process_time()
        await (paced(mode.n) if mode.kind == "paced" else back_to_back(mode.n))
        cpu = time.process_time() - start
        if failures:
            raise RuntimeError(f"{len(failures)} watchdog probe runs failed, e.g. {failures[0]}")
        if buffer.pending:
            raise RuntimeError(f"{buffer.pending} results were not written")
    finally:
        for probe in probes:
            await probe.aclose()
        await builder.aclose()
        for client in owned_clients:
            await client.aclose()
        await store.close()
    # Only sequentially is the time spent inside flush() the store's alone.
    return Sample(cpu * 1000.0 / mode.n, flush_cpu * 1000.0 / mode.n if mode.kind == "sequential" else None)


# --- main -----------------------------------------------------------------------------------------------


def modes_from(args: argparse.Namespace) -> list[Mode]:
    wanted = args.modes.split(",")
    unknown = set(wanted) - {"sequential", "concurrent", "paced"}
    if unknown:
        raise SystemExit(f"unknown mode(s) {sorted(unknown)}")
    modes = []
    if "sequential" in wanted:
        modes.append(Mode("sequential", args.n, args.warmup))
    if "concurrent" in wanted:
        modes.append(Mode("concurrent", args.n, args.warmup, concurrency=args.concurrency))
    if "paced" in wanted:
        modes.append(
            Mode(
                "paced",
                args.paced_n,
                args.warmup,
                concurrency=8,
                rate=args.paced_rate,
                probes=args.paced_probes,
            )
        )
    return modes


async def run(args: argparse.Namespace) -> None:
    binary = blackbox_binary()
    version = blackbox_version(binary)
    probers: list[str] = args.probers.split(",")
    if set(probers) - set(PROBERS):
        raise SystemExit(f"unknown prober(s) {sorted(set(probers) - set(PROBERS))}; known: {PROBERS}")
    modes = modes_from(args)
    workdir = Path(tempfile.mkdtemp(prefix="probe-cpu-"))
    target_proc, target_url = start_target(args.target)
    blackbox_proc: subprocess.Popen[bytes] | None = None
    series: dict[str, Series] = {p: Series() for p in probers}
    started = time.monotonic()
    try:
        blackbox_port = 0
        if "blackbox" in probers:
            blackbox_proc, blackbox_port = start_blackbox(binary, workdir)
        for round_no in range(args.rounds):
            order = probers if round_no % 2 == 0 else list(reversed(probers))
            for prober in order:
                for mode in modes:
                    if prober == "blackbox":
                        assert blackbox_proc is not None
                        sample = await measure_blackbox(blackbox_proc.pid, blackbox_port, target_url, mode)
                    else:
                        transport = "auto" if prober == "watchdog-aiohttp" else "httpx"
                        sample = await measure_watchdog(transport, target_url, workdir, mode, args.batch)
                    series[prober].add(mode.label, sample)
                    print(
                        f"  round {round_no + 1} {prober:<17} {mode.label:<14} {sample.cpu_ms:7.3f} ms/probe",
                        flush=True,
                    )
    finally:
        if blackbox_proc is not None:
            stop_process(blackbox_proc)
        stop_process(target_proc)
        shutil.rmtree(workdir, ignore_errors=True)

    import httpx

    print()
    print(
        f"CPU ms per probe; n={args.n} (paced: {args.paced_n} at {args.paced_rate:g}/s over "
        f"{args.paced_probes} probes), rounds={args.rounds}, warm-up={args.warmup}, "
        f"store batch={args.batch}, target={args.target}, took {time.monotonic() - started:.0f} s"
    )
    print(f"nproc {os.cpu_count()}, python {sys.version.split()[0]}, httpx {httpx.__version__}, {version}")
    print(f"{'prober':<18} {'mode':<14} {'median':>8} {'min':>8} {'store':>8}  all rounds")
    medians: dict[tuple[str, str], float] = {}
    for prober, s in series.items():
        for mode_label, samples in s.values.items():
            values = [x.cpu_ms for x in samples]
            med = statistics.median(values)
            medians[(prober, mode_label)] = med
            stores = [x.store_ms for x in samples if x.store_ms is not None]
            store = f"{statistics.median(stores):8.3f}" if stores else f"{'':>8}"
            print(
                f"{prober:<18} {mode_label:<14} {med:8.3f} {min(values):8.3f} {store}  "
                + " ".join(f"{v:.3f}" for v in values)
            )
    print("(store = CPU inside ResultBuffer.flush per probe, part of the total; sequential mode only)")
    print()
    for mode in modes:
        base = medians.get(("blackbox", mode.label))
        if base is None:
            continue
        for prober in (p for p in probers if p != "blackbox"):
            ratio = medians[(prober, mode.label)] / base
            verdict = "meets" if ratio <= 0.5 else "misses"
            print(f"ratio {prober}/blackbox {mode.label:<14} {ratio:5.2f}x  ({verdict} the <= 0.5x target)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2000, help="probes per sequential/concurrent measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=200, help="probes before each measurement")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=50, help="results per store flush (one transaction)")
    parser.add_argument("--paced-n", type=int, default=1000, help="probes per paced measurement")
    parser.add_argument("--paced-rate", type=float, default=50.0, help="probes per second when paced")
    parser.add_argument("--paced-probes", type=int, default=500, help="distinct probe instances when paced")
    parser.add_argument("--modes", default="sequential,concurrent,paced")
    parser.add_argument("--probers", default=",".join(PROBERS), help=f"subset of {', '.join(PROBERS)}")
    parser.add_argument("--target", choices=["aiohttp", "demo"], default="aiohttp")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
