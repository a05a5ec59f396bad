"""``watchdog db inspect``: every database check once, now — the 3 a.m. view of connections, blockers,
long queries, replication and vitals. Attach with ``main.add_command(db)``."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from typing import Any

import click
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from watchdog.config.postgres import HostMetrics, PostgresProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import SystemClock
from watchdog.core.durations import human_duration, parse_duration
from watchdog.core.results import Outcome
from watchdog.probes.postgres import DsnError, InspectReport, PostgresProbe, resolve_target
from watchdog.probes.postgres._report import FamilyReport, fmt_bytes
from watchdog.sources.base import MetricSource
from watchdog.sources.registry import build_source

_STYLE = {Outcome.OK: "green", Outcome.DEGRADED: "yellow", Outcome.FAILED: "bold red"}


def _is_local(host: str) -> bool:
    if host.startswith("/") or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def db() -> None:
    """PostgreSQL checks on demand."""


@db.command()
@click.argument("dsn", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--timeout", default="10s", show_default=True, callback=_duration, help="Bound on the whole run."
)
@click.option(
    "--dsn-env", default=None, help="Read the DSN from this environment variable (e.g. DATABASE_URL)."
)
@click.option(
    "--env-prefix",
    default="DB_",
    show_default=True,
    help="Without a DSN: <prefix>HOST/PORT/NAME/USER/PASSWORD.",
)
@click.option(
    "--host-metrics",
    type=click.Choice(["auto", "proc", "prometheus", "none"]),
    default="auto",
    show_default=True,
    help="CPU/memory source: auto = this host's /proc when the database is local.",
)
@click.option("--prometheus-url", default=None, help="Prometheus base URL for --host-metrics prometheus.")
@click.option(
    "--long-query", default="5s", show_default=True, callback=_duration, help="Long-running threshold."
)
@click.option(
    "--top", default=5, show_default=True, type=click.IntRange(0, 50), help="Top statements to show."
)
def inspect(
    dsn: str | None,
    as_json: bool,
    timeout: float,
    dsn_env: str | None,
    env_prefix: str,
    host_metrics: str,
    prometheus_url: str | None,
    long_query: float,
    top: int,
) -> None:
    """Run every database check once against DSN (default: DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD).

    Exit status 1 when any check failed, 0 otherwise. Prefer DB_PASSWORD or --dsn-env over a password on
    the command line (visible in the process list).
    """
    try:
        target = resolve_target(dsn=dsn, dsn_env=dsn_env, env_prefix=env_prefix, sslmode=None)
    except DsnError as exc:
        raise click.UsageError(str(exc)) from None
    source: MetricSource | None = None
    if host_metrics == "prometheus":
        if not prometheus_url:
            raise click.UsageError("--host-metrics prometheus needs --prometheus-url")
        source = build_source(HostMetrics(source="prometheus", url=prometheus_url))
    elif host_metrics == "proc" or (host_metrics == "auto" and _is_local(target.host)):
        source = build_source(HostMetrics(source="proc"))
    config = PostgresProbeConfig(
        kind="postgres",
        name="inspect",
        dsn=dsn,
        dsn_env=dsn_env,
        env_prefix=env_prefix,
        timeout=timeout,
        statement_timeout=max(0.1, min(timeout * 0.8, 5.0)),
        connect_timeout=min(timeout, 5.0),
        application_name="sre-watchdog-inspect",
        queries={"long_query": long_query, "top_statements": top},
    )
    report = asyncio.run(_inspect(config, source))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        render(report, Console(soft_wrap=False))
    sys.exit(1 if report.outcome is Outcome.FAILED else 0)


async def _inspect(config: PostgresProbeConfig, source: MetricSource | None) -> InspectReport:
    probe = PostgresProbe(config, defaults=ProbeDefaults(), clock=SystemClock(), metric_source=source)
    try:
        return await probe.inspect()
    finally:
        await probe.aclose()
        if source is not None:
            await source.aclose()


# ------------------------------------------------------------------------------------------------
# Rich rendering


def _outcome(o: Outcome) -> Text:
    return Text(o.value.upper(), style=_STYLE[o])


def _table(title: str, *columns: str) -> Table:
    t = Table(
        title=title, title_justify="left", title_style="bold", expand=False, show_edge=False, pad_edge=False
    )
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def _num(value: Any, kind: str = "s") -> str:
    if value is None:
        return "—"
    if kind == "s":
        return human_duration(float(value))
    if kind == "b":
        return fmt_bytes(float(value))
    return str(value)


def render(report: InspectReport, console: Console) -> None:
    s = report.session
    head = f"[bold]{report.target}[/]"
    conn = report.family("connectivity")
    if conn is not None and conn.details:
        d = conn.details
        head += (
            f"\n{d['role']} · PostgreSQL {d['server_version_num'] // 10000}.{d['server_version_num'] % 100}"
            f" · as {d['user']}{'' if s.get('read_all_stats') else ' (no pg_monitor: partial view)'}"
            f" · query {human_duration(d['query_latency_s'])} · round trip {human_duration(d['rtt_s'])}"
        )
    console.print(Panel(head, title="watchdog db inspect", subtitle=_outcome(report.outcome)))

    summary = _table("Checks", "check", "outcome", "reason")
    for f in report.families:
        summary.add_row(f.family, _outcome(f.outcome), f.reason)
    console.print(summary)

    renderers = {
        "connections": _connections,
        "queries": _queries,
        "locks": _locks,
        "replication": _replication,
        "vitals": _vitals,
        "host": _host,
    }
    for f in report.families:
        fn = renderers.get(f.family)
        if fn is not None and f.details:
            console.print()
            console.print(fn(f))


def _connections(f: FamilyReport) -> Group:
    d = f.details
    parts: list[Any] = [
        Text(
            f"Connections: {d['in_use']}/{d['available']} slots ({d['usage_ratio']:.0%}), max_connections "
            f"{d['max_connections']} − {d['reserved']} reserved; longest idle in transaction "
            f"{human_duration(d['longest_idle_in_transaction_s'])}",
            style="bold",
        )
    ]
    t = _table("", "state", "count")
    for state, n in d["by_state"].items():
        if n:
            t.add_row(state, str(n))
    apps = _table("", "application", "count")
    for app, n in d["by_application"].items():
        apps.add_row(app, str(n))
    users = _table("", "user", "count")
    for user, n in d["by_user"].items():
        users.add_row(user, str(n))
    grid = Table.grid(padding=(0, 4))
    grid.add_row(t, apps, users)
    parts.append(grid)
    if "forecast" in d:
        fc = d["forecast"]
        parts.append(
            Text(
                f"Forecast: {fc['app_instances']} instances × pool {fc['pool_max']} + "
                f"{fc['other_clients']} = "
                f"{fc['possible_connections']} possible vs {fc['available']} available"
            )
        )
    if d.get("idle_in_transaction"):
        it = _table("Idle in transaction", "pid", "user", "application", "idle", "transaction", "query")
        for r in d["idle_in_transaction"]:
            it.add_row(
                str(r["pid"]),
                r["user"] or "",
                r["application"] or "",
                human_duration(r["idle_s"]),
                human_duration(r["transaction_s"]),
                r["query"] or "",
            )
        parts.append(it)
    return Group(*parts)


def _queries(f: FamilyReport) -> Group:
    d = f.details
    parts: list[Any] = []
    lq = _table(
        f"Active queries (long ≥ {human_duration(d['long_query_threshold_s'])})",
        "pid",
        "user",
        "application",
        "running",
        "wait",
        "query",
    )
    for r in d["long_running"]:
        style = "yellow" if r["running_s"] >= d["long_query_threshold_s"] else ""
        lq.add_row(
            str(r["pid"]),
            r["user"] or "",
            r["application"] or "",
            Text(human_duration(r["running_s"]), style=style),
            r["wait"],
            r.get("query") or "",
        )
    parts.append(lq if d["long_running"] else Text("Active queries: none besides this one", style="bold"))
    st = d.get("statements")
    if st is not None:
        if not st["available"]:
            parts.append(Text(f"Top statements: not available — {st['reason']}", style="yellow"))
        else:
            for key, title in (("top_by_total", "total time"), ("top_by_mean", "mean time")):
                t = _table(
                    f"Top statements by {title} (since {st.get('since', 'previous run')})",
                    "queryid",
                    "calls",
                    "total",
                    "mean",
                    "query",
                )
                for r in st[key]:
                    t.add_row(
                        r["queryid"],
                        str(r["calls"]),
                        f"{r['total_ms']:.1f} ms",
                        f"{r['mean_ms']:.2f} ms",
                        " ".join((r["query"] or "").split())[:160],
                    )
                parts.append(t)
    extra = []
    if d.get("rollback_ratio") is not None:
        extra.append(f"rollback ratio {d['rollback_ratio']:.1%}")
    if d.get("temp_files") is not None:
        extra.append(f"temp files {d['temp_files']:.0f} ({fmt_bytes(d['temp_bytes'] or 0)})")
    if extra:
        parts.append(Text("Since the previous run: " + ", ".join(extra)))
    return Group(*parts)


def _locks(f: FamilyReport) -> Group:
    d = f.details
    if not d["blocked"]:
        return Group(Text("Blockers: no session is waiting on a lock", style="bold"))
    b = _table(
        "Blocked sessions", "pid", "user", "application", "waiting on", "waiting", "blocked by", "query"
    )
    for r in d["blocked"]:
        b.add_row(
            str(r["pid"]),
            r["user"] or "",
            r["application"] or "",
            r["waiting_on"] or "",
            human_duration(r["waiting_s"]),
            ", ".join(map(str, r["blocked_by"])),
            r.get("query") or "",
        )
    h = _table(
        "Blocking sessions", "pid", "root", "user", "application", "state", "transaction open", "query"
    )
    for r in d["blockers"]:
        h.add_row(
            str(r["pid"]),
            "yes" if r["root"] else "",
            r["user"] or "",
            r["application"] or "",
            r["state"] or "",
            _num(r["transaction_s"]),
            r.get("query") or "",
        )
    return Group(b, h)


def _replication(f: FamilyReport) -> Group:
    d = f.details
    if d.get("role") == "replica":
        w = d["wal_receiver"]
        return Group(
            Text(
                f"Replication (replica): replay delay {_num(d['replay_delay_s'])}, last replayed transaction "
                f"{_num(d['last_replay_age_s'])} ago, {_num(d['replay_gap_bytes'], 'b')} received but not "
                "replayed, "
                f"replay {'PAUSED' if d['replay_paused'] else 'running'}; WAL receiver "
                f"{w['status'] or 'not running'} from {w['sender_host'] or '?'}:{w['sender_port'] or '?'}",
                style="bold",
            )
        )
    t = _table(
        "Standbys", "standby", "state", "sync", "write lag", "flush lag", "replay lag", "replay behind"
    )
    for r in d["standbys"]:
        t.add_row(
            r["standby"],
            r["state"] or "?",
            r["sync_state"] or "",
            _num(r["write_lag_s"]),
            _num(r["flush_lag_s"]),
            _num(r["replay_lag_s"]),
            _num(r["replay_bytes_behind"], "b"),
        )
    s = _table("Replication slots", "slot", "type", "active", "wal status", "retained WAL")
    for r in d["slots"]:
        s.add_row(
            r["slot"],
            r["type"],
            "yes" if r["active"] else "NO",
            r["wal_status"] or "",
            _num(r["retained_bytes"], "b"),
        )
    parts: list[Any] = [
        t if d["standbys"] else Text("Replication (primary): no standbys connected", style="bold")
    ]
    if d["slots"]:
        parts.append(s)
    return Group(*parts)


def _vitals(f: FamilyReport) -> Group:
    d = f.details
    line = (
        f"Vitals: {d['database']} {fmt_bytes(d['size_bytes'])}; cache hit "
        + (f"{d['cache_hit_ratio']:.2%}" if d["cache_hit_ratio"] is not None else "n/a")
        + f"; xid age {d['xid_age']:,} ({d['xid_oldest_database']}); multixact age {d['mxid_age']:,}; "
        f"archive_mode {d['archive_mode']}"
    )
    a = d.get("archiver")
    if a is not None:
        line += (
            f"; archiver {'FAILING' if a['failing'] else 'ok'}, "
            f"last archived {_num(a['last_archived_age_s'])} ago, "
            f"{a['failed_count']:.0f} failures"
        )
    return Group(Text(line, style="bold"))


def _host(f: FamilyReport) -> Group:
    d = f.details
    cpu, mem = d.get("cpu_percent"), d.get("memory_percent")
    return Group(
        Text(
            f"Host ({d['source']}): CPU {'—' if cpu is None else f'{cpu:.0f}%'}, "
            f"memory {'—' if mem is None else f'{mem:.0f}%'}",
            style="bold",
        )
    )
