"""What every probe produces. A probe never raises: a failure is a result with a reason."""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Outcome(enum.StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    FAILED = "failed"

    @property
    def severity(self) -> int:
        return {Outcome.OK: 0, Outcome.DEGRADED: 1, Outcome.FAILED: 2}[self]


@dataclass(frozen=True, slots=True)
class Observation:
    """A named number a probe saw (connections in use, replication lag, ...).

    Exposed on /metrics as ``watchdog_<name>`` with ``probe`` plus these labels, and kept by the store as
    per-minute aggregates so metric-threshold SLIs (CPU < 80 %) can be evaluated later.
    """

    name: str
    value: float
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    probe: str
    """Name of the probe instance from config."""
    kind: str
    """Probe kind: http, journey, postgres, ..."""
    target: str
    """What was probed, safe to show (URLs without secrets, DSNs redacted)."""
    outcome: Outcome
    latency_s: float
    started_at: float
    """Epoch seconds from the injected clock."""
    reason: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Aggregation labels: cohort, step, lang. The store keeps one series per (probe, labels)."""
    observations: tuple[Observation, ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def to_dict(self) -> dict[str, Any]:
        """The one JSON shape of a result: ``check --json``, the status page and the store all use it.
        Times are seconds (``latency_s``, ``started_at`` in epoch seconds), as everywhere else."""
        return {
            "probe": self.probe,
            "kind": self.kind,
            "target": self.target,
            "labels": dict(self.labels),
            "outcome": self.outcome.value,
            "latency_s": self.latency_s,
            "started_at": self.started_at,
            "reason": self.reason,
            "observations": [
                {"name": o.name, "value": o.value, "labels": dict(o.labels)} for o in self.observations
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProbeResult:
        return cls(
            probe=d["probe"],
            kind=d["kind"],
            target=d["target"],
            outcome=Outcome(d["outcome"]),
            latency_s=float(d["latency_s"]),
            started_at=float(d["started_at"]),
            reason=d.get("reason", ""),
            labels=dict(d.get("labels", {})),
            observations=tuple(
                Observation(name=o["name"], value=float(o["value"]), labels=dict(o.get("labels", {})))
                for o in d.get("observations", [])
            ),
        )


def series_key(probe: str, labels: Mapping[str, str]) -> str:
    """Canonical, order-independent identity of one (probe, labels) series."""
    return json.dumps({"probe": probe, **{k: labels[k] for k in sorted(labels)}}, separators=(",", ":"))


def parse_series_key(key: str) -> tuple[str, dict[str, str]]:
    data: dict[str, str] = json.loads(key)
    probe = data.pop("probe")
    return probe, data
