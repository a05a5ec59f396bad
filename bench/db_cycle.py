"""One full database cycle of the watchdog vs one prometheus-postgres-exporter scrape, same database, one run.

Starts a throwaway primary + streaming replica (pg_stat_statements loaded, a few hundred distinct statements
tracked), two pg_monitor roles — ``watchdog`` for our probe and ``exporter`` for postgres_exporter — so that
pg_stat_statements can attribute database-side time to each (top-level statements of that user), then
alternates blocks of our full probe cycle (every family, including pg_stat_statements top-N, replication
and host CPU/memory from /proc) with blocks of exporter scrapes.

- wall: per cycle / per scrape (perf_counter around ``probe.run()`` / the HTTP GET of /metrics)
- CPU: ours from ``time.process_time()`` deltas (this process does nothing else); the exporter's from
  utime+stime in ``/proc/<pid>/stat`` before and after its blocks
- database side: sum of ``total_exec_time`` of top-level statements by that user (pg_stat_statements)

Run as root (the servers run as ``postgres``):  .venv/bin/python bench/db_cycle.py --cycles 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from pgcluster import PgCluster, PgNode, free_port, wait_for

from watchdog.config.postgres import PostgresProbeConfig
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import SystemClock
from watchdog.core.results import Outcome
from watchdog.probes.postgres import PostgresProbe
from watchdog.sources.proc import ProcMetricSource

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Side:
    wall_s: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    db_ms: float = 0.0
    count: int = 0

    def row(self, name: str) -> str:
        w = sorted(self.wall_s)
        p50 = statistics.median(w) * 1000
        p95 = w[int(0.95 * (len(w) - 1))] * 1000
        mean = statistics.fmean(w) * 1000
        cpu = self.cpu_s / self.count * 1000
        db = self.db_ms / self.count
        return f"| {name} | {self.count} | {p50:.2f} | {p95:.2f} | {mean:.2f} | {cpu:.2f} | {db:.3f} |"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def db_time_ms(node: PgNode, user: str) -> float:
    out = node.psql(
        "SELECT coalesce(sum(total_exec_time), 0) FROM pg_stat_statements s "
        f"JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = '{user}' AND s.toplevel"
    )
    return float(out)


def prepare(node: PgNode, statements: int) -> None:
    node.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    node.psql("CREATE ROLE watchdog LOGIN IN ROLE pg_monitor; CREATE ROLE exporter LOGIN IN ROLE pg_monitor")
    node.psql("CREATE TABLE items (id int PRIMARY KEY, lang text, body text)")
    node.psql(
        "INSERT INTO items SELECT g, (ARRAY['en','zhTW','zhCN'])[1 + g % 3], md5(g::text) "
        "FROM generate_series(1, 20000) g"
    )
    # A realistic pg_stat_statements: many distinct normalised statements.
    # IN lists of different lengths are different statements to pg_stat_statements (PostgreSQL 15).
    sql = "; ".join(
        f"SELECT count(*) FROM items WHERE id IN ({', '.join(str(i) for i in range(k))})"
        for k in range(1, 1 + statements)
    )
    node.psql_script(sql, user="postgres")
    node.psql("ANALYZE items")


class Exporter:
    def __init__(self, dsn: str) -> None:
        self.port = free_port()
        env = {**os.environ, "DATA_SOURCE_NAME": dsn + "?sslmode=disable"}
        self.proc = subprocess.Popen(
            ["prometheus-postgres-exporter", f"--web.listen-address=127.0.0.1:{self.port}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = httpx.Client(timeout=10)
        wait_for(self._ready, timeout=15)

    def _ready(self) -> bool:
        try:
            return "pg_up 1" in self.client.get(self.url).text
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def main(cycles: int, rounds: int, statements: int) -> str:
    with PgCluster(conf={"pg_stat_statements.track": "top", "pg_stat_statements.max": "5000"}) as cluster:
        p = cluster.primary
        prepare(p, statements)
        tracked = int(p.psql("SELECT count(*) FROM pg_stat_statements"))
        server_version = p.psql("SHOW server_version").split()[0]
        config = PostgresProbeConfig(
            kind="postgres",
            name="bench",
            dsn=p.dsn("watchdog"),
            host_metrics={"source": "proc"},
            queries={"top_statements": 5},
        )
        probe = PostgresProbe(
            config, defaults=ProbeDefaults(timeout=10), clock=SystemClock(), metric_source=ProcMetricSource()
        )
        exporter = Exporter(p.dsn("exporter"))
        ours, theirs = Side(), Side()
        try:
            # Warm-up: connections, prepared statements, the pg_stat_statements baseline and text cache.
            for _ in range(5):
                results = await probe.run()
                exporter.client.get(exporter.url)
            bad = [
                (r.labels["check"], r.reason)
                for r in results
                if r.outcome is Outcome.FAILED and r.labels["check"] != "host"  # a busy bench host is fine
            ]
            if bad:
                raise SystemExit(f"probe failing, bench meaningless: {bad}")
            per_round = max(1, cycles // rounds)
            for _ in range(rounds):
                db0 = db_time_ms(p, "watchdog")
                cpu0 = time.process_time()
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    await probe.run()
                    ours.wall_s.append(time.perf_counter() - t0)
                ours.cpu_s += time.process_time() - cpu0
                ours.db_ms += db_time_ms(p, "watchdog") - db0
                ours.count += per_round

                db0 = db_time_ms(p, "exporter")
                cpu0 = proc_cpu_s(exporter.proc.pid)
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    r = exporter.client.get(exporter.url)
                    theirs.wall_s.append(time.perf_counter() - t0)
                    assert r.status_code == 200
                theirs.cpu_s += proc_cpu_s(exporter.proc.pid) - cpu0
                theirs.db_ms += db_time_ms(p, "exporter") - db0
                theirs.count += per_round
            families = [r.labels["check"] for r in await probe.run()]
        finally:
            exporter.stop()
            await probe.aclose()
    cpu_model = _cpu_model()
    return "\n".join(
        [
            f"PostgreSQL {server_version} primary + 1 streaming replica, {tracked} statements in "
            f"pg_stat_statements; "
            f"{os.cpu_count()} CPUs ({cpu_model}); Python {platform.python_version()}; "
            f"{rounds} alternating rounds.",
            f"Watchdog families per cycle: {', '.join(families)}.",
            "",
            "| side | n | wall p50 ms | wall p95 ms | wall mean ms | CPU ms / cycle | DB-side ms / cycle |",
            "|---|---|---|---|---|---|---|",
            ours.row("watchdog full cycle"),
            theirs.row("postgres_exporter scrape"),
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--statements", type=int, default=300, help="distinct statements to seed")
    args = parser.parse_args()
    print(asyncio.run(main(args.cycles, args.rounds, args.statements)))
