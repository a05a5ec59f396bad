"""What every verb shares: the ``--config`` option and loading a config or exiting 2 with every problem."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import click

from watchdog.config import ConfigError, WatchdogConfig, load_config
from watchdog.config.types import parse_listen_address

EXIT_CONFIG = 2
EXIT_FAILED = 1

config_option = click.option(
    "--config",
    "config_dir",
    # exists=True: a mistyped path is a usage error naming the path (exit 2), not an empty config.
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Config directory holding probes/, slo/, alerts/, runbooks/ and an optional watchdog.yaml.",
)


# Unsubscripted: ParamType is generic in one type from click 8.4 and in two from 8.5, and `click>=8.1`.
class ListenAddressType(click.ParamType):  # type: ignore[type-arg, unused-ignore]
    """``HOST:PORT`` / ``[IPv6]:PORT`` checked when the command line is read, before anything starts."""

    name = "HOST:PORT"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            parse_listen_address(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        return value


LISTEN_ADDRESS = ListenAddressType()


def load_or_exit(config_dir: Path) -> WatchdogConfig:
    try:
        return load_config(config_dir)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s) in {config_dir}; nothing started.", err=True)
        sys.exit(EXIT_CONFIG)


# The options and helpers of the verbs that act on the state store (flag, traffic).
store_option = click.option(
    "--store", "state_spec", metavar="STORE", help="SQLite file or postgresql:// DSN of the state store."
)
as_option = click.option("--as", "as_name", metavar="NAME", help="Who is acting (default: $USER).")


def fail(message: str) -> NoReturn:
    """``error: message`` on stderr, exit 1."""
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_FAILED)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def pick_rollout(names: list[str], rollout_name: str | None, which: str = "rollouts") -> str:
    """The rollout ``--rollout`` names, or the only one there is (a usage error otherwise); ``which``
    says what ``names`` are ("rollouts", "rollouts with cloud_run")."""
    if rollout_name is None and len(names) > 1:
        raise click.UsageError(f"several {which} ({', '.join(names)}): say which with --rollout")
    if rollout_name is not None and rollout_name not in names:
        singular = which.replace("rollouts", "rollout", 1)
        raise click.UsageError(f"no {singular} named {rollout_name!r} (have {', '.join(names)})")
    return rollout_name or names[0]
