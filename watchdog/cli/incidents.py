"""``watchdog incidents ...``: see and act on incidents from a shell, straight on the state store (the
daemon need not be running; with a PostgreSQL store, from any machine that reaches it). Attach with
``main.add_command(incidents)``.

Actions go through the same ``IncidentManager`` as the Slack buttons and the HTTP API: compare-and-set in
the store, and the note in the incident's Slack thread is enqueued in the same transaction (the running
daemon posts it).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from watchdog.cli._common import config_option, load_or_exit
from watchdog.core.clock import SystemClock
from watchdog.core.durations import human_duration, parse_duration
from watchdog.incidents.manager import OPEN_STATES, RESOLVED, ActionResult, IncidentManager
from watchdog.incidents.silences import MAX_SILENCE_S, Silence
from watchdog.runtime.wiring import open_configured_store
from watchdog.store import SqliteStore, StoreUnavailable
from watchdog.store.base import Incident
from watchdog.web.actions import incident_json, silence_json

T = TypeVar("T")

EXIT_FAILED = 1
"""Not found, a conflict (acknowledging a resolved incident), or no usable state store."""
STATES = (*OPEN_STATES, RESOLVED)

store_option = click.option(
    "--store",
    "state_spec",
    metavar="STORE",
    help="SQLite file or postgresql:// DSN of the state store (default: `state` in watchdog.yaml; what "
    "`watchdog run --state` takes).",
)
as_option = click.option(
    "--as",
    "as_name",
    metavar="NAME",
    help="Who is acting, recorded as cli:NAME and shown in the incident's thread (default: $USER).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


@click.group("incidents")
def incidents() -> None:
    """Incidents: list, inspect, acknowledge, resolve and silence them.

    Works on the state store directly (`state` in watchdog.yaml, or --store), whether the daemon runs or
    not; the running daemon posts the notes these actions leave in each incident's Slack thread. The same
    actions are the Slack buttons and the HTTP API (/api/v1/incidents, bearer WATCHDOG_API_TOKEN).

    \b
    Examples:
      watchdog incidents list                          open incidents (firing, acknowledged)
      watchdog incidents list --state all --json       every incident, as JSON
      watchdog incidents show alert:app-down           everything, with the escalation timers
      watchdog incidents ack alert:app-down            acknowledge as cli:$USER
      watchdog incidents resolve alert:app-down --as ana
      watchdog incidents silence alert:app-down --for 1h --reason "deploying the fix"
      watchdog incidents silence --match alertname=db-cpu-burn --for 2h --reason "reindexing"
      watchdog incidents silences                      silences in force (--all: ended ones too)
      watchdog incidents unsilence 3f9a1c2b7d4e

    \b
    Exit status: 0 done (or already so: a second ack is not an error), 1 unknown incident or silence,
    a conflict (acknowledging a resolved incident) or no usable state store, 2 a usage or config error.
    """
    # The incident manager logs each transition at WARNING for the daemon's log; here each command says
    # what happened itself, so only errors from below get through (when nobody configured logging).
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")


# -- the store and the manager --------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(EXIT_FAILED)


def _with_manager(
    config_dir: Path, state_spec: str | None, use: Callable[[IncidentManager], Awaitable[T]]
) -> T:
    """Open the configured store, run ``use`` with a manager over it, close the store."""
    config = load_or_exit(config_dir)
    try:
        store = open_configured_store(config, state_spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from None
    if isinstance(store, SqliteStore) and store.path != ":memory:" and not Path(store.path).exists():
        # Opening would create an empty store, and every answer would be "no incident".
        _fail(f"no state store at {store.path} (has `watchdog run` written one? see --store)")

    async def run() -> T:
        await store.open()
        try:
            return await use(IncidentManager(config, store, SystemClock()))
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StoreUnavailable as exc:
        _fail(f"state store unavailable: {exc}")


def _actor(as_name: str | None) -> str:
    name = (as_name or "").strip() or os.environ.get("USER", "").strip()
    if not name:
        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # no login name and no passwd entry (some containers)
            name = "unknown"
    return f"cli:{name}"


def _finish(result: ActionResult) -> None:
    if result.ok:
        click.echo(result.message)
        return
    _fail(result.message)


# -- formatting -----------------------------------------------------------------------------------------


def _utc(epoch: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when(value: Any, now: float) -> str:
    """An epoch from incident data as ``<UTC time> (<how long ago / from now>)``; ``—`` when unset."""
    if value is None or value == "":
        return "—"
    epoch = float(value)
    delta = epoch - now
    relative = f"in {human_duration(delta)}" if delta > 0 else f"{human_duration(-delta)} ago"
    return f"{_utc(epoch)} ({relative})"


def _ago(value: Any, now: float) -> str:
    """Compact, for tables: ``12.0 min ago`` / ``in 2.0 h``."""
    if value is None or value == "":
        return "—"
    delta = float(value) - now
    return f"in {human_duration(delta)}" if delta > 0 else f"{human_duration(-delta)} ago"


def _table(*columns: tuple[str, bool]) -> Table:
    """(header, keep whole) columns; keys, ids and times never wrap, free text does. No box: columns
    split on whitespace, for grep and awk as much as for eyes."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header, whole in columns:
        table.add_column(header, no_wrap=whole, overflow="fold")
    return table


def _print(table: Table) -> None:
    console = Console(soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped: no terminal width to fit, and a wrapped row breaks grep; rows as long as they need.
        console = Console(soft_wrap=False, width=1000)
    console.print(table)


def _muted_text(muted_by: Any) -> str:
    if not isinstance(muted_by, Mapping):
        return ""
    kind, name, reason = (str(muted_by.get(k, "")) for k in ("kind", "name", "reason"))
    what = {"silence": "silence", "maintenance": "maintenance window", "inhibited": "inhibited by"}
    return f"{what.get(kind, kind)} {name}" + (f" ({reason})" if reason else "")


def _level_name(manager: IncidentManager, data: Mapping[str, Any], offset: int = 0) -> str:
    """The policy level ``offset`` past the one reached (``L2``), or ``""`` when there is none."""
    policy = manager.policy(str(data.get("policy", "")))
    index = int(data.get("level", 0)) + offset
    if policy is None or not 0 <= index < len(policy.levels):
        return "" if offset else f"#{index}"
    level = policy.levels[index]
    return level.level if not offset else f"{level.level} ({level.who})"


def _states(values: Sequence[str]) -> list[str] | None:
    chosen: list[str] = []
    for value in values:
        for state in (s.strip() for s in value.split(",")):
            if state == "all":
                return None
            chosen.extend(OPEN_STATES if state == "open" else [state])
    unknown = [s for s in chosen if s not in STATES]
    if unknown:
        raise click.BadParameter(
            f"unknown state {unknown[0]!r}; states: {', '.join(STATES)}, open, all", param_hint="--state"
        )
    return sorted(set(chosen), key=STATES.index)


# -- commands -------------------------------------------------------------------------------------------


@incidents.command("list")
@config_option
@store_option
@click.option(
    "--state",
    "states",
    multiple=True,
    default=("open",),
    show_default=True,
    metavar="STATE[,STATE]",
    help="firing, acknowledged, resolved, open (firing and acknowledged) or all; repeat or comma-separate.",
)
@json_option
def list_command(config_dir: Path, state_spec: str | None, states: tuple[str, ...], as_json: bool) -> None:
    """Incidents as a table: key, state, severity, level reached, since, acked by, muted by.

    \b
    Examples:
      watchdog incidents list
      watchdog incidents list --state resolved
      watchdog incidents list --state firing,acknowledged --json
    """
    wanted = _states(states)

    async def query(manager: IncidentManager) -> tuple[IncidentManager, list[Incident]]:
        return manager, await manager.list_incidents(wanted)

    manager, found = _with_manager(config_dir, state_spec, query)
    found.sort(key=lambda i: (STATES.index(i.state) if i.state in STATES else 9, -i.updated_at))
    if as_json:
        click.echo(json.dumps([incident_json(i) for i in found], indent=2))
        return
    if not found:
        click.echo("no incidents" + ("" if wanted is None else f" ({', '.join(wanted)})"))
        return
    now = SystemClock().now()
    table = _table(
        ("key", True),
        ("state", True),
        ("severity", True),
        ("level", True),
        ("since", True),
        ("acked by", False),
        ("muted by", False),
    )
    for incident in found:
        data = incident.data
        table.add_row(
            incident.key,
            incident.state,
            str(data.get("severity", "")),
            _level_name(manager, data) if data.get("paged") else "not paged",
            _ago(data.get("since"), now),
            str(data.get("acked_by") or ""),
            _muted_text(data.get("muted_by")),
        )
    _print(table)


# Rendered by `show`: (label, value) rows, the timers among them.
def _show_rows(manager: IncidentManager, incident: Incident, now: float) -> list[tuple[str, str]]:
    data = incident.data
    paged = [str(level) for level in data.get("paged") or []]
    labels = " ".join(f"{k}={v}" for k, v in sorted(dict(data.get("labels") or {}).items()))
    rows = [
        ("incident", incident.key),
        (
            "state",
            f"{incident.state} (version {incident.version}, updated {_when(incident.updated_at, now)})",
        ),
        ("alert", str(data.get("alert", ""))),
        ("severity", str(data.get("severity", ""))),
        ("summary", str(data.get("summary", ""))),
        ("labels", labels or "—"),
        ("source", str(data.get("source", ""))),
        ("policy", str(data.get("policy", ""))),
        ("since", _when(data.get("since"), now)),
        (
            "level reached",
            f"{_level_name(manager, data)} (paged: {', '.join(paged)})" if paged else "not paged",
        ),
    ]
    next_level = _level_name(manager, data, offset=1)
    escalation = data.get("next_escalation_at")
    rows.append(
        (
            "next escalation at",
            f"{_when(escalation, now)} → {next_level}" if escalation is not None and next_level else "—",
        )
    )
    rows.append(("next reminder at", _when(data.get("next_repeat_at"), now)))
    if data.get("acked_by"):
        rows.append(("acked by", f"{data['acked_by']} at {_when(data.get('acked_at'), now)}"))
    rows.append(("ack expires at", _when(data.get("ack_expires_at"), now)))
    rows.append(("muted by", _muted_text(data.get("muted_by")) or "—"))
    if incident.state == RESOLVED:
        by = str(data.get("resolved_by") or "") or "the alert clearing"
        rows.append(("resolved", f"{_when(data.get('resolved_at'), now)} by {by}"))
        if data.get("resolution"):
            rows.append(("resolution", str(data["resolution"])))
    if data.get("budget_left"):
        rows.append(("budget left", str(data["budget_left"])))
    flaps = data.get("flaps") or []
    if flaps:
        rows.append(("fired again", f"{len(flaps)} times within the flap window"))
    if data.get("muted"):
        rows.append(("mutes", ", ".join(str(a) for a in data["muted"])))
    if data.get("repeats"):
        rows.append(("reminders sent", str(data["repeats"])))
    rows.append(("runbook", str(data.get("runbook_url") or "—")))
    for text, url in data.get("links") or []:
        rows.append(("link", f"{text}: {url}"))
    rows.append(("thread", str(data.get("thread") or "—")))
    return rows


@incidents.command("show")
@click.argument("key")
@config_option
@store_option
@json_option
def show(key: str, config_dir: Path, state_spec: str | None, as_json: bool) -> None:
    """Everything about incident KEY: state, summary, labels, levels paged and the timers (next
    escalation, next reminder, when the acknowledgement expires). Exit 1 when there is no such incident.

    \b
    Examples:
      watchdog incidents show alert:app-down
      watchdog incidents show alert:content-db-burn --json
    """

    async def query(manager: IncidentManager) -> tuple[IncidentManager, Incident | None]:
        return manager, await manager.get(key)

    manager, incident = _with_manager(config_dir, state_spec, query)
    if incident is None:
        _fail(f"no incident {key!r} (watchdog incidents list --state all shows them all)")
    if as_json:
        click.echo(json.dumps(incident_json(incident), indent=2))
        return
    now = SystemClock().now()
    for label, value in _show_rows(manager, incident, now):
        click.echo(f"{label + ':':<20}{value}")


@incidents.command("ack")
@click.argument("key")
@as_option
@config_option
@store_option
def ack(key: str, as_name: str | None, config_dir: Path, state_spec: str | None) -> None:
    """Acknowledge incident KEY: escalation and reminders stop until the policy's ack_timeout.

    Acknowledging an acknowledged incident changes nothing (exit 0); a resolved one is a conflict (exit 1).

    \b
    Examples:
      watchdog incidents ack alert:app-down
      watchdog incidents ack alert:app-down --as ana
    """
    actor = _actor(as_name)
    result = _with_manager(config_dir, state_spec, lambda m: m.acknowledge(key, actor))
    _finish(result)


@incidents.command("resolve")
@click.argument("key")
@as_option
@config_option
@store_option
def resolve(key: str, as_name: str | None, config_dir: Path, state_spec: str | None) -> None:
    """Resolve incident KEY now (if its alert still fires, the next evaluation opens it again).

    \b
    Examples:
      watchdog incidents resolve alert:app-down
      watchdog incidents resolve alert:app-down --as ana
    """
    actor = _actor(as_name)
    result = _with_manager(config_dir, state_spec, lambda m: m.resolve(key, actor))
    _finish(result)


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0 or seconds > MAX_SILENCE_S:
        raise click.BadParameter("a silence lasts more than 0 s and at most 30 days (30d)")
    return seconds


def _matchers(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    matchers: dict[str, str] = {}
    for value in values:
        name, sep, label_value = value.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{value!r} is not LABEL=VALUE (e.g. alertname=db-cpu-burn)")
        matchers[name.strip()] = label_value.strip()
    return matchers


@incidents.command("silence")
@click.argument("key", required=False)
@click.option(
    "--match",
    "matchers",
    multiple=True,
    metavar="LABEL=VALUE",
    callback=_matchers,
    help="Silence every alert with this label (alertname is the alert's name); repeat to narrow.",
)
@click.option(
    "--for",
    "duration_s",
    required=True,
    metavar="DURATION",
    callback=_duration,
    help="How long: 30m, 2h, 1d (at most 30d).",
)
@click.option("--reason", default="", help="Why nobody should be paged (required with --match).")
@as_option
@config_option
@store_option
def silence(
    key: str | None,
    matchers: dict[str, str],
    duration_s: float,
    reason: str,
    as_name: str | None,
    config_dir: Path,
    state_spec: str | None,
) -> None:
    """Mute incident KEY's alert, or every alert matching --match, for --for. Muted alerts are recorded
    but not paged; an open incident they match is muted at once, and pages again when the silence ends.

    Give KEY or --match, not both. Prints the silence's id (for `watchdog incidents unsilence ID`).

    \b
    Examples:
      watchdog incidents silence alert:app-down --for 1h --reason "deploying the fix"
      watchdog incidents silence --match alertname=db-cpu-burn --for 2h --reason "reindexing"
      watchdog incidents silence --match group=database --match env=staging --for 30m --reason "drill"
    """
    if (key is None) == (not matchers):
        raise click.UsageError("give an incident KEY or --match LABEL=VALUE (one of them)")
    actor = _actor(as_name)
    if key is not None:
        result = _with_manager(
            config_dir, state_spec, lambda m: m.silence_incident(key, duration_s, actor, reason)
        )
        _finish(result)
        return
    if not reason.strip():
        raise click.UsageError("--reason is required with --match: say why nobody should be paged")
    made = _with_manager(
        config_dir, state_spec, lambda m: m.add_silence(matchers, duration_s, actor, reason.strip())
    )
    matched = " ".join(f"{k}={v}" for k, v in sorted(made.matchers.items()))
    click.echo(f"silence {made.id}: {matched} until {_utc(made.ends_at)} by {actor}")


@incidents.command("unsilence")
@click.argument("silence_id", metavar="ID")
@config_option
@store_option
def unsilence(silence_id: str, config_dir: Path, state_spec: str | None) -> None:
    """Remove silence ID now: the alerts it muted page again if they still fire. Exit 1 when there is no
    such silence.

    \b
    Example:
      watchdog incidents unsilence 3f9a1c2b7d4e
    """
    removed = _with_manager(config_dir, state_spec, lambda m: m.remove_silence(silence_id))
    if not removed:
        _fail(f"no silence {silence_id!r} (watchdog incidents silences --all lists them)")
    click.echo(f"silence {silence_id} removed")


@incidents.command("silences")
@click.option("--all", "show_all", is_flag=True, help="Also silences that ended (kept 7 days).")
@config_option
@store_option
@json_option
def silences(show_all: bool, config_dir: Path, state_spec: str | None, as_json: bool) -> None:
    """Silences in force (id, matchers, until when, author, reason).

    \b
    Examples:
      watchdog incidents silences
      watchdog incidents silences --all --json
    """

    async def query(manager: IncidentManager) -> list[Silence]:
        return await manager.silences.all()

    found = _with_manager(config_dir, state_spec, query)
    now = SystemClock().now()
    shown = sorted((s for s in found if show_all or s.ends_at > now), key=lambda s: (s.ends_at, s.id))
    if as_json:
        click.echo(json.dumps([silence_json(s, now) for s in shown], indent=2))
        return
    if not shown:
        click.echo("no silences" + ("" if show_all else " in force (--all shows ended ones)"))
        return
    table = _table(
        ("id", True),
        ("matchers", True),
        ("state", True),
        ("ends", True),
        ("author", False),
        ("reason", False),
    )
    for s in shown:
        table.add_row(
            s.id,
            " ".join(f"{k}={v}" for k, v in sorted(s.matchers.items())),
            "active" if s.active(now) else ("ended" if s.ends_at <= now else "pending"),
            _ago(s.ends_at, now),
            s.author,
            s.reason,
        )
    _print(table)
