"""Connection settings: DSN and environment parsing, redaction, config validation (no server needed)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from watchdog.config.postgres import PostgresProbeConfig
from watchdog.config.probes import ProbesFile
from watchdog.probes.postgres import DsnError, parse_dsn, resolve_target, target_from_env
from watchdog.probes.postgres._connect import ConnectTarget, ssl_argument

NASTY = "p@ss:w/rd#?%&= 'x\"\\ü"


def test_url_with_encoded_special_password() -> None:
    from urllib.parse import quote

    t = parse_dsn(f"postgresql://app:{quote(NASTY, safe='')}@db.example:6543/content?sslmode=require")
    assert (t.host, t.port, t.database, t.user, t.password, t.sslmode) == (
        "db.example",
        6543,
        "content",
        "app",
        NASTY,
        "require",
    )


def test_url_with_unencoded_special_password() -> None:
    raw = "p@ss:w/rd#?&=x"
    t = parse_dsn(f"postgresql://app:{raw}@10.0.0.5:5432/content")
    assert (t.host, t.port, t.database, t.user, t.password) == ("10.0.0.5", 5432, "content", "app", raw)


def test_cloud_sql_socket_in_query_parameter() -> None:
    t = parse_dsn("postgresql://app:s3cr%40t@/ai_square?host=/cloudsql/proj-1:asia-east1:main-db")
    assert t.is_socket
    assert t.host == "/cloudsql/proj-1:asia-east1:main-db"
    assert t.socket_path == "/cloudsql/proj-1:asia-east1:main-db/.s.PGSQL.5432"
    assert t.password == "s3cr@t"
    assert t.database == "ai_square"
    assert ssl_argument(t) is False  # no TLS over a Unix socket
    assert "s3cr" not in t.display()
    assert t.display() == "postgresql://app:***@/ai_square?host=/cloudsql/proj-1:asia-east1:main-db"


def test_percent_encoded_socket_host_and_ipv6() -> None:
    t = parse_dsn("postgres://u@%2Fvar%2Frun%2Fpostgresql:5433/db")
    assert t.host == "/var/run/postgresql" and t.port == 5433
    v6 = parse_dsn("postgresql://u@[::1]:6000/db")
    assert v6.host == "::1" and v6.port == 6000 and v6.address == "[::1]:6000"


def test_keyvalue_conninfo_with_quoted_password() -> None:
    t = parse_dsn(r"host=127.0.0.1 port=5499 dbname=x user=mon password='it\'s a #secret' sslmode=disable")
    assert (t.host, t.port, t.database, t.user, t.sslmode) == ("127.0.0.1", 5499, "x", "mon", "disable")
    assert t.password == "it's a #secret"
    assert "secret" not in t.display() and "secret" not in repr(t)
    with pytest.raises(DsnError, match="unterminated"):
        parse_dsn("host=h password='never closed")


def test_environment_db_variables_and_socket() -> None:
    env = {
        "DB_HOST": "/cloudsql/p:asia-east1:i",
        "DB_NAME": "ai_square",
        "DB_USER": "app",
        "DB_PASSWORD": NASTY,
    }
    t = target_from_env(env)
    assert t.is_socket and t.port == 5432 and t.database == "ai_square" and t.password == NASTY
    t2 = resolve_target(
        dsn=None, dsn_env=None, env_prefix="DB_", sslmode="verify-full", env={**env, "DB_PORT": "6432"}
    )
    assert t2.port == 6432 and t2.sslmode == "verify-full"


def test_dsn_env_and_password_fallback() -> None:
    env = {"DATABASE_URL": "postgresql://app@db:5432/x", "DB_PASSWORD": "from-env"}
    t = resolve_target(dsn=None, dsn_env="DATABASE_URL", env_prefix="DB_", sslmode=None, env=env)
    assert t.password == "from-env" and t.host == "db"
    with pytest.raises(DsnError, match="DATABASE_URL"):
        resolve_target(dsn=None, dsn_env="DATABASE_URL", env_prefix="DB_", sslmode=None, env={})
    with pytest.raises(DsnError, match="DB_HOST is not set"):
        resolve_target(dsn=None, dsn_env=None, env_prefix="DB_", sslmode=None, env={})


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("mysql://u:secretpw@h/db", "postgresql://"),
        ("postgresql://u:secretpw@h:notaport/db", "not a number"),
        ("postgresql://u:secretpw@h1,h2/db", "several hosts"),
        ("postgresql://u:secretpw@h/db?sslmode=bogus", "sslmode"),
        ("postgresql://u:secretpw@/db", "no host"),
    ],
)
def test_invalid_dsns_never_echo_the_password(dsn: str, message: str) -> None:
    with pytest.raises(DsnError, match=message) as info:
        parse_dsn(dsn)
    assert "secretpw" not in str(info.value)


def test_scrub_masks_every_spelling() -> None:
    t = ConnectTarget(host="h", password="a b/c")
    text = "failed for a b/c and a%20b%2Fc"
    assert t.scrub(text) == "failed for *** and ***"


def test_config_defaults_follow_the_seed() -> None:
    cfg = PostgresProbeConfig(kind="postgres", name="db")
    assert cfg.query == "SELECT 1" and cfg.slow_query == 0.05
    assert cfg.connections.warn_ratio == 0.8 and cfg.connections.fail_ratio == 0.95
    assert cfg.region_rtt == 0.02 and cfg.region_rtt_runs == 5
    assert cfg.statement_timeout == 2.0 and cfg.lock_timeout == 0.5
    assert cfg.checks[0] == "connectivity" and "host" in cfg.checks


def test_config_parses_from_probes_yaml_shape() -> None:
    import yaml

    doc = yaml.safe_load(
        """
probes:
  - kind: postgres
    name: ai-square-db
    dsn_env: DATABASE_URL
    interval: 30s
    timeout: 5s
    labels: {env: production}
    connections: {app_instances: 10, pool_max: 20, idle_in_transaction: 30s}
    queries: {long_query: 5s, top_statements: 5}
    replication: {lag_warn: 10s, lag_fail: 1m, expected_standbys: 1}
    vitals: {archive_max_age: 1h}
    host_metrics: {source: prometheus, url: "http://prometheus:9090"}
"""
    )
    probes = ProbesFile.model_validate(doc).probes
    cfg = probes[0]
    assert isinstance(cfg, PostgresProbeConfig)
    assert cfg.timeout == 5.0 and cfg.connections.idle_in_transaction == 30.0
    assert cfg.replication.lag_fail == 60.0 and cfg.vitals.archive_max_age == 3600.0
    assert cfg.host_metrics is not None and cfg.host_metrics.source == "prometheus"


@pytest.mark.parametrize(
    "bad",
    [
        {"labels": {"check": "x"}},
        {"dsn": "postgresql://h/db", "dsn_env": "DATABASE_URL"},
        {"connections": {"app_instances": 10}},
        {"connections": {"warn_ratio": 0.9, "fail_ratio": 0.8}},
        {"checks": ["locks", "locks"]},
        {"host_metrics": {"source": "prometheus"}},
        {"unknown_field": 1},
    ],
)
def test_config_rejects_mistakes(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PostgresProbeConfig.model_validate({"kind": "postgres", "name": "db", **bad})
