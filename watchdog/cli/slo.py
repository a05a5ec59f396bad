"""``watchdog slo ...``: SLO reports from the state store. Attach with ``main.add_command(slo)``."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import click
from rich.console import Console

from watchdog.cli._common import load_or_exit
from watchdog.config import WatchdogConfig
from watchdog.core.clock import SystemClock

EXIT_STATE = 1
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@click.group("slo")
def slo() -> None:
    """Service level objectives: budgets, burn rates and alerts."""


def _missing_sqlite_file(spec: str) -> Path | None:
    """The SQLite file a spec names, when it does not exist (a report must not create an empty store)."""
    m = _SCHEME.match(spec)
    if m is None:
        path = spec
    elif m.group(1).lower() == "sqlite" and spec.startswith("sqlite:///"):
        path = spec[len("sqlite:///") :]
    else:
        return None
    if path in ("", ":memory:"):
        return None
    return None if Path(path).exists() else Path(path)


@slo.command("report")
@click.option(
    "--config",
    "config_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Config directory holding slo/ (and probes/, watchdog.yaml).",
)
@click.option("--state", help="SQLite file or postgresql:// DSN of the state store (default: watchdog.yaml).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also draw the budget burn-down, one panel per SLO, to this PNG (needs matplotlib).",
)
def report(config_dir: Path, state: str | None, as_json: bool, plot: Path | None) -> None:
    """Per SLO: objective, state, current SLI, budget, burn rates, alerts and exhaustion forecast.

    State is one word: ok, burning (on course to spend the budget, or a rule over its rate), exhausted
    (budget spent, alert or not) or no data. A spent budget reads "exhausted (burned 3.0x the budget)";
    --json keeps the exact numbers. Alerts here are the rules' conditions now (a one-shot report has no
    hysteresis history).
    """
    config = load_or_exit(config_dir)
    spec = state or config.settings.state
    missing = _missing_sqlite_file(spec)
    if missing is not None:
        raise click.ClickException(f"no state store at {missing} (has `watchdog run` written one? --state)")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise click.ClickException(
                "--plot needs matplotlib: pip install 'sre-watchdog[plot]' (or pip install matplotlib)"
            ) from exc
    code = asyncio.run(_report(config, spec, as_json, plot))
    sys.exit(code)


async def _report(config: WatchdogConfig, spec: str, as_json: bool, plot: Path | None) -> int:
    from watchdog.cli.slo_report import PlotUnavailable, plot_budgets, render, report_json
    from watchdog.slo.engine import SloEngine
    from watchdog.store import StoreUnavailable, open_store

    console = Console()
    err = Console(stderr=True)
    try:
        store = open_store(spec)
    except ValueError as exc:
        err.print(f"[red]{exc}[/]")
        return EXIT_STATE
    try:
        await store.open()
        engine = SloEngine(config.slos, store, SystemClock())
        evaluation = await engine.evaluate()
    except StoreUnavailable as exc:
        err.print(f"[red]state store unavailable:[/] {exc}")
        return EXIT_STATE
    finally:
        await store.close()
    histories = [engine.history(s.name) for s in config.slos]
    if as_json:
        click.echo(json.dumps(report_json(evaluation, histories), indent=2, allow_nan=False))
    elif not config.slos:
        console.print(f"no SLOs in {config.root / 'slo'}")
    else:
        console.print(render(evaluation, console.width))
    if plot is not None:
        try:
            plot_budgets(histories, evaluation.statuses, plot)
        except PlotUnavailable as exc:
            err.print(f"[red]{exc}[/]")
            return EXIT_STATE
        (err if as_json else console).print(f"budget burn-down written to {plot}")
    return 0
