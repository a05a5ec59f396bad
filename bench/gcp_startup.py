"""Start-up cost of the Google Cloud integrations (issue 12 part 7): ``watchdog validate`` and ``watchdog
run`` (to /readyz) over the demo config, with and without a ``google_cloud`` section, measured from outside.

    python bench/gcp_startup.py                 # 10 runs of each variant, both commands (~1.5 min)
    python bench/gcp_startup.py -n 3            # quicker
    python bench/gcp_startup.py --json out.json # the raw runs too
    python bench/gcp_startup.py --once VARIANT  # one `watchdog run` to /readyz, then SIGTERM (for an outside
                                                # timer such as /usr/bin/time -v)

Variants (the demo config, probes aimed at a closed loopback port, state in a temporary SQLite file):

- ``off``: no ``google_cloud`` section: the baseline.
- ``section``: ``google_cloud`` with project, region, Cloud SQL instance and Cloud Run service, every
  integration off: must cost what ``off`` costs (nothing Google is imported).
- ``cloud-log``: ``off`` with ``K_SERVICE`` set, as on Cloud Run: the ``cloud`` log shape on stdout (plain
  JSON, nothing Google imported).
- ``errors``: ``section`` with Error Reporting on (the likely Cloud Run setup: the log on stdout, errors
  through the API), its endpoint a loopback gRPC Error Reporting (tests/gcp_loopback.py).
- ``on``: ``section`` with Error Reporting and the Cloud Logging API handler on, their endpoints a loopback
  gRPC Error Reporting and REST Cloud Logging: the cost of both clients.

Each ``validate`` run is timed from spawn to exit, with its peak RSS (``ru_maxrss`` from ``wait4``). Each
``run`` is timed from spawn until ``/readyz`` answers 200 (polled every 10 ms), its RSS read from
``/proc/PID/status`` (VmRSS) at that moment, then SIGTERM; its exit status must be 0. Medians are printed,
with min and max. Runs alternate between variants so a drifting machine affects each alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from gcp_loopback import FakeErrorReporting, FakeLoggingRest  # noqa: E402

VARIANTS = ("off", "section", "cloud-log", "errors", "on")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(base: Path, variant: str, er_endpoint: str, logging_endpoint: str) -> Path:
    config = base / variant
    shutil.copytree(ROOT / "watchdog" / "demo_config", config)
    section = ""
    if variant in ("section", "errors", "on"):
        section = (
            "google_cloud:\n"
            "  project: ai-square\n"
            "  region: asia-east1\n"
            "  cloud_sql_instance: ai-square:asia-east1:ai-square-db\n"
            "  cloud_run_service: projects/ai-square/locations/asia-east1/services/ai-square-frontend\n"
        )
    if variant in ("errors", "on"):
        section += (
            "  error_reporting: true\n"
            f"  endpoints: {{clouderrorreporting: '{er_endpoint}', logging: '{logging_endpoint}'}}\n"
        )
    if variant == "on":
        section += "  logging: api\n"
    with (config / "watchdog.yaml").open("a") as f:
        f.write(section)
    return config


def _env(base: Path, variant: str, port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "TARGET_BASE_URL": f"http://127.0.0.1:{_free_port()}",
        "WATCHDOG_LISTEN": f"127.0.0.1:{port}",
        "WATCHDOG_STATE": str(base / f"{variant}-state.db"),
        "WATCHDOG_DEMO_FLAG_FILE": str(base / f"{variant}-flags.json"),
    }
    env.pop("K_SERVICE", None)
    if variant == "cloud-log":
        env["K_SERVICE"] = "sre-watchdog"
    return env


def _command(verb: str, config: Path) -> list[str]:
    return [sys.executable, "-m", "watchdog.cli.main", verb, "--config", str(config)]


def time_validate(config: Path, env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        _command("validate", config), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"validate exited {proc.returncode}")
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def _rss_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def time_run(config: Path, env: dict[str, str], port: int, timeout_s: float = 30.0) -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        _command("run", config), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            if time.perf_counter() - started > timeout_s or proc.poll() is not None:
                raise RuntimeError(f"no /readyz within {timeout_s} s (exit {proc.poll()})")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.01)
        ready = time.perf_counter() - started
        rss, hwm = _rss_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    if code != 0:
        raise RuntimeError(f"watchdog run exited {code}")
    return {"ready_s": ready, "rss_at_ready_mb": rss, "peak_rss_mb": hwm}


@contextmanager
def _fakes() -> Iterator[tuple[str, str]]:
    with ExitStack() as stack:
        er = stack.enter_context(FakeErrorReporting())
        logs = stack.enter_context(FakeLoggingRest())
        yield er.endpoint, logs.endpoint


def _summary(runs: list[dict[str, float]]) -> dict[str, tuple[float, float, float]]:
    keys = runs[0].keys()
    return {
        k: (min(r[k] for r in runs), statistics.median(r[k] for r in runs), max(r[k] for r in runs))
        for k in keys
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--runs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument("--once", choices=VARIANTS, help="one `watchdog run` to /readyz, then exit")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="watchdog-gcp-bench-") as tmp, _fakes() as (er, logs):
        base = Path(tmp)
        configs = {v: _config(base, v, er, logs) for v in VARIANTS}
        if args.once:
            port = _free_port()
            print(json.dumps(time_run(configs[args.once], _env(base, args.once, port), port)))
            return 0
        results: dict[str, dict[str, list[dict[str, float]]]] = {
            v: {"validate": [], "run": []} for v in VARIANTS
        }
        for v in VARIANTS:  # warm-up: byte-compile, page cache
            time_validate(configs[v], _env(base, v, 0))
        for _ in range(args.runs):
            for v in VARIANTS:
                results[v]["validate"].append(time_validate(configs[v], _env(base, v, 0)))
                port = _free_port()
                results[v]["run"].append(time_run(configs[v], _env(base, v, port), port))
    print(f"{args.runs} runs each; median (min-max)")
    heads = ("validate wall", "validate peak RSS", "run to /readyz", "RSS at ready")
    print(f"{'variant':<10} " + " ".join(f"{h:>22}" for h in heads))
    for v in VARIANTS:
        val, run = _summary(results[v]["validate"]), _summary(results[v]["run"])

        def cell(t: tuple[float, float, float], unit: str, scale: float = 1.0, digits: int = 0) -> str:
            lo, mid, hi = (x * scale for x in t)
            return f"{mid:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f}) {unit}"

        print(
            f"{v:<10} {cell(val['wall_s'], 'ms', 1000):>22} {cell(val['peak_rss_mb'], 'MB', digits=1):>22} "
            f"{cell(run['ready_s'], 'ms', 1000):>22} {cell(run['rss_at_ready_mb'], 'MB', digits=1):>22}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    summary: dict[str, Any] = {v: {k: _summary(r) for k, r in results[v].items()} for v in VARIANTS}
    print(
        json.dumps(
            {
                v: {k: {m: round(t[1], 4) for m, t in s.items()} for k, s in summary[v].items()}
                for v in VARIANTS
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
