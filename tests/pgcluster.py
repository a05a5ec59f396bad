"""Throwaway PostgreSQL primary/replica clusters for tests and benchmarks.

Runs the installed server binaries (``/usr/lib/postgresql/<v>/bin``) as the ``postgres`` user when we are
root (initdb refuses root), in temporary directories owned by that user, on free loopback ports. Every node
is stopped (``pg_ctl stop -m immediate``, then SIGKILL by pid if needed) and its directory removed by
``PgNode.destroy``; ``PgCluster`` is a context manager doing that for all its nodes.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path(os.environ.get("WATCHDOG_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"

BASE_CONF: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_wal_senders": "5",
    "max_replication_slots": "5",
    "wal_level": "replica",
    "hot_standby": "on",
    "wal_receiver_status_interval": "1s",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "autovacuum_naptime": "60s",
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "all",
    "archive_mode": "on",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_postgres(cmd: Sequence[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_USER, "--", *cmd]
    return list(cmd)


def _run(
    cmd: Sequence[str], *, timeout: float = 60.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        _as_postgres(cmd), capture_output=True, text=True, timeout=timeout, check=False, cwd="/"
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _make_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        pw = pwd.getpwnam(PG_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    path.chmod(0o700)
    return path


@dataclass
class PgNode:
    name: str
    base: Path
    port: int
    pid: int | None = None
    extra_args: list[str] = field(default_factory=list)

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base

    @property
    def logfile(self) -> Path:
        return self.base / "server.log"

    @property
    def archive_dir(self) -> Path:
        return self.base / "archive"

    def dsn(self, user: str = "postgres", database: str = "postgres", password: str | None = None) -> str:
        from urllib.parse import quote

        auth = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def start(self, *, wait: bool = True) -> None:
        opts = f"-c port={self.port} -c unix_socket_directories={self.socket_dir} " + " ".join(
            self.extra_args
        )
        _run(
            [
                str(PG_BIN / "pg_ctl"),
                "start",
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-o",
                opts,
                "-w" if wait else "-W",
                "-t",
                "30",
            ]
        )
        self.pid = self._read_pid()

    def _read_pid(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        for _ in range(100):
            try:
                return int(pidfile.read_text().splitlines()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.02)
        return None

    def stop(self, mode: str = "immediate") -> None:
        if self.pid is None:
            return
        _run(
            [str(PG_BIN / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", mode, "-w", "-t", "20"],
            check=False,
        )
        pid, self.pid = self.pid, None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 0)
            os.kill(pid, signal.SIGKILL)

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def _psql_args(self, database: str, user: str) -> list[str]:
        return [
            str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", database,
        ]  # fmt: skip

    def psql(
        self, sql: str, *, database: str = "postgres", user: str = "postgres", check: bool = True
    ) -> str:
        proc = _run([*self._psql_args(database, user), "-c", sql], check=check)
        return proc.stdout.strip()

    def psql_script(self, sql: str, *, database: str = "postgres", user: str = "postgres") -> str:
        """Run a long SQL script (too long for a command-line argument) through ``psql -f``."""
        script = self.base / f"script-{time.monotonic_ns()}.sql"
        script.write_text(sql)
        script.chmod(0o644)
        try:
            proc = _run([*self._psql_args(database, user), "-f", str(script)])
        finally:
            script.unlink()
        return proc.stdout.strip()

    def reload(self) -> None:
        self.psql("SELECT pg_reload_conf()")


def init_primary(
    *,
    name: str = "primary",
    conf: Mapping[str, str] | None = None,
    hba_prefix: Sequence[str] = (),
) -> PgNode:
    """initdb + start. ``hba_prefix`` lines go before the default trust rules (e.g. scram for one user)."""
    base = _make_dir(f"watchdog-pg-{name}-")
    node = PgNode(name=name, base=base, port=free_port())
    try:
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(node.datadir),
                "-N",
                "-A",
                "trust",
                "-U",
                PG_USER,
                "-E",
                "UTF8",
            ]
        )
        (node.archive_dir).mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_USER)
            os.chown(node.archive_dir, pw.pw_uid, pw.pw_gid)
        settings = {**BASE_CONF, "archive_command": f"'cp %p {node.archive_dir}/%f'", **(conf or {})}
        with (node.datadir / "postgresql.conf").open("a") as f:
            f.write("\n# sre-watchdog test cluster\n")
            for key, value in settings.items():
                f.write(f"{key} = {value}\n")
        if hba_prefix:
            hba = node.datadir / "pg_hba.conf"
            hba.write_text("\n".join(hba_prefix) + "\n" + hba.read_text())
        node.start()
    except BaseException:
        node.destroy()
        raise
    return node


def init_replica(primary: PgNode, *, name: str = "replica1", slot: str | None = None) -> PgNode:
    """pg_basebackup from ``primary`` + streaming replication (application_name = ``name``)."""
    base = _make_dir(f"watchdog-pg-{name}-")
    node = PgNode(name=name, base=base, port=free_port())
    try:
        cmd = [
            str(PG_BIN / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            PG_USER,
            "-D",
            str(node.datadir),
            "-X",
            "stream",
            "-c",
            "fast",
            "-R",
            "--no-sync",
        ]
        if slot:
            cmd += ["-S", slot]
        _run(cmd)
        conninfo = f"host=127.0.0.1 port={primary.port} user={PG_USER} application_name={name}"
        with (node.datadir / "postgresql.auto.conf").open("a") as f:
            f.write(f"primary_conninfo = '{conninfo}'\n")
            f.write("archive_mode = off\n")
            if slot:
                f.write(f"primary_slot_name = '{slot}'\n")
        node.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = primary.psql(f"SELECT state FROM pg_stat_replication WHERE application_name = '{name}'")
            if state == "streaming":
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"replica {name} did not start streaming")
    except BaseException:
        node.destroy()
        raise
    return node


class PgCluster:
    """A primary and optionally one streaming replica; ``with PgCluster(...) as c:`` cleans both up."""

    def __init__(
        self,
        *,
        replica: bool = True,
        conf: Mapping[str, str] | None = None,
        hba_prefix: Sequence[str] = (),
        slot: str | None = "replica1_slot",
    ) -> None:
        self.primary = init_primary(conf=conf, hba_prefix=hba_prefix)
        self.replica: PgNode | None = None
        try:
            if replica:
                if slot:
                    self.primary.psql(f"SELECT pg_create_physical_replication_slot('{slot}')")
                self.replica = init_replica(self.primary, slot=slot)
        except BaseException:
            self.primary.destroy()
            raise

    def nodes(self) -> Iterator[PgNode]:
        if self.replica is not None:
            yield self.replica
        yield self.primary

    def destroy(self) -> None:
        for node in list(self.nodes()):
            node.destroy()

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll a zero-argument callable until it returns truthy."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError("condition not met in time")
