"""Families reading pg_stat_activity: connections, slow work (plus pg_stat_statements), locks."""

from __future__ import annotations

from collections import Counter
from typing import Any

import asyncpg

from watchdog.config.postgres import ConnectionThresholds, LockThresholds, QueryThresholds
from watchdog.core.durations import human_duration
from watchdog.core.results import Observation
from watchdog.probes.postgres._report import (
    Cycle,
    FamilyReport,
    Verdict,
    delta,
    fmt_bytes,
    privilege_note,
)

STATES = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
)
HIDDEN = "hidden"
"""State label for sessions whose state this role may not see (no pg_read_all_stats)."""
_IDLE_TX = ("idle in transaction", "idle in transaction (aborted)")

# ------------------------------------------------------------------------------------------------
# Connections

_CONNECTIONS = """
SELECT state, usename::text, application_name, count(*)::int,
       max(extract(epoch FROM now() - state_change))
         FILTER (WHERE state IN ('idle in transaction', 'idle in transaction (aborted)'))::float8,
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int
FROM pg_stat_activity
-- Without pg_read_all_stats other roles' rows show no backend_type: count those attached to a database.
WHERE backend_type = 'client backend' OR (backend_type IS NULL AND datid IS NOT NULL)
GROUP BY 1, 2, 3
"""
_SETTINGS = """
SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int
"""
_IDLE_TX_SESSIONS = """
SELECT pid, usename::text, application_name, state, extract(epoch FROM now() - state_change)::float8,
       extract(epoch FROM now() - xact_start)::float8, left(query, 200)
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state IN ('idle in transaction', 'idle in transaction (aborted)')
ORDER BY state_change LIMIT 10
"""


def _top(counter: Counter[str], n: int) -> dict[str, int]:
    top = dict(counter.most_common(n))
    rest = sum(counter.values()) - sum(top.values())
    if rest:
        top["other"] = top.get("other", 0) + rest
    return top


async def check_connections(cycle: Cycle, cfg: ConnectionThresholds) -> FamilyReport:
    rows = await cycle.conn.fetch(_CONNECTIONS)
    if rows:
        max_conn, su_reserved, reserved = rows[0][5], rows[0][6], rows[0][7]
    else:  # cannot happen (we are a client backend), but keep the arithmetic defined
        max_conn, su_reserved, reserved = await cycle.conn.fetchrow(_SETTINGS)
    by_state: Counter[str] = Counter({s: 0 for s in STATES})
    by_app: Counter[str] = Counter()
    by_user: Counter[str] = Counter()
    longest_idle_tx = 0.0
    idle_tx_who = ""
    for state, user, app, n, idle_tx_s, *_ in rows:
        by_state[state if state is not None else HIDDEN] += n
        by_app[app or "(none)"] += n
        by_user[user or "(unknown)"] += n
        if idle_tx_s is not None and idle_tx_s > longest_idle_tx:
            longest_idle_tx, idle_tx_who = idle_tx_s, f"user {user}, application {app or '(none)'}"
    in_use = sum(by_state.values())
    available = max(1, max_conn - su_reserved - reserved)
    ratio = in_use / available

    v = Verdict()
    usage = f"{in_use}/{available} connection slots in use ({ratio:.0%}; max_connections {max_conn}"
    usage += f" − {su_reserved + reserved} reserved)"
    if ratio >= cfg.fail_ratio:
        v.fail(f"connections saturated: {usage}")
    elif ratio >= cfg.warn_ratio:
        v.degrade(f"connections near the limit: {usage}")
    if longest_idle_tx >= cfg.idle_in_transaction:
        idle = human_duration(longest_idle_tx)
        v.degrade(f"a session has been idle in transaction for {idle} ({idle_tx_who})")
    hidden = by_state.get(HIDDEN, 0)
    if hidden and not cycle.session.read_all_stats:
        v.degrade(privilege_note(cycle.session, f"the states of {hidden} sessions of other roles"))

    obs = [Observation("pg_connections", float(by_state[s]), {"state": s}) for s in by_state]
    obs += [
        Observation("pg_connections_by_application", float(n), {"application": a})
        for a, n in _top(by_app, cfg.top).items()
    ]
    obs += [
        Observation("pg_connections_by_user", float(n), {"user": u})
        for u, n in _top(by_user, cfg.top).items()
    ]
    obs += [
        Observation("pg_connections_in_use", float(in_use)),
        Observation("pg_connections_max", float(max_conn)),
        Observation("pg_connections_available", float(available)),
        Observation("pg_connections_usage_ratio", ratio),
        Observation("pg_idle_in_transaction_longest_seconds", longest_idle_tx),
    ]
    details: dict[str, Any] = {
        "in_use": in_use,
        "available": available,
        "max_connections": max_conn,
        "reserved": su_reserved + reserved,
        "usage_ratio": round(ratio, 4),
        "by_state": dict(by_state),
        "by_application": _top(by_app, cfg.top),
        "by_user": _top(by_user, cfg.top),
        "longest_idle_in_transaction_s": round(longest_idle_tx, 3),
    }
    if cfg.app_instances is not None and cfg.pool_max is not None:
        forecast = cfg.app_instances * cfg.pool_max + cfg.other_clients
        obs.append(Observation("pg_connections_forecast", float(forecast)))
        obs.append(Observation("pg_connections_forecast_ratio", forecast / available))
        details["forecast"] = {
            "app_instances": cfg.app_instances,
            "pool_max": cfg.pool_max,
            "other_clients": cfg.other_clients,
            "possible_connections": forecast,
            "available": available,
        }
        if forecast > available:
            v.degrade(
                f"headroom: {cfg.app_instances} instances × pool {cfg.pool_max}"
                + (f" + {cfg.other_clients} other" if cfg.other_clients else "")
                + f" = {forecast} possible connections > {available} available slots "
                f"(lower pool_max to {max(1, (available - cfg.other_clients) // cfg.app_instances)}, "
                "cap instances, or add a pooler)"
            )
    if cycle.inspect:
        details["idle_in_transaction"] = [
            {
                "pid": r[0],
                "user": r[1],
                "application": r[2],
                "state": r[3],
                "idle_s": round(r[4] or 0.0, 3),
                "transaction_s": round(r[5] or 0.0, 3),
                "query": r[6],
            }
            for r in await cycle.conn.fetch(_IDLE_TX_SESSIONS)
        ]
    return v.report("connections", usage, obs, details)


# ------------------------------------------------------------------------------------------------
# Slow work: long-running queries, pg_stat_statements deltas, temp files, rollbacks

_LONG_QUERIES = """
WITH a AS (
  SELECT pid, usename::text AS usename, application_name, wait_event_type, wait_event,
         greatest(0, extract(epoch FROM now() - query_start))::float8 AS running_s, query
  FROM pg_stat_activity
  WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
)
SELECT pid, usename, application_name, wait_event_type, wait_event, running_s,
       CASE WHEN $2 THEN left(query, 300) END, (SELECT count(*) FROM a WHERE running_s >= $1)::int
FROM a ORDER BY running_s DESC NULLS LAST LIMIT 5
"""
_PGSS_LOCATION = """
SELECT n.nspname::text, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname = 'pg_stat_statements'
"""


async def _statements(
    cycle: Cycle, cfg: QueryThresholds, v: Verdict
) -> tuple[list[Observation], dict[str, Any]]:
    """Top-N by total and mean time since the previous run, without fetching query text every run."""
    memory = cycle.memory
    location = await cycle.conn.fetchrow(_PGSS_LOCATION)
    if location is None:
        memory.statements = None
        return [Observation("pg_stat_statements_available", 0.0)], {
            "available": False,
            "reason": f"pg_stat_statements is not installed in database {cycle.session.database!r} "
            "(needs shared_preload_libraries = 'pg_stat_statements' and CREATE EXTENSION pg_stat_statements)",
        }
    schema = '"' + location[0].replace('"', '""') + '"'
    time_col = "total_exec_time" if cycle.session.server_version_num >= 130000 else "total_time"
    try:
        rows = await cycle.conn.fetch(
            f"SELECT queryid, userid::int8, dbid::int8, calls::float8, {time_col}::float8 "
            f"FROM {schema}.pg_stat_statements(false) WHERE queryid IS NOT NULL"
        )
    except asyncpg.ObjectNotInPrerequisiteStateError as exc:
        memory.statements = None
        return [Observation("pg_stat_statements_available", 0.0)], {
            "available": False,
            "reason": f"pg_stat_statements is installed but not loaded: {exc.message}",
        }
    current = {(int(r[0]), int(r[1]), int(r[2])): (float(r[3]), float(r[4])) for r in rows}
    previous = memory.statements
    memory.statements = current
    since = "previous run"
    if previous is None:
        if not cycle.inspect:
            return [Observation("pg_stat_statements_available", 1.0)], {
                "available": True,
                "tracked": len(current),
                "note": "baseline taken; deltas from the next run on",
                "top_by_total": [],
                "top_by_mean": [],
            }
        previous, since = {}, "statistics reset"
    deltas: list[tuple[tuple[int, int, int], float, float]] = []
    calls_total = time_total = 0.0
    for key, (calls, total) in current.items():
        prev_calls, prev_total = previous.get(key, (0.0, 0.0))
        if calls < prev_calls or total < prev_total:  # entry evicted and re-added, or reset
            prev_calls, prev_total = 0.0, 0.0
        d_calls, d_total = calls - prev_calls, total - prev_total
        if d_calls > 0:
            deltas.append((key, d_calls, d_total))
            calls_total += d_calls
            time_total += d_total
    n = cfg.top_statements
    by_total = sorted(deltas, key=lambda d: d[2], reverse=True)[:n]
    by_mean = sorted(deltas, key=lambda d: d[2] / d[1], reverse=True)[:n]
    wanted = {d[0][0] for d in (*by_total, *by_mean)} - memory.statement_texts.keys()
    if wanted:
        if len(memory.statement_texts) > 2000:
            memory.statement_texts.clear()
        text_rows = await cycle.conn.fetch(
            f"SELECT DISTINCT ON (queryid) queryid, left(query, 500) FROM {schema}.pg_stat_statements(true) "
            "WHERE queryid = ANY($1::int8[])",
            list(wanted),
        )
        for qid, text in text_rows:
            memory.statement_texts[int(qid)] = text or ""

    def row(d: tuple[tuple[int, int, int], float, float]) -> dict[str, Any]:
        (qid, _user, _db), calls, total_ms = d
        return {
            "queryid": str(qid),
            "calls": int(calls),
            "total_ms": round(total_ms, 3),
            "mean_ms": round(total_ms / calls, 3),
            "query": memory.statement_texts.get(qid, ""),
        }

    obs = [
        Observation("pg_stat_statements_available", 1.0),
        Observation("pg_statements_calls_delta", calls_total),
        Observation("pg_statements_exec_seconds_delta", time_total / 1000.0),
    ]
    if calls_total:
        obs.append(Observation("pg_statements_mean_seconds", time_total / calls_total / 1000.0))
    if by_mean:
        obs.append(Observation("pg_statements_top_mean_seconds", by_mean[0][2] / by_mean[0][1] / 1000.0))
    if not cycle.session.read_all_stats:
        v.degrade(privilege_note(cycle.session, "other roles' statements in pg_stat_statements"))
    return obs, {
        "available": True,
        "since": since,
        "tracked": len(current),
        "calls": int(calls_total),
        "exec_ms": round(time_total, 3),
        "top_by_total": [row(d) for d in by_total],
        "top_by_mean": [row(d) for d in by_mean],
    }


async def check_queries(cycle: Cycle, cfg: QueryThresholds) -> FamilyReport:
    v = Verdict()
    rows = await cycle.conn.fetch(_LONG_QUERIES, cfg.long_query, cycle.inspect)
    n_long = rows[0][7] if rows else 0
    longest = max((r[5] or 0.0 for r in rows), default=0.0)
    long_rows = [r for r in rows if (r[5] or 0.0) >= cfg.long_query]
    if long_rows:
        worst = long_rows[0]
        msg = (
            f"{n_long} quer{'y' if n_long == 1 else 'ies'} running longer than "
            f"{human_duration(cfg.long_query)}; longest {human_duration(worst[5])} "
            f"(pid {worst[0]}, user {worst[1]}, application {worst[2] or '(none)'})"
        )
        v.threshold(worst[5], cfg.long_query, cfg.long_query_fail, msg)
    if not cycle.session.read_all_stats:
        v.degrade(privilege_note(cycle.session, "other roles' running queries"))

    current, previous = await cycle.stat_database()
    d_commit = delta(current, previous, "xact_commit")
    d_rollback = delta(current, previous, "xact_rollback")
    d_temp_files = delta(current, previous, "temp_files")
    d_temp_bytes = delta(current, previous, "temp_bytes")
    obs = [
        Observation("pg_long_queries", float(n_long)),
        Observation("pg_longest_query_seconds", float(longest)),
    ]
    rollback_ratio: float | None = None
    if d_commit is not None and d_rollback is not None:
        finished = d_commit + d_rollback
        obs.append(Observation("pg_transactions_delta", finished))
        if finished > 0:
            rollback_ratio = d_rollback / finished
            obs.append(Observation("pg_rollback_ratio", rollback_ratio))
            if finished >= cfg.min_transactions and rollback_ratio >= cfg.rollback_ratio_warn:
                v.degrade(
                    f"{rollback_ratio:.0%} of {finished:.0f} transactions rolled back since the previous run"
                )
    if d_temp_files is not None and d_temp_bytes is not None:
        obs.append(Observation("pg_temp_files_delta", d_temp_files))
        obs.append(Observation("pg_temp_bytes_delta", d_temp_bytes))
        if cfg.temp_bytes_warn is not None and d_temp_bytes >= cfg.temp_bytes_warn:
            v.degrade(
                f"{fmt_bytes(d_temp_bytes)} of temporary files ({d_temp_files:.0f}) written since the "
                "previous run "
                "(work_mem too small for some queries)"
            )

    details: dict[str, Any] = {
        "long_running": [
            {
                "pid": r[0],
                "user": r[1],
                "application": r[2],
                "wait": f"{r[3]}:{r[4]}" if r[3] else "",
                "running_s": round(r[5] or 0.0, 3),
                **({"query": r[6]} if cycle.inspect else {}),
            }
            for r in (rows if cycle.inspect else long_rows)
        ],
        "long_query_threshold_s": cfg.long_query,
        "rollback_ratio": None if rollback_ratio is None else round(rollback_ratio, 4),
        "temp_files": d_temp_files,
        "temp_bytes": d_temp_bytes,
    }
    if cfg.top_statements > 0:
        st_obs, st_details = await _statements(cycle, cfg, v)
        obs += st_obs
        details["statements"] = st_details
    summary = f"no query running longer than {human_duration(cfg.long_query)}"
    if "statements" in details and not details["statements"]["available"]:
        summary += "; pg_stat_statements not available"
    return v.report("queries", summary, obs, details)


# ------------------------------------------------------------------------------------------------
# Locks

_BLOCKED = """
SELECT a.pid, a.usename::text, a.application_name, a.wait_event,
       extract(epoch FROM now() - coalesce(l.waitstart, a.state_change))::float8, pg_blocking_pids(a.pid),
       CASE WHEN $1 THEN left(a.query, 300) END
FROM pg_stat_activity a
LEFT JOIN LATERAL (
  SELECT min(waitstart) AS waitstart FROM pg_locks WHERE pid = a.pid AND NOT granted
) l ON true
WHERE a.wait_event_type = 'Lock'
ORDER BY 5 DESC
"""
_BLOCKERS = """
SELECT pid, usename::text, application_name, state, extract(epoch FROM now() - xact_start)::float8,
       CASE WHEN $2 THEN left(query, 300) END
FROM pg_stat_activity WHERE pid = ANY($1::int[])
"""


async def check_locks(cycle: Cycle, cfg: LockThresholds) -> FamilyReport:
    v = Verdict()
    rows = await cycle.conn.fetch(_BLOCKED, cycle.inspect)
    blocked = [r for r in rows if r[5]]
    blocker_pids = sorted({pid for r in blocked for pid in r[5]})
    blockers: dict[int, Any] = {}
    if blocker_pids:
        for b in await cycle.conn.fetch(_BLOCKERS, blocker_pids, cycle.inspect):
            blockers[b[0]] = b
    blocked_pids = {r[0] for r in blocked}
    roots = [pid for pid in blocker_pids if pid not in blocked_pids]
    longest = max((r[4] or 0.0 for r in blocked), default=0.0)
    if blocked:
        w = blocked[0]
        root = blockers.get(roots[0]) if roots else None
        who = (
            f"; root blocker pid {root[0]} (user {root[1]}, application {root[2] or '(none)'}, {root[3]}"
            + (f", transaction open {human_duration(root[4])}" if root[4] is not None else "")
            + ")"
            if root is not None
            else ""
        )
        msg = (
            f"{len(blocked)} session{'s' if len(blocked) != 1 else ''} blocked by "
            f"{len(blocker_pids)} other{'s' if len(blocker_pids) != 1 else ''}; "
            f"longest wait {human_duration(longest)} "
            f"(pid {w[0]}, user {w[1]}, waiting on {w[3]}, blocked by {', '.join(map(str, w[5]))}){who}"
        )
        v.threshold(longest, cfg.blocked_warn, cfg.blocked_fail, msg)
    if not cycle.session.read_all_stats:
        v.degrade(privilege_note(cycle.session, "lock waits of other roles' sessions"))
    current, previous = await cycle.stat_database()
    deadlocks = delta(current, previous, "deadlocks")
    obs = [
        Observation("pg_blocked_sessions", float(len(blocked))),
        Observation("pg_blocking_sessions", float(len(blocker_pids))),
        Observation("pg_blocked_longest_seconds", float(longest)),
    ]
    if deadlocks is not None:
        obs.append(Observation("pg_deadlocks_delta", deadlocks))
        if deadlocks > 0 and cfg.deadlocks_degrade:
            v.degrade(f"{deadlocks:.0f} deadlock{'s' if deadlocks != 1 else ''} since the previous run")

    def session(r: Any, blocked_side: bool) -> dict[str, Any]:
        if blocked_side:
            out = {
                "pid": r[0],
                "user": r[1],
                "application": r[2],
                "waiting_on": r[3],
                "waiting_s": round(r[4] or 0.0, 3),
                "blocked_by": list(r[5]),
            }
            q = r[6]
        else:
            out = {
                "pid": r[0],
                "user": r[1],
                "application": r[2],
                "state": r[3],
                "transaction_s": None if r[4] is None else round(r[4], 3),
                "root": r[0] in roots,
            }
            q = r[5]
        if cycle.inspect:
            out["query"] = q
        return out

    details = {
        "blocked": [session(r, True) for r in blocked],
        "blockers": [session(blockers[p], False) for p in blocker_pids if p in blockers],
        "deadlocks_since_previous": deadlocks,
    }
    return v.report("locks", "no blocked sessions", obs, details)
