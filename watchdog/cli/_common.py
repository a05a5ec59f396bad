"""What every verb shares: the ``--config`` option and loading a config or exiting 2 with every problem."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from watchdog.config import ConfigError, WatchdogConfig, load_config

EXIT_CONFIG = 2

config_option = click.option(
    "--config",
    "config_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Config directory holding probes/, slo/, alerts/, runbooks/ and an optional watchdog.yaml.",
)


def load_or_exit(config_dir: Path) -> WatchdogConfig:
    try:
        return load_config(config_dir)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s) in {config_dir}; nothing started.", err=True)
        sys.exit(EXIT_CONFIG)
