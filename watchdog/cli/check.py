"""``watchdog validate`` and ``watchdog check``: a config directory checked, and every probe run once."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from watchdog.cli._common import EXIT_CONFIG, config_option, load_or_exit
from watchdog.config import WatchdogConfig
from watchdog.core.clock import SystemClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.probes.registry import ProbeBuilder, run_bounded

if TYPE_CHECKING:
    from rich.table import Table


@click.command()
@config_option
def validate(config_dir: Path) -> None:
    """Check a config directory; print every problem as file:line: field: message.

    Exit status 0 when clean, 2 when any problem was found. Warnings (to stderr, exit status still 0) say
    what the environment lacks for what the config asks: SLACK_BOT_TOKEN when a policy pages Slack,
    SLACK_SIGNING_SECRET for the buttons, each intake's token.
    """
    import os

    from watchdog.runtime.wiring import deployment_warnings

    config = load_or_exit(config_dir)
    click.echo(
        f"ok: {len(config.probes)} probes, {len(config.slos)} SLOs, {len(config.alerts)} alerts, "
        f"{len(config.escalation)} escalation policies, {len(config.runbooks)} runbooks, "
        f"{len(config.rollouts)} rollouts"
    )
    for warning in deployment_warnings(config, os.environ):
        click.echo(f"warning: {warning}", err=True)


def _outcome_style(outcome: Outcome) -> str:
    return {Outcome.OK: "green", Outcome.DEGRADED: "yellow", Outcome.FAILED: "bold red"}[outcome]


def _results_table(results: Sequence[ProbeResult]) -> Table:
    from rich.table import Table

    table = Table(title="watchdog check", show_lines=False)
    table.add_column("probe")
    table.add_column("labels")
    table.add_column("outcome")
    table.add_column("latency", justify="right")
    table.add_column("reason", overflow="fold")
    for r in results:
        labels = " ".join(f"{k}={v}" for k, v in sorted(r.labels.items()))
        style = _outcome_style(r.outcome)
        table.add_row(
            r.probe, labels, f"[{style}]{r.outcome.value}[/]", f"{r.latency_s * 1000:.1f} ms", r.reason
        )
    return table


async def run_all_once(config: WatchdogConfig) -> list[ProbeResult]:
    """Every enabled probe once, concurrently, each bounded by its own timeout."""
    clock = SystemClock()
    builder = ProbeBuilder(
        defaults=config.settings.defaults, clock=clock, google_cloud=config.settings.google_cloud
    )
    probes = builder.build_all(config.enabled_probes())
    try:
        batches = await asyncio.gather(*(run_bounded(p, clock) for p in probes))
    finally:
        for probe in probes:
            await probe.aclose()
        await builder.aclose()
    return [r for batch in batches for r in batch]


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON instead of a table.")
@click.option("--probe", "only", multiple=True, help="Run only these probes (repeatable).")
def check(config_dir: Path, as_json: bool, only: tuple[str, ...]) -> None:
    """Run every probe once, now, and print the results.

    Exit status 1 if any result failed, 0 otherwise (degraded is not a failure), 2 on config problems.
    The JSON is one object per result, the same shape as the status page and the store (times in
    seconds: latency_s, started_at).
    """
    config = load_or_exit(config_dir)
    if only:
        unknown = sorted(set(only) - {p.name for p in config.probes})
        if unknown:
            click.echo(f"unknown probe(s): {', '.join(unknown)}", err=True)
            sys.exit(EXIT_CONFIG)
        config.probes = [p for p in config.probes if p.name in only]
    results = asyncio.run(run_all_once(config))
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False))
    else:
        from rich.console import Console

        Console(width=max(Console().width, 120)).print(_results_table(results))
    sys.exit(1 if any(r.outcome is Outcome.FAILED for r in results) else 0)
