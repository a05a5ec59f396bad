"""``watchdog run``: the daemon."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from watchdog.cli._common import LISTEN_ADDRESS, config_option, load_or_exit
from watchdog.config.settings import Settings


def listen_address(settings: Settings, cli_listen: str | None, env: Mapping[str, str]) -> str:
    """``--listen``, else ``listen`` from watchdog.yaml, else ``:$PORT`` when ``PORT`` is set (Cloud Run
    sets it to the port it sends requests and probes to), else the default."""
    if cli_listen:
        return cli_listen
    port = env.get("PORT", "").strip()
    if "listen" not in settings.model_fields_set and port.isdigit() and 0 < int(port) < 65536:
        return f"0.0.0.0:{int(port)}"
    return settings.listen


@click.command()
@config_option
@click.option(
    "--listen",
    type=LISTEN_ADDRESS,
    help="HOST:PORT or [IPv6]:PORT for /metrics, /healthz, /readyz (default from watchdog.yaml, else "
    "0.0.0.0:$PORT when PORT is set, as on Cloud Run).",
)
@click.option(
    "--state", help="SQLite file or postgresql:// DSN for the state store (default from watchdog.yaml)."
)
def run(config_dir: Path, listen: str | None, state: str | None) -> None:
    """Run the daemon: probes on schedule, evaluation, /metrics. SIGTERM or SIGINT drains and exits 0."""
    from watchdog.cli._logging import setup_logging
    from watchdog.runtime.serve import serve_daemon
    from watchdog.runtime.wiring import default_instance_name

    config = load_or_exit(config_dir)
    logging_setup = setup_logging(
        config, os.environ, instance=config.settings.instance or default_instance_name()
    )
    try:
        status = asyncio.run(
            serve_daemon(
                config,
                listen_address(config.settings, listen, os.environ),
                state or config.settings.state,
            )
        )
    finally:
        logging_setup.close()
    sys.exit(status)
