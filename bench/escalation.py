"""Paging and escalation (issue 9): the three performance targets, on SQLite and on PostgreSQL.

    .venv/bin/python bench/escalation.py                      # all three parts, both stores (~9 minutes)
    .venv/bin/python bench/escalation.py --only latency       # part 1 (~4.5 minutes)
    .venv/bin/python bench/escalation.py --only tick          # part 2 (~20 seconds)
    .venv/bin/python bench/escalation.py --only burst         # part 3 (~4 minutes)
    .venv/bin/python bench/escalation.py --quick              # smaller, for a smoke run (~4 minutes)

Everything runs on loopback. The watchdog side is the real daemon in this process (``wiring.wire`` +
``runtime.daemon.Daemon``, no probes): its APScheduler jobs at their real cadence (``dispatch`` every 1 s,
``evaluate`` every ``evaluation_interval``, flush, prune), its notifiers built from the environment as
``watchdog run`` builds them (``SLACK_BOT_TOKEN``, ``SLACK_API_URL``), JSON logs at INFO to a file. Slack is
``tests/slack_api.py``'s ``FakeSlackApi`` in a child process of its own (so its CPU is not counted as ours,
and a request crosses processes as it would to Slack); it timestamps each accepted message with
``time.time()``. PostgreSQL is the local server (``--pg-admin``), in a uniquely named database created for
each run and dropped afterwards; SQLite is a file in a temporary directory.

1. ``latency``: decision → Slack. ``--incidents`` alerts (distinct keys, warning: one L1 page each) are fired
   one at a time, ``--gap-ms`` apart (uniformly random, so the decisions fall at every phase of the 1 s
   dispatch tick). Latency = the fake Slack accepting the page's ``chat.postMessage`` minus the moment
   ``IncidentManager.fire()`` returned (the page is in the outbox). Two paths, as the daemon has them:
   ``poll``, the decision is made outside the evaluation job (the alert intake, the incident API, Slack's
   buttons) and waits for the dispatch job (every 1 s); ``evaluate``, the decision is made inside the
   evaluation job, which has the dispatch job run at once when anything changed (``Daemon.evaluate_alerts``
   → ``_dispatch_now()``; a daemon without it dispatches inline). Pages are sent by the leader only: each
   run waits for the daemon to take the lease (its first evaluation) before measuring.
2. ``tick``: ``--open`` firing incidents whose L1 → L2 escalation timers are all pending
   (``ack_within: 30m``), a FakeClock; ``IncidentManager.tick()`` timed (a) when nothing is due, ``--ticks``
   times after a warm-up, and (b) when every timer is due at once (L1 → L2, then L2 → L3): one
   compare-and-set and its pages per incident.
3. ``burst``: ``--alerts`` alerts of one Alertmanager group against a fake Slack that answers 429
   (``Retry-After: 1``) past ``--slack-limit`` messages per second per channel. (a) one webhook carrying all
   of them, through the real intake route (``web.intake``, served in its own thread as the daemon serves its
   HTTP face), then the group resolving; (b) the real Alertmanager (Debian's ``prometheus-alertmanager``, if
   installed) receiving them in ``--am-batches`` batches, grouping, and notifying the intake as the group
   grows (``group_wait``/``group_interval`` 1 s: harsher than its 30 s / 5 m defaults), then resolving;
   (c) ``--grouped`` AlertSpecs of the watchdog's own ``group:`` fired back to back as one evaluation would
   (one incident each, all in one Slack thread), plus one unrelated page to another channel right after
   them, whose latency shows head-of-line blocking. For each: messages per channel and the most in any 1 s,
   429s answered, pages that went to the fallback channel, outbox rows left undelivered, and that every
   alert is represented.

CPU is this process (the daemon and its HTTP face; ``time.process_time``), and for PostgreSQL the server
backend serving the store's connection (utime+stime from /proc, ``pg_stat_activity`` of the run's database).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import multiprocessing
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _loopback import cpu_seconds, free_port
from slack_api import FakeSlackApi

from watchdog.config.loader import WatchdogConfig, load_config
from watchdog.core.clock import FakeClock
from watchdog.core.logs import configure_logging
from watchdog.incidents.manager import AlertSpec, IncidentManager
from watchdog.notify.log import LogNotifier
from watchdog.runtime.daemon import Daemon
from watchdog.runtime.wiring import wire
from watchdog.store import open_store
from watchdog.web.app import create_app
from watchdog.web.intake import ALERTMANAGER_PATH
from watchdog.web.server import HttpServer

TOKEN = "xoxb-bench-token"
INTAKE_TOKEN = "bench-intake-token"
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CHANNELS = {"L1": "#bench-l1", "L2": "#bench-l2", "L3": "#bench-l3", "other": "#bench-other"}

ALERTS_YAML = f"""
escalation:
  - name: default
    levels:
      - {{level: L1, who: dev on call, ack_within: 30m,
         notify: [{{type: slack, channel: "{CHANNELS["L1"]}", mention: [U0DEV]}}]}}
      - {{level: L2, who: tech lead, notify: [{{type: slack, channel: "{CHANNELS["L2"]}"}}], ack_within: 2h}}
      - {{level: L3, who: CTO, notify: [{{type: slack, channel: "{CHANNELS["L3"]}"}}]}}
  - name: other
    levels:
      - {{level: L1, who: another team, ack_within: 30m,
         notify: [{{type: slack, channel: "{CHANNELS["other"]}"}}]}}
intake:
  - {{name: prom, kind: alertmanager, escalation: default}}
"""


def write_config(root: Path) -> WatchdogConfig:
    """A minimal valid config: no probes, two escalation policies, an Alertmanager intake."""
    (root / "alerts").mkdir(parents=True)
    (root / "runbooks").mkdir()
    (root / "watchdog.yaml").write_text("log_level: INFO\nallow_no_probes: true\n")
    (root / "alerts" / "bench.yaml").write_text(ALERTS_YAML)
    (root / "runbooks" / "external-alert.md").write_text("# external alert\n")
    return load_config(root)


def q(values: Sequence[float], p: float) -> float:
    """The p-quantile of ``values`` by rank, as the other benchmarks take it (no interpolation)."""
    s = sorted(values)
    return s[int(p * (len(s) - 1))]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


# -- the fake Slack, in a process of its own ----------------------------------------------------------------


@dataclass(frozen=True)
class SentPost:
    channel: str
    """The channel id (``#bench-l1`` → ``CBENCHL1``)."""
    ts: str
    thread_ts: str
    at: float
    key: str
    """The incident key of a parent (its buttons' value), else ""."""
    text: str


@dataclass(frozen=True)
class SentRequest:
    method: str
    answer: str
    at: float
    channel: str


@dataclass
class SlackDump:
    posts: list[SentPost]
    requests: list[SentRequest]
    updates: list[str]
    """The text of every ``chat.update``."""

    def shows(self, text: str) -> bool:
        """Whether some message or update Slack holds contains ``text``."""
        return any(text in p.text for p in self.posts) or any(text in u for u in self.updates)

    def parents(self) -> list[SentPost]:
        return [p for p in self.posts if not p.thread_ts]

    def rate_limited(self) -> int:
        return sum(1 for r in self.requests if r.answer == "429")

    def per_channel(self) -> dict[str, tuple[int, int]]:
        """channel id → (messages, the most in any 1 s window)."""
        by: dict[str, list[float]] = defaultdict(list)
        for p in self.posts:
            by[p.channel].append(p.at)
        out: dict[str, tuple[int, int]] = {}
        for channel, times in sorted(by.items()):
            times.sort()
            most, lo = 0, 0
            for hi, t in enumerate(times):
                while t - times[lo] >= 1.0:
                    lo += 1
                most = max(most, hi - lo + 1)
            out[channel] = (len(times), most)
        return out


def _page_key(blocks: Any) -> str:
    for block in blocks if isinstance(blocks, list) else []:
        if isinstance(block, dict) and block.get("type") == "actions":
            for element in block.get("elements", []):
                if element.get("value"):
                    return str(element["value"])
    return ""


def _slack_child(conn: Connection, token: str, limit: int | None) -> None:
    asyncio.run(_slack_serve(conn, token, limit))


async def _slack_serve(conn: Connection, token: str, limit: int | None) -> None:
    from slack_api import channel_id

    api = FakeSlackApi(token, rate_limit_per_channel=limit)
    loop = asyncio.get_running_loop()
    async with api.running() as url:
        conn.send(url)
        while await loop.run_in_executor(None, conn.recv) == "dump":
            conn.send(
                (
                    [
                        (channel_id(p.channel), p.ts, p.thread_ts, p.at, _page_key(p.blocks), p.text)
                        for p in api.posts
                    ],
                    [(r.method, r.answer, r.at, str(r.body.get("channel", ""))) for r in api.requests],
                    [u.text for u in api.updates],
                )
            )


class SlackServer:
    """``FakeSlackApi`` served by a child process; ``dump()`` fetches what it received so far."""

    def __init__(self, limit: int | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_slack_child, args=(child, TOKEN, limit), daemon=True)
        self.proc.start()
        deadline = time.monotonic() + 60
        while not self._conn.poll(0.2):
            if not self.proc.is_alive():
                raise RuntimeError(f"the fake Slack's process exited ({self.proc.exitcode}) before serving")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the fake Slack did not start within 60 s")
        self.url: str = self._conn.recv()

    def dump(self) -> SlackDump:
        self._conn.send("dump")
        posts, requests, updates = self._conn.recv()
        return SlackDump([SentPost(*p) for p in posts], [SentRequest(*r) for r in requests], updates)

    async def adump(self) -> SlackDump:
        return await asyncio.to_thread(self.dump)

    def cpu_s(self) -> float:
        assert self.proc.pid is not None
        return cpu_seconds(self.proc.pid)

    def close(self) -> None:
        with suppress(OSError):
            self._conn.send("stop")
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()  # our own child, by its pid
            self.proc.join(5)


@contextmanager
def slack_server(limit: int | None = None) -> Iterator[SlackServer]:
    server = SlackServer(limit)
    try:
        yield server
    finally:
        server.close()


# -- state stores --------------------------------------------------------------------------------------------


@dataclass
class Store:
    kind: str
    spec: str
    """What ``open_store`` / ``wire(state=...)`` takes."""
    admin_dsn: str = ""
    database: str = ""
    admin: psycopg.AsyncConnection[Any] | None = None
    """A connection to the admin database (not this run's), kept open for the CPU readings."""

    async def backend_cpu_s(self) -> float:
        """CPU of the PostgreSQL backends serving this run's database (0 for SQLite: it is in-process).
        /proc counts in clock ticks (10 ms): read it around many operations, not one small one."""
        if self.kind != "postgresql":
            return 0.0
        if self.admin is None:
            self.admin = await psycopg.AsyncConnection.connect(self.admin_dsn, autocommit=True)
        sql = "SELECT pid FROM pg_stat_activity WHERE datname = %s"
        cur = await self.admin.execute(sql, (self.database,))
        pids = [int(r[0]) for r in await cur.fetchall()]
        total = 0.0
        for pid in pids:
            with suppress(OSError):
                total += cpu_seconds(pid)
        return total

    async def outbox(self) -> dict[str, int]:
        """Outbox rows: all, not yet delivered, and delivered after more than one attempt (read only)."""
        sql = (
            "SELECT count(*), count(*) FILTER (WHERE done_at IS NULL),"
            " count(*) FILTER (WHERE attempts > 1) FROM outbox"
        )
        if self.kind == "postgresql":
            async with await psycopg.AsyncConnection.connect(self.spec, autocommit=True) as conn:
                cur = await conn.execute(sql)
                row = await cur.fetchone()
        else:
            with sqlite3.connect(self.spec) as conn:
                row = conn.execute(sql).fetchone()
        assert row is not None
        return {"rows": int(row[0]), "pending": int(row[1]), "retried": int(row[2])}


@asynccontextmanager
async def state_store(kind: str, workdir: Path, name: str, admin_dsn: str) -> AsyncIterator[Store]:
    if kind == "sqlite":
        yield Store(kind, str(workdir / f"{name}-{uuid.uuid4().hex[:6]}.db"))
        return
    database = f"watchdog_bench_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
        await conn.execute(f"CREATE DATABASE {database}".encode())
    dsn = admin_dsn.rsplit("/", 1)[0] + "/" + database
    store = Store(kind, dsn, admin_dsn, database)
    try:
        yield store
    finally:
        if store.admin is not None:
            await store.admin.close()
        async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
            await conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)".encode())


async def pg_version(admin_dsn: str) -> str:
    try:
        async with await psycopg.AsyncConnection.connect(admin_dsn, autocommit=True) as conn:
            cur = await conn.execute("SHOW server_version")
            row = await cur.fetchone()
            return str(row[0]) if row else "?"
    except psycopg.Error as exc:
        return f"unreachable ({exc})"


# -- the daemon ----------------------------------------------------------------------------------------------


@dataclass
class Running:
    daemon: Daemon
    slack: SlackServer
    store: Store
    env: dict[str, str]

    @property
    def fallback(self) -> LogNotifier:
        notifier = self.daemon.components.notifiers["log"]
        assert isinstance(notifier, LogNotifier)
        return notifier


@asynccontextmanager
async def running_daemon(config: WatchdogConfig, store: Store, slack: SlackServer) -> AsyncIterator[Running]:
    env = {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_API_URL": slack.url,
        "WATCHDOG_INTAKE_TOKEN": INTAKE_TOKEN,
    }
    components = wire(config, state=store.spec, probes=[], env=env, instance="bench")
    daemon = Daemon(components)
    await daemon.start()
    try:
        # Only the leader sends pages; the lease is taken by the first evaluation (evaluation_interval).
        async def leader() -> bool:
            return daemon.is_leader

        await until(leader, "the daemon leading", 30)
        await asyncio.sleep(0.5)
        yield Running(daemon, slack, store, env)
    finally:
        await daemon.stop()


async def after_change(daemon: Daemon) -> None:
    """What ``Daemon.evaluate_alerts`` does once its evaluation changed something: run the dispatch job at
    once (``_dispatch_now``), or, in a daemon without it, dispatch inline (``await _dispatch()``)."""
    dispatch_now = getattr(daemon, "_dispatch_now", None)
    if dispatch_now is not None:
        dispatch_now()
    else:
        await daemon._dispatch()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float) -> float:
    """Wait for ``check``; returns the seconds waited. Raises if it does not come true in time."""
    t0 = time.perf_counter()
    while not await check():
        if time.perf_counter() - t0 > timeout_s:
            raise RuntimeError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(0.1)
    return time.perf_counter() - t0


# -- part 1: decision → Slack latency ------------------------------------------------------------------------


async def part_latency(
    config: WatchdogConfig, store: Store, path: str, args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    rng = random.Random(9)
    decided: dict[str, float] = {}
    fire_s: list[float] = []
    prefix = f"bench:latency:{path}:"
    with slack_server() as slack:
        async with running_daemon(config, store, slack) as run:
            # The idle daemon's own cost (the dispatch job's empty claims, evaluations), to subtract.
            idle_cpu0, idle_w0 = time.process_time(), time.perf_counter()
            await asyncio.sleep(args.idle_s)
            idle_rate = (time.process_time() - idle_cpu0) / (time.perf_counter() - idle_w0)
            cpu0, pg0, wall0 = time.process_time(), await store.backend_cpu_s(), time.perf_counter()
            for i in range(args.incidents):
                await asyncio.sleep(rng.uniform(args.gap_ms[0], args.gap_ms[1]) / 1000)
                spec = AlertSpec(
                    key=f"{prefix}{i:04d}",
                    alert=f"bench-{i:04d}",
                    severity="warning",
                    policy="default",
                    summary=f"bench-{i:04d} failed 3 times in a row",
                    labels={"instance": f"host-{i:04d}"},
                )
                t0 = time.perf_counter()
                moved = await run.daemon.incidents.fire(spec)
                decided[spec.key] = time.time()
                fire_s.append(time.perf_counter() - t0)
                if moved is None:
                    raise RuntimeError(f"{spec.key} did not fire")
                if path == "evaluate":
                    await after_change(run.daemon)

            async def all_delivered() -> bool:
                dump = await slack.adump()
                wanted: int = args.incidents
                return sum(1 for p in dump.parents() if p.key.startswith(prefix)) >= wanted

            await until(all_delivered, "every page delivered", 30)
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            pg_cpu = await store.backend_cpu_s() - pg0
            dump = await slack.adump()
            outbox = await store.outbox()
            fallback = len(run.fallback.sent)
    first: dict[str, float] = {}
    for p in dump.parents():
        if p.key.startswith(prefix) and p.key not in first:
            first[p.key] = p.at
    latency = [first[k] - decided[k] for k in decided]
    stats = {
        "part": "latency",
        "store": store.kind,
        "path": path,
        "incidents": args.incidents,
        "delivered": len(first),
        "p50_ms": q(latency, 0.5) * 1e3,
        "p90_ms": q(latency, 0.9) * 1e3,
        "p99_ms": q(latency, 0.99) * 1e3,
        "max_ms": max(latency) * 1e3,
        "over_1s": sum(1 for x in latency if x > 1.0),
        "fire_p50_ms": q(fire_s, 0.5) * 1e3,
        "fire_p99_ms": q(fire_s, 0.99) * 1e3,
        "wall_s": wall,
        "cpu_ms_per_incident": cpu / args.incidents * 1e3,
        "idle_cpu_ms_per_s": idle_rate * 1e3,
        "net_cpu_ms_per_incident": (cpu - idle_rate * wall) / args.incidents * 1e3,
        "pg_cpu_ms_per_incident": pg_cpu / args.incidents * 1e3,
        "outbox_pending": outbox["pending"],
        "fallback": fallback,
        "other_posts": sum(1 for p in dump.posts if not p.key.startswith(prefix)),
    }
    log(
        f"[latency {store.kind} {path}] {len(first)}/{args.incidents} delivered; decision → Slack p50 "
        f"{stats['p50_ms']:.0f} ms, p99 {stats['p99_ms']:.0f} ms, max {stats['max_ms']:.0f} ms, "
        f"{stats['over_1s']} over 1 s; fire() p50 {stats['fire_p50_ms']:.1f} ms; "
        f"CPU {stats['cpu_ms_per_incident']:.2f} ms/incident "
        f"({stats['net_cpu_ms_per_incident']:.2f} above the idle daemon's "
        f"{stats['idle_cpu_ms_per_s']:.2f} ms/s; +{stats['pg_cpu_ms_per_incident']:.2f} ms PG)"
    )
    return stats


# -- part 2: tick() over 1,000 open incidents ---------------------------------------------------------------


async def part_tick(
    config: WatchdogConfig, store: Store, args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    clock = FakeClock(START)
    state = open_store(store.spec)
    await state.open()
    try:
        manager = IncidentManager(config, state, clock)
        t0 = time.perf_counter()
        for i in range(args.open):
            moved = await manager.fire(
                AlertSpec(
                    key=f"bench:tick:{i:04d}",
                    alert=f"bench-rule-{i % 20:02d}",
                    severity="warning",
                    policy="default",
                    summary=f"host-{i:04d} is failing",
                    labels={"instance": f"host-{i:04d}", "job": "node"},
                )
            )
            if moved is None:
                raise RuntimeError("an incident did not fire")
        fill_s = time.perf_counter() - t0
        open_now = await manager.list_incidents(["firing"])
        assert len(open_now) == args.open
        assert all(i.data.get("next_escalation_at") for i in open_now), "every incident has a timer"

        async def timed_tick() -> tuple[float, float, int]:
            c0, w0 = time.process_time(), time.perf_counter()
            done = await manager.tick()
            return time.perf_counter() - w0, time.process_time() - c0, len(done)

        for _ in range(10):  # warm-up
            clock.advance(1.0)
            await manager.tick()
        full_collections: list[float] = []

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start" and info["generation"] == 2:
                full_collections.append(time.perf_counter())

        async def idle_ticks() -> tuple[list[float], list[float], int]:
            """Wall and CPU seconds of each tick, and how many of those over 50 ms had a full collection."""
            walls: list[float] = []
            cpus: list[float] = []
            slow_with_gc = 0
            for _ in range(args.ticks):
                # The daemon ticks every evaluation_interval (5 s); nothing is due either way.
                clock.advance(1.0)
                before = len(full_collections)
                w, c, moved_count = await timed_tick()
                if moved_count:
                    raise RuntimeError("a tick that should find nothing due changed something")
                walls.append(w)
                cpus.append(c)
                slow_with_gc += w > 0.05 and len(full_collections) > before
            return walls, cpus, slow_with_gc

        gc.callbacks.append(on_gc)
        pg0 = await store.backend_cpu_s()
        walls, cpus, slow_with_gc = await idle_ticks()
        idle_pg = (await store.backend_cpu_s() - pg0) / args.ticks
        # The same after gc.freeze(): long-lived objects leave the collector's full scans (the slow ticks
        # above are the ones a full collection landed in).
        gc.collect()
        gc.freeze()
        frozen, _cpus, _slow = await idle_ticks()
        gc.unfreeze()
        gc.callbacks.remove(on_gc)
        rows_before = (await store.outbox())["rows"]
        clock.set(START + 30 * 60 + 1)
        pg0 = await store.backend_cpu_s()
        l2_wall, l2_cpu, l2_moved = await timed_tick()
        l2_pg = await store.backend_cpu_s() - pg0
        rows_l2 = (await store.outbox())["rows"]
        clock.advance(1.0)
        after_wall, _c, _m = await timed_tick()
        clock.set(START + 30 * 60 + 2 * 3600 + 2)
        pg0 = await store.backend_cpu_s()
        l3_wall, l3_cpu, l3_moved = await timed_tick()
        l3_pg = await store.backend_cpu_s() - pg0
        rows_l3 = (await store.outbox())["rows"]
    finally:
        await state.close()
    stats = {
        "part": "tick",
        "store": store.kind,
        "open": args.open,
        "fill_s": fill_s,
        "ticks": args.ticks,
        "idle_p50_ms": statistics.median(walls) * 1e3,
        "idle_p99_ms": q(walls, 0.99) * 1e3,
        "idle_max_ms": max(walls) * 1e3,
        "idle_cpu_ms": statistics.median(cpus) * 1e3,
        "idle_pg_cpu_ms": idle_pg * 1e3,
        "idle_over_50ms": sum(1 for w in walls if w > 0.05),
        "idle_over_50ms_full_gc": slow_with_gc,
        "frozen_p50_ms": statistics.median(frozen) * 1e3,
        "frozen_p99_ms": q(frozen, 0.99) * 1e3,
        "frozen_max_ms": max(frozen) * 1e3,
        "l2_ms": l2_wall * 1e3,
        "l2_cpu_ms": l2_cpu * 1e3,
        "l2_pg_cpu_ms": l2_pg * 1e3,
        "l2_moved": l2_moved,
        "l2_pages": rows_l2 - rows_before,
        "after_l2_idle_ms": after_wall * 1e3,
        "l3_ms": l3_wall * 1e3,
        "l3_cpu_ms": l3_cpu * 1e3,
        "l3_pg_cpu_ms": l3_pg * 1e3,
        "l3_moved": l3_moved,
        "l3_pages": rows_l3 - rows_l2,
    }
    log(
        f"[tick {store.kind}] {args.open} open incidents (fired in {fill_s:.1f} s); nothing due: p50 "
        f"{stats['idle_p50_ms']:.1f} ms, p99 {stats['idle_p99_ms']:.1f} ms, "
        f"max {stats['idle_max_ms']:.1f} ms over {args.ticks} ticks ({stats['idle_over_50ms']} over 50 ms, "
        f"{slow_with_gc} of them with a full GC collection; "
        f"after gc.freeze() p50 {stats['frozen_p50_ms']:.1f}, p99 {stats['frozen_p99_ms']:.1f} ms); "
        f"all due: L1→L2 {stats['l2_ms']:.0f} ms "
        f"({l2_moved} escalations, {stats['l2_pages']} outbox rows), "
        f"L2→L3 {stats['l3_ms']:.0f} ms ({l3_moved})"
    )
    return stats


# -- part 3: a burst of alerts in one group -----------------------------------------------------------------


def am_alerts(count: int, critical_every: int, *, ended: bool = False) -> list[dict[str, Any]]:
    """The alerts of one rule over ``count`` instances, as Prometheus sends them to Alertmanager
    (``/api/v2/alerts``)."""
    now = datetime.now(UTC)
    ends = now - timedelta(seconds=30) if ended else now + timedelta(hours=1)
    return [
        {
            "labels": {
                "alertname": "PodCrashLooping",
                "severity": "critical" if critical_every and i % critical_every == 0 else "warning",
                "namespace": "prod",
                "pod": f"api-{i:04d}",
                "job": "kube-state-metrics",
            },
            "annotations": {"summary": f"pod prod/api-{i:04d} restarted 5 times in 10 minutes"},
            "startsAt": (now - timedelta(minutes=5)).isoformat(),
            "endsAt": ends.isoformat(),
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=kube_pod_container_status_restarts",
        }
        for i in range(count)
    ]


def _fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16]


def am_webhook(alerts: Sequence[dict[str, Any]], status: str) -> dict[str, Any]:
    """The webhook (version 4) Alertmanager sends for the group of ``alerts``."""
    labels = [a["labels"] for a in alerts]
    common = {k: v for k, v in labels[0].items() if all(ls.get(k) == v for ls in labels)}
    return {
        "version": "4",
        "groupKey": '{}:{alertname="PodCrashLooping"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "watchdog",
        "groupLabels": {"alertname": "PodCrashLooping"},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [
            {
                "status": status,
                "labels": a["labels"],
                "annotations": a["annotations"],
                "startsAt": a["startsAt"],
                "endsAt": a["endsAt"] if status == "resolved" else "0001-01-01T00:00:00Z",
                "generatorURL": a["generatorURL"],
                "fingerprint": _fingerprint(a["labels"]),
            }
            for a in alerts
        ],
    }


@asynccontextmanager
async def intake_face(run: Running) -> AsyncIterator[str]:
    """The daemon's HTTP face with its alert receivers, as ``runtime.serve`` builds it (``create_app``): a
    thread and loop of its own, the incident work hopping to the daemon's loop."""
    app = create_app(run.daemon, env=run.env, intakes=run.daemon.config.intake)
    server = HttpServer(app, f"127.0.0.1:{free_port()}")
    url = await server.start()
    try:
        yield url.rstrip("/")
    finally:
        await server.stop()


@asynccontextmanager
async def alertmanager(workdir: Path, webhook: str) -> AsyncIterator[str]:
    """A real Alertmanager on loopback (no clustering), grouping by alertname, 1 s group_wait and
    group_interval, delivering to ``webhook``; stopped by its pid afterwards."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        raise FileNotFoundError("prometheus-alertmanager")
    port = free_port()
    (workdir / "alertmanager.yml").write_text(
        "route:\n  receiver: watchdog\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n"
        "  repeat_interval: 1h\nreceivers:\n  - name: watchdog\n    webhook_configs:\n"
        f"      - url: {webhook}\n        send_resolved: true\n        http_config:\n"
        f"          authorization: {{type: Bearer, credentials: {INTAKE_TOKEN}}}\n"
    )
    with (workdir / "alertmanager.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            binary,
            f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            stdout=log,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=2) as client:
                deadline = time.monotonic() + 20
                while True:
                    with suppress(httpx.TransportError):
                        if (await client.get("/-/ready")).status_code == 200:
                            break
                    if proc.returncode is not None or time.monotonic() > deadline:
                        raise RuntimeError("alertmanager did not start; see alertmanager.log")
                    await asyncio.sleep(0.1)
            yield base
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


@dataclass
class BurstResult:
    scenario: str
    store: str
    alerts: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    pg_cpu_s: float = 0.0
    incidents: int = 0
    notifications: int = 0
    """Webhooks the intake received (a, b) or incidents fired (c)."""
    first_page_s: float = 0.0
    drain_s: float = 0.0
    """From the first alert in to the outbox empty (everything delivered)."""
    posts: int = 0
    parents: int = 0
    updates: int = 0
    rate_limited: int = 0
    per_channel: dict[str, tuple[int, int]] = field(default_factory=dict)
    fallback: int = 0
    outbox_pending: int = 0
    outbox_retried: int = 0
    represented: str = ""
    bystander_ms: float | None = None
    inline_dispatch_s: float | None = None
    log: dict[str, int] = field(default_factory=dict)
    """``log_counts`` over the scenario."""
    """(c): how long the evaluation job's call to dispatch took (the job is held meanwhile)."""


async def _drained(run: Running) -> bool:
    return (await run.store.outbox())["pending"] == 0


async def burst_one_webhook(run: Running, args: argparse.Namespace) -> BurstResult:
    result = BurstResult("one webhook", run.store.kind, args.alerts)
    alerts = am_alerts(args.alerts, args.critical_every)
    async with intake_face(run) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        headers = {"Authorization": f"Bearer {INTAKE_TOKEN}"}
        cpu0, pg0, w0 = time.process_time(), await run.store.backend_cpu_s(), time.perf_counter()
        answer = await client.post(ALERTMANAGER_PATH, json=am_webhook(alerts, "firing"), headers=headers)
        answered = time.time()
        answer.raise_for_status()
        key = answer.json()["incident"]

        async def paged() -> bool:
            return any(p.key == key for p in (await run.slack.adump()).parents())

        await until(paged, "the group's first page", 30)
        parents = [p for p in (await run.slack.adump()).parents() if p.key == key]
        result.first_page_s = min(p.at for p in parents) - answered
        await until(lambda: _drained(run), "the outbox drained", 120)
        incident = await run.daemon.incidents.get(key)
        assert incident is not None
        lines = str(incident.data.get("summary", "")).splitlines()
        # Alertmanager sends an unchanged group again (repeat_interval): nothing must be paged.
        again = await client.post(ALERTMANAGER_PATH, json=am_webhook(alerts, "firing"), headers=headers)
        gone = await client.post(ALERTMANAGER_PATH, json=am_webhook(alerts, "resolved"), headers=headers)
        result.notifications = 3
        if again.json()["event"] != "unchanged" or gone.json()["event"] != "resolved":
            raise RuntimeError(f"unexpected intake answers: {again.text} {gone.text}")
        await asyncio.sleep(1.5)
        await until(lambda: _drained(run), "the resolve delivered", 120)
        result.drain_s = time.perf_counter() - w0
        result.wall_s = result.drain_s
        result.cpu_s = time.process_time() - cpu0
        result.pg_cpu_s = await run.store.backend_cpu_s() - pg0
    result.incidents = len(await run.daemon.incidents.list_incidents())
    result.represented = f"1 incident; summary: {lines[0]!r} … {lines[-1]!r}"
    return result


async def burst_alertmanager(run: Running, args: argparse.Namespace, workdir: Path) -> BurstResult:
    result = BurstResult("Alertmanager, growing group", run.store.kind, args.alerts)
    alerts = am_alerts(args.alerts, args.critical_every)
    batch = max(1, -(-args.alerts // args.am_batches))
    seen: list[str] = []
    async with intake_face(run) as url:
        webhook = url + ALERTMANAGER_PATH
        # Count the notifications by the incident's notes: one "fired" page, then a note per change.
        async with alertmanager(workdir, webhook) as am, httpx.AsyncClient(base_url=am, timeout=10) as client:
            cpu0, pg0, w0 = time.process_time(), await run.store.backend_cpu_s(), time.perf_counter()
            first_in = time.time()
            for start in range(0, args.alerts, batch):
                posted = await client.post("/api/v2/alerts", json=alerts[start : start + batch])
                posted.raise_for_status()
                await asyncio.sleep(args.am_gap_ms / 1000)

            async def all_in() -> bool:
                found = await run.daemon.incidents.list_incidents(["firing"])
                if found:
                    summary = str(found[0].data.get("summary", ""))
                    if not seen or seen[-1] != summary:
                        seen.append(summary)
                return bool(found) and str(found[0].data.get("summary", "")).startswith(
                    f"{args.alerts} firing"
                )

            await until(all_in, f"one incident with all {args.alerts} alerts", 60)
            await until(lambda: _drained(run), "the outbox drained", 300)
            (incident,) = await run.daemon.incidents.list_incidents()
            key = incident.key
            lines = str(incident.data.get("summary", "")).splitlines()
            parents = [p for p in (await run.slack.adump()).parents() if p.key == key]
            result.first_page_s = min(p.at for p in parents) - first_in if parents else float("nan")
            # The alerts end: Alertmanager sends the resolved group.
            gone = am_alerts(args.alerts, args.critical_every, ended=True)
            ended = await client.post("/api/v2/alerts", json=gone)
            ended.raise_for_status()

            async def resolved() -> bool:
                found = await run.daemon.incidents.get(key)
                return found is not None and found.state == "resolved"

            await until(resolved, "the group resolved", 60)
            await until(lambda: _drained(run), "the resolve delivered", 120)
            result.drain_s = time.perf_counter() - w0
            result.wall_s = result.drain_s
            result.cpu_s = time.process_time() - cpu0
            result.pg_cpu_s = await run.store.backend_cpu_s() - pg0
            final = await run.daemon.incidents.get(key)
            assert final is not None
            result.notifications = int(final.version)
    result.incidents = len(await run.daemon.incidents.list_incidents())
    result.represented = (
        f"1 incident, {final.version} versions (fired, {final.version - 2} updates, resolved); "
        f"summary at the top: {lines[0]!r} … {lines[-1]!r}"
    )
    return result


async def burst_grouped(run: Running, args: argparse.Namespace) -> BurstResult:
    n = args.grouped
    result = BurstResult("own group: one incident per alert", run.store.kind, n)
    cpu0, pg0, w0 = time.process_time(), await run.store.backend_cpu_s(), time.perf_counter()
    first_in = time.time()
    for i in range(n):
        moved = await run.daemon.incidents.fire(
            AlertSpec(
                key=f"bench:storm:{i:04d}",
                alert=f"storm-{i:04d}",
                severity="warning",
                policy="default",
                summary=f"storm-{i:04d} failed 3 times in a row",
                labels={"instance": f"host-{i:04d}"},
                group="storm",
            )
        )
        if moved is None:
            raise RuntimeError("a grouped alert did not fire")
    # Another team's alert decided in the same evaluation, right after the group's.
    bystander_key = "bench:bystander"
    await run.daemon.incidents.fire(
        AlertSpec(
            key=bystander_key,
            alert="unrelated-service-down",
            severity="warning",
            policy="other",
            summary="another team's service is down",
        )
    )
    bystander_at = time.time()
    # What evaluate_alerts does after changes (the evaluation job waits for this call).
    t0 = time.perf_counter()
    await after_change(run.daemon)
    result.inline_dispatch_s = time.perf_counter() - t0

    async def bystander_paged() -> bool:
        return any(p.key == bystander_key for p in (await run.slack.adump()).parents())

    await until(bystander_paged, "the unrelated page", 60 + 3 * n)
    await until(lambda: _drained(run), "the outbox drained", 60 + 3 * n)
    result.drain_s = time.perf_counter() - w0
    result.wall_s = result.drain_s
    result.cpu_s = time.process_time() - cpu0
    result.pg_cpu_s = await run.store.backend_cpu_s() - pg0
    dump = await run.slack.adump()
    result.bystander_ms = (min(p.at for p in dump.parents() if p.key == bystander_key) - bystander_at) * 1e3
    storm = [p for p in dump.posts if "storm-" in p.text]
    result.first_page_s = min(p.at for p in storm) - first_in if storm else float("nan")
    named = sum(1 for i in range(n) if any(f"storm-{i:04d}" in p.text for p in storm))
    threads = {p.thread_ts or p.ts for p in storm}
    result.incidents = len(await run.daemon.incidents.list_incidents())
    result.notifications = n
    result.represented = f"{named}/{n} alerts named in Slack, in {len(threads)} thread(s)"
    return result


def log_counts(path: Path, offset: int) -> dict[str, int]:
    """What the daemon logged from ``offset`` on: send retries, fallback deliveries, jobs skipped because
    their previous run was still going, ERROR lines."""
    with path.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    skipped = [line for line in lines if "maximum number of running instances" in line]
    return {
        "retries": sum(1 for line in lines if "not delivered (" in line),
        "to_fallback": sum(1 for line in lines if "delivering it to log" in line),
        "evaluate_skipped": sum(1 for line in skipped if "_evaluate" in line),
        "dispatch_skipped": sum(1 for line in skipped if "_dispatch" in line),
        "errors": sum(1 for line in lines if '"levelname": "ERROR"' in line),
    }


async def part_burst(
    config: WatchdogConfig, store: Store, scenario: str, args: argparse.Namespace, workdir: Path,
    log: Callable[[str], None],
) -> BurstResult:
    offset = args.log_path.stat().st_size
    with slack_server(args.slack_limit) as slack:
        async with running_daemon(config, store, slack) as run:
            if scenario == "webhook":
                result = await burst_one_webhook(run, args)
            elif scenario == "alertmanager":
                result = await burst_alertmanager(run, args, workdir)
            else:
                result = await burst_grouped(run, args)
            dump = await slack.adump()
            outbox = await store.outbox()
            result.fallback = len(run.fallback.sent)
    result.log = log_counts(args.log_path, offset)
    result.posts = len(dump.posts)
    result.parents = len(dump.parents())
    result.updates = len(dump.updates)
    if result.scenario != "own group: one incident per alert":
        shown = "yes" if dump.shows(f"{result.alerts} firing") else "NO"
        result.represented += f"; Slack shows '{result.alerts} firing': {shown}"
    result.rate_limited = dump.rate_limited()
    result.per_channel = dump.per_channel()
    result.outbox_pending = outbox["pending"]
    result.outbox_retried = outbox["retried"]
    channels = ", ".join(f"{c} {m} (≤{w}/s)" for c, (m, w) in result.per_channel.items())
    log(
        f"[burst {store.kind} {result.scenario}] {result.alerts} alerts → {result.incidents} incident(s); "
        f"{result.posts} messages ({result.parents} parents) + {result.updates} chat.update; {channels}; "
        f"{result.rate_limited} answered 429; fallback {result.fallback}; outbox pending "
        f"{result.outbox_pending}; log: {result.log}; everything delivered {result.drain_s:.1f} s after the "
        "first alert; "
        f"{result.represented}"
        + (f"; unrelated page waited {result.bystander_ms:.0f} ms" if result.bystander_ms is not None else "")
        + (
            f"; the evaluation job's call to dispatch took {result.inline_dispatch_s:.1f} s"
            if result.inline_dispatch_s is not None
            else ""
        )
    )
    return result


# -- main ----------------------------------------------------------------------------------------------------


def print_tables(
    latency: list[dict[str, Any]], ticks: list[dict[str, Any]], bursts: list[BurstResult]
) -> None:
    if latency:
        print("\n#### 1. Decision → Slack API call\n")
        print("| store | path | incidents | p50 ms | p90 ms | p99 ms | max ms | over 1 s "
              "| fire() p50 / p99 ms | wall s | CPU ms per incident: all / above idle (PG backend) |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in latency:
            pg = f" (+{r['pg_cpu_ms_per_incident']:.2f})" if r["store"] == "postgresql" else ""
            print(f"| {r['store']} | {r['path']} | {r['delivered']}/{r['incidents']} | {r['p50_ms']:.0f} "
                  f"| {r['p90_ms']:.0f} | {r['p99_ms']:.0f} | {r['max_ms']:.0f} | {r['over_1s']} "
                  f"| {r['fire_p50_ms']:.1f} / {r['fire_p99_ms']:.1f} | {r['wall_s']:.0f} "
                  f"| {r['cpu_ms_per_incident']:.2f} / {r['net_cpu_ms_per_incident']:.2f}{pg} |")
    if ticks:
        print("\n#### 2. tick() with open incidents and escalation timers\n")
        print("| store | open | nothing due: p50 / p99 / max ms (CPU p50 ms, PG backend) "
              "| ticks over 50 ms (with a full GC) "
              "| same after gc.freeze() | all due L1→L2: ms (CPU, PG) | escalations / outbox rows "
              "| all due L2→L3 ms | fill s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in ticks:
            print(f"| {r['store']} | {r['open']} | {r['idle_p50_ms']:.1f} / {r['idle_p99_ms']:.1f} / "
                  f"{r['idle_max_ms']:.1f} ({r['idle_cpu_ms']:.1f}, {r['idle_pg_cpu_ms']:.1f}) "
                  f"| {r['idle_over_50ms']}/{r['ticks']} ({r['idle_over_50ms_full_gc']}) "
                  f"| {r['frozen_p50_ms']:.1f} / {r['frozen_p99_ms']:.1f} / {r['frozen_max_ms']:.1f} "
                  f"| {r['l2_ms']:.0f} ({r['l2_cpu_ms']:.0f}, {r['l2_pg_cpu_ms']:.0f}) "
                  f"| {r['l2_moved']} / {r['l2_pages']} | {r['l3_ms']:.0f} | {r['fill_s']:.1f} |")
    if bursts:
        print("\n#### 3. A burst in one group, Slack limited to N messages per second per channel\n")
        print("| store | scenario | alerts → incidents | messages (parents) + updates | per channel: "
              "messages (most in 1 s) | 429s | sends retried | first page s | all delivered s | CPU s (PG) "
              "| fallback | outbox left | unrelated page ms | evaluations skipped |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for b in bursts:
            channels = ", ".join(f"{c} {m} ({w})" for c, (m, w) in b.per_channel.items())
            pg = f" ({b.pg_cpu_s:.2f})" if b.store == "postgresql" else ""
            by = f"{b.bystander_ms:.0f}" if b.bystander_ms is not None else "—"
            print(f"| {b.store} | {b.scenario} | {b.alerts} → {b.incidents} | {b.posts} ({b.parents}) + "
                  f"{b.updates} | {channels} | {b.rate_limited} | {b.log.get('retries', 0)} "
                  f"| {b.first_page_s:.2f} | {b.drain_s:.1f} | {b.cpu_s:.2f}{pg} | {b.fallback} "
                  f"| {b.outbox_pending} | {by} | {b.log.get('evaluate_skipped', 0)} |")
        for b in bursts:
            held = (
                f"; the evaluation job's call to dispatch took {b.inline_dispatch_s:.1f} s"
                if b.inline_dispatch_s is not None
                else ""
            )
            print(f"- {b.store}, {b.scenario}: {b.represented}{held}")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["latency", "tick", "burst"], help="run one part only")
    ap.add_argument("--stores", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    ap.add_argument("--pg-admin", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--incidents", type=int, default=200, help="part 1: incidents per store and path")
    ap.add_argument("--gap-ms", type=float, nargs=2, default=[100.0, 500.0], metavar=("MIN", "MAX"),
                    help="part 1: time between two decisions, uniformly random")
    ap.add_argument("--paths", default="poll,evaluate", help="part 1: poll, evaluate")
    ap.add_argument("--idle-s", type=float, default=3.0, help="part 1: idle daemon CPU measured this long")
    ap.add_argument("--open", type=int, default=1000, help="part 2: open incidents")
    ap.add_argument("--ticks", type=int, default=300, help="part 2: ticks timed with nothing due")
    ap.add_argument("--alerts", type=int, default=500, help="part 3: alerts in the Alertmanager group")
    ap.add_argument("--critical-every", type=int, default=100,
                    help="part 3: every Nth alert is critical (the group pages L1 and L3); 0: all warning")
    ap.add_argument("--slack-limit", type=int, default=1, help="part 3: messages per second per channel")
    ap.add_argument("--am-batches", type=int, default=10,
                    help="part 3b: batches the alerts reach Alertmanager in")
    ap.add_argument("--am-gap-ms", type=float, default=500.0, help="part 3b: time between two batches")
    ap.add_argument("--grouped", type=int, default=60,
                    help="part 3c: alerts of the watchdog's own group: one Slack message each (0: skip)")
    ap.add_argument("--scenarios", default="webhook,alertmanager,grouped",
                    help="part 3: webhook, alertmanager, grouped")
    ap.add_argument("--quick", action="store_true", help="50 incidents, 100 ticks, 20 grouped alerts")
    ap.add_argument("--json", type=Path, help="also write every result to this file as JSON")
    args = ap.parse_args()
    if args.quick:
        args.incidents, args.ticks, args.grouped = 50, 100, 20
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]

    def log(msg: str) -> None:
        print(msg, flush=True)

    pg = await pg_version(args.pg_admin) if "postgresql" in stores else "not used"
    log(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; python {platform.python_version()}, {os.cpu_count()} CPUs "
        f"({cpu_model()}), load {os.getloadavg()[0]:.2f}; PostgreSQL {pg}")
    latency: list[dict[str, Any]] = []
    ticks: list[dict[str, Any]] = []
    bursts: list[BurstResult] = []
    with tempfile.TemporaryDirectory(prefix="escalation-bench-") as tmp:
        work = Path(tmp)
        config = write_config(work / "config")
        args.log_path = work / "watchdog.log"
        with args.log_path.open("w") as logfile:
            configure_logging("INFO", stream=logfile)
            for kind in stores:
                if args.only in (None, "latency"):
                    for path in [p.strip() for p in args.paths.split(",") if p.strip()]:
                        async with state_store(kind, work, "latency", args.pg_admin) as store:
                            latency.append(await part_latency(config, store, path, args, log))
                if args.only in (None, "tick"):
                    async with state_store(kind, work, "tick", args.pg_admin) as store:
                        ticks.append(await part_tick(config, store, args, log))
                if args.only in (None, "burst"):
                    scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
                    for scenario in scenarios:
                        if scenario == "grouped" and not args.grouped:
                            continue
                        if scenario == "alertmanager" and not (
                            shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
                        ):
                            log("[burst] prometheus-alertmanager not installed: scenario (b) skipped")
                            continue
                        am_dir = work / f"am-{kind}-{scenario}"
                        am_dir.mkdir()
                        async with state_store(kind, work, "burst", args.pg_admin) as store:
                            bursts.append(await part_burst(config, store, scenario, args, am_dir, log))
            logfile.flush()
            text = (work / "watchdog.log").read_text()
        errors = [line for line in text.splitlines() if '"levelname": "ERROR"' in line]
        retries = sum(1 for line in text.splitlines() if "not delivered" in line)
    print_tables(latency, ticks, bursts)
    print(f"\nlog: {len(errors)} ERROR lines, {retries} 'not delivered' retries")
    for line in errors[:5]:
        print("  " + line[:300])
    if args.json:
        out = {
            "latency": latency,
            "tick": ticks,
            "burst": [b.__dict__ for b in bursts],
            "errors": len(errors),
            "retries": retries,
        }
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    asyncio.run(main())
