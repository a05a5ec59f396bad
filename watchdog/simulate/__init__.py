"""``watchdog simulate``: alert unit tests over simulated time, the way ``promtool test rules`` tests
Prometheus rules.

A scenario file (``scenario``) describes traffic per probe over time (background errors, blips, steps,
ramps, added latency, restarts of the watchdog) and what should page; the runner (``runner``) plays it
through the real SLO engine, alert rules, incident manager (escalation timers included) and dispatcher, on a
``FakeClock`` and an indexed in-memory store (``store``), with results made as the probes would make them
(``traffic``); ``expect`` holds the expectations against what happened, ``report`` prints it.

    scenario, config = prepare(Path("tests/scenarios/outage-59s.yaml"))
    report = await run(scenario, config)
    report.ok, report.verdicts, report.run.events

Layer: beside ``watchdog.runtime`` (it wires what the daemon wires, without the scheduler, probes or network);
imports the pipeline below it, never ``runtime`` or ``cli``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.config.loader import ConfigError, ConfigProblem, WatchdogConfig, load_config
from watchdog.simulate.expect import Verdict, check, clock, span
from watchdog.simulate.runner import Event, Run, Simulation
from watchdog.simulate.scenario import Scenario, ScenarioError, check_against, config_dir, load_scenario
from watchdog.simulate.traffic import unselected

__all__ = [
    "Event",
    "Report",
    "Run",
    "Scenario",
    "ScenarioError",
    "Simulation",
    "Verdict",
    "clock",
    "load_scenario",
    "prepare",
    "run",
    "span",
]


@dataclass
class Report:
    run: Run
    verdicts: list[Verdict]

    @property
    def ok(self) -> bool:
        return all(v.held for v in self.verdicts)


def prepare(
    path: Path, config_override: Path | None = None, environ: dict[str, str] | None = None
) -> tuple[Scenario, WatchdogConfig]:
    """Load the scenario and its config and check one against the other; ScenarioError lists every problem
    (a config's problems are named by their file inside the config directory)."""
    scenario, lines = load_scenario(path)
    root = config_dir(scenario, path, config_override)
    if not root.is_dir():
        line, field = (0, "") if config_override is not None else (lines.get(("config",), 0), "config")
        raise ScenarioError([ConfigProblem(str(path), line, field, f"{root}: no such config directory")])
    try:
        config = load_config(root, environ)
    except ConfigError as exc:
        raise ScenarioError(
            [ConfigProblem(str(root / p.file), p.line, p.field, p.message) for p in exc.problems]
        ) from exc
    problems = check_against(scenario, lines, config, str(path))
    for name, message in unselected(scenario, config):
        line = lines.get(("probes", name, "labels"), lines.get(("probes", name), 0))
        problems.append(ConfigProblem(str(path), line, f"probes.{name}.labels", message))
    if problems:
        raise ScenarioError(sorted(problems, key=lambda p: p.line))
    return scenario, config


async def run(
    scenario: Scenario, config: WatchdogConfig, on_event: Callable[[Event], None] | None = None
) -> Report:
    result = await Simulation(scenario, config, on_event).run()
    return Report(result, check(scenario.expect, result.events, scenario.duration))
