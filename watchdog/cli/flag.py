"""``watchdog flag status|rollback|promote|hold|release``: the rollouts the canary guard watches, and the
same flips by hand (verified by reading back, written to the audit trail), straight on the flag backend and
the state store (the daemon need not run)."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from watchdog.canary.guard import CanaryGuard, Decision, audit_trail
from watchdog.cli._common import (
    EXIT_FAILED,
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
from watchdog.flags.base import FlagError
from watchdog.incidents.manager import IncidentManager
from watchdog.runtime.wiring import build_guards, open_configured_store
from watchdog.store import StoreUnavailable

T = TypeVar("T")

rollout_option = click.option(
    "--rollout", "rollout_name", metavar="NAME", help="Which rollout (default: the only one configured)."
)


def _with_guard(
    config_dir: Path,
    state_spec: str | None,
    rollout_name: str | None,
    use: Callable[[CanaryGuard], Awaitable[T]],
) -> T:
    config: WatchdogConfig = load_or_exit(config_dir)
    if not config.rollouts:
        fail(f"no rollouts in {config_dir}/alerts/*.yaml (rollouts: [...])")
    chosen = pick_rollout([r.name for r in config.rollouts], rollout_name)
    try:
        store = open_configured_store(config, state_spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from None

    async def run() -> T:
        await store.open()
        try:
            clock = SystemClock()
            manager = IncidentManager(config, store, clock)
            guards = build_guards(config, store, manager, clock, os.environ)
            guard = next(g for g in guards if g.rollout.name == chosen)
            return await use(guard)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StoreUnavailable as exc:
        fail(f"state store unavailable: {exc}")
    except FlagError as exc:
        fail(f"flag backend: {exc}")


def _actor(as_name: str | None) -> str:
    return f"cli:{as_name or getpass.getuser()}"


def _report(decision: Decision) -> None:
    click.echo(f"{decision.action}: {decision.reason}")
    if decision.action in ("conflict",):
        sys.exit(EXIT_FAILED)


@click.group("flag")
def flag() -> None:
    """The YAML/DB flag and the canary guard watching it.

    The guard (in `watchdog run`) rolls the flag back to YAML by itself on conclusive evidence that the
    canary breaks its limits, then holds the rollout until a person releases it. These commands show it and
    do the same by hand; every flip is verified by reading the flag back and written to the audit trail.

    \b
    Examples:
      watchdog flag status                              the flag, the rollout's state, the audit trail
      watchdog flag rollback --reason "DB latency"      all traffic to YAML now (then held)
      watchdog flag promote --to 25 --reason "healthy"  more traffic to the database
      watchdog flag hold --reason "investigating"       the guard stops judging (no flip, no promotion)
      watchdog flag release                             the guard judges again, from now

    \b
    Exit status: 0 done, 1 the flag backend or store failed or the rollout changed meanwhile, 2 usage.
    """


@flag.command("status")
@config_option
@store_option
@rollout_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(config_dir: Path, state_spec: str | None, rollout_name: str | None, as_json: bool) -> None:
    """The flag's split now, the rollout's state and the audit trail."""

    async def use(guard: CanaryGuard) -> dict[str, Any]:
        state = await guard.flag.get()
        record = await guard.record()
        trail = await audit_trail(guard.store, guard.rollout.name)
        return {
            "rollout": guard.rollout.name,
            "backend": guard.flag.name,
            "db_percent": state.db_percent,
            "updated_by": state.updated_by,
            "updated_at": state.updated_at,
            "reason": state.reason,
            "guard_state": record.state,
            "guard": dict(record.data),
            "audit": [dict(a) for a in trail],
        }

    result = _with_guard(config_dir, state_spec, rollout_name, use)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    click.echo(f"rollout {result['rollout']}  flag {result['backend']}: {result['db_percent']:g} % database")
    click.echo(
        f"  last set by {result['updated_by'] or '?'} at {iso(result['updated_at'])}: {result['reason']}"
    )
    click.echo(
        f"  guard: {result['guard_state']}"
        + (f" — {result['guard'].get('reason')}" if result["guard"].get("reason") else "")
    )
    if result["audit"]:
        click.echo("audit trail:")
        for a in result["audit"]:
            click.echo(
                f"  {iso(a['at'])}  {a['action']:9} {a['from_percent']} → {a['to_percent']} %  "
                f"by {a['actor']}: "
                f"{a['reason']}"
            )


@flag.command("rollback")
@config_option
@store_option
@rollout_option
@as_option
@click.option("--reason", required=True, help="Why (recorded in the flag and the audit trail).")
def rollback(
    config_dir: Path, state_spec: str | None, rollout_name: str | None, as_name: str | None, reason: str
) -> None:
    """Send all traffic to YAML now (0 % database), verified; the rollout is then held."""
    actor = _actor(as_name)
    _report(
        _with_guard(
            config_dir, state_spec, rollout_name, lambda g: g.set_by_hand(0.0, actor, reason, "rollback")
        )
    )


@flag.command("promote")
@config_option
@store_option
@rollout_option
@as_option
@click.option("--to", "percent", type=click.FloatRange(0, 100), required=True, help="Database share, %.")
@click.option("--reason", required=True, help="Why (recorded in the flag and the audit trail).")
def promote(
    config_dir: Path,
    state_spec: str | None,
    rollout_name: str | None,
    as_name: str | None,
    percent: float,
    reason: str,
) -> None:
    """Set the database share to PERCENT, verified; the guard judges the new split from now."""
    actor = _actor(as_name)
    _report(
        _with_guard(
            config_dir, state_spec, rollout_name, lambda g: g.set_by_hand(percent, actor, reason, "promote")
        )
    )


@flag.command("hold")
@config_option
@store_option
@rollout_option
@as_option
@click.option("--reason", required=True, help="Why the guard should stop judging.")
def hold(
    config_dir: Path, state_spec: str | None, rollout_name: str | None, as_name: str | None, reason: str
) -> None:
    """Stop the guard judging this rollout (no rollback, no promotion) until `release`."""
    actor = _actor(as_name)
    _report(_with_guard(config_dir, state_spec, rollout_name, lambda g: g.hold(actor, reason)))


@flag.command("release")
@config_option
@store_option
@rollout_option
@as_option
def release(config_dir: Path, state_spec: str | None, rollout_name: str | None, as_name: str | None) -> None:
    """Hand the rollout back to the guard: it judges the flag's current split from now."""
    actor = _actor(as_name)
    _report(_with_guard(config_dir, state_spec, rollout_name, lambda g: g.release(actor)))
