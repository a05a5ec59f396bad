"""SLO config models: defaults, validation messages, and the seed's six objectives as YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from watchdog.config import ConfigError, load_config
from watchdog.config.slo import CalendarWindow, LatencySli, MetricThresholdSli, SloConfig, SloFile

PROBES_YAML = """\
probes:
  - name: api-health
    kind: http
    url: http://127.0.0.1:3000/api/health
    interval: 15s
  - name: liveness
    kind: http
    url: http://127.0.0.1:3000/api/simple-health
    interval: 15s
  - name: db
    kind: postgres
    dsn_env: DATABASE_URL
"""

# The seed's objectives: error rate < 0.1 %, uptime > 99.9 %, API P95 < 200 ms, DB query P95 < 50 ms,
# DB CPU < 80 %, memory < 70 %.
SEED_SLOS_YAML = """\
slos:
  - name: api-error-rate
    description: Error rate < 0.1 %.
    objective: 99.9
    sli: {kind: error_rate, probe: api-health}
    no_data: alert                       # a silent probe is a ticket, not a pass

  - name: api-uptime
    description: Uptime > 99.9 %, as the share of good minutes (43 bad minutes per 30 days).
    objective: 99.9
    sli: {kind: uptime, probe: liveness}
    no_data: bad                         # a minute nobody could check counts as down

  - name: api-latency
    description: API P95 < 200 ms, as "95 % of requests within 200 ms" (exact at a bucket edge).
    objective: 95
    sli: {kind: latency, probe: api-health, threshold: 200ms}

  - name: db-query-latency
    description: DB query P95 < 50 ms, from the postgres probe's timed canary query.
    objective: 95
    sli: {kind: latency, probe: db, threshold: 50ms, labels: {check: connectivity}}

  - name: db-cpu
    description: DB CPU < 80 % in 99 % of minutes, per calendar month in Taipei.
    objective: 99
    sli: {kind: metric_threshold, probe: db, observation: db_cpu_percent, below: 80, aggregate: max}
    window: {kind: calendar_month, timezone: Asia/Taipei}

  - name: db-memory
    description: DB memory < 70 % in 99 % of minutes.
    objective: 99
    sli: {kind: metric_threshold, probe: db, observation: db_memory_percent, below: 70, aggregate: avg}
    alerts:                              # slow resource trends: tickets only
      - {severity: ticket, burn_rate: 2, long_window: 1d, short_window: 2h}
      - {severity: ticket, burn_rate: 1, long_window: 3d, short_window: 6h}
"""


def write_config(root: Path, slos_yaml: str = SEED_SLOS_YAML) -> Path:
    (root / "probes").mkdir(parents=True, exist_ok=True)
    (root / "slo").mkdir(exist_ok=True)
    (root / "probes" / "probes.yaml").write_text(PROBES_YAML)
    (root / "slo" / "seed.yaml").write_text(slos_yaml)
    return root


def test_seed_objectives_load(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path))
    by_name = {s.name: s for s in config.slos}
    assert list(by_name) == ["api-error-rate", "api-uptime", "api-latency", "db-query-latency", "db-cpu",
                             "db-memory"]
    assert by_name["api-error-rate"].objective_ratio == 0.999
    assert isinstance(by_name["api-latency"].sli, LatencySli) and by_name["api-latency"].sli.threshold == 0.2
    cpu = by_name["db-cpu"]
    assert isinstance(cpu.sli, MetricThresholdSli) and cpu.time_slices and cpu.sli.below == 80
    assert isinstance(cpu.window, CalendarWindow) and cpu.window.timezone == "Asia/Taipei"
    assert [a.rule_id for a in by_name["db-memory"].alerts] == ["ticket-1d-2h", "ticket-3d-6h"]


def test_defaults() -> None:
    s = SloConfig.model_validate(
        {"name": "x", "objective": 99.9, "sli": {"kind": "error_rate", "probe": "api"}}
    )
    assert s.window.kind == "rolling" and s.window.length == 30 * 86400
    assert [(a.rule_id, a.burn_rate, a.long_window, a.short_window) for a in s.alerts] == [
        ("page-1h-5m", 14.4, 3600, 300),
        ("page-6h-30m", 6, 21600, 1800),
        ("ticket-3d-6h", 1, 259200, 21600),
    ]
    assert (s.min_events, s.no_data, s.no_data_after, s.no_data_severity, s.resolve_after) == (
        8, "ignore", 120, "ticket", None
    )
    assert not s.time_slices


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"window": {"kind": "calendar_month", "timezone": "Mars/Olympus"}}, "unknown time zone 'Mars/"),
        ({"window": {"kind": "rolling", "length": "10s"}}, "between 1m and 400d"),
        ({"objective": 100}, "less than 100"),
        ({"alerts": [{"severity": "page", "burn_rate": 2, "long_window": "5m", "short_window": "1h"}]},
         "short_window must be shorter"),
        ({"alerts": [{"severity": "page", "burn_rate": 2, "long_window": "1h", "short_window": "5m"},
                     {"severity": "page", "burn_rate": 3, "long_window": "1h", "short_window": "5m"}]},
         "repeated: page-1h-5m"),
        ({"sli": {"kind": "metric_threshold", "probe": "p", "observation": "cpu"}}, "exactly one of below"),
        ({"sli": {"kind": "metric_threshold", "probe": "p", "observation": "cpu", "below": 1, "above": 0}},
         "exactly one of below"),
        ({"no_data": "panic"}, "'ignore', 'alert' or 'bad'"),
        ({"min_events": -1}, "greater than or equal to 0"),
    ],
)
def test_invalid(data: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"name": "x", "objective": 99.9, "sli": {"kind": "availability", "probe": "p"}}
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        SloFile.model_validate({"slos": [{**base, **data}]})


def test_problems_point_at_the_line(tmp_path: Path) -> None:
    bad = SEED_SLOS_YAML.replace("timezone: Asia/Taipei", "timezone: Asia/Taipie")
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, bad))
    text = str(exc.value)
    assert "slo/seed.yaml:" in text and "unknown time zone 'Asia/Taipie'" in text
