"""``watchdog traffic status|rollback|release``: the Cloud Run traffic rollback of a rollout with
``cloud_run:`` (the seed's rollback step 2), straight on the Cloud Run Admin API and the state store (the
daemon need not run)."""

from __future__ import annotations

import asyncio
import getpass
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from watchdog.canary.cloud_run import (
    TrafficError,
    TrafficRollback,
    build_traffic_rollback,
    choose_previous,
    describe_split,
    traffic_audit,
)
from watchdog.cli._common import (
    as_option,
    config_option,
    fail,
    iso,
    load_or_exit,
    pick_rollout,
    store_option,
)
from watchdog.config import WatchdogConfig
from watchdog.core.clock import SystemClock
from watchdog.incidents.manager import IncidentManager
from watchdog.runtime.wiring import open_configured_store
from watchdog.store import StoreUnavailable

T = TypeVar("T")

rollout_option = click.option(
    "--rollout",
    "rollout_name",
    metavar="NAME",
    help="Which rollout (default: the only one with cloud_run configured).",
)


def _with_traffic(
    config_dir: Path,
    state_spec: str | None,
    rollout_name: str | None,
    use: Callable[[TrafficRollback], Awaitable[T]],
) -> T:
    config: WatchdogConfig = load_or_exit(config_dir)
    names = [r.name for r in config.rollouts if r.cloud_run is not None]
    if not names:
        fail(f"no rollout in {config_dir}/alerts/*.yaml has cloud_run: {{...}}")
    chosen = pick_rollout(names, rollout_name, "rollouts with cloud_run")
    rollout = next(r for r in config.rollouts if r.name == chosen)
    gcp = config.settings.google_cloud
    try:
        store = open_configured_store(config, state_spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from None

    async def run() -> T:
        await store.open()
        traffic: TrafficRollback | None = None
        try:
            clock = SystemClock()
            manager = IncidentManager(config, store, clock)
            traffic = build_traffic_rollback(
                rollout,
                gcp.cloud_run_service if gcp else "",
                gcp.endpoints if gcp else {},
                store,
                manager,
                clock,
            )
            assert traffic is not None  # the rollout has cloud_run
            return await use(traffic)
        finally:
            if traffic is not None:
                await traffic.admin.close()
            await store.close()

    try:
        return asyncio.run(run())
    except StoreUnavailable as exc:
        fail(f"state store unavailable: {exc}")
    except TrafficError as exc:
        fail(f"Cloud Run: {exc}")


def _actor(as_name: str | None) -> str:
    return f"cli:{as_name or getpass.getuser()}"


@click.group("traffic")
def traffic() -> None:
    """Cloud Run traffic of a rollout with cloud_run (the rollback plan's step 2).

    When the canary guard's flag rollback did not bring the error rate back within cloud_run.after, the guard
    (in `watchdog run`) sends 100 % of the service's traffic to the previous serving revision, verifies it by
    reading the service back, audits it, pages, and holds it until a person releases it. These commands show
    it and do the same by hand.

    \b
    Examples:
      watchdog traffic status                            the split now, the previous revision, the audit trail
      watchdog traffic rollback --reason "bad release"   100 % to the previous serving revision now (held)
      watchdog traffic release                           the guard may roll traffic back again

    \b
    Exit status: 0 done, 1 the Admin API or the store failed, 2 usage.
    """


@traffic.command("status")
@config_option
@store_option
@rollout_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(config_dir: Path, state_spec: str | None, rollout_name: str | None, as_json: bool) -> None:
    """The service's traffic now, the revision a rollback would go to, the record and the audit trail."""

    async def use(t: TrafficRollback) -> dict[str, Any]:
        view = await t.admin.read(time.monotonic() + t.settings.timeout)
        try:
            suspect, previous = choose_previous(view)
            candidate: dict[str, str] = {"suspect": suspect, "previous": previous}
        except TrafficError as exc:
            candidate = {"none": str(exc)}
        record = await t.record()
        return {
            "rollout": t.rollout.name,
            "service": t.admin.service,
            "serving": view.serving,
            "latest_ready": view.latest_ready,
            "rollback_to": candidate,
            "state": record.state if record else "none",
            "record": dict(record.data) if record else {},
            "audit": [dict(a) for a in await traffic_audit(t.store, t.rollout.name)],
        }

    result = _with_traffic(config_dir, state_spec, rollout_name, use)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo(f"rollout {result['rollout']}  service {result['service']}")
    click.echo(f"  serving: {describe_split(result['serving'])} (latest ready: {result['latest_ready']})")
    to = result["rollback_to"]
    if "previous" in to:
        click.echo(f"  a rollback sends 100 % to {to['previous']} (from {to['suspect']}, the newest serving)")
    else:
        click.echo(f"  no rollback possible: {to['none']}")
    reason = result["record"].get("reason")
    click.echo(f"  traffic rollback: {result['state']}" + (f" — {reason}" if reason else ""))
    if result["record"].get("last_error"):
        click.echo(f"  last error: {result['record']['last_error']}")
    if result["audit"]:
        click.echo("audit trail:")
        for a in result["audit"]:
            click.echo(
                f"  {iso(a['at'])}  {a['action']:8} {a['from']} → {a['to']}  by {a['actor']}: {a['reason']}"
            )


@traffic.command("rollback")
@config_option
@store_option
@rollout_option
@as_option
@click.option("--reason", required=True, help="Why (recorded in the audit trail).")
def rollback(
    config_dir: Path, state_spec: str | None, rollout_name: str | None, as_name: str | None, reason: str
) -> None:
    """Send 100 % of traffic to the previous serving revision now, verified; then held."""
    actor = _actor(as_name)
    click.echo(
        _with_traffic(config_dir, state_spec, rollout_name, lambda t: t.rollback_by_hand(actor, reason))
    )


@traffic.command("release")
@config_option
@store_option
@rollout_option
@as_option
def release(config_dir: Path, state_spec: str | None, rollout_name: str | None, as_name: str | None) -> None:
    """End the hold after a traffic rollback: the guard may roll traffic back again after a flag rollback."""
    actor = _actor(as_name)
    click.echo(_with_traffic(config_dir, state_spec, rollout_name, lambda t: t.release(actor)))
