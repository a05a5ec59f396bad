"""Secret Manager references in config (``sm://``), resolved by the real google-cloud-secret-manager client
against Secret Manager's gRPC API on loopback (tests/gcp_fake_secretmanager.py): at load and again at the next
load after a rotation, one call per distinct reference, errors naming the field and the reference, UNAVAILABLE
retried within the deadline and PERMISSION_DENIED not retried, the values never in the log, in problems or in
``repr`` of the config, and nothing Google imported when no reference is present."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc  # type: ignore[import-untyped]
import pytest
from gcp_fake_secretmanager import FakeSecretManager

from watchdog.config.loader import ConfigError, WatchdogConfig, load_config
from watchdog.config.probes import HttpProbeConfig
from watchdog.config.secrets import SecretError, parse_reference

PROJECT = "ai-square-prod"
STATE_DSN = "postgresql://watchdog:p@ss/w0rd#1@db.internal:5432/watchdog"
DB_DSN = "postgresql://app:zh?TW&pw@/content?host=/cloudsql/ai-square-prod:asia-east1:content"
API_TOKEN = "Bearer tok-9f2c1e77d3"


def _write(root: Path, settings: str, probes: str) -> Path:
    (root / "probes").mkdir(parents=True, exist_ok=True)
    (root / "watchdog.yaml").write_text(settings)
    (root / "probes" / "p.yaml").write_text(probes)
    return root


def _settings(endpoint: str, extra: str = "", deadline: str = "5s") -> str:
    return (
        "state: sm://watchdog-state-dsn\n"
        f"{extra}"
        "google_cloud:\n"
        f"  project: {PROJECT}\n"
        f"  secrets_deadline: {deadline}\n"
        f"  endpoints: {{secretmanager: '{endpoint}'}}\n"
    )


PROBES = (
    "probes:\n"
    "  - name: api\n"
    "    kind: http\n"
    "    url: http://127.0.0.1:9/api/health\n"
    f"    headers: {{Authorization: 'sm://projects/{PROJECT}/secrets/api-token/versions/1'}}\n"
    "  - name: api-again\n"
    "    kind: http\n"
    "    url: http://127.0.0.1:9/api/ksa\n"
    f"    headers: {{Authorization: 'sm://projects/{PROJECT}/secrets/api-token/versions/1'}}\n"
    "  - name: content-db\n"
    "    kind: postgres\n"
    "    dsn: ${DB_DSN_REF:-sm://content-db-dsn}\n"
)


@pytest.fixture
def fake() -> Iterator[FakeSecretManager]:
    with FakeSecretManager() as server:
        server.add_version(PROJECT, "watchdog-state-dsn", STATE_DSN)
        server.add_version(PROJECT, "api-token", API_TOKEN)
        server.add_version(PROJECT, "content-db-dsn", DB_DSN)
        yield server


def _http(config: WatchdogConfig, name: str) -> HttpProbeConfig:
    probe = config.probe(name)
    assert isinstance(probe, HttpProbeConfig)
    return probe


def test_references_resolve_at_load_one_call_per_distinct_reference(
    tmp_path: Path, fake: FakeSecretManager
) -> None:
    root = _write(tmp_path, _settings(fake.endpoint), PROBES)
    config = load_config(root, environ={})
    assert config.settings.state == STATE_DSN
    assert _http(config, "api").headers == {"Authorization": API_TOKEN}
    assert _http(config, "api-again").headers == {"Authorization": API_TOKEN}
    assert config.probe("content-db").dsn == DB_DSN  # type: ignore[union-attr]
    assert sorted(fake.requests) == [
        f"projects/{PROJECT}/secrets/api-token/versions/1",
        f"projects/{PROJECT}/secrets/content-db-dsn/versions/latest",
        f"projects/{PROJECT}/secrets/watchdog-state-dsn/versions/latest",
    ], "the same reference in two fields is one call"


def test_an_environment_variable_may_hold_the_reference(tmp_path: Path, fake: FakeSecretManager) -> None:
    fake.add_version(PROJECT, "other-dsn", "postgresql://x:y@h/d")
    root = _write(tmp_path, _settings(fake.endpoint), PROBES)
    config = load_config(root, environ={"DB_DSN_REF": f"sm://projects/{PROJECT}/secrets/other-dsn"})
    assert config.probe("content-db").dsn == "postgresql://x:y@h/d"  # type: ignore[union-attr]


def test_a_reload_reads_the_rotated_version(tmp_path: Path, fake: FakeSecretManager) -> None:
    root = _write(tmp_path, _settings(fake.endpoint), PROBES)
    first = load_config(root, environ={})
    rotated = "postgresql://watchdog:rotated-2@db.internal:5432/watchdog"
    fake.add_version(PROJECT, "watchdog-state-dsn", rotated)
    calls = len(fake.requests)
    second = load_config(root, environ={})
    assert first.settings.state == STATE_DSN and second.settings.state == rotated
    assert _http(second, "api").headers == {"Authorization": API_TOKEN}, "version 1 is pinned"
    assert len(fake.requests) == calls + 3, "a new load resolves again: no cache across loads"


def test_unresolvable_references_name_the_field_and_the_reference(
    tmp_path: Path, fake: FakeSecretManager
) -> None:
    fake.denied.add("api-token")
    probes = PROBES.replace("sm://content-db-dsn", "sm://no-such-secret")
    root = _write(tmp_path, _settings(fake.endpoint), probes)
    with pytest.raises(ConfigError) as caught:
        load_config(root, environ={})
    text = [str(p) for p in caught.value.problems]
    token_ref = f"sm://projects/{PROJECT}/secrets/api-token/versions/1"
    assert any(
        t.startswith("probes/p.yaml:5: probes[0].headers.Authorization: ")
        and token_ref in t
        and "PERMISSION_DENIED" in t
        and "roles/secretmanager.secretAccessor" in t
        for t in text
    ), text
    assert any(t.startswith("probes/p.yaml:9: probes[1].headers.Authorization: ") for t in text), text
    missing_ref = f"sm://projects/{PROJECT}/secrets/no-such-secret/versions/latest"
    assert any(
        t.startswith("probes/p.yaml:12: probes[2].dsn: ") and missing_ref in t and "NOT_FOUND" in t
        for t in text
    ), text
    assert len(text) == 3, "one problem per field; no follow-on validation error"
    assert fake.requests.count(f"projects/{PROJECT}/secrets/api-token/versions/1") == 1, (
        "PERMISSION_DENIED is not retried, and the failure is cached for the second field"
    )


def test_a_disabled_version_and_bad_references_are_reported(tmp_path: Path, fake: FakeSecretManager) -> None:
    fake.secrets[(PROJECT, "api-token")][0].enabled = False
    settings = _settings(fake.endpoint).replace(
        f"  project: {PROJECT}\n", f"  project: {PROJECT}\n  region: sm://region\n"
    )
    probes = PROBES.replace("sm://content-db-dsn", "sm://projects/p/secrets/x/versions/0")
    root = _write(tmp_path, settings, probes)
    with pytest.raises(ConfigError) as caught:
        load_config(root, environ={})
    text = "\n".join(str(p) for p in caught.value.problems)
    assert "probes[0].headers.Authorization" in text and "FAILED_PRECONDITION" in text
    assert "google_cloud.region: sm://region: google_cloud says where references resolve" in text
    assert "probes[2].dsn: 'sm://projects/p/secrets/x/versions/0' is not a Secret Manager reference" in text


def test_the_short_form_needs_a_project(tmp_path: Path) -> None:
    root = _write(tmp_path, "state: sm://watchdog-state-dsn\n", "probes: []\n")
    (root / "watchdog.yaml").write_text("state: sm://watchdog-state-dsn\nallow_no_probes: true\n")
    with pytest.raises(ConfigError, match=r"watchdog.yaml:1: state: sm://watchdog-state-dsn: the short form"):
        load_config(root, environ={})
    with pytest.raises(SecretError, match="not a Secret Manager reference"):
        parse_reference("sm://a/b", "p")
    assert parse_reference("sm://db", "p").name == "projects/p/secrets/db/versions/latest"


def test_unavailable_is_retried_with_backoff(tmp_path: Path, fake: FakeSecretManager) -> None:
    fake.script = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE]
    root = _write(tmp_path, _settings(fake.endpoint), PROBES)
    started = time.monotonic()
    config = load_config(root, environ={})
    assert config.settings.state == STATE_DSN
    assert len(fake.requests) == 5, "two UNAVAILABLE answers retried, then three references"
    assert time.monotonic() - started >= 0.25 + 0.5, "backoff 0.25 s, then 0.5 s"


def test_an_outage_fails_the_load_within_the_deadline(tmp_path: Path, fake: FakeSecretManager) -> None:
    fake.script = [grpc.StatusCode.UNAVAILABLE] * 100
    root = _write(tmp_path, _settings(fake.endpoint, deadline="1s"), PROBES)
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(root, environ={})
    elapsed = time.monotonic() - started
    first = str(caught.value.problems[0])
    assert first.startswith("watchdog.yaml:1: state: sm://projects/ai-square-prod/secrets/watchdog-state-dsn")
    assert "did not answer (UNAVAILABLE)" in first and "google_cloud.secrets_deadline" in first
    assert elapsed < 4.0, elapsed
    assert 3 <= len(fake.requests) < 20, "backoff, not a retry storm"


def test_values_never_reach_the_log_the_problems_or_repr(
    tmp_path: Path, fake: FakeSecretManager, caplog: pytest.LogCaptureFixture
) -> None:
    listen_secret = "listen-value-7c0ffee"
    fake.add_version(PROJECT, "listen", listen_secret)
    caplog.set_level(logging.DEBUG)
    root = _write(tmp_path, _settings(fake.endpoint), PROBES)
    config = load_config(root, environ={})
    fake.add_version(PROJECT, "watchdog-state-dsn", STATE_DSN + "-2")
    reloaded = load_config(root, environ={})
    for shown in (repr(config), repr(reloaded), caplog.text):
        for secret in (STATE_DSN, API_TOKEN, DB_DSN, "p@ss/w0rd"):
            assert secret not in shown
    assert "***" in repr(config) and "sm://" not in repr(config)
    # A resolved value that fails validation: the problem says so without echoing it.
    bad = _write(tmp_path / "bad", _settings(fake.endpoint, extra="listen: sm://listen\n"), PROBES)
    with pytest.raises(ConfigError) as caught:
        load_config(bad, environ={})
    (problem,) = caught.value.problems
    assert problem.field == "listen" and listen_secret not in str(problem) and "***" in str(problem)
    assert listen_secret not in caplog.text


def test_nothing_google_is_imported_without_a_reference(tmp_path: Path) -> None:
    probes = (
        "probes:\n  - {name: api, kind: http, url: 'http://127.0.0.1:9/', headers: {X-Note: 'pre-sm://x'}}\n"
    )
    root = _write(tmp_path, "state: x.db\ngoogle_cloud: {project: p}\n", probes)
    script = (
        "import sys\n"
        "from watchdog.config.loader import load_config\n"
        f"load_config({str(root)!r}, environ={{}})\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('google.cloud.secretmanager', 'grpc')))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", "a value merely containing sm:// is not a reference"
    assert out.stdout.strip() == "[]", out.stdout
