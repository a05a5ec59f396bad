"""Error Reporting (issue 12 part 4): the real google-cloud-error-reporting client against a loopback gRPC
server that speaks ReportErrorsService (tests/gcp_loopback.py): what a report carries (service context,
traceback, where it was logged, when), one report per cause per window, UNAVAILABLE retried,
RESOURCE_EXHAUSTED and a slow or full sender counted and never felt by the caller; and ``watchdog run``
reporting its own errors, configured from watchdog.yaml."""

from __future__ import annotations

import inspect
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from gcp_loopback import FakeErrorReporting, FakeLoggingRest, wait_until

from watchdog.gcp.error_reporting import ErrorReporter, ErrorReportingHandler, build_client


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeErrorReporting]:
    with FakeErrorReporting() as server:
        yield server


def _logger(reporter: ErrorReporter, name: str) -> logging.Logger:
    log = logging.getLogger(f"test.gcp.er.{name}")
    log.handlers[:] = [ErrorReportingHandler(reporter)]
    log.propagate = False
    log.setLevel(logging.DEBUG)
    return log


def _reporter(fake: FakeErrorReporting, **kwargs: object) -> ErrorReporter:
    return ErrorReporter(build_client(fake.endpoint), "watched-project", "sre-watchdog", "1.2.3", **kwargs)  # type: ignore[arg-type]


def _fail_deep() -> None:
    raise ValueError("the flag file is not JSON")


def test_an_exception_is_reported_with_its_traceback_service_and_place(fake: FakeErrorReporting) -> None:
    reporter = _reporter(fake)
    log = _logger(reporter, "exception")
    before = time.time()
    try:
        _fail_deep()
    except ValueError:
        logged_at = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        log.exception("canary content-db: the check failed")
    log.warning("a warning is not an error")  # below ERROR: not reported
    stats = reporter.close()
    assert stats.sent == 1 and stats.failed == 0, stats
    [request] = fake.accepted
    assert request.project_name == "projects/watched-project"
    event = request.event
    assert (event.service_context.service, event.service_context.version) == ("sre-watchdog", "1.2.3")
    # What traceback.format_exc() writes: the form Error Reporting parses for Python.
    assert event.message.startswith("Traceback (most recent call last):\n")
    assert "in _fail_deep\n" in event.message
    assert event.message.rstrip().endswith("ValueError: the flag file is not JSON")
    location = event.context.report_location
    assert (location.file_path, location.line_number) == (__file__, logged_at)
    assert location.function_name == "test_an_exception_is_reported_with_its_traceback_service_and_place"
    assert before - 1 <= event.event_time.timestamp() <= time.time() + 1


def _flip_failed(log: logging.Logger, attempt: int) -> None:
    # One line logs every attempt, as the canary guard does: one cause.
    log.error("rollout content-db: the rollback flip failed (attempt %d): %s", attempt, "HTTP 503")


def test_one_report_per_cause_per_window(fake: FakeErrorReporting) -> None:
    clock = Clock()
    reporter = _reporter(fake, per_cause_every=600.0, clock=clock)
    log = _logger(reporter, "rate")
    for _ in range(20):  # the same exception raised and logged at the same places: one cause
        try:
            _fail_deep()
        except ValueError:
            log.exception("probe loop failed")
    _flip_failed(log, 1)
    _flip_failed(log, 2)
    clock.now += 599  # still inside the window
    _flip_failed(log, 3)
    clock.now += 2  # past it: the next one of each cause goes out
    try:
        _fail_deep()
    except ValueError:
        log.exception("probe loop failed")
    stats = reporter.close()
    assert (stats.submitted, stats.sent, stats.suppressed) == (24, 3, 21), stats
    messages = [r.event.message for r in fake.accepted]
    assert messages[0].startswith("Traceback") and messages[2].startswith("Traceback")
    # A record without an exception is reported with its message and the place that logged it.
    assert messages[1] == "rollout content-db: the rollback flip failed (attempt 1): HTTP 503"
    assert fake.accepted[1].event.context.report_location.function_name == "_flip_failed"


def test_an_explicit_cause_groups_records_from_different_places(fake: FakeErrorReporting) -> None:
    reporter = _reporter(fake)
    log = _logger(reporter, "cause")
    log.error("first place", extra={"error_cause": "flag-backend-down"})
    log.critical("second place", extra={"error_cause": "flag-backend-down"})
    log.error("another cause")
    stats = reporter.close()
    assert (stats.sent, stats.suppressed) == (2, 1), stats
    assert [r.event.message for r in fake.accepted] == ["first place", "another cause"]


def test_unavailable_is_retried_until_it_goes_through(fake: FakeErrorReporting) -> None:
    fake.answers = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    reporter = _reporter(fake, retry_initial_s=0.05)
    _logger(reporter, "unavailable").error("store unreachable")
    stats = reporter.close()
    assert len(fake.requests) == 3 and len(fake.accepted) == 1
    assert (stats.sent, stats.retried, stats.failed) == (1, 2, 0), stats


def test_resource_exhausted_and_refusals_are_counted_never_raised(fake: FakeErrorReporting) -> None:
    fake.answers = [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.PERMISSION_DENIED]
    reporter = _reporter(fake, retry_initial_s=0.05, quota_pause_s=0.1)
    log = _logger(reporter, "refused")
    log.error("first")  # returns: the answer comes later, on the sender's thread
    assert wait_until(lambda: len(fake.requests) >= 1)
    log.error("second")
    assert wait_until(lambda: len(fake.requests) >= 2)
    log.error("third")
    stats = reporter.close()
    assert len(fake.requests) == 3, "quota is not retried at once; the next report still goes"
    assert (stats.sent, stats.failed, stats.retried) == (1, 2, 0), stats
    assert stats.failures == {"ResourceExhausted": 1, "PermissionDenied": 1}
    assert fake.accepted[0].event.message == "third"


def test_a_slow_error_reporting_never_slows_the_caller(fake: FakeErrorReporting) -> None:
    fake.delay_s = 1.0  # every answer takes a second
    reporter = _reporter(fake, queue_size=5)
    log = _logger(reporter, "slow")
    started = time.perf_counter()
    for i in range(50):
        log.error("cause %d", i, extra={"error_cause": f"cause-{i}"})
    elapsed = time.perf_counter() - started
    stats = reporter.close(timeout_s=0.5)
    assert elapsed < 0.25, f"50 error records took {elapsed:.3f} s to log"
    assert stats.submitted == 50
    # The queue holds 5 and the sender one more: the rest were dropped and counted, never waited for.
    assert stats.dropped >= 44 and stats.sent + stats.dropped + stats.failed <= 50, stats


def _daemon_config(tmp_path: Path, er_endpoint: str, logging_endpoint: str) -> Path:
    (tmp_path / "watchdog.yaml").write_text(
        "allow_no_probes: true\n"
        "log_format: cloud\n"
        "google_cloud:\n"
        "  project: watched-project\n"
        "  logging: api\n"
        "  error_reporting: {service: watchdog-test, version: v9}\n"
        f"  endpoints: {{clouderrorreporting: '{er_endpoint}', logging: '{logging_endpoint}'}}\n"
    )
    return tmp_path


def test_watchdog_run_reports_its_own_errors_and_logs_through_the_api(
    fake: FakeErrorReporting, tmp_path: Path
) -> None:
    """The CLI path end to end: watchdog.yaml turns both on; a state store that cannot be opened is an
    ERROR the daemon logs before it exits 1, and it reaches Error Reporting and Cloud Logging before exit."""
    with FakeLoggingRest() as logs:
        config = _daemon_config(tmp_path, fake.endpoint, logs.endpoint)
        done = subprocess.run(
            [sys.executable, "-m", "watchdog.cli.main", "run", "--config", str(config), "--listen",
             "127.0.0.1:0", "--state", "postgresql://watchdog@127.0.0.1:1/none?connect_timeout=1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        entries = logs.entries
    assert done.returncode == 1, done.stderr
    [request] = fake.accepted
    assert request.event.service_context.service == "watchdog-test"
    assert request.event.service_context.version == "v9"
    assert request.event.message.startswith("cannot open the state store")
    assert request.event.context.report_location.file_path.endswith("watchdog/runtime/serve.py")
    errors = [e for e in entries if e.get("severity") == "ERROR"]
    assert errors and errors[0]["jsonPayload"]["message"].startswith("cannot open the state store")
    assert errors[0]["logName"] == "projects/watched-project/logs/watchdog"
    assert errors[0]["resource"] == {"type": "global", "labels": {"project_id": "watched-project"}}


async def test_a_failed_rollback_reaches_error_reporting_once_per_window(
    fake: FakeErrorReporting, tmp_path: Path
) -> None:
    """The canary guard logs a failed flip at ERROR on every attempt; Error Reporting gets the first one
    (what failed, where the guard logged it), the retries within the window are counted, not sent."""
    from watchdog.canary.guard import ROLLBACK_FAILED_ALERT, ROLLED_BACK_ALERT, CanaryGuard
    from watchdog.config.loader import load_config
    from watchdog.config.rollouts import Rollout
    from watchdog.core.clock import FakeClock
    from watchdog.core.results import Outcome, ProbeResult
    from watchdog.flags.memory import MemoryFlagBackend
    from watchdog.incidents.manager import IncidentManager
    from watchdog.store.memory import MemoryStore

    for folder in ("probes", "alerts", "runbooks"):
        (tmp_path / folder).mkdir()
    (tmp_path / "probes" / "p.yaml").write_text(
        "probes:\n  - {name: content-db, kind: http, url: 'http://127.0.0.1:9/', labels: {cohort: db}}\n"
        "  - {name: content-yaml, kind: http, url: 'http://127.0.0.1:9/', labels: {cohort: yaml}}\n"
    )
    (tmp_path / "alerts" / "e.yaml").write_text(
        "escalation:\n  - name: default\n    levels:\n      - {level: L1, who: dev, notify: [{type: log}]}\n"
    )
    for alert in (ROLLED_BACK_ALERT, ROLLBACK_FAILED_ALERT, "canary-held"):
        (tmp_path / "runbooks" / f"{alert}.md").write_text(f"# {alert}\n")
    clock = FakeClock(1_767_225_600.0)
    store = MemoryStore()
    await store.open()
    flag = MemoryFlagBackend(5.0, clock=clock, updated_by="release-engineer", reason="canary start")
    rollout = Rollout.model_validate(
        {
            "name": "content-db",
            "flag": {"backend": "flagd_file", "path": "/unused/flags.json"},
            "canary": {"probe": "content-db", "match": {"cohort": "db"}},
            "baseline": {"probe": "content-yaml", "match": {"cohort": "yaml"}},
        }
    )
    guard = CanaryGuard(rollout, flag, store, IncidentManager(load_config(tmp_path), store, clock), clock)
    guard.observe_slos(())  # as the daemon does without SLOs

    reporter = _reporter(fake)
    handler = ErrorReportingHandler(reporter)
    guard_log = logging.getLogger("watchdog.canary.guard")
    guard_log.addHandler(handler)
    try:
        flag.fail_writes = True
        await guard.check()
        results = []
        for _ in range(5):
            clock.advance(1)
            results.append(
                ProbeResult(
                    "content-db", "http", "t", Outcome.FAILED, 0.02, clock.now(), labels={"cohort": "db"}
                )
            )
        await store.record(results)
        actions = []
        for _ in range(5):
            actions.append((await guard.check()).action)
            clock.advance(60)
    finally:
        guard_log.removeHandler(handler)
    stats = reporter.close()
    assert actions.count("retrying") >= 3, actions
    assert stats.sent == 1 and stats.suppressed == actions.count("retrying") - 1, stats
    [request] = fake.accepted
    assert request.event.message.startswith("rollout content-db: the rollback flip failed (attempt 1)")
    assert "write failed" in request.event.message
    assert request.event.context.report_location.file_path.endswith("watchdog/canary/guard.py")
