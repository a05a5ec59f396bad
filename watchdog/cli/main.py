"""The ``watchdog`` command group. Every verb lives in its own module and is imported when invoked."""

from __future__ import annotations

import importlib
from typing import Any

import click

from watchdog import __version__


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
    """sre-watchdog: synthetic probes, PostgreSQL checks, SLOs and alerts for one web service.

    Works today: pages go to Slack (with SLACK_BOT_TOKEN) and to the log (JSON lines), each target once,
    never dropped, and climb L1 -> L2 -> L3 while nobody acknowledges (ack_within, repeat_every, timers in
    the state store); incidents are acknowledged, resolved and silenced from the Slack buttons
    (SLACK_SIGNING_SECRET or Socket Mode), `watchdog incidents` or the HTTP API (WATCHDOG_API_TOKEN);
    Alertmanager and Cloud Monitoring alerts escalate through the same chain. The canary guard flips the
    YAML/DB flag back to YAML by itself on conclusive evidence that the database path misbehaves
    (`watchdog flag`); when that does not bring the error rate back, a rollout with cloud_run sends the
    Cloud Run service's traffic back to the previous revision (`watchdog traffic`). Config values may be
    Secret Manager references (sm://...). On Cloud Run the log is Cloud Logging's JSON shape (log_format),
    and google_cloud.error_reporting sends the watchdog's own errors to Error Reporting.

    Cloud SQL's CPU and memory can come from Cloud Monitoring, a canary cohort can be a Cloud Run
    revision's real traffic from there, and google_cloud.export_metrics writes the watchdog's own results
    there as custom metrics.

    \b
    Start here:
      watchdog demo                      run everything against the built-in reference service
      watchdog validate --config DIR     check a config directory
      watchdog check --config DIR        run every probe once, now
      watchdog run --config DIR          the daemon
      watchdog db inspect DSN            the database at a glance (3 a.m. view)
      watchdog slo report --config DIR   objectives, budgets, burn rates, forecasts
      watchdog incidents list            open incidents; ack, resolve, silence them (see --help)
      watchdog page --test --config DIR  a test page to L1, end to end
      watchdog flag status --config DIR  the flag, the canary guard and its audit trail
      watchdog traffic status --config DIR  Cloud Run traffic and its rollback (rollouts with cloud_run)
      watchdog simulate SCENARIO.yaml    alert unit tests: your config over simulated time
      python -m watchdog.demo --help     the reference service alone (the system under test)
    """


def _attach_subcommands() -> None:
    # Imported when invoked (or listed by --help), not on every start: see _LazyGroup.
    main.add_lazy_command("validate", "watchdog.cli.check:validate")
    main.add_lazy_command("check", "watchdog.cli.check:check")
    main.add_lazy_command("run", "watchdog.cli.run:run")
    main.add_lazy_command("demo", "watchdog.cli.demo:demo")
    main.add_lazy_command("db", "watchdog.cli.db:db")
    main.add_lazy_command("slo", "watchdog.cli.slo:slo")
    main.add_lazy_command("incidents", "watchdog.cli.incidents:incidents")
    main.add_lazy_command("page", "watchdog.cli.page:page")
    main.add_lazy_command("flag", "watchdog.cli.flag:flag")
    main.add_lazy_command("traffic", "watchdog.cli.traffic:traffic")
    main.add_lazy_command("simulate", "watchdog.cli.simulate:simulate")


_attach_subcommands()

if __name__ == "__main__":
    main()
