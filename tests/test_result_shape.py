"""One JSON shape for a probe result: ``check --json``, the status page and the store all write
``ProbeResult.to_dict()`` and read it back with ``from_dict``."""

from __future__ import annotations

import json

from watchdog.core.results import Observation, Outcome, ProbeResult
from watchdog.store._common import result_from_json, result_to_json

RESULT = ProbeResult(
    probe="content-db",
    kind="http",
    target="https://***@svc.example/api/pbl/scenarios?lang=zhTW&source=db",
    outcome=Outcome.DEGRADED,
    latency_s=0.2345,
    started_at=1_767_225_600.125,
    reason="latency 234 ms over 200 ms — 繁體中文",
    labels={"cohort": "db", "lang": "zhTW"},
    observations=(Observation("db_connections_in_use", 17.0, {"role": "primary"}),),
)


def test_round_trip_is_lossless() -> None:
    assert ProbeResult.from_dict(RESULT.to_dict()) == RESULT
    assert ProbeResult.from_dict(json.loads(json.dumps(RESULT.to_dict()))) == RESULT


def test_shape_is_seconds_and_names_every_field() -> None:
    shown = RESULT.to_dict()
    assert list(shown) == [
        "probe",
        "kind",
        "target",
        "labels",
        "outcome",
        "latency_s",
        "started_at",
        "reason",
        "observations",
    ]
    assert shown["latency_s"] == 0.2345 and shown["outcome"] == "degraded"
    assert shown["observations"] == [
        {"name": "db_connections_in_use", "value": 17.0, "labels": {"role": "primary"}}
    ]


def test_the_store_writes_the_same_shape() -> None:
    assert json.loads(result_to_json(RESULT)) == RESULT.to_dict()
    assert result_from_json(result_to_json(RESULT)) == RESULT
