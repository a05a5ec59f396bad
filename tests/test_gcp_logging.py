"""Cloud Logging (issue 12 part 3): the ``cloud`` log shape on real log records (severity scale, labels from
extras, trace from the request's headers, source location, httpRequest, stack traces where Error Reporting
reads them), ``watchdog run`` writing it on stdout under Cloud Run's environment (K_SERVICE, PORT), and the
google-cloud-logging API handler writing the same entries to a loopback Cloud Logging REST API."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from gcp_loopback import FakeLoggingRest, wait_until
from loopback import closed_port

from watchdog.core.logs import (
    LABELS_FIELD,
    SAMPLED_FIELD,
    SOURCE_FIELD,
    SPAN_FIELD,
    TRACE_FIELD,
    CloudJsonFormatter,
    TraceContext,
    parse_trace_headers,
    probe_http_request,
    trace_context,
)
from watchdog.core.results import Observation, Outcome, ProbeResult
from watchdog.gcp.cloud_logging import CloudLoggingApiHandler, build_client, monitored_resource

PROJECT = "watched-project"
TRACE_ID = "105445aa7843bc8bf206b12000100000"


def _capture(formatter: CloudJsonFormatter, name: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    log = logging.getLogger(f"test.gcp.logging.{name}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(1)
    return log, out


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_severity_follows_cloud_loggings_scale() -> None:
    log, out = _capture(CloudJsonFormatter(PROJECT), "severity")
    for level in (5, logging.DEBUG, logging.INFO, 25, logging.WARNING, logging.ERROR, logging.CRITICAL):
        log.log(level, "at %d", level)
    assert [e["severity"] for e in _lines(out)] == [
        "DEBUG", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL",
    ]  # fmt: skip


def test_an_entry_carries_labels_payload_time_and_source_location() -> None:
    log, out = _capture(CloudJsonFormatter(PROJECT, {"instance": "watchdog-1"}), "entry")
    before = time.time()
    log.warning(
        "probe %s is %s",
        "content-api",
        "failed",
        extra={
            "probe": "content-api",
            "labels": {"cohort": "db", "lang": "zhTW"},  # a result's series labels
            "outcome": "failed",
            "latency_ms": 812.5,  # numbers stay numbers, in the payload
            "evidence": ["errors 3/20"],
            "alerted": True,
            "previous": None,
            "time": 1.5,  # an extra named like an entry field does not replace it
        },
    )
    line_no = sys._getframe().f_lineno - 15
    [entry] = _lines(out)
    assert entry["message"] == "probe content-api is failed"
    assert entry["severity"] == "WARNING"
    assert entry["logger"] == "test.gcp.logging.entry"
    assert entry[LABELS_FIELD] == {
        "instance": "watchdog-1",
        "probe": "content-api",
        "cohort": "db",
        "lang": "zhTW",
        "outcome": "failed",
        "alerted": "true",
    }
    assert entry["latency_ms"] == 812.5 and entry["evidence"] == ["errors 3/20"]
    assert entry["extra_time"] == 1.5
    assert "previous" not in entry and "labels" not in entry
    assert entry[SOURCE_FIELD] == {
        "file": __file__,
        "line": line_no,
        "function": "test_an_entry_carries_labels_payload_time_and_source_location",
    }
    assert entry["time"].endswith("Z")
    assert before - 1 < datetime.fromisoformat(entry["time"]).timestamp() < time.time() + 1
    assert TRACE_FIELD not in entry and "httpRequest" not in entry  # no request: no trace


def test_the_trace_of_the_request_being_served_goes_on_every_entry() -> None:
    log, out = _capture(CloudJsonFormatter(PROJECT), "trace")
    with trace_context(TraceContext(TRACE_ID, "00f067aa0ba902b7", True)):
        log.info("acknowledged by a button")
    log.info("after the request")
    with trace_context(TraceContext(TRACE_ID)):
        log.info("no project", extra={})
    inside, after, unsampled = _lines(out)
    assert inside[TRACE_FIELD] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert inside[SPAN_FIELD] == "00f067aa0ba902b7" and inside[SAMPLED_FIELD] is True
    assert TRACE_FIELD not in after
    assert unsampled[SAMPLED_FIELD] is False and SPAN_FIELD not in unsampled
    # Without a project a trace id is no resource name: Cloud Logging would not link it, so none is written.
    log2, out2 = _capture(CloudJsonFormatter(""), "trace-no-project")
    with trace_context(TraceContext(TRACE_ID)):
        log2.info("x")
    assert TRACE_FIELD not in _lines(out2)[0]


@pytest.mark.parametrize(
    ("traceparent", "cloud", "expected"),
    [
        (f"00-{TRACE_ID}-00f067aa0ba902b7-01", None, TraceContext(TRACE_ID, "00f067aa0ba902b7", True)),
        (f"00-{TRACE_ID}-00f067aa0ba902b7-00", "ignored/1;o=1", TraceContext(TRACE_ID, "00f067aa0ba902b7")),
        (None, f"{TRACE_ID}/1;o=1", TraceContext(TRACE_ID, "0000000000000001", True)),
        (None, TRACE_ID.upper(), TraceContext(TRACE_ID)),
        (f"ff-{TRACE_ID}-00f067aa0ba902b7-01", None, None),  # version ff is invalid
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", f"{TRACE_ID}/5", TraceContext(TRACE_ID, "0000000000000005")),
        ("garbage", "garbage", None),
        (None, None, None),
    ],
)
def test_trace_headers(traceparent: str | None, cloud: str | None, expected: TraceContext | None) -> None:
    assert parse_trace_headers(traceparent, cloud) == expected


def test_exceptions_go_to_stack_trace_where_error_reporting_reads_them() -> None:
    log, out = _capture(CloudJsonFormatter(PROJECT), "exception")
    log2, out2 = _capture(CloudJsonFormatter(PROJECT, traceback_field="traceback"), "exception-api")
    settings: dict[str, str] = {}
    for logger in (log, log2):
        try:
            settings["missing"]
        except KeyError:
            logger.exception("canary content-db: the check failed")
    [entry], [entry2] = _lines(out), _lines(out2)
    assert entry["severity"] == "ERROR" and entry["message"] == "canary content-db: the check failed"
    assert entry["stack_trace"].startswith("Traceback (most recent call last):")
    assert entry["stack_trace"].endswith("KeyError: 'missing'")
    # With Error Reporting fed through its API, the log keeps the traceback where it does not read it.
    assert "stack_trace" not in entry2 and entry2["traceback"] == entry["stack_trace"]


def test_an_http_probe_result_is_an_http_request() -> None:
    url = "https://ai-square.example/api/health"
    result = ProbeResult(
        probe="api-health",
        kind="http",
        target=url,
        outcome=Outcome.FAILED,
        latency_s=2.0005,
        started_at=0.0,
        observations=(Observation("http_status_code", 503.0),),
    )
    assert probe_http_request(result) == {"requestUrl": url, "status": 503, "latency": "2.000500s"}
    db = ProbeResult("db", "postgres", "postgresql://db/x", Outcome.OK, 0.01, 0.0)
    assert probe_http_request(db) is None
    log, out = _capture(CloudJsonFormatter(PROJECT), "http")
    log.warning("probe api-health is failed", extra={"http_request": probe_http_request(result)})
    assert _lines(out)[0]["httpRequest"]["status"] == 503


class _Unavailable(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def unavailable_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/health"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_watchdog_run_on_cloud_run_writes_the_cloud_shape_on_stdout(
    tmp_path: Path, unavailable_site: str
) -> None:
    """Cloud Run's environment: K_SERVICE set (``log_format: auto`` picks ``cloud``), PORT set and no
    ``listen`` in watchdog.yaml (the daemon listens on PORT), a request with Cloud Run's trace header."""
    (tmp_path / "watchdog.yaml").write_text(f"google_cloud:\n  project: {PROJECT}\n")
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "p.yaml").write_text(
        f"probes:\n  - name: content-api\n    kind: http\n    url: {unavailable_site}\n"
        "    interval: 1s\n    timeout: 1s\n"
    )
    port = closed_port()
    env = {**os.environ, "K_SERVICE": "watchdog", "K_REVISION": "watchdog-00001-abc", "PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "watchdog.cli.main", "run", "--config", str(tmp_path), "--state",
         str(tmp_path / "state.db")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(ready, 20), "the daemon did not become ready on PORT"
        status = httpx.get(f"{base}/", headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"}, timeout=5)
        assert status.status_code == 200

        def probed() -> bool:
            text = httpx.get(f"{base}/metrics", timeout=2).text
            return 'watchdog_probe_success{kind="http",probe="content-api"} 0.0' in text

        assert wait_until(probed, 10)
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert stderr.strip() == "", "the cloud shape goes to stdout"
    entries = [json.loads(line) for line in stdout.splitlines()]
    assert all(
        e["severity"] in {"DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL"}
        and isinstance(e["message"], str)
        and e["time"].endswith("Z")
        and e[SOURCE_FIELD]["line"] > 0
        and e[LABELS_FIELD]["instance"]
        for e in entries
    ), entries
    by_message = {e["message"]: e for e in entries}
    assert any(m.startswith("serving") and f":{port}" in m for m in by_message), by_message.keys()
    access = by_message["GET / 200"]
    assert access[TRACE_FIELD] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert access[SPAN_FIELD] == "0000000000000001" and access[SAMPLED_FIELD] is True
    request = access["httpRequest"]
    assert (request["requestMethod"], request["requestUrl"], request["status"]) == ("GET", "/", 200)
    assert request["remoteIp"] == "127.0.0.1" and request["latency"].endswith("s")
    [failed] = [e for m, e in by_message.items() if m.startswith("probe content-api is failed")]
    assert failed["severity"] == "WARNING" and failed[LABELS_FIELD]["probe"] == "content-api"
    assert failed["httpRequest"]["requestUrl"] == unavailable_site
    assert failed["httpRequest"]["status"] == 503
    assert TRACE_FIELD not in failed  # a probe is no request to the watchdog


def test_the_api_handler_writes_the_same_entries_through_cloud_logging(tmp_path: Path) -> None:
    with FakeLoggingRest() as api:
        api.answers = [503]  # the first write is refused: counted, never raised, the next one goes
        handler = CloudLoggingApiHandler(
            build_client(PROJECT, api.endpoint),
            name="watchdog",
            resource=monitored_resource(
                PROJECT,
                "asia-east1",
                {"K_SERVICE": "watchdog", "K_REVISION": "watchdog-00002-xyz", "K_CONFIGURATION": "watchdog"},
            ),
            formatter=CloudJsonFormatter(PROJECT, {"instance": "watchdog-1"}),
        )
        log = logging.getLogger("test.gcp.logging.api")
        log.handlers[:] = [handler]
        log.propagate = False
        log.setLevel(logging.INFO)
        log.info("lost to a 503")
        handler.flush()
        with trace_context(TraceContext(TRACE_ID, "00f067aa0ba902b7", True)):
            log.warning(
                "probe api-health is failed",
                extra={
                    "probe": "api-health",
                    "latency_ms": 12.5,
                    "http_request": {"requestUrl": "http://x/", "status": 503},
                },
            )
        try:
            raise TimeoutError("store did not answer")
        except TimeoutError:
            log.exception("evaluation failed")
        handler.close()
        stats = handler.stats
        entries = api.entries
    assert (stats.sent, stats.failed, stats.dropped) == (2, 1, 0), stats
    assert api.paths[-1].startswith("/v2/entries:write")
    warning, error = entries
    assert warning["logName"] == f"projects/{PROJECT}/logs/watchdog"
    assert warning["resource"] == {
        "type": "cloud_run_revision",
        "labels": {
            "project_id": PROJECT,
            "service_name": "watchdog",
            "revision_name": "watchdog-00002-xyz",
            "configuration_name": "watchdog",
            "location": "asia-east1",
        },
    }
    assert warning["severity"] == "WARNING"
    assert warning["jsonPayload"]["message"] == "probe api-health is failed"
    assert warning["jsonPayload"]["latency_ms"] == 12.5
    assert warning["labels"]["probe"] == "api-health" and warning["labels"]["instance"] == "watchdog-1"
    assert warning["trace"] == f"projects/{PROJECT}/traces/{TRACE_ID}"
    assert warning["spanId"] == "00f067aa0ba902b7" and warning["traceSampled"] is True
    assert warning["httpRequest"] == {"requestUrl": "http://x/", "status": 503}
    assert (
        warning["sourceLocation"]["function"]
        == "test_the_api_handler_writes_the_same_entries_through_cloud_logging"
    )
    assert error["severity"] == "ERROR"
    assert error["jsonPayload"]["stack_trace"].endswith("TimeoutError: store did not answer")
