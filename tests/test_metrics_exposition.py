"""/metrics' fast text path (watchdog.web.metrics.exposition) equals prometheus_client's generate_latest."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, generate_latest

from watchdog.core.results import Observation, Outcome, ProbeResult
from watchdog.web.metrics import build_registry, exposition


def _result(
    probe: str,
    outcome: Outcome = Outcome.OK,
    latency_s: float = 0.012,
    labels: Mapping[str, str] | None = None,
    observations: tuple[Observation, ...] = (),
    kind: str = "http",
) -> ProbeResult:
    return ProbeResult(
        probe=probe,
        kind=kind,
        target="http://127.0.0.1/x",
        outcome=outcome,
        latency_s=latency_s,
        started_at=1_764_000_000.123456,
        labels=dict(labels or {}),
        observations=observations,
    )


def _same(registry: CollectorRegistry) -> str:
    expected = generate_latest(registry)
    got = exposition(registry)
    assert got == expected
    return got.decode()


def test_empty_registry_is_identical() -> None:
    registry, _metrics, _snapshot = build_registry()
    text = _same(registry)
    assert "watchdog_build_info" in text
    assert "watchdog_probe_latency_seconds" not in text  # no series yet: no family at all


def test_full_registry_is_identical() -> None:
    registry, metrics, snapshot = build_registry((0.005, 0.2, 0.25, 1.0))
    results = [
        _result("api", latency_s=0.003, observations=(Observation("http_status_code", 200.0),)),
        _result("api", Outcome.DEGRADED, latency_s=0.3),
        _result("content-db", Outcome.FAILED, latency_s=9.0, labels={"cohort": "db"}),
        _result("journey", labels={"step": "login", "lang": "zhTW"}, kind="journey"),
        _result(
            "weird",
            labels={"a": 'quote " back \\ slash\nnewline', "zz": "ünïcødé", "le": "user-le"},
            observations=(
                Observation("pg connections/active", 42.0, {"state": "idle in transaction"}),
                Observation("nan_value", float("nan")),
                Observation("inf_value", float("inf")),
            ),
        ),
        _result("zero", latency_s=0.0),
        _result("huge", latency_s=1e9),
    ]
    for _ in range(3):
        metrics.on_recorded(results)
    many = _result("busy")
    metrics.on_recorded([many] * 1_000_001)  # counts past 1e6 switch to Go's exponent notation
    metrics.scheduler_lag.observe(0.004)
    metrics.runs_skipped.labels(probe="api").inc()
    snapshot.update(results, True, {"results_pending": 3.0, "leader": 1.0, "start_time_seconds": 1.7e9})
    other = Counter("watchdog_other_total", "Another collector.", ["x"], registry=registry)
    other.labels(x="1").inc()
    text = _same(registry)
    assert 'watchdog_probe_results_total{kind="http",outcome="ok",probe="busy"} 1.000001e+06' in text
    assert "watchdog_nan_value" not in text


def test_plain_registry_falls_back() -> None:
    registry = CollectorRegistry()
    Counter("c_total", "c", registry=registry).inc()
    assert exposition(registry) == generate_latest(registry)


_label_value = st.text(max_size=12)
_label_name = st.sampled_from(["cohort", "lang", "step", "le", "zone", "a_b"])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["p1", "p2", 'p"3']),
            st.sampled_from(list(Outcome)),
            st.floats(min_value=0, max_value=1e6, allow_nan=False),
            st.dictionaries(_label_name, _label_value, max_size=3),
            st.lists(
                st.tuples(st.text(min_size=1, max_size=8), st.floats(allow_nan=True, allow_infinity=True)),
                max_size=2,
            ),
        ),
        max_size=12,
    )
)
def test_any_results_render_identically(
    items: list[tuple[str, Outcome, float, dict[str, str], list[tuple[str, float]]]],
) -> None:
    registry, metrics, snapshot = build_registry()
    results = [
        _result(probe, outcome, latency, labels, tuple(Observation(n, v) for n, v in observations))
        for probe, outcome, latency, labels, observations in items
    ]
    metrics.on_recorded(results)
    snapshot.update(results, bool(results), {"leader": 0.0})
    _same(registry)
