"""The ``host`` family: CPU and memory of the database host through a MetricSource."""

from __future__ import annotations

import asyncio
import time

from watchdog.config.postgres import HostMetrics
from watchdog.core.durations import human_duration
from watchdog.core.results import Observation
from watchdog.probes.postgres._report import FamilyReport, Verdict
from watchdog.sources.base import MetricSource, MetricSourceError, single_value
from watchdog.sources.cloud_monitoring import CPU_PERCENT, MEMORY_PERCENT, STALE_AFTER_S
from watchdog.sources.prometheus import NODE_CPU_PERCENT, NODE_MEMORY_PERCENT

DEFAULT_QUERIES: dict[str, tuple[str, str]] = {
    "proc": ("cpu_percent", "memory_percent"),
    "prometheus": (NODE_CPU_PERCENT, NODE_MEMORY_PERCENT),
    "fake": ("cpu_percent", "memory_percent"),
    "cloud-monitoring": (CPU_PERCENT, MEMORY_PERCENT),
}


def queries_for(cfg: HostMetrics | None, source: MetricSource) -> tuple[str, str]:
    cpu_default, mem_default = DEFAULT_QUERIES.get(source.name, ("cpu_percent", "memory_percent"))
    if cfg is None:
        return cpu_default, mem_default
    return cfg.cpu_query or cpu_default, cfg.memory_query or mem_default


async def check_host(source: MetricSource, cfg: HostMetrics, now: float | None = None) -> FamilyReport:
    """``now`` (epoch seconds, default the system clock) dates the samples: a value whose newest point is
    older than ``STALE_AFTER_S`` says how old it is (Cloud Monitoring's points arrive minutes late)."""
    now = time.time() if now is None else now
    cpu_q, mem_q = queries_for(cfg, source)
    answers = await asyncio.gather(
        source.query(cpu_q, timeout_s=cfg.timeout),
        source.query(mem_q, timeout_s=cfg.timeout),
        return_exceptions=True,
    )
    v = Verdict()
    obs: list[Observation] = []
    values: dict[str, float | None] = {}
    ages: dict[str, str] = {}
    for (metric, label, warn, fail), answer in zip(
        (
            ("db_cpu_percent", "CPU", cfg.cpu_warn, cfg.cpu_fail),
            ("db_memory_percent", "memory", cfg.memory_warn, cfg.memory_fail),
        ),
        answers,
        strict=True,
    ):
        if isinstance(answer, MetricSourceError):
            v.fail(f"{label}: {source.name} source failed: {answer}")
            values[metric] = None
            continue
        if isinstance(answer, BaseException):
            raise answer
        value = single_value(answer)
        values[metric] = value
        if value is None:
            v.degrade(f"{label}: no data from the {source.name} source")
            continue
        stamp = next((s.timestamp for s in answer if s.value == value), None)
        age = (
            ""
            if stamp is None or now - stamp <= STALE_AFTER_S
            else f" (point {human_duration(now - stamp)} old)"
        )
        ages[metric] = age
        obs.append(Observation(metric, value))
        v.threshold(value, warn, fail, f"database host {label} at {value:.0f}%{age} (limit {warn:g}%)")
    cpu, mem = values.get("db_cpu_percent"), values.get("db_memory_percent")
    summary = "database host " + ", ".join(
        f"{name} {value:.0f}%{ages.get(metric, '')}"
        for name, metric, value in (("CPU", "db_cpu_percent", cpu), ("memory", "db_memory_percent", mem))
        if value is not None
    )
    return v.report("host", summary, obs, {"source": source.name, "cpu_percent": cpu, "memory_percent": mem})
