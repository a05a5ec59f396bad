"""A real Prometheus (Debian package `prometheus`) scrapes the daemon's /metrics over loopback."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from pathlib import Path

import httpx

from watchdog.config.loader import WatchdogConfig
from watchdog.config.settings import ProbeDefaults, Settings
from watchdog.core.clock import SystemClock
from watchdog.core.results import Outcome
from watchdog.probes.fake import FakeProbe
from watchdog.runtime.daemon import Daemon
from watchdog.runtime.wiring import wire
from watchdog.store import SqliteStore
from watchdog.web.app import create_app
from watchdog.web.server import HttpServer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_prometheus_scrapes_and_queries_probe_series(tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus (Debian package) is required; .ci/run installs it"
    clock = SystemClock()
    settings = Settings(flush_interval=0.2, defaults=ProbeDefaults(interval=0.3, jitter=0))
    probes = [
        FakeProbe("content-db", [Outcome.FAILED], clock=clock, interval_s=0.3, labels={"cohort": "db"}),
        FakeProbe("content-yaml", [Outcome.OK], clock=clock, interval_s=0.3, labels={"cohort": "yaml"}),
    ]
    daemon = Daemon(
        wire(
            WatchdogConfig(root=tmp_path, settings=settings),
            store=SqliteStore(tmp_path / "s.db"),
            clock=clock,
            probes=probes,
        )
    )
    await daemon.start()
    server = HttpServer(create_app(daemon), "127.0.0.1:0")
    target = (await server.start()).removeprefix("http://")
    prom_port = _free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: watchdog\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    prom = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={tmp_path / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        found: dict[str, float] = {}
        up = None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{prom_port}", timeout=2) as client:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and (len(found) < 2 or up != 1.0):
                await asyncio.sleep(0.5)
                try:
                    data = (
                        await client.get("/api/v1/query", params={"query": "watchdog_probe_success"})
                    ).json()
                    up_data = (
                        await client.get("/api/v1/query", params={"query": 'up{job="watchdog"}'})
                    ).json()
                except httpx.TransportError:
                    continue
                found = {r["metric"]["cohort"]: float(r["value"][1]) for r in data["data"]["result"]}
                if up_data["data"]["result"]:
                    up = float(up_data["data"]["result"][0]["value"][1])
            targets = (await client.get("/api/v1/targets")).json()["data"]["activeTargets"]
    finally:
        prom.terminate()
        await asyncio.wait_for(prom.wait(), timeout=15)
        await server.stop()
        await daemon.stop()
    assert up == 1.0, targets
    assert found == {"db": 0.0, "yaml": 1.0}
    assert targets[0]["health"] == "up" and targets[0]["lastError"] == ""
