"""``watchdog slo report``: table, JSON and the burn-down plot from a SQLite state store."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_slo_config import write_config as write_seed_config  # tests/ is on sys.path (prepend mode)

from watchdog.cli.slo import slo
from watchdog.core.results import Observation, Outcome, ProbeResult
from watchdog.store.sqlite import SqliteStore


def _fill(path: Path, now: float) -> None:
    """Two hours of the seed's probes; api-health fails for the last 3 minutes (a page)."""

    async def go() -> None:
        store = SqliteStore(path)
        await store.open()
        batch = []
        for i in range(2 * 3600 // 15):
            t = now - 2 * 3600 + i * 15
            failing = t >= now - 180
            batch.append(ProbeResult("api-health", "http", "t", Outcome.FAILED if failing else Outcome.OK,
                                     0.35 if i % 9 == 0 else 0.08, t))
            batch.append(ProbeResult("liveness", "http", "t", Outcome.OK, 0.01, t))
            batch.append(ProbeResult("db", "postgres", "t", Outcome.OK, 0.01 if i % 30 else 0.09, t,
                                     labels={"check": "connectivity"}))
            batch.append(ProbeResult("db", "postgres", "t", Outcome.OK, 0.02, t, labels={"check": "host"},
                                     observations=(Observation("db_cpu_percent", 85.0 if i == 100 else 40.0),
                                                   Observation("db_memory_percent", 50.0))))
        await store.record(batch)
        await store.close()

    asyncio.run(go())


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    root = write_seed_config(tmp_path / "cfg")
    (root / "watchdog.yaml").write_text(f"state: {tmp_path / 'state.db'}\n")
    _fill(tmp_path / "state.db", time.time())
    return root


def test_report_table(config_dir: Path) -> None:
    result = CliRunner().invoke(slo, ["report", "--config", str(config_dir)], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for name in ("api-error-rate", "api-uptime", "api-latency", "db-query-latency", "db-cpu", "db-memory"):
        assert name in result.output
    assert "PAGE" in result.output and "99.9 % 30d" in result.output
    assert "month (Asia/Taipei)" in result.output


def test_report_json_and_plot(config_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "burn.png"
    result = CliRunner().invoke(slo, ["report", "--config", str(config_dir), "--json", "--plot", str(png)])
    assert result.exit_code == 0, result.output
    body = result.output[: result.output.rindex("}") + 1]

    def no_constants(name: str) -> float:
        raise AssertionError(f"{name} in JSON")

    data = json.loads(body, parse_constant=no_constants)
    by_name = {s["name"]: s for s in data["slos"]}
    api = by_name["api-error-rate"]
    # The page only: ~2 h of history are read as a share of the 3 d ticket window (issue 10).
    assert api["firing"] == ["page"] and api["objective"] == 0.999
    assert api["burn_rates"]["5m"] > 14.4 and api["budget"]["remaining"] < 1
    assert api["exhaustion_at"] is not None and api["forecasts"]["1h"] is not None
    assert api["spent_per_day"] and sum(d["spent"] for d in api["spent_per_day"]) == pytest.approx(
        1 - api["budget"]["remaining"]
    )
    assert by_name["db-cpu"]["window"] == "calendar month (Asia/Taipei)"
    assert by_name["db-cpu"]["budget"]["spent"] == 1  # one minute at 85 % CPU
    assert by_name["db-query-latency"]["sli"] == pytest.approx(1 - 16 / 480, abs=0.01)
    assert {r["rule"] for r in api["rules"]} == {"page-1h-5m", "page-6h-30m", "ticket-3d-6h"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_report_without_state_store(tmp_path: Path) -> None:
    root = write_seed_config(tmp_path / "cfg")
    result = CliRunner().invoke(slo, ["report", "--config", str(root), "--state", str(tmp_path / "none.db")])
    assert result.exit_code == 1 and "no state store at" in result.output
    assert not (tmp_path / "none.db").exists()  # a report never creates an empty store


def test_report_with_bad_config(tmp_path: Path) -> None:
    root = write_seed_config(tmp_path / "cfg")
    broken = "slos:\n  - name: b\n    objective: 99\n    sli: {kind: nope}\n"
    (root / "slo" / "broken.yaml").write_text(broken)
    result = CliRunner().invoke(slo, ["report", "--config", str(root)])
    assert result.exit_code == 2 and "slo/broken.yaml:4" in result.output


def test_plot_without_matplotlib(config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    args = ["report", "--config", str(config_dir), "--plot", str(tmp_path / "x.png")]
    result = CliRunner().invoke(slo, args)
    assert result.exit_code == 1 and "--plot needs matplotlib" in result.output
    assert not (tmp_path / "x.png").exists()
