"""``watchdog simulate SCENARIO.yaml``: alert unit tests over simulated time (see ``watchdog.simulate``)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from watchdog.simulate import Event, Report, ScenarioError, Verdict, clock, prepare, run, span
from watchdog.simulate.scenario import Scenario

EXIT_FAILED = 1
EXIT_SCENARIO = 2

_LABEL = {
    "fired": "PAGE",
    "refired": "REFIRED",
    "resolved": "RESOLVED",
    "escalated": "ESCALATED",
    "repeat": "REPEAT",
    "reopened": "REOPENED",
    "muted": "MUTED",
    "unmuted": "UNMUTED",
    "acknowledged": "ACKED",
    "restart": "RESTART",
}
_QUIET = {"fired", "refired", "resolved", "escalated", "restart", "reopened"}
"""What is printed without --verbose: pages, resolves, escalations, restarts (not reminders or mute notes)."""


def _line(event: Event) -> str:
    label = _LABEL.get(event.kind, event.kind.upper())
    if event.kind == "restart":
        return f"{clock(event.at)}  {label:<9}  {event.summary}"
    if event.kind == "fired" and not event.levels:
        label = "FIRED"
    where = ""
    if event.levels and event.kind != "resolved":
        where = f" → {', '.join(event.levels)}"
    muted = f" (muted by {event.muted_by}: nobody paged)" if event.muted_by and not event.levels else ""
    summary = f": {event.summary}" if event.summary else ""
    return f"{clock(event.at)}  {label:<9}  {event.alert} [{event.severity}]{where}{muted}{summary}"


def _verdict(v: Verdict) -> list[str]:
    mark = "ok  " if v.held else "FAIL"
    if v.held:
        return [f"  {mark}  {v.expected}: {v.happened}"]
    return [
        f"  {mark}  {v.expectation.kind}",
        f"        expected: {v.expected}",
        f"        happened: {v.happened}",
    ]


def _head(path: Path, scenario: Scenario, report: Report, interval: float) -> str:
    run_ = report.run
    history = f", {span(scenario.history)} of history" if scenario.history else ""
    return (
        f"{path}: {span(scenario.duration)} simulated{history} in {run_.wall_s:.2f} s "
        f"({run_.evaluations} evaluations every {interval:g} s, {run_.results} probe results, seed "
        f"{scenario.seed})"
    )


def _as_json(path: Path, report: Report, interval: float) -> dict[str, Any]:
    r = report.run
    return {
        "scenario": str(path),
        "description": r.scenario.description,
        "ok": report.ok,
        "simulated_s": r.scenario.duration,
        "history_s": r.scenario.history,
        "wall_s": r.wall_s,
        "evaluations": r.evaluations,
        "evaluation_interval_s": interval,
        "results": r.results,
        "seed": r.scenario.seed,
        "events": [{**e.to_dict(), "t": clock(e.at)} for e in r.events],
        "signals": [{**s.signal.to_dict(), "offset_s": s.at, "t": clock(s.at)} for s in r.signals],
        "expectations": [v.to_dict() for v in report.verdicts],
    }


@click.command("simulate")
@click.argument(
    "scenario_file", metavar="SCENARIO.yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--config",
    "config_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Config directory (default: the scenario's `config:`, relative to its file).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the timeline.")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Also print reminders, mute notes and every SLO engine signal with its burn rates.",
)
def simulate(scenario_file: Path, config_dir: Path | None, as_json: bool, verbose: bool) -> None:
    """Run a scenario through the real SLO engine, alert rules, incident manager and escalation over
    simulated time, and check what it expects (an alert unit test, like `promtool test rules`).

    The scenario says what each probe's results look like over time and what should page; every page,
    resolve and escalation is printed at its simulated time (t+mm:ss from the scenario's start). Nothing
    acknowledges, so escalation runs its course. A simulated day takes seconds.

    \b
    description: the content's database path fails for 35 minutes, later the database slows down
    config: ..                  # config dir, relative to this file
    seed: 1                     # error draws and probe phases
    duration: 1h
    history: 1h                 # healthy data at t+0 (default: a fresh start)
    evaluation_interval: 5s     # default: the config's
    probes:                     # the others stay healthy (other_probes: absent: silent)
      content-db:
        interval: 2s            # default: the probe's
        errors:                 # rates add up: 0.05%, 0.2, 100%
          - steady: 0.05%
          - {blip: 2m30s, failures: 1}
          - {step: 100%, from: 10m, to: 45m}
          - {ramp: [0%, 0.2%], from: 45m, to: 1h}
      ai-square-db:
        labels: {check: connectivity}  # which results of the probe
        latency:                # base 20ms; slow results degrade or fail as the probe would
          - {step: 300ms, from: 50m, to: 55m, share: 100%}
    restarts:
      - {at: 30m, keep_state: true}   # new engine and manager; false: an empty store
    expect:
      - page: {alert: content-db-burn, within: 1m, of: 10m}
      - escalated: {alert: content-db-burn, level: L3, within: 1m, of: 10m}   # critical: L3 at once
      - firing: {alert: content-db-burn, from: 11m, to: 45m}
      - resolved: {alert: content-db-burn, within: 10m, of: 45m}
      - page: {alert: db-latency-burn, within: 5m, of: 50m}
      - no_page: {alert: any, except: [content-db-burn, db-latency-burn]}

    Exit status: 0 when every expectation holds, 1 when one does not (with what was expected and what
    happened), 2 for a scenario or config that does not load.
    """
    # The timeline says what the incident manager and dispatcher would log; keep their WARNINGs off stderr.
    logging.getLogger("watchdog").addHandler(logging.NullHandler())
    try:
        scenario, config = prepare(scenario_file, config_dir)
    except ScenarioError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s); nothing simulated.", err=True)
        sys.exit(EXIT_SCENARIO)
    interval = scenario.evaluation_interval or config.settings.evaluation_interval

    def show(event: Event) -> None:
        if not as_json and (verbose or event.kind in _QUIET):
            click.echo(_line(event))

    if not as_json and scenario.description:
        click.echo(scenario.description)
    report = asyncio.run(run(scenario, config, on_event=show))
    if as_json:
        click.echo(json.dumps(_as_json(scenario_file, report, interval), indent=2))
    else:
        if verbose:
            for s in report.run.signals:
                sig = s.signal
                rates = ", ".join(f"{k} {v:.3g}x" for k, v in sig.burn_rates.items())
                click.echo(
                    f"{clock(s.at)}  SLO {sig.slo} {sig.severity} {sig.state}"
                    f"{f' ({rates})' if rates else ''}: {sig.summary}"
                )
        if not report.run.events:
            click.echo("(no incident fired)")
        click.echo(_head(scenario_file, scenario, report, interval))
        held = sum(v.held for v in report.verdicts)
        if report.verdicts:
            click.echo(f"expectations: {held} of {len(report.verdicts)} held")
            for v in report.verdicts:
                for line in _verdict(v):
                    click.echo(line)
    sys.exit(0 if report.ok else EXIT_FAILED)
