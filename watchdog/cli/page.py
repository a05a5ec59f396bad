"""``watchdog page --test``: a test page to every target of one escalation level, sent now, end to end
through the real notifiers (Slack with ``SLACK_BOT_TOKEN``), with each target's round trip."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import click

from watchdog.cli._common import config_option, load_or_exit
from watchdog.config import WatchdogConfig
from watchdog.notify.base import Notifier, NotifyError, Page
from watchdog.notify.registry import build_notifiers
from watchdog.runtime.wiring import deployment_warnings, notifier_kinds

EXIT_FAILED = 1


@dataclass(frozen=True, slots=True)
class TestDelivery:
    target: str
    kind: str
    ok: bool
    round_trip_ms: float
    detail: str


async def send_test_pages(
    config: WatchdogConfig, policy_name: str, level: str, notifiers: dict[str, Notifier], sender: str
) -> list[TestDelivery]:
    policy = next((p for p in config.escalation if p.name == policy_name), None)
    if policy is None:
        raise click.UsageError(f"no escalation policy named {policy_name!r}")
    chosen = next((lv for lv in policy.levels if lv.level == level), None)
    if chosen is None:
        have = ", ".join(lv.level for lv in policy.levels)
        raise click.UsageError(f"policy {policy_name!r} has no level {level} (it has {have})")
    page = Page(
        key=f"watchdog:test:{int(time.time())}",
        title="watchdog test page",
        severity="info",
        state="firing",
        summary=f"A test page from {sender} to {level} ({chosen.who}); nothing is wrong. No action needed.",
        level=level,
        event="test",
        actions=False,
    )
    deliveries: list[TestDelivery] = []
    for target in chosen.notify:
        notifier = notifiers.get(target.type)
        label = f"{target.type} {target.channel}" if target.channel else target.type
        if notifier is None:
            deliveries.append(
                TestDelivery(label, target.type, False, 0.0, f"no {target.type} notifier configured")
            )
            continue
        started = time.perf_counter()
        try:
            await notifier.send(replace(page, channel=target.channel or "", mentions=tuple(target.mention)))
        except NotifyError as exc:
            kind = "permanent" if exc.permanent else "transient"
            deliveries.append(TestDelivery(label, target.type, False, _ms(started), f"{kind}: {exc}"))
            continue
        deliveries.append(TestDelivery(label, target.type, True, _ms(started), "delivered"))
    return deliveries


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


@click.command()
@config_option
@click.option("--test", "test", is_flag=True, required=True, help="Send a test page (the only mode).")
@click.option("--level", default="L1", show_default=True, type=click.Choice(["L1", "L2", "L3"]))
@click.option("--escalation", "policy", default="default", show_default=True, help="Escalation policy.")
@click.option("--json", "as_json", is_flag=True, help="Print the deliveries as JSON.")
def page(config_dir: Path, test: bool, level: str, policy: str, as_json: bool) -> None:
    """Send a test page to every target of one escalation level, now, and report each round trip.

    It goes through the same notifiers the daemon uses, configured by the same environment
    (SLACK_BOT_TOKEN, SLACK_API_URL), but around the daemon and its store: it proves the channel works,
    not that a daemon is running (the heartbeat is for that).

    Exit status 0 when every target took the page, 1 when any did not, 2 for bad usage or config.

    \b
    Examples:
      watchdog page --test --config .                 # L1 of the default policy
      watchdog page --test --level L3 --config .
    """
    config = load_or_exit(config_dir)
    for warning in deployment_warnings(config, os.environ):
        if "SLACK_BOT_TOKEN" in warning:
            click.echo(f"warning: {warning}", err=True)
    # No fallback here: a slack target without a token must fail the test, not land in the log.
    notifiers = build_notifiers(notifier_kinds(config), os.environ)
    sender = f"{getpass.getuser()}@{os.uname().nodename}"
    deliveries = asyncio.run(send_test_pages(config, policy, level, notifiers, sender))
    if as_json:
        click.echo(json.dumps([_as_dict(d) for d in deliveries]))
    else:
        for d in deliveries:
            mark = "ok  " if d.ok else "FAIL"
            click.echo(f"{mark} {d.target:40} {d.round_trip_ms:8.1f} ms  {d.detail}")
    if not deliveries or not all(d.ok for d in deliveries):
        sys.exit(EXIT_FAILED)


def _as_dict(d: TestDelivery) -> dict[str, object]:
    return {
        "target": d.target,
        "kind": d.kind,
        "ok": d.ok,
        "round_trip_ms": round(d.round_trip_ms, 1),
        "detail": d.detail,
    }
