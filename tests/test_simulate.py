"""``watchdog simulate``: the scenarios of issue 10 (tests/scenarios/*.yaml) through the real SLO engine,
alert rules, incident manager and dispatcher over simulated time, against this repository's example
config; the scenario parser's errors; the command's exit codes and diff; the indexed store against
MemoryStore; the traffic generator's results.

Each scenario states what *should* happen. Where the watchdog does not do it yet, the expectation stays and
is listed in ``KNOWN_DEFECTS`` with the reason: the test then checks that exactly those expectations fail, so
a fix (or a new failure) shows up here."""

from __future__ import annotations

import json
import random
import re
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from watchdog.cli.simulate import simulate as simulate_command
from watchdog.config import load_config
from watchdog.config.probes import ProbeConfig
from watchdog.core.results import Observation, Outcome, ProbeResult
from watchdog.simulate import ScenarioError, clock, prepare, run, span
from watchdog.simulate import scenario as scenario_module
from watchdog.simulate.scenario import Scenario, Traffic, parse_rate, parse_time
from watchdog.simulate.store import SimStore
from watchdog.simulate.traffic import Series, build_series, units_of
from watchdog.store.memory import MemoryStore

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((REPO / "tests" / "scenarios").glob("*.yaml"))

KNOWN_DEFECTS: dict[str, dict[int, str]] = {}


def test_the_scenarios_are_there() -> None:
    names = {p.name for p in SCENARIOS}
    assert {
        "fresh-start-single-failure.yaml",
        "outage-59s.yaml",
        "healthy-canary-24h.yaml",
        "errors-100pct.yaml",
        "db-down.yaml",
        "errors-20pct.yaml",
        "errors-5pct.yaml",
        "slow-burn-1pct.yaml",
        "db-latency-300ms.yaml",
    } <= names
    assert set(KNOWN_DEFECTS) <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
async def test_scenario(path: Path) -> None:
    scenario, config = prepare(path)
    assert scenario.description and scenario.expect
    report = await run(scenario, config)
    failed = {i: v for i, v in enumerate(report.verdicts) if not v.held}
    known = KNOWN_DEFECTS.get(path.name, {})
    shown = "\n".join(
        f"[{i}] {v.expectation.kind}: expected {v.expected}; happened: {v.happened}"
        for i, v in failed.items()
    )
    fixed = sorted(set(known) - set(failed))
    assert not fixed, f"known defect(s) {fixed} no longer show: remove them from KNOWN_DEFECTS\n{shown}"
    assert sorted(failed) == sorted(known), f"unexpected failures:\n{shown}"


# -- the command ----------------------------------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("CONFIG", str(REPO)))
    return path


OUTAGE = """\
description: a short outage
config: CONFIG
seed: 4
duration: 20m
history: 1h
probes:
  content-db:
    interval: 2s
    errors:
      - {step: 100%, from: 5m, to: 5m59s}
expect:
  - page: {alert: content-db-burn, within: WITHIN, of: 5m}
  - resolved: {alert: content-db-burn, within: 6m, of: 5m59s}
"""


def test_exit_0_prints_the_timeline(tmp_path: Path) -> None:
    path = _write(tmp_path, OUTAGE.replace("WITHIN", "1m"))
    result = CliRunner().invoke(simulate_command, [str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    page = next(line for line in lines if "PAGE" in line)
    assert page.startswith("t+05:5") and "content-db-burn [critical] → L1, L3" in page
    assert any(line.startswith("t+11:") and "RESOLVED" in line for line in lines)
    assert "expectations: 2 of 2 held" in result.output
    assert "simulated, 1h00m of history in" in result.output


def test_exit_1_with_a_diff(tmp_path: Path) -> None:
    path = _write(tmp_path, OUTAGE.replace("WITHIN", "20s"))
    result = CliRunner().invoke(simulate_command, [str(path)])
    assert result.exit_code == 1, result.output
    assert "expectations: 1 of 2 held" in result.output
    fail = result.output[result.output.index("FAIL") :]
    assert "expected: content-db-burn pages between t+05:00 and t+05:20 (within 20s)" in fail
    assert "happened: first page at or after t+05:00 came at t+05:5" in fail
    assert "late); fired t+05:5" in fail and "resolved t+11:" in fail


def test_exit_2_for_a_bad_scenario(tmp_path: Path) -> None:
    path = _write(tmp_path, "config: CONFIG\nduration: soon\n")
    result = CliRunner().invoke(simulate_command, [str(path)])
    assert result.exit_code == 2
    assert f"{path}:2: duration: 'soon' is not a time" in result.output
    assert "1 problem(s); nothing simulated." in result.output


def test_exit_2_for_a_bad_config(tmp_path: Path) -> None:
    (tmp_path / "cfg" / "probes").mkdir(parents=True)
    (tmp_path / "cfg" / "probes" / "p.yaml").write_text("probes:\n  - {name: p, kind: http}\n")
    path = tmp_path / "s.yaml"
    path.write_text("config: cfg\nduration: 1h\n")
    result = CliRunner().invoke(simulate_command, [str(path)])
    assert result.exit_code == 2
    assert f"{tmp_path / 'cfg' / 'probes' / 'p.yaml'}:2: probes[0].url: Field required" in result.output


def test_json_and_config_override(tmp_path: Path) -> None:
    path = _write(tmp_path, OUTAGE.replace("WITHIN", "1m").replace("config: CONFIG\n", "config: nowhere\n"))
    result = CliRunner().invoke(simulate_command, [str(path), "--json", "--config", str(REPO)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ok"] is True and doc["evaluations"] == 20 * 60 // 5
    fired = next(e for e in doc["events"] if e["kind"] == "fired")
    assert fired["alert"] == "content-db-burn" and fired["levels"] == ["L1", "L3"] and fired["paged"]
    assert fired["channels"] == ["slack #ai-square-oncall", "slack #ai-square-critical"]
    assert {s["state"] for s in doc["signals"]} == {"firing", "resolved"}
    assert [x["held"] for x in doc["expectations"]] == [True, True]


def _help_example() -> str:
    text = simulate_command.help or ""
    return text[text.index("\b\n") + 2 : text.index("\n\n    Exit status")]


def _module_example() -> str:
    text = scenario_module.__doc__ or ""
    return text[text.index("::\n\n") + 4 : text.index("\nA rate is")]


@pytest.mark.parametrize("example", [_help_example, _module_example], ids=["help", "module"])
async def test_the_documented_examples_hold(tmp_path: Path, example: Callable[[], str]) -> None:
    """The scenarios shown by ``watchdog simulate --help`` and in ``watchdog.simulate.scenario`` load against
    the example config and every expectation in them holds."""
    path = tmp_path / "example.yaml"
    text = textwrap.dedent(example())
    path.write_text(re.sub(r"^config: \S+", f"config: {REPO}", text, flags=re.M))
    scenario, config = prepare(path)
    report = await run(scenario, config)
    assert len(report.verdicts) >= 5
    assert all(v.held for v in report.verdicts), [v.happened for v in report.verdicts if not v.held]


def test_verbose_shows_the_engine_signals(tmp_path: Path) -> None:
    path = _write(tmp_path, OUTAGE.replace("WITHIN", "1m"))
    result = CliRunner().invoke(simulate_command, [str(path), "--verbose"])
    assert result.exit_code == 0
    assert "SLO content-db-availability page firing (1h " in result.output


# -- the scenario file -------------------------------------------------------------------------------


def _problems(tmp_path: Path, text: str) -> list[str]:
    path = _write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        prepare(path)
    return [str(p).replace(f"{path}:", "") for p in info.value.problems]


def test_scenario_problems_name_their_line(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """\
config: CONFIG
duration: 1h
seed: x
probes:
  content-db:
    errors:
      - {steady: 120%}
      - {step: 10%}
      - {blip: 5m, step: 1%}
      - {ramp: [0, 10%], from: 1h, to: 30m}
    latency:
      - {step: 300ms, from: 1m, failures: 3}
    colour: blue
expect:
  - resolved: {alert: content-db-burn}
  - {page: {alert: content-db-burn, within: 1m}, no_page: {}}
""",
    )
    assert problems == [
        "3: seed: Input should be a valid integer, unable to parse string as an integer",
        "7: probes.content-db.errors[0].steady: '120%': a rate is between 0 and 100 %",
        "8: probes.content-db.errors[1]: a step needs from (and to, unless it lasts to the end)",
        "9: probes.content-db.errors[2]: a error segment is exactly one of steady, blip, step, ramp "
        "(got blip, step)",
        "10: probes.content-db.errors[3]: to must be after from",
        "12: probes.content-db.latency[0].failures: unknown field",
        "13: probes.content-db.colour: unknown field",
        "15: expect[0].resolved.within: Field required",
        "16: expect[1]: an expectation is exactly one of page, no_page, resolved, escalated, firing",
    ]


def test_scenario_problems_against_the_config(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        """\
config: CONFIG
duration: 1h
probes:
  nope: {}
  ai-square-db:
    labels: {check: disk}
restarts:
  - {at: 2h}
expect:
  - page: {alert: not-an-alert, within: 1m}
  - escalated: {alert: content-db-burn, level: L9, within: 1m}
  - page: {alert: content-db-burn, within: 1m, of: 3h}
  - firing: {alert: any, from: 10m, to: 2h}
""",
    )
    assert problems[0].startswith("4: probes.nope: no probe named 'nope' in the config (it has ai-square-db,")
    assert problems[1].startswith(
        "6: probes.ai-square-db.labels: select none of the probe's results (it yields: check=connections;"
    )
    assert problems[2] == "8: restarts[0].at: is at or after the scenario's end (duration)"
    assert problems[3].startswith("10: expect[0].page.alert: no alert named 'not-an-alert' in the config")
    assert problems[4:] == [
        "11: expect[1].escalated.level: no escalation level 'L9' (the config has L1, L2, L3)",
        "12: expect[2].page.of: is after the scenario's end (duration)",
        "13: expect[3].firing.alert: name one alert, not any",
        "13: expect[3].firing.to: must be after from and at most the scenario's duration",
    ]


def test_a_fault_after_the_end_is_a_problem(tmp_path: Path) -> None:
    text = (
        "config: CONFIG\nduration: 1h\nprobes:\n  content-db:\n    latency:\n      - {step: 1s, from: 2h}\n"
    )
    assert _problems(tmp_path, text) == [
        "6: probes.content-db.latency[0]: starts at or after the scenario's end (duration)"
    ]


def test_scenario_file_problems(tmp_path: Path) -> None:
    assert _problems(tmp_path, "duration: [1\n") == ["2: invalid YAML: did not find expected ',' or ']'"]
    assert _problems(tmp_path, "- 1\n") == ["1: a scenario is a YAML mapping"]
    assert _problems(tmp_path, "duration: 1h\nconfig: nowhere\n") == [
        f"2: config: {tmp_path / 'nowhere'}: no such config directory"
    ]
    with pytest.raises(ScenarioError, match="no such scenario file"):
        prepare(tmp_path / "missing.yaml")


def test_times_rates_and_clock() -> None:
    assert parse_time("10m59s") == 659 and parse_time("1h30m") == 5400 and parse_time("250ms") == 0.25
    assert parse_time(90) == 90 and parse_time("2d") == 172800
    bad_times: list[object] = ["soon", "10 minutes", "-5s", "1h-5m", True]
    for bad in bad_times:
        with pytest.raises(ValueError):
            parse_time(bad)
    assert (
        parse_rate("0.05%") == pytest.approx(0.0005) and parse_rate(0.2) == 0.2 and parse_rate("100 %") == 1
    )
    bad_rates: list[object] = ["120%", 1.5, "20", "x%", -0.1]
    for bad in bad_rates:
        with pytest.raises(ValueError):
            parse_rate(bad)
    assert clock(659) == "t+10:59" and clock(25 * 3600) == "t+1500:00" and clock(61.5) == "t+01:01.5"
    assert span(55) == "55s" and span(391) == "6m31s" and span(7500) == "2h05m"


# -- traffic ------------------------------------------------------------------------------------------


def _config() -> list[ProbeConfig]:
    return load_config(REPO, environ={}).enabled_probes()


def _series(probe: str, traffic: Mapping[str, Any], sampling: str = "random", seed: int = 0) -> Series:
    scenario = Scenario.model_validate(
        {
            "duration": "1h",
            "seed": seed,
            "sampling": sampling,
            "probes": {probe: traffic},
            "other_probes": "absent",
        }
    )
    (series,) = build_series(scenario, load_config(REPO, environ={}))
    return series


def _runs(series: Series, seconds: float) -> list[list[ProbeResult]]:
    series.start(0.0)
    return list(series.runs_until(seconds, 0.0))


def test_even_sampling_is_exact_and_random_sampling_replays() -> None:
    even = _runs(
        _series("content-db", {"interval": "2s", "errors": [{"step": "20%", "from": 0}]}, "even"), 2000
    )
    assert len(even) == 1000
    assert sum(r[0].outcome is Outcome.FAILED for r in even) == 200
    spec = {"interval": "2s", "errors": [{"steady": "5%"}]}
    first = [r[0].outcome for r in _runs(_series("content-db", spec, seed=3), 2000)]
    again = [r[0].outcome for r in _runs(_series("content-db", spec, seed=3), 2000)]
    other = [r[0].outcome for r in _runs(_series("content-db", spec, seed=4), 2000)]
    assert first == again != other
    assert 20 <= first.count(Outcome.FAILED) <= 80


def test_blips_ramps_and_latency() -> None:
    runs = _runs(_series("content-db", {"interval": "10s", "errors": [{"blip": "1m", "failures": 3}]}), 600)
    failed = [r[0].started_at for r in runs if r[0].outcome is Outcome.FAILED]
    assert len(failed) == 3 and failed[0] >= 60 and failed[2] - failed[0] == pytest.approx(20)
    ramp = _series("content-db", {"errors": [{"ramp": ["0%", "100%"], "from": "0s", "to": "100s"}]})
    assert ramp.traffic.error_rate(25) == pytest.approx(0.25) and ramp.traffic.error_rate(200) == 0
    slow = _runs(
        _series("content-db", {"interval": "10s", "latency": [{"step": "300ms", "from": "1m"}]}), 120
    )
    before, after = slow[0][0], slow[-1][0]
    assert before.outcome is Outcome.OK and before.latency_s == pytest.approx(0.02)
    assert after.outcome is Outcome.DEGRADED and after.latency_s == pytest.approx(0.32)
    assert after.reason == "took 320 ms (> 200 ms)"
    timeout = _runs(_series("content-db", {"interval": "10s", "latency": [{"steady": "30s"}]}), 10)[0][0]
    assert timeout.outcome is Outcome.FAILED and timeout.reason.startswith("timed out after 10 s")


def test_what_each_probe_kind_yields() -> None:
    probes = {p.name: p for p in _config()}
    assert [u.labels for u in units_of(probes["content-db"], {})] == [{"cohort": "db"}]
    assert units_of(probes["api-health"], {"cohort": "db"})[0].labels == {"cohort": "db"}
    families = [u.labels["check"] for u in units_of(probes["ai-square-db"], {})]
    assert families[0] == "connectivity" and {"connections", "replication", "host"} <= set(families)
    down = _runs(_series("ai-square-db", {"errors": [{"step": "100%", "from": 0, "reason": "refused"}]}), 10)[
        0
    ]
    assert {r.outcome for r in down} == {Outcome.FAILED}
    assert down[0].reason == "refused" and down[1].reason == "not checked: refused"
    slow = _runs(
        _series("ai-square-db", {"labels": {"check": "connectivity"}, "latency": [{"steady": "60ms"}]}), 10
    )
    assert [r.outcome for r in slow[0]][:2] == [Outcome.DEGRADED, Outcome.OK]
    journey = next(p for p in probes.values() if p.kind == "journey")
    runs = _runs(
        _series(journey.name, {"labels": {"step": "auth-check"}, "errors": [{"step": "100%", "from": 0}]}), 60
    )
    steps = [r.labels["step"] for r in runs[0]]
    assert steps == ["login", "auth-check"]  # a failed step stops the journey: no later results
    assert [r.outcome for r in runs[0]] == [Outcome.OK, Outcome.FAILED]


def test_traffic_defaults() -> None:
    t = Traffic()
    assert t.error_rate(0) == 0 and t.base_latency(0) == pytest.approx(0.02)


# -- the indexed store --------------------------------------------------------------------------------


async def test_sim_store_answers_as_memory_store_does() -> None:
    rng = random.Random(7)
    edges = (0.05, 0.2, 1.0)
    mem, sim = (
        MemoryStore(latency_buckets=edges, raw_retention_s=3600),
        SimStore(latency_buckets=edges, raw_retention_s=3600),
    )
    labels = [{}, {"cohort": "db"}, {"cohort": "yaml"}, {"check": "connectivity", "cohort": "db"}]
    t = 1_767_225_600.0
    for _ in range(60):
        batch = []
        for _ in range(rng.randrange(1, 30)):
            t += rng.uniform(0, 20)
            batch.append(
                ProbeResult(
                    probe=rng.choice(["a", "b"]),
                    kind="http",
                    target="t",
                    outcome=rng.choice(list(Outcome)),
                    latency_s=rng.choice([0.01, 0.1, 0.5, 2.0]),
                    started_at=t - rng.uniform(0, 30),  # out of order within and across batches
                    labels=rng.choice(labels),
                    observations=(Observation("cpu", rng.uniform(0, 100)),) if rng.random() < 0.3 else (),
                )
            )
        await mem.record(batch)
        await sim.record(batch)
    lo, hi = int((t - 86400) // 60), int(t // 60) + 2
    for probe in (None, "a", "b"):
        for sel in (None, {"cohort": "db"}):
            assert await sim.minutes(lo, hi, probe, sel) == await mem.minutes(lo, hi, probe, sel)
            assert await sim.minutes(hi - 30, hi - 5, probe, sel) == await mem.minutes(
                hi - 30, hi - 5, probe, sel
            )
        assert await sim.observation_minutes(lo, hi, probe) == await mem.observation_minutes(lo, hi, probe)
        for limit in (0, 1, 50, 10_000):
            assert await sim.recent(probe, limit) == await mem.recent(probe, limit)
    assert await sim.latest() == await mem.latest()
    assert await sim.prune(t) == await mem.prune(t)
    for probe in (None, "a"):
        assert await sim.recent(probe, 10_000) == await mem.recent(probe, 10_000)
    assert await sim.minutes(lo, hi) == await mem.minutes(lo, hi)
