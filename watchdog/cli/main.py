"""The ``watchdog`` command."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from watchdog import __version__
from watchdog.config import ConfigError, WatchdogConfig, load_config
from watchdog.core.clock import SystemClock
from watchdog.core.logs import configure_logging
from watchdog.core.results import Outcome, ProbeResult

if TYPE_CHECKING:
    from rich.table import Table

_log = logging.getLogger("watchdog.cli.main")

EXIT_CONFIG = 2

config_option = click.option(
    "--config",
    "config_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Config directory holding probes/, slo/, alerts/, runbooks/ and an optional watchdog.yaml.",
)


def _load_or_exit(config_dir: Path) -> WatchdogConfig:
    try:
        return load_config(config_dir)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s) in {config_dir}; nothing started.", err=True)
        sys.exit(EXIT_CONFIG)


class _LazyGroup(click.Group):
    """A group whose subcommands can be registered as ``"module:attribute"`` and imported on first use.

    The subcommand modules pull in rich, asyncpg, psycopg and more; ``watchdog run`` needs none of them, and
    importing them made the daemon megabytes bigger and slower to start (bench/RESULTS-foundation.md).
    ``--help`` still lists them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy: dict[str, str] = {}

    def add_lazy_command(self, name: str, import_path: str) -> None:
        self._lazy[name] = import_path

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self._lazy:
            module, _, attribute = self._lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self._lazy[cmd_name]} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="watchdog")
def main() -> None:
    """sre-watchdog: synthetic probes, PostgreSQL checks, SLOs, Slack escalation and automatic
    YAML/DB flag rollback for one web service.

    \b
    Start here:
      watchdog demo                      run everything against the built-in reference service
      watchdog validate --config DIR     check a config directory
      watchdog check --config DIR        run every probe once, now
      watchdog run --config DIR          the daemon
      watchdog db inspect DSN            the database at a glance (3 a.m. view)
      watchdog slo report --config DIR   objectives, budgets, burn rates, forecasts
    """


@main.command()
@config_option
def validate(config_dir: Path) -> None:
    """Check a config directory; print every problem as file:line: field: message.

    Exit status 0 when clean, 2 when any problem was found.
    """
    config = _load_or_exit(config_dir)
    click.echo(
        f"ok: {len(config.probes)} probes, {len(config.slos)} SLOs, {len(config.alerts)} alerts, "
        f"{len(config.escalation)} escalation policies, {len(config.runbooks)} runbooks"
    )


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


def result_to_json(r: ProbeResult) -> dict[str, object]:
    return {
        "probe": r.probe,
        "kind": r.kind,
        "target": r.target,
        "labels": dict(r.labels),
        "outcome": r.outcome.value,
        "latency_ms": round(r.latency_s * 1000, 3),
        "started_at": r.started_at,
        "reason": r.reason,
        "observations": [
            {"name": o.name, "value": o.value, "labels": dict(o.labels)} for o in r.observations
        ],
    }


async def run_all_once(config: WatchdogConfig) -> list[ProbeResult]:
    """Every enabled probe once, concurrently, each bounded by its own timeout."""
    from watchdog.runtime.daemon import Daemon
    from watchdog.store.memory import MemoryStore

    daemon = Daemon(config, MemoryStore(), clock=SystemClock())
    try:
        batches = await asyncio.gather(*(daemon.run_probe_once(p) for p in daemon.probes))
    finally:
        await daemon.close_probes()
    return [r for batch in batches for r in batch]


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON instead of a table.")
@click.option("--probe", "only", multiple=True, help="Run only these probes (repeatable).")
def check(config_dir: Path, as_json: bool, only: tuple[str, ...]) -> None:
    """Run every probe once, now, and print the results.

    Exit status 1 if any result failed, 0 otherwise (degraded is not a failure), 2 on config problems.
    """
    config = _load_or_exit(config_dir)
    if only:
        unknown = sorted(set(only) - {p.name for p in config.probes})
        if unknown:
            click.echo(f"unknown probe(s): {', '.join(unknown)}", err=True)
            sys.exit(EXIT_CONFIG)
        config.probes = [p for p in config.probes if p.name in only]
    results = asyncio.run(run_all_once(config))
    if as_json:
        click.echo(json.dumps([result_to_json(r) for r in results], indent=2, ensure_ascii=False))
    else:
        from rich.console import Console

        Console(width=max(Console().width, 120)).print(_results_table(results))
    sys.exit(1 if any(r.outcome is Outcome.FAILED for r in results) else 0)


async def serve_daemon(
    config: WatchdogConfig, listen: str, state: str, stop: asyncio.Event | None = None
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop`` is set); drain and return the exit status."""
    from watchdog.runtime.daemon import Daemon, latency_edges
    from watchdog.store import StoreUnavailable, open_store
    from watchdog.web.app import HttpServer, create_app

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        store = open_store(
            state,
            latency_buckets=latency_edges(config),
            raw_retention_s=config.settings.retention.raw,
            minute_retention_s=config.settings.retention.minutes,
        )
    except ValueError as exc:
        _log.error("bad state store: %s", exc)
        return 2
    daemon = Daemon(config, store)
    try:
        await daemon.start()
    except StoreUnavailable as exc:
        _log.error("cannot open the state store: %s", exc)
        return 1
    server = HttpServer(create_app(daemon), listen)
    try:
        url = await server.start()
    except OSError as exc:
        _log.error("%s", exc)
        await daemon.stop()
        return 1
    _log.info("serving /metrics, /healthz, /readyz on %s", url, extra={"url": url})
    await stop.wait()
    _log.info("shutting down")
    await server.stop()
    await daemon.stop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    return 0


@main.command()
@config_option
@click.option("--listen", help="HOST:PORT for /metrics, /healthz, /readyz (default from watchdog.yaml).")
@click.option(
    "--state", help="SQLite file or postgresql:// DSN for the state store (default from watchdog.yaml)."
)
def run(config_dir: Path, listen: str | None, state: str | None) -> None:
    """Run the daemon: probes on schedule, evaluation, /metrics. SIGTERM or SIGINT drains and exits 0."""
    config = _load_or_exit(config_dir)
    configure_logging(config.settings.log_level)
    sys.exit(
        asyncio.run(serve_daemon(config, listen or config.settings.listen, state or config.settings.state))
    )


def _attach_subcommands() -> None:
    # Imported when invoked (or listed by --help), not on every start: see _LazyGroup.
    main.add_lazy_command("demo", "watchdog.cli.demo:demo")
    main.add_lazy_command("db", "watchdog.cli.db:db")
    main.add_lazy_command("slo", "watchdog.cli.slo:slo")


_attach_subcommands()

if __name__ == "__main__":
    main()
