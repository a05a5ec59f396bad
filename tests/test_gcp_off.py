"""Nothing Google when off (issue 12 part 7): ``watchdog validate`` and ``watchdog run`` with a normal config
(probes, SLOs, alerts, escalation, a canary rollout on a flagd file; no ``google_cloud``) import no Google
Cloud client library and no gRPC, checked in the process itself once /readyz answers; the same run with
``google_cloud.error_reporting`` on imports them, so the check can see them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from loopback import closed_port

import watchdog

GOOGLE = (
    "grpc",
    "google.cloud.logging",
    "google.cloud.logging_v2",
    "google.cloud.error_reporting",
    "google.cloud.errorreporting_v1beta1",
    "google.cloud.monitoring",
    "google.cloud.monitoring_v3",
    "google.cloud.secretmanager",
    "google.cloud.secretmanager_v1",
    "google.cloud.run",
    "google.cloud.run_v2",
    "google.cloud.storage",
)

# The real CLI, in this process: a thread waits for /readyz, writes sys.modules' names and stops the
# daemon with SIGTERM, as a supervisor would.
_RUN_AND_DUMP = r"""
import json, os, signal, sys, threading, time, urllib.request
out, port = sys.argv[1], sys.argv[2]

def dump_when_ready():
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.05)
    with open(out, "w") as f:
        json.dump(sorted(sys.modules), f)
    os.kill(os.getpid(), signal.SIGTERM)

if port != "-":
    threading.Thread(target=dump_when_ready, daemon=True).start()
from watchdog.cli.main import main
try:
    main(sys.argv[3:])
finally:
    if port == "-":
        with open(out, "w") as f:
            json.dump(sorted(sys.modules), f)
"""


def _config(tmp_path: Path, google_cloud: str = "") -> Path:
    config = tmp_path / "config"
    shutil.copytree(Path(watchdog.__file__).parent / "demo_config", config)
    if google_cloud:
        with (config / "watchdog.yaml").open("a") as f:
            f.write(google_cloud)
    return config


def _modules(tmp_path: Path, config: Path, verb: str, port: int | None) -> list[str]:
    out = tmp_path / f"{verb}-modules.json"
    env = {
        **os.environ,
        "TARGET_BASE_URL": f"http://127.0.0.1:{closed_port()}",
        "WATCHDOG_LISTEN": f"127.0.0.1:{port or 0}",
        "WATCHDOG_STATE": str(tmp_path / "state.db"),
        "WATCHDOG_DEMO_FLAG_FILE": str(tmp_path / "flags.json"),
    }
    env.pop("K_SERVICE", None)
    done = subprocess.run(
        [sys.executable, "-c", _RUN_AND_DUMP, str(out), str(port or "-"), verb, "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    modules: list[str] = json.loads(out.read_text())
    assert "watchdog.cli.check" in modules or "watchdog.runtime.daemon" in modules
    return modules


def _google(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == g or m.startswith(g + ".") for g in GOOGLE)]


def test_validate_and_run_import_nothing_google_without_google_cloud(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert _google(_modules(tmp_path, config, "validate", None)) == []
    running = _modules(tmp_path, config, "run", closed_port())
    assert "watchdog.canary.guard" in running and "watchdog.slo.engine" in running  # the whole daemon
    assert _google(running) == []


def test_the_check_sees_google_when_a_google_cloud_feature_is_on(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "google_cloud:\n  project: watched-project\n  error_reporting: true\n"
        f"  endpoints: {{clouderrorreporting: 'http://127.0.0.1:{closed_port()}'}}\n",
    )
    found = _google(_modules(tmp_path, config, "run", closed_port()))
    assert "grpc" in found and "google.cloud.errorreporting_v1beta1" in found
    assert not any(m.startswith(("google.cloud.storage", "google.cloud.monitoring")) for m in found)
