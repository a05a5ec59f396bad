"""Words a person reads: a spent budget reads "exhausted (burned 3.0x the budget)" (never "-200 % left"),
an SLO has one state word wherever it is shown, and a firing alert says why it still fires and what
resolves it. Everything from a real engine over a real store filled with results. And the demo's story: a
journey per cohort sees the database path's faults, and the slow database path pages in the slow phase and
resolves after the heal."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from watchdog.cli import demo as demo_cli
from watchdog.cli.slo import slo as slo_cli
from watchdog.config import load_config
from watchdog.config.slo import SloConfig
from watchdog.core.clock import FakeClock, SystemClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.demo import ReferenceServer
from watchdog.incidents.manager import IncidentManager
from watchdog.probes.registry import build_probe
from watchdog.slo import messages
from watchdog.slo.engine import SloEngine
from watchdog.slo.model import AlertSignal, Evaluation, RuleStatus, SloStatus
from watchdog.store.base import Incident
from watchdog.store.memory import MemoryStore
from watchdog.store.sqlite import SqliteStore

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NEGATIVE_PERCENT = re.compile(r"-\d[\d.]*\s?%")


def result(t: float, ok: bool = True, probe: str = "api", labels: dict[str, str] | None = None
           ) -> ProbeResult:
    outcome = Outcome.OK if ok else Outcome.FAILED
    return ProbeResult(probe, "http", "t", outcome, 0.05, t, labels=labels or {})


def slo(name: str = "api", objective: float = 99.9, probe: str = "api") -> SloConfig:
    return SloConfig.model_validate(
        {"name": name, "objective": objective, "sli": {"kind": "availability", "probe": probe}}
    )


class Run:
    """A probe result every ``step`` seconds on a FakeClock, the engine evaluated after each."""

    def __init__(self, slos: list[SloConfig], start: float = T0) -> None:
        self.clock = FakeClock(start)
        self.store = MemoryStore()
        self.slos = slos
        self.engine: SloEngine | None = None
        self.signals: list[AlertSignal] = []
        self.last: Evaluation | None = None

    async def backfill(self, seconds: float, ok: Callable[[float], bool], step: float = 60.0) -> None:
        now = self.clock.now()
        n = int(seconds // step)
        await self.store.record([result(now - (n - i) * step, ok(now - (n - i) * step)) for i in range(n)])

    async def run(self, seconds: float, ok: bool, step: float = 5.0) -> Evaluation:
        if self.engine is None:
            self.engine = SloEngine(self.slos, self.store, self.clock)
        for _ in range(int(seconds // step)):
            self.clock.advance(step)
            await self.store.record([result(self.clock.now(), ok)])
            self.last = await self.engine.evaluate()
            self.signals.extend(self.last.signals)
        assert self.last is not None
        return self.last


# -- budgets in words --------------------------------------------------------------------------------


def test_budget_past_exhaustion_reads_as_words() -> None:
    assert messages.budget_left(0.25, "30d") == "25.0% of the 30d budget left"
    assert messages.budget_left(-89.909, "30d") == "30d budget exhausted (burned 90.9x the budget)"
    assert messages.budget_left(0.0, "30d") == "30d budget exhausted (burned 1.0x the budget)"
    assert messages.budget_left(-298.0, "calendar month (UTC)") == (
        "calendar month (UTC) budget exhausted (burned 299x the budget)"
    )
    assert messages.budget_state(0.125) == "12.5 % left"
    assert messages.budget_state(-2.0) == "exhausted (burned 3.0x the budget)"


async def test_page_summary_of_an_exhausted_budget_has_no_negative_percentage() -> None:
    """A young 30-day window allows little: a minute of errors after an hour spends it many times over."""
    run = Run([slo()])
    await run.backfill(3600, lambda t: True, step=5.0)
    await run.run(120, ok=False)
    fired = [s for s in run.signals if s.state == "firing" and s.severity == "page"]
    assert fired, run.signals
    summary = fired[0].summary
    assert re.search(r"30d budget exhausted \(burned \d+(\.\d)?x the budget\)$", summary), summary
    assert not NEGATIVE_PERCENT.search(summary), summary
    assert run.last is not None and run.last.status("api").budget.remaining < 0  # the number stays exact


# -- one state word ----------------------------------------------------------------------------------


async def test_state_words() -> None:
    """ok, burning (a recent burst, budget left), exhausted (old errors, no alert fires), no data."""
    configs = [slo("healthy", probe="healthy"), slo("burst", 99, "burst"), slo("old", 99, "old"),
               slo("silent", probe="silent")]
    run = Run(configs)
    now = run.clock.now()
    history: list[ProbeResult] = []
    for i in range(3 * 1440):  # three days, one result a minute
        t = now - (3 * 1440 - i) * 60
        history += [result(t, probe="healthy"), result(t, probe="burst")]
    for i in range(12 * 60):  # twelve hours; 60 failures from 8 h ago (99 % of 720 allows 7.2)
        t = now - (12 * 60 - i) * 60
        history.append(result(t, ok=not 4 * 60 <= i < 5 * 60, probe="old"))
    history += [result(now - 60 + k * 5, ok=False, probe="burst") for k in range(12)]
    await run.store.record(history)
    run.engine = SloEngine(configs, run.store, run.clock)
    evaluation = await run.engine.evaluate()
    states = {s.name: messages.slo_state(s) for s in evaluation.statuses}
    assert states == {"healthy": "ok", "burst": "burning", "old": "exhausted", "silent": "no data"}
    old = evaluation.status("old")
    assert old.firing == () and old.budget.exhausted  # exhausted with no alert firing: not "ok"
    assert messages.explain_state(old).startswith("30d budget exhausted (burned 8.3x the budget): 60 bad")
    assert messages.explain_state(evaluation.status("burst")).startswith("burning: page-1h-5m")
    assert messages.explain_state(evaluation.status("silent")) == "no data: no results in the 30d window yet"
    assert messages.explain_state(evaluation.status("healthy")) == "ok: 30d budget 100.0 % left"
    assert messages.explain_severity(evaluation.status("healthy"), "page") == []  # nothing to explain


# -- why an alert still fires -----------------------------------------------------------------------


async def test_why_a_page_still_fires_and_what_resolves_it() -> None:
    run = Run([slo()])
    await run.backfill(7 * 3600, lambda t: True, step=5.0)
    await run.run(150, ok=False)  # 30 failures: both page rules fire
    status = (await run.run(60, ok=True)).status("api")  # errors stopped a minute ago
    assert status.firing == ("page",)
    # The engine's own holds: a tenth of the severity's shortest short window.
    assert {r.rule: r.resolve_after for r in status.rules} == {
        "page-1h-5m": 30.0, "page-6h-30m": 30.0, "ticket-3d-6h": 2160.0
    }
    head, fast, slow = messages.explain_severity(status, "page")
    assert head == (
        "page still firing: page-1h-5m, page-6h-30m still see the errors; it resolves when the last of its"
        " rules does, at the latest 5.5 min from now if no new errors come"
    )
    assert fast == (
        "page-1h-5m: its 5m window still holds 30 bad of 60 results (burn 500x, over 14.4x); it resolves once"
        " that window has stayed under 14.4x for 30s, at the latest 5.5 min from now if no new errors come"
    )
    # Both page rules resolve on the fastest short window (issue 10): the 6x rule is not held open for
    # half an hour by old errors in its 30m window.
    assert slow == (
        "page-6h-30m: its 5m window still holds 30 bad of 60 results (burn 500x, over 6.0x); it resolves once"
        " that window has stayed under 6.0x for 30s, at the latest 5.5 min from now if no new errors come"
    )

    def rule_named(status: SloStatus, name: str) -> RuleStatus:
        return next(r for r in status.rules if r.rule == name)

    for _ in range(120):
        status = (await run.run(5, ok=True)).status("api")
        if rule_named(status, "page-1h-5m").clear_since is not None:
            break
    status = (await run.run(10, ok=True)).status("api")
    rule = rule_named(status, "page-1h-5m")
    assert rule.firing and rule.clear_since == status.evaluated_at - 10
    text = messages.explain_rule(status, rule)
    assert re.fullmatch(r"page-1h-5m: resolving, its 5m window is back under 14\.4x \((\d+\.\d)x\);"
                        r" it resolves in 20\.0 s if that holds \(30s in a row\)", text), text
    status = (await run.run(20, ok=True)).status("api")
    assert not rule_named(status, "page-1h-5m").firing and "page" in status.firing
    head, only = messages.explain_severity(status, "page")
    assert head == (
        "page still firing, resolving: its rules are back under their rates, at the latest 5.0 s from now"
        " if no new errors come"
    ), head
    assert only.startswith("page-6h-30m: resolving, its 5m window is back under 6.0x"), only
    for _ in range(60):
        status = (await run.run(5, ok=True)).status("api")
        if "page" not in status.firing:
            break
    assert "page" not in status.firing
    resolved = [s for s in run.signals if s.severity == "page" and s.state == "resolved"]
    assert len(resolved) == 1 and "the incident spent" in resolved[0].summary, resolved


# -- slo report ---------------------------------------------------------------------------------------

REPORT_PROBES = """\
probes:
  - name: api
    kind: http
    url: http://127.0.0.1:9/
    interval: 60s
  - name: web
    kind: http
    url: http://127.0.0.1:9/web
    interval: 60s
"""
REPORT_SLOS = """\
slos:
  - name: api-availability
    objective: 99
    sli: {kind: availability, probe: api}
  - name: api-latency
    objective: 95
    sli: {kind: latency, probe: api, threshold: 200ms}
  - name: web-availability
    objective: 99
    sli: {kind: availability, probe: web}
"""


@pytest.fixture
def exhausted_config(tmp_path: Path) -> Path:
    """Ten hours of results a minute apart. api: ten failures eight hours ago: the 30-day budget (99 % of
    600 results allows 6 bad ones) is spent 1.7 times over, and no alert fires (every short window is
    clean). web: three failures in the last three minutes: half the budget left, no rule over its rate, but
    spending 5 times too fast over the last hour."""
    root = tmp_path / "cfg"
    (root / "probes").mkdir(parents=True)
    (root / "slo").mkdir()
    (root / "probes" / "probes.yaml").write_text(REPORT_PROBES)
    (root / "slo" / "slos.yaml").write_text(REPORT_SLOS)
    (root / "watchdog.yaml").write_text(f"state: {tmp_path / 'state.db'}\n")
    now = time.time()

    async def fill() -> None:
        store = SqliteStore(tmp_path / "state.db")
        await store.open()
        await store.record([result(now - (600 - i) * 60, ok=not 120 <= i < 130) for i in range(600)])
        await store.record([result(now - (600 - i) * 60, ok=i < 597, probe="web") for i in range(600)])
        await store.close()

    asyncio.run(fill())
    return root


def _line(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if name in line)


def test_report_table_says_exhausted_not_ok(exhausted_config: Path) -> None:
    args = ["report", "--config", str(exhausted_config)]
    result = CliRunner().invoke(slo_cli, args, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    row = _line(result.output, "api-availability")
    assert "exhausted (burned 1.7x the budget)" in row and not re.search(r"\bok\b", row), row
    assert not NEGATIVE_PERCENT.search(result.output), result.output
    latency = _line(result.output, "api-latency")
    assert re.search(r"\bok\b", latency) and "66.7 % left" in latency, latency  # failures are slow too


def test_report_says_burning_and_when_the_budget_runs_out(exhausted_config: Path) -> None:
    args = ["report", "--config", str(exhausted_config)]
    result = CliRunner().invoke(slo_cli, args, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    row = _line(result.output, "web-availability")
    assert "burning" in row and re.search(r"50\.0 % left, runs out in \d\.\d d", row), row


def test_report_lines_say_exhausted_not_ok(exhausted_config: Path) -> None:
    args = ["report", "--config", str(exhausted_config)]
    result = CliRunner().invoke(slo_cli, args, env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    head = _line(result.output, "api-availability")
    assert head.rstrip().endswith("exhausted") and "ok" not in head, head
    assert "EXHAUSTED" not in result.output
    assert "budget exhausted (burned 1.7x the budget)" in result.output
    assert not NEGATIVE_PERCENT.search(result.output), result.output


def test_report_json_keeps_the_exact_numbers(exhausted_config: Path) -> None:
    result = CliRunner().invoke(slo_cli, ["report", "--config", str(exhausted_config), "--json"])
    assert result.exit_code == 0, result.output
    api = next(s for s in json.loads(result.output)["slos"] if s["name"] == "api-availability")
    assert api["budget"]["remaining"] == pytest.approx(1 - 10 / 6)
    assert api["firing"] == []


# -- the demo's summary -------------------------------------------------------------------------------


async def test_demo_summary_explains_a_page_still_firing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's story in the store: content-db healthy, then failing for 20 s, then healthy again; the
    page fired through the real engine and incident manager and is still open when the summary prints."""
    monkeypatch.setenv("TARGET_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WATCHDOG_STATE", str(tmp_path / "state.db"))
    config = load_config(demo_cli.demo_config_dir())
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    start = time.time() - 60
    clock = FakeClock(start)
    engine = SloEngine(config.slos, store, clock)
    incidents = IncidentManager(config, store, clock)
    for k in range(30):
        clock.advance(2)
        failing = 20 <= k * 2 < 40
        await store.record([result(clock.now(), ok=not failing, probe="content-db", labels={"cohort": "db"})])
        await incidents.handle_slo_signals((await engine.evaluate()).signals)
    await store.close()
    assert [i.state for i in await _incidents(tmp_path)] == ["firing"]

    console = Console(record=True, width=120)
    await demo_cli.report_summary(config, console)
    text = console.export_text()
    assert not NEGATIVE_PERCENT.search(text), text
    assert "why it is still open" in text
    assert "content-db-availability  99.9 % over 30d  exhausted  PAGE" in text
    assert "30d budget exhausted (burned 333x the budget): 10 bad results in the window" in text
    flat = " ".join(text.split())  # table cells wrap
    # The demo config compresses the Workbook's windows 12x (5m/25s, 30m/150s) so a one-minute demo pages.
    assert "page still firing: page-5m-25s, page-30m-150s still see the errors" in flat
    assert re.search(r"page-5m-25s: its 25s window still holds [\d.]+ bad of [\d.]+ results", flat), flat
    # At the latest: the 25 s window empty and the quiet since the last failure conclusive at the rate the
    # incident showed (bounded by the slow rule's 150 s window), plus the 2.5 s hold.
    bound = re.search(r"it resolves when the last of its rules does, at the latest ([\d.]+) s from now", flat)
    assert bound is not None and 25 + 2.5 <= float(bound.group(1)) <= 150 + 2.5, flat


async def _incidents(tmp_path: Path) -> list[Incident]:
    store = SqliteStore(tmp_path / "state.db")
    await store.open()
    try:
        return list(await store.list_incidents())
    finally:
        await store.close()


# -- the demo's story: a journey per cohort, and the slow database path pages --------------------------

DEMO_PROBES = {  # name → its cohort label
    "api-health": None,
    "content-db": "db",
    "content-db-latency": "db",
    "content-yaml": "yaml",
    "learner-journey-db": "db",
    "learner-journey-yaml": "yaml",
}


def _outcomes(**changed: str) -> dict[str, str]:
    return {name: changed.get(name.replace("-", "_"), "ok") for name in DEMO_PROBES}


# What each probe's content requests say in each phase of the demo (demo_cli.PHASES): the database faults
# show in the db cohort (content-db, content-db-latency, learner-journey-db), never in the yaml cohort.
# content-db-latency times any answer, so the outage's fast 500s are not "slow"; /api/health's SELECT 1 is
# no content query, so only the latency reaches it.
PHASE_OUTCOMES = (
    _outcomes(),
    _outcomes(content_db="failed", learner_journey_db="failed"),
    _outcomes(
        api_health="degraded", content_db="degraded", content_db_latency="degraded",
        learner_journey_db="degraded",
    ),
    _outcomes(),
)


async def test_demo_probes_see_each_fault_in_the_db_cohort_only(tmp_path: Path) -> None:
    """The demo config's probes against the reference service, once per phase with the phase's faults. The
    journeys log in as the demo account (in YAML at the demo's 5 % canary) and still read their own cohort:
    the db journey fails with the database path and is slow with it, the yaml journey never notices."""
    assert [phase.faults for phase in demo_cli.PHASES] == [
        {}, {"db_error_rate": 1.0}, {"db_latency_ms": 350}, {}
    ]
    service = ReferenceServer(sqlite_path=tmp_path / "content.db", rate_limits=False, db_percent=5)
    async with service as server:
        config = load_config(demo_cli.demo_config_dir(), environ={"TARGET_BASE_URL": server.base_url})
        probes = [
            build_probe(config.probe(name), defaults=config.settings.defaults, clock=SystemClock())
            for name in DEMO_PROBES
        ]
        try:
            for phase, expected in zip(demo_cli.PHASES, PHASE_OUTCOMES, strict=True):
                server.faults.reset()
                server.faults.update(phase.faults)
                runs = await asyncio.gather(*(probe.run() for probe in probes))
                seen: dict[str, str] = {}
                for probe, results in zip(probes, runs, strict=True):
                    assert {r.labels.get("cohort") for r in results} == {DEMO_PROBES[probe.name]}, results
                    content = [r for r in results if r.labels.get("step") in (None, "scenarios")]
                    steps = [r for r in results if r not in content]
                    assert [r.outcome for r in steps] == [Outcome.OK] * len(steps), steps  # login, auth-check
                    outcomes = {r.outcome.value for r in content}
                    assert len(outcomes) == 1, (phase.note, probe.name, content)
                    seen[probe.name] = outcomes.pop()
                assert seen == expected, phase.note
                if phase.faults:  # every module the db journey reads goes through the database
                    journey = runs[list(DEMO_PROBES).index("learner-journey-db")]
                    modules = {r.labels.get("module") for r in journey if r.outcome is not Outcome.OK}
                    assert modules == {"pbl", "assessment", "discovery"}, journey
        finally:
            for probe in probes:
                await probe.aclose()


async def test_demo_latency_page_fires_in_the_slow_phase_and_resolves_after_the_heal() -> None:
    """The demo's probe alerts through the real incident manager over the demo's timeline (a result every
    2 s, an evaluation every 2 s, each phase's outcomes as above). Each page must leave room for what a live
    run adds: the probes' random phase, the 1 s flush and the evaluation tick (up to ~5 s)."""
    config = load_config(demo_cli.demo_config_dir(), environ={"TARGET_BASE_URL": "http://127.0.0.1:9"})
    duration = 60.0  # the demo's default
    starts = [phase.at_fraction * duration for phase in demo_cli.PHASES]
    store = MemoryStore()
    clock = FakeClock(T0)
    manager = IncidentManager(config, store, clock)
    reasons = {"failed": "status 500 not in [200]", "degraded": "latency 356 ms over 200 ms", "ok": ""}
    events: list[tuple[float, str, str]] = []
    for tick in range(1, int(duration // 2) + 1):
        t = tick * 2.0
        phase = max(i for i, start in enumerate(starts) if start <= t - 1)
        clock.set(T0 + t - 1)
        for name in ("content-db", "content-db-latency"):
            outcome = Outcome(PHASE_OUTCOMES[phase][name])
            latency = 0.356 if outcome is Outcome.DEGRADED else 0.002
            result = ProbeResult(name, "http", "t", outcome, latency, clock.now(), reasons[outcome.value])
            await store.record([replace(result, labels={"cohort": "db"})])
        clock.set(T0 + t)
        events += [(t, moved.key, moved.state) for moved in await manager.evaluate_probe_alerts()]

    def when(alert: str) -> tuple[float, float]:
        (fired,) = [t for t, key, state in events if key == f"alert:{alert}" and state == "firing"]
        (resolved,) = [t for t, key, state in events if key == f"alert:{alert}" and state == "resolved"]
        return fired, resolved

    _, broken, slow, healed = starts
    failing_fired, failing_resolved = when("content-db-failing")
    assert broken < failing_fired <= broken + 10 and slow < failing_resolved <= slow + 4, events
    # The latency page: not for the outage's fast errors, fired in the slow phase, resolved after the heal,
    # each with room to spare before the next phase and the end of the run.
    slow_fired, slow_resolved = when("content-db-slow")
    assert slow < slow_fired and slow_fired + 5 <= healed, events
    assert healed < slow_resolved and slow_resolved + 5 <= duration, events


@pytest.mark.slow
def test_watchdog_demo_flips_the_flag_and_shows_the_latency_page(tmp_path: Path) -> None:
    """``watchdog demo`` itself (about a minute): exit 0; the latency page fires after the slow phase starts
    and before the heal and resolves after the heal; the summary shows the journeys by cohort."""
    proc = subprocess.run(
        [sys.executable, "-m", "watchdog.cli.main", "demo", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200", "PYTHONIOENCODING": "utf-8"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    marks = [out.index(phase.note) for phase in demo_cli.PHASES] + [out.index("what the watchdog saw")]
    assert marks == sorted(marks), out
    healthy, broken, slow, healed = (out[a:b] for a, b in itertools.pairwise(marks))
    assert "PAGE FIRING [critical → L1] content-db-failing" in broken, out
    assert "content-db-slow" not in healthy + broken, out
    assert "PAGE FIRING [warning → L1] content-db-slow: The database content path is slow" in slow, out
    assert "PAGE RESOLVED [warning → L1] content-db-slow" in healed, out
    summary = out[marks[-1] :]
    assert re.search(r"alert:content-db-slow\s*│\s*resolved", summary), summary
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in summary.splitlines()]
    journeys = {(row[0], row[1]): row for row in rows if row and row[0].startswith("learner-journey-")}
    assert {labels.split()[0] for _, labels in journeys} == {"cohort=db", "cohort=yaml"}, summary
    for (probe, labels), row in journeys.items():
        assert labels.startswith(f"cohort={probe.rsplit('-', 1)[1]} "), row
        if "module=" in labels:  # the database outage fails the db journey's content steps, only those
            assert (int(row[3]) > 0) == probe.endswith("-db"), row
    # The canary guard's story: the flag flipped to YAML during the fault, by itself, and real users'
    # requests went back to no errors, none on the database.
    assert "the watchdog flipped the flag to YAML (0 % database), verified by reading it back" in broken, out
    assert "PAGE FIRING [warning → L1] canary-rolled-back: Rolled back to YAML" in broken, out
    flip = re.search(r"onset→flip: ([0-9.]+) s", out)
    assert flip is not None and float(flip.group(1)) <= 10.0, out
    after = re.search(r"after the flip\s+(\d+) requests, (\d+) errors .*?, (\d+) from the database", out)
    assert after is not None and int(after.group(1)) > 100 and after.group(2) == after.group(3) == "0", out
