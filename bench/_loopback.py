"""Shared pieces of the foundation benchmarks: a minimal loopback HTTP target, ports, /proc readings.

The target runs in its own process (``python bench/_loopback.py PORT``), so its CPU is never counted
against the prober. It answers ``GET /api/simple-health`` (and any other GET path) with a small JSON body,
the shape of the reference service's liveness route, as cheaply as aiohttp allows.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = b'{"status":"ok","timestamp":"2026-01-01T00:00:00.000Z"}'
HEALTH_PATH = "/api/simple-health"


def serve(port: int) -> None:
    """The target (runs in a subprocess)."""
    from aiohttp import web

    async def health(_: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_get("/{tail:.*}", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None, backlog=1024)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes] | None = None, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {deadline_s:g} s")


def start_target(kind: str = "aiohttp") -> tuple[subprocess.Popen[bytes], str]:
    """Start the loopback target; returns (process, health URL). ``kind``: ``aiohttp`` (minimal app from
    this file) or ``demo`` (``python -m watchdog.demo --no-rate-limits``, the reference service)."""
    port = free_port()
    if kind == "aiohttp":
        cmd = [sys.executable, str(Path(__file__).resolve()), str(port)]
    elif kind == "demo":
        cmd = [
            sys.executable, "-m", "watchdog.demo", "--port", str(port), "--no-rate-limits",
            "--log-level", "warning",
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown target {kind!r} (aiohttp, demo)")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
    except BaseException:
        stop_process(proc)
        raise
    return proc, f"http://127.0.0.1:{port}{HEALTH_PATH}"


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the process we started (by its pid), SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat, in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, *keys: str) -> dict[str, int]:
    """Selected ``kB`` fields of /proc/<pid>/status (VmRSS, VmHWM, ...)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in keys:
                out[name] = int(value.split()[0])
    return out


if __name__ == "__main__":
    serve(int(sys.argv[1]))
