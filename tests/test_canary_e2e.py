"""The canary guard end to end, in real processes on loopback: the reference service at 5 % database,
reading its flag file through the OpenFeature flagd provider; `watchdog run` probing both cohorts with a
rollout on that file. The database path breaks: the watchdog flips the flag to YAML by itself, verifies it,
pages L1 with the evidence, and the service's own unpinned requests go back to YAML."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx

from watchdog.flags.flagd_file import read_db_percent, write_initial

RUNBOOKS = ("content-db-failing", "canary-rolled-back", "canary-rollback-failed", "canary-held")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(root: Path, service: str, flag_file: Path, listen: str) -> None:
    (root / "probes").mkdir(parents=True)
    (root / "alerts").mkdir()
    (root / "runbooks").mkdir()
    (root / "watchdog.yaml").write_text(
        f"state: {root / 'state.db'}\nlisten: {listen}\nevaluation_interval: 1s\ninstance: e2e\n"
        "defaults: {interval: 1s, timeout: 2s, jitter: 0s}\n"
    )
    (root / "probes" / "p.yaml").write_text(
        "probes:\n"
        f"  - {{name: content-db, kind: http, url: '{service}/api/pbl/scenarios',"
        " params: {lang: en, source: unified}, labels: {cohort: db}, interval: 0.5s}\n"
        f"  - {{name: content-yaml, kind: http, url: '{service}/api/pbl/scenarios',"
        " params: {lang: en, source: yaml}, labels: {cohort: yaml}, interval: 0.5s}\n"
    )
    (root / "alerts" / "a.yaml").write_text(
        "alerts:\n"
        "  - {name: content-db-failing, kind: probe, probe: content-db, for: 2s, min_failures: 3,"
        " severity: critical, group: database}\n"
        "escalation:\n  - name: default\n    levels:\n"
        "      - {level: L1, who: dev team, notify: [{type: log}], ack_within: 30m}\n"
        "      - {level: L3, who: CTO, notify: [{type: log}]}\n"
        "rollouts:\n"
        "  - name: content-db\n"
        f"    flag: {{backend: flagd_file, path: '{flag_file}'}}\n"
        "    canary: {probe: content-db, match: {cohort: db}}\n"
        "    baseline: {probe: content-yaml, match: {cohort: yaml}}\n"
        "    check_every: 0.5s\n"
    )
    for name in RUNBOOKS:
        (root / "runbooks" / f"{name}.md").write_text(f"# {name}\n")


async def _wait(what: str, check: object, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check() if callable(check) else check
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic()
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_broken_database_path_is_rolled_back_to_yaml_by_itself(tmp_path: Path) -> None:
    flag_file = tmp_path / "flags.json"
    write_initial(flag_file, 5.0)
    service_port, watchdog_port = _free_port(), _free_port()
    service = f"http://127.0.0.1:{service_port}"
    config = tmp_path / "config"
    _config(config, service, flag_file, f"127.0.0.1:{watchdog_port}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for key in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN"):
        env.pop(key, None)
    service_log = (tmp_path / "service.log").open("wb")
    watchdog_log = (tmp_path / "watchdog.log").open("wb")
    service_proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watchdog.demo",
        "--port",
        str(service_port),
        "--flag",
        str(flag_file),
        "--no-rate-limits",
        stdout=service_log,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    watchdog_proc = None
    try:
        async with httpx.AsyncClient(timeout=5) as client:

            async def service_up() -> bool:
                try:
                    return (await client.get(f"{service}/api/health")).status_code == 200
                except httpx.HTTPError:
                    return False

            await _wait("the reference service", service_up, 30)
            watchdog_proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "watchdog",
                "run",
                "--config",
                str(config),
                stdout=watchdog_log,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
            )

            def log_text() -> str:
                return (tmp_path / "watchdog.log").read_text(errors="replace")

            await _wait(
                "the guard watching the canary", lambda: "canary content-db: continue" in log_text(), 30
            )
            await asyncio.sleep(3)  # a few healthy canary results first
            assert read_db_percent(json.loads(flag_file.read_text())) == 5.0, log_text()[-3000:]

            onset = time.monotonic()
            faults = await client.post(f"{service}/_faults", json={"db_error_rate": 1.0})
            assert faults.status_code == 200
            flipped = await _wait(
                "the flag at 0 %", lambda: read_db_percent(json.loads(flag_file.read_text())) == 0.0, 30
            )
            onset_to_flip = flipped - onset
            assert onset_to_flip < 10, f"onset→flip {onset_to_flip:.1f} s"
            metadata = json.loads(flag_file.read_text())["flags"]["content-data-source"]["metadata"]
            assert metadata["updatedBy"] == "sre-watchdog" and "canary errors" in metadata["reason"]

            await _wait("the rollback page", lambda: "canary-rolled-back" in log_text(), 10)
            text = log_text()
            assert "Rolled back to YAML" in text and "verified by reading it back" in text

            # The service obeys: unpinned requests from many users are all served from YAML now.
            async def all_yaml() -> bool:
                sources = set()
                for user in range(40):
                    r = await client.get(
                        f"{service}/api/pbl/scenarios",
                        params={"lang": "en"},
                        headers={"X-Request-Id": f"user-{user}"},
                    )
                    sources.add(r.headers.get("X-Data-Source"))
                return sources == {"yaml"}

            await _wait("every request on YAML", all_yaml, 10)
            print(f"onset→flip: {onset_to_flip:.1f} s")
    finally:
        for proc in (watchdog_proc, service_proc):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
        service_log.close()
        watchdog_log.close()
