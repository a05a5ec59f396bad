"""CPU cost per HTTP request: httpx's default transport (httpcore) vs ``httpx_aiohttp.AiohttpTransport``.

Reproducible: starts a small aiohttp web server in a *subprocess* on loopback (so its CPU is not counted),
then, in this process, measures ``time.process_time`` per request for each transport:

* sequential GETs on one reused client (how a probe runs),
* concurrent GETs (``--concurrency`` in flight on one client),
* a full ``HttpProbe.run()`` (request + status/JSON assertions + result), the number that counts against
  the "probe + store record" CPU budget.

Run::

    .venv/bin/python bench/http_transport.py            # defaults: 2000 requests, 3 rounds
    .venv/bin/python bench/http_transport.py -n 5000 --rounds 5 --concurrency 20

Rounds alternate between transports so drift (CPU frequency, noisy neighbours) hits both alike; the report
gives min / median over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

if TYPE_CHECKING:
    from watchdog.probes._client import Transport

_BODY = (
    b'{"status":"healthy","timestamp":"2026-01-01T00:00:00Z","version":"1.0.0","environment":"bench",'
    b'"checks":{"database":{"status":true,"responseTime":3},"redis":{"status":true},'
    b'"memory":{"status":true,"used":100,"limit":512,"percentage":19.5}},"uptime":1234}'
)


def serve(port: int) -> None:
    """The server half (runs in the subprocess)."""
    from aiohttp import web

    async def health(_: web.Request) -> web.Response:
        return web.Response(body=_BODY, content_type="application/json", headers={"X-Cache": "HIT"})

    app = web.Application()
    app.router.add_get("/api/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"bench server did not start on port {port}")


async def _cpu_ms_per_call(n: int, call: Callable[[], Awaitable[object]], concurrency: int = 1) -> float:
    for _ in range(50):  # warm-up: connections, caches
        await call()
    start = time.process_time()
    if concurrency == 1:
        for _ in range(n):
            await call()
    else:
        remaining = n

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await call()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - start) * 1000.0 / n


async def _measure(transport: Transport, url: str, n: int, concurrency: int) -> dict[str, float]:
    from watchdog.config.probes import HttpProbeConfig
    from watchdog.config.settings import ProbeDefaults
    from watchdog.core.clock import SystemClock
    from watchdog.probes._client import make_client
    from watchdog.probes.http import HttpProbe

    out: dict[str, float] = {}
    async with make_client(10.0, transport=transport) as client:

        async def get() -> None:
            response = await client.get(url)
            response.raise_for_status()

        out["sequential"] = await _cpu_ms_per_call(n, get)
        out["concurrent"] = await _cpu_ms_per_call(n, get, concurrency)

    config = HttpProbeConfig.model_validate(
        {
            "kind": "http",
            "name": "bench",
            "url": url,
            "expect": {
                "status": [200],
                "json": [
                    {"path": "status", "in": ["healthy", "degraded"]},
                    {"path": "checks.database.status", "equals": True},
                ],
                "headers": {"X-Cache": "HIT|MISS"},
            },
            "degraded_when": {"latency_over": "500ms", "json": [{"path": "status", "equals": "degraded"}]},
        }
    )
    probe_client = make_client(10.0, transport=transport)
    probe = HttpProbe(config, defaults=ProbeDefaults(), clock=SystemClock(), client=probe_client)

    async def run_probe() -> None:
        (result,) = await probe.run()
        if not result.ok:
            raise RuntimeError(f"probe failed: {result.reason}")

    out["probe.run"] = await _cpu_ms_per_call(n, run_probe)
    await probe.aclose()
    await probe_client.aclose()  # an injected client belongs to the caller
    return out


async def main_async(url: str, n: int, rounds: int, concurrency: int, transports: list[Transport]) -> None:
    samples: dict[Transport, dict[str, list[float]]] = {t: {} for t in transports}
    for round_no in range(rounds):
        for transport in transports if round_no % 2 == 0 else list(reversed(transports)):
            for key, value in (await _measure(transport, url, n, concurrency)).items():
                samples[transport].setdefault(key, []).append(value)
    print(
        f"CPU ms per request (process_time), n={n}, rounds={rounds}, concurrency={concurrency}, "
        f"python {sys.version.split()[0]}, httpx {httpx.__version__}"
    )
    print(f"{'transport':<10} {'mode':<12} {'min':>8} {'median':>8}  all")
    for transport, modes in samples.items():
        for mode, values in modes.items():
            print(
                f"{transport:<10} {mode:<12} {min(values):8.3f} {statistics.median(values):8.3f}  "
                + " ".join(f"{v:.3f}" for v in values)
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=2000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--transports", default="httpx,aiohttp", help="comma-separated: httpx, aiohttp")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = _free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        _wait_for(port)
        url = f"http://127.0.0.1:{port}/api/health"
        transports = [cast("Transport", t) for t in args.transports.split(",")]
        asyncio.run(main_async(url, args.n, args.rounds, args.concurrency, transports))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
