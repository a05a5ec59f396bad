"""SloCollector: what /metrics shows, parsed back with prometheus_client's own parser."""

from __future__ import annotations

import math
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from watchdog.config.loader import WatchdogConfig
from watchdog.config.probes import HttpProbeConfig
from watchdog.config.settings import Settings
from watchdog.config.slo import SloConfig
from watchdog.core.clock import FakeClock
from watchdog.core.results import Outcome, ProbeResult
from watchdog.runtime.wiring import latency_edges
from watchdog.slo import SloEngine
from watchdog.store.base import LATENCY_BUCKETS_S
from watchdog.store.memory import MemoryStore
from watchdog.web.slo_metrics import SloCollector

T0 = 1_767_225_600.0


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_collector_exposes_every_slo_without_nan() -> None:
    slos = [
        SloConfig.model_validate({"name": name, "objective": objective, "sli": sli})
        for name, objective, sli in (
            ("api", 99.9, {"kind": "availability", "probe": "api"}),
            ("quiet", 99, {"kind": "uptime", "probe": "nobody"}),
            ("lat", 95, {"kind": "latency", "probe": "api", "threshold": "0.3s"}),
        )
    ]
    store = MemoryStore()
    clock = FakeClock(T0 + 7200)
    # Two hours of results, the last three minutes failing: the fast page fires.
    await store.record([
        ProbeResult("api", "http", "t", Outcome.FAILED if i >= 1440 - 36 else Outcome.OK, 0.05, T0 + i * 5)
        for i in range(1440)
    ])
    engine = SloEngine(slos, store, clock)
    registry = CollectorRegistry()
    registry.register(SloCollector(engine))
    assert samples(registry) == {}  # nothing evaluated yet: families without samples

    ev = await engine.evaluate()
    got = samples(registry)
    assert all(math.isfinite(v) for v in got.values())
    api = ev.status("api")
    assert got[("watchdog_slo_objective_ratio", (("slo", "api"),))] == 0.999
    assert got[("watchdog_slo_objective_ratio", (("slo", "quiet"),))] == 0.99
    assert got[("watchdog_slo_sli_ratio", (("slo", "api"),))] == api.sli
    assert ("watchdog_slo_sli_ratio", (("slo", "quiet"),)) not in got  # no data: absent, not NaN
    assert got[("watchdog_slo_no_data", (("slo", "quiet"),))] == 1
    assert got[("watchdog_slo_no_data", (("slo", "api"),))] == 0
    assert got[("watchdog_slo_error_budget_remaining_ratio", (("slo", "api"),))] == api.budget.remaining
    assert got[("watchdog_slo_error_budget_remaining_ratio", (("slo", "quiet"),))] == 1.0
    for window in ("5m", "30m", "1h", "6h", "1d", "3d", "30d"):
        key = ("watchdog_slo_burn_rate", (("slo", "api"), ("window", window)))
        assert key in got, window
    one_hour = got[("watchdog_slo_burn_rate", (("slo", "api"), ("window", "1h")))]
    assert one_hour == api.windows["1h"].burn_rate > 14.4
    assert got[("watchdog_slo_window_events", (("slo", "api"), ("window", "5m")))] == 60
    assert got[("watchdog_slo_alert_firing", (("severity", "page"), ("slo", "api")))] == 1
    # Two hours of history are not three days: read as a share of the 3 d budget, the ticket stays quiet
    # (it needs 7.2 h of this burn; issue 10, partly covered windows).
    assert got[("watchdog_slo_alert_firing", (("severity", "ticket"), ("slo", "api")))] == 0
    assert got[("watchdog_slo_alert_firing", (("severity", "page"), ("slo", "quiet")))] == 0
    assert got[("watchdog_slo_budget_exhaustion_timestamp_seconds", (("slo", "api"),))] == api.exhaustion_at
    assert ("watchdog_slo_budget_exhaustion_timestamp_seconds", (("slo", "quiet"),)) not in got
    assert got[("watchdog_slo_evaluation_timestamp_seconds", ())] == T0 + 7200


def test_latency_thresholds_become_store_edges() -> None:
    slos = [
        SloConfig.model_validate(
            {"name": n, "objective": 95, "sli": {"kind": "latency", "probe": "api", "threshold": t}}
        )
        for n, t in (("a", "200ms"), ("b", "0.2s"), ("c", "1.5s"))
    ]
    uptime = {"name": "d", "objective": 99, "sli": {"kind": "uptime", "probe": "x"}}
    slos.append(SloConfig.model_validate(uptime))
    probe = HttpProbeConfig.model_validate(
        {
            "kind": "http",
            "name": "api",
            "url": "http://127.0.0.1:1/",
            "expect": {"max_latency": "2s"},
            "degraded_when": {"latency_over": "200ms"},
        }
    )
    config = WatchdogConfig(root=Path("."), settings=Settings(), probes=[probe], slos=slos)
    assert config.latency_thresholds() == (0.2, 1.5, 2.0)
    assert set(latency_edges(config)) == {*LATENCY_BUCKETS_S, 1.5}  # 0.2 and 2.0 are edges already
