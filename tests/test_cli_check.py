"""`watchdog check` against the reference service: ok, degraded and failed, with the exit codes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from watchdog.core.results import ProbeResult
from watchdog.demo import ReferenceServer

PROBES = """\
probes:
  - name: health
    kind: http
    url: ${TARGET_BASE_URL}/api/health
    expect:
      status: [200]
      json:
        - {path: status, in: [healthy, degraded]}
    degraded_when:
      json:
        - {path: status, equals: degraded}
  - name: content-db
    kind: http
    url: ${TARGET_BASE_URL}/api/pbl/scenarios?lang=zhTW&source=unified
    labels: {cohort: db}
  - name: content-yaml
    kind: http
    url: ${TARGET_BASE_URL}/api/pbl/scenarios?lang=zhTW&source=yaml
    labels: {cohort: yaml}
"""


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    server = ReferenceServer(sqlite_path=tmp_path / "content.db", rate_limits=False, slow_db_ms=100.0)
    url = await server.start()
    config = tmp_path / "cfg"
    (config / "probes").mkdir(parents=True)
    (config / "probes" / "p.yaml").write_text(PROBES)
    try:
        yield url, config
    finally:
        await server.stop()


async def _check(config: Path, url: str) -> tuple[int, list[dict[str, object]]]:
    # A subprocess that does not block this loop: the reference service runs in it.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watchdog.cli.main",
        "check",
        "--config",
        str(config),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"TARGET_BASE_URL": url, "PATH": "/usr/bin:/bin"},
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode in (0, 1), stderr.decode()
    shown = json.loads(stdout)
    for item in shown:  # the one result shape, read back losslessly
        assert ProbeResult.from_dict(item).to_dict() == item
    return proc.returncode, shown


async def _faults(url: str, **faults: object) -> None:
    async with httpx.AsyncClient(base_url=url) as client:
        (await client.delete("/_faults")).raise_for_status()
        if faults:
            (await client.post("/_faults", json=faults)).raise_for_status()


async def test_all_ok_exits_zero(service: tuple[str, Path]) -> None:
    url, config = service
    code, results = await _check(config, url)
    assert code == 0
    assert {r["probe"]: r["outcome"] for r in results} == {
        "health": "ok",
        "content-db": "ok",
        "content-yaml": "ok",
    }


async def test_slow_database_is_degraded_not_failed(service: tuple[str, Path]) -> None:
    url, config = service
    await _faults(url, db_latency_ms=250)
    code, results = await _check(config, url)
    by_probe = {r["probe"]: r for r in results}
    assert code == 0, "degraded is not a failure"
    assert by_probe["health"]["outcome"] == "degraded"
    assert "degraded" in str(by_probe["health"]["reason"])


async def test_broken_database_path_fails_only_the_db_cohort(service: tuple[str, Path]) -> None:
    url, config = service
    await _faults(url, db_error_rate=1.0)
    code, results = await _check(config, url)
    by_probe = {r["probe"]: r for r in results}
    assert code == 1
    assert by_probe["content-db"]["outcome"] == "failed"
    assert "status 500" in str(by_probe["content-db"]["reason"])
    assert by_probe["content-yaml"]["outcome"] == "ok"


async def test_database_down_fails_health_with_the_reason(service: tuple[str, Path]) -> None:
    url, config = service
    await _faults(url, db_down=True)
    code, results = await _check(config, url)
    health = next(r for r in results if r["probe"] == "health")
    assert code == 1
    assert health["outcome"] == "failed"
    assert "503" in str(health["reason"])


def test_table_output_and_unknown_probe(tmp_path: Path) -> None:
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "p.yaml").write_text(
        "probes:\n  - name: nowhere\n    kind: http\n    url: http://127.0.0.1:9/\n    timeout: 1s\n"
    )
    table = subprocess.run(
        [sys.executable, "-m", "watchdog.cli.main", "check", "--config", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 1
    assert "nowhere" in table.stdout and "failed" in table.stdout
    unknown = subprocess.run(
        [sys.executable, "-m", "watchdog.cli.main", "check", "--config", str(tmp_path), "--probe", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2
    assert "unknown probe(s): nope" in unknown.stderr
