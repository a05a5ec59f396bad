"""``watchdog demo``: the reference service and the daemon on loopback, with a fault in the middle."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import click
import httpx
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from watchdog.cli.slo_report import STATE_STYLES
from watchdog.config import ConfigError, WatchdogConfig, load_config
from watchdog.core.clock import SystemClock
from watchdog.core.logs import configure_logging
from watchdog.core.results import parse_series_key
from watchdog.slo.messages import NO_DATA_FIRING, explain_severity, explain_state, slo_state
from watchdog.slo.model import SloStatus
from watchdog.store.base import Incident, StateStore


@dataclass(frozen=True)
class DemoPhase:
    at_fraction: float
    faults: dict[str, object]
    note: str


# At the default 60 s: 15 s per fault, long enough for its page to fire (three results 2 s apart, then an
# evaluation), and 12 s after the heal for the latency page to resolve before the summary prints.
PHASES = (
    DemoPhase(0.0, {}, "all healthy: flag at 5 % db, synthetic users on both paths"),
    DemoPhase(0.3, {"db_error_rate": 1.0}, "the database path breaks (every DB-path request errors)"),
    DemoPhase(0.55, {"db_latency_ms": 350}, "errors fixed, but the database path is slow (350 ms)"),
    DemoPhase(0.8, {}, "all faults cleared"),
)


def demo_config_dir() -> Path:
    return Path(str(resources.files("watchdog") / "demo_config"))


@dataclass
class Traffic:
    """Synthetic users on the reference service: unpinned requests, as real clients send them, each user
    bucketed by the flag; counted per phase of the story."""

    requests: dict[str, int]
    errors: dict[str, int]
    db: dict[str, int]

    @classmethod
    def new(cls) -> Traffic:
        return cls({}, {}, {})

    def add(self, phase: str, ok: bool, source: str | None) -> None:
        self.requests[phase] = self.requests.get(phase, 0) + 1
        self.errors[phase] = self.errors.get(phase, 0) + (not ok)
        self.db[phase] = self.db.get(phase, 0) + (source == "db")

    def describe(self, phase: str) -> str:
        n = self.requests.get(phase, 0)
        if not n:
            return "no requests"
        errors, db = self.errors.get(phase, 0), self.db.get(phase, 0)
        return f"{n} requests, {errors} errors ({errors / n:.1%}), {db} from the database ({db / n:.1%})"


async def _users(client: httpx.AsyncClient, traffic: Traffic, phase: list[str], stop: asyncio.Event) -> None:
    """About 25 requests a second from 500 rotating users (each a stable flag bucket)."""
    n = 0
    while not stop.is_set():
        n += 1
        started_in = phase[0]  # a request belongs to the phase it was sent in
        try:
            r = await client.get(
                "/api/pbl/scenarios", params={"lang": "en"}, headers={"X-Request-Id": f"user-{n % 500}"}
            )
            traffic.add(started_in, r.status_code < 500, r.headers.get("X-Data-Source"))
        except httpx.HTTPError:
            traffic.add(started_in, False, None)
        await asyncio.sleep(0.04)


async def _run_demo(duration_s: float, workdir: Path, listen: str, console: Console) -> int:
    from watchdog.demo import ReferenceServer
    from watchdog.flags.flagd_file import FlagdFileBackend, write_initial
    from watchdog.runtime.serve import serve_daemon

    flag_path = workdir / "flags.json"
    write_initial(flag_path, 5.0)
    flag = FlagdFileBackend(flag_path)
    service = ReferenceServer(flag_path=flag_path, sqlite_path=workdir / "content.db", rate_limits=False)
    base_url = await service.start()
    os.environ["TARGET_BASE_URL"] = base_url
    os.environ["WATCHDOG_STATE"] = str(workdir / "watchdog-state.db")
    os.environ["WATCHDOG_LISTEN"] = listen
    os.environ["WATCHDOG_DEMO_FLAG_FILE"] = str(flag_path)
    try:
        config = load_config(demo_config_dir())
    except ConfigError as exc:
        await service.stop()
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        return 2
    console.print(f"[bold]reference service[/] {base_url}   [bold]state[/] {config.settings.state}")
    stop = asyncio.Event()
    daemon_task = asyncio.create_task(
        serve_daemon(config, config.settings.listen, config.settings.state, stop)
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    traffic, phase_name = Traffic.new(), ["before the fault"]
    onset: float | None = None
    flipped: float | None = None
    reloads_at_onset = 0
    obeyed = False
    users_stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        users = asyncio.create_task(_users(client, traffic, phase_name, users_stop))
        for phase in PHASES:
            at = started + phase.at_fraction * duration_s
            while loop.time() < at and not daemon_task.done():
                await asyncio.sleep(min(0.1, max(0.0, at - loop.time())))
                if onset is not None and flipped is None and (await flag.get()).db_percent == 0.0:
                    flipped = loop.time()
                    console.print(
                        f"[cyan]t={flipped - started:5.1f}s[/] [bold green]the watchdog flipped the flag to "
                        "YAML (0 % database), verified by reading it back[/]"
                    )
                if flipped is not None and not obeyed:
                    # The service's flagd provider polls the file (every 0.5 s): its requests follow the
                    # new flag once it has reloaded, and "after the flip" counts from then.
                    reloads = int((await client.get("/_flag")).json().get("reloads", 0))
                    if reloads > reloads_at_onset:
                        obeyed = True
                        phase_name[0] = "after the flip"
                        console.print(
                            f"[cyan]t={loop.time() - started:5.1f}s[/] the service reads the new flag "
                            f"({loop.time() - flipped:.1f} s after the flip)"
                        )
            if daemon_task.done():
                break  # the daemon stopped early (signal or error); report what we have
            # Faults merge on POST; each phase starts from a clean slate.
            (await client.delete("/_faults")).raise_for_status()
            if phase.faults:
                (await client.post("/_faults", json=phase.faults)).raise_for_status()
            if phase.faults.get("db_error_rate") and onset is None:
                reloads_at_onset = int((await client.get("/_flag")).json().get("reloads", 0))
                onset = loop.time()
                phase_name[0] = "the fault, before the flip"
            console.print(f"[cyan]t={loop.time() - started:5.1f}s[/] {phase.note}")
        remaining = started + duration_s - loop.time()
        if remaining > 0 and not daemon_task.done():
            await asyncio.wait({daemon_task}, timeout=remaining)
        users_stop.set()
        await users
    stop.set()
    status = await daemon_task
    await service.stop()
    await report_summary(config, console)
    console.print("[bold]real requests[/] (synthetic users, not pinned to a path: each follows the flag)")
    for name in ("before the fault", "the fault, before the flip", "after the flip"):
        console.print(f"  {name:28} {traffic.describe(name)}", highlight=False)
    if onset is None or flipped is None:
        console.print("[bold red]the flag was not flipped: the canary guard did not roll back[/]")
        return status or 1
    console.print(f"[bold]onset→flip: {flipped - onset:.1f} s[/]")
    return status


def incident_why(incident: Incident, statuses: Mapping[str, SloStatus]) -> str:
    """Why a firing SLO incident is still open, in one line ("" for others: probe alerts say it in their
    summary, and a resolved incident needs no reason)."""
    if incident.state != "firing":
        return ""
    labels = incident.data.get("labels")
    slo = labels.get("slo") if isinstance(labels, dict) else None
    status = statuses.get(slo) if isinstance(slo, str) else None
    if status is None or incident.key.endswith(":no_data"):
        return ""
    severity = "ticket" if incident.data.get("burn") == "ticket" else "page"
    lines = explain_severity(status, severity)
    if not lines:
        return "no rule fires any more: the next evaluation resolves it"
    return lines[0]


def render_slos(statuses: Sequence[SloStatus]) -> Group:
    """Each SLO's state word, budget and why its alerts still fire, as indented lines (wrapped lines keep
    their indent)."""
    parts: list[RenderableType] = []

    def line(text: str, indent: int) -> None:
        parts.append(Padding(Text(text), (0, 0, 0, indent), expand=False))

    for status in statuses:
        word = slo_state(status)
        head = Text()
        head.append(status.name, style="bold")
        head.append(f"  {status.objective * 100:g} % over {status.window}  ")
        head.append(word, style=STATE_STYLES[word])
        for alert in status.firing:
            head.append(f"  {alert.upper()}", style="bold red" if alert == "page" else "yellow")
        parts.append(head)
        line(explain_state(status), 2)
        for severity in ("page", "ticket"):
            for depth, text in enumerate(explain_severity(status, severity)):
                line(text, 4 if depth else 2)
        if "no_data" in status.firing:
            line(NO_DATA_FIRING, 2)
    return Group(*parts)


async def _slo_statuses(config: WatchdogConfig, store: StateStore) -> list[SloStatus]:
    """The SLOs as of now, evaluated afresh from the store. The daemon's engine is gone with the daemon; a
    fresh one carries the open incidents over as after a restart, so a firing alert still fires here."""
    from watchdog.incidents.manager import IncidentManager
    from watchdog.slo.engine import SloEngine

    clock = SystemClock()
    firing = await IncidentManager(config, store, clock).open_slo_incidents()
    engine = SloEngine(config.slos, store, clock, firing=firing)
    return (await engine.evaluate()).statuses


async def report_summary(config: WatchdogConfig, console: Console) -> None:
    """What the watchdog saw: results per series, incidents (and why one still fires), the SLOs now."""
    from watchdog.store import open_store

    store = open_store(config.settings.state)
    await store.open()
    try:
        rows = await store.minutes(0, 2**40)
        totals: dict[str, list[int]] = {}
        for row in rows:
            t = totals.setdefault(row.series, [0, 0, 0])
            t[0] += row.count
            t[1] += row.failures
            t[2] += row.degraded
        table = Table(title="what the watchdog saw")
        for column in ("probe", "labels", "results", "failed", "degraded", "p50", "p95"):
            table.add_column(
                column,
                justify="right" if column in {"results", "failed", "degraded", "p50", "p95"} else "left",
            )
        for series, (count, failures, degraded) in sorted(totals.items()):
            probe, labels = parse_series_key(series)
            q = await store.latency_quantiles(0, 2**40, [0.5, 0.95], probe=probe, labels=labels)
            table.add_row(
                probe,
                " ".join(f"{k}={v}" for k, v in sorted(labels.items())),
                str(count),
                f"[red]{failures}[/]" if failures else "0",
                f"[yellow]{degraded}[/]" if degraded else "0",
                _ms(q.get(0.5)),
                _ms(q.get(0.95)),
            )
        console.print(table)
        statuses = await _slo_statuses(config, store) if config.slos else []
        by_name = {s.name: s for s in statuses}
        incidents = await store.list_incidents()
        if incidents:
            table = Table(title="incidents")
            for column in ("incident", "state", "severity", "summary", "why it is still open"):
                table.add_column(column)
            for incident in incidents:
                table.add_row(
                    incident.key,
                    incident.state,
                    str(incident.data.get("severity", "")),
                    str(incident.data.get("summary", "")),
                    incident_why(incident, by_name),
                )
            console.print(table)
        if statuses:
            console.print("[bold]SLOs when the demo ended[/] [dim](evaluated afresh from the state store;"
                          " open incidents carried over, as after a restart)[/]")
            console.print(render_slos(statuses), highlight=False)
        examples: dict[tuple[str, str], str] = {}
        for r in await store.recent(limit=5000):
            if r.outcome.value != "ok":
                examples.setdefault((r.probe, r.outcome.value), r.reason)
        if examples:
            console.print("[bold]example reasons[/]")
            for (probe, outcome), reason in sorted(examples.items()):
                console.print(f"  {probe} {outcome}: {reason}", highlight=False)
    finally:
        await store.close()


class _ConsoleHandler(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console

    def emit(self, record: logging.LogRecord) -> None:
        # escape: page lines contain "[critical → L1]", which Rich would take for markup.
        self._console.print(f"[bold magenta]{escape(record.getMessage())}[/]", highlight=False)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None or not math.isfinite(seconds) else f"{seconds * 1000:.1f} ms"


@click.command()
@click.option("--duration", default=60.0, show_default=True, help="Seconds to run.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the flag file, databases and state here (default: a temporary directory).",
)
@click.option("--listen", default="127.0.0.1:0", show_default=True, help="Where the daemon serves /metrics.")
@click.option("--json-logs/--quiet-logs", default=False, help="Show the daemon's JSON log lines.")
def demo(duration: float, workdir: Path | None, listen: str, json_logs: bool) -> None:
    """Start the reference service and the daemon on loopback with an embedded SQLite store and the log
    notifier, break the database path for a while, then print what the watchdog saw. Exit 0."""
    configure_logging("INFO" if json_logs else "ERROR")
    console = Console(width=max(Console().width, 120))
    if not json_logs:
        # Pages are the point of the demo: show them as they are sent, readable, even in quiet mode.
        pages = logging.getLogger("watchdog.page")
        pages.addHandler(_ConsoleHandler(console))
        pages.setLevel(logging.INFO)
        pages.propagate = False
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        sys.exit(asyncio.run(_run_demo(duration, workdir, listen, console)))
    with tempfile.TemporaryDirectory(prefix="watchdog-demo-") as tmp:
        sys.exit(asyncio.run(_run_demo(duration, Path(tmp), listen, console)))


__all__ = ["demo", "demo_config_dir", "report_summary"]
