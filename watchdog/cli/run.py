"""``watchdog run``: the daemon."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from watchdog.cli._common import LISTEN_ADDRESS, config_option, load_or_exit
from watchdog.core.logs import configure_logging


@click.command()
@config_option
@click.option(
    "--listen",
    type=LISTEN_ADDRESS,
    help="HOST:PORT or [IPv6]:PORT for /metrics, /healthz, /readyz (default from watchdog.yaml).",
)
@click.option(
    "--state", help="SQLite file or postgresql:// DSN for the state store (default from watchdog.yaml)."
)
def run(config_dir: Path, listen: str | None, state: str | None) -> None:
    """Run the daemon: probes on schedule, evaluation, /metrics. SIGTERM or SIGINT drains and exits 0."""
    from watchdog.runtime.serve import serve_daemon

    config = load_or_exit(config_dir)
    configure_logging(config.settings.log_level)
    sys.exit(
        asyncio.run(serve_daemon(config, listen or config.settings.listen, state or config.settings.state))
    )
