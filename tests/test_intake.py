"""Alerts from elsewhere into the same chain (issue 9, part 6): Alertmanager's webhook and Cloud Monitoring's
webhook notification channel become incidents of the same manager, one per Alertmanager group.

Parsing is tested alone (grouping, severity, bounds, links, resolve, malformed payloads of every shape);
the HTTP routes are served on loopback over a real incident manager and store; and a real Alertmanager
(Debian's ``prometheus-alertmanager``, installed by ``make deps``) delivers to them end to end, including a
burst of 500 alerts in one group that must page each level once."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
import shutil
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import closed_port, serve_asgi
from starlette.applications import Starlette

from watchdog.config import load_config
from watchdog.config.alerts import Intake
from watchdog.config.loader import WatchdogConfig
from watchdog.core.clock import Clock, FakeClock, SystemClock
from watchdog.incidents.intake import (
    IntakeError,
    alertmanager_spec,
    cloud_monitoring_spec,
)
from watchdog.incidents.manager import IncidentManager
from watchdog.notify.base import NOTIFY_TOPIC
from watchdog.store import MemoryStore, SqliteStore
from watchdog.store.base import Incident, OutboxItem
from watchdog.web.app import _Home
from watchdog.web.intake import ALERTMANAGER_PATH, CLOUD_MONITORING_PATH, intake_routes

REPO = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-intake-token"
AM = Intake(name="prom", kind="alertmanager", escalation="default")
GCP = Intake(name="gcp", kind="cloud_monitoring", escalation="default")


class _Runbooks:
    """A runbook lookup like the manager's: a path for the names that have a runbook, "" for the rest."""

    def __init__(self, known: Sequence[str] = ("DiskFull", "external-alert")) -> None:
        self.known = set(known)
        self.asked: list[str] = []

    def __call__(self, name: str) -> str:
        self.asked.append(name)
        return f"/runbooks/{name}.md" if name in self.known else ""


def _runbooks() -> _Runbooks:
    return _Runbooks()


def _am_alert(
    labels: Mapping[str, str],
    status: str = "firing",
    summary: str = "",
    generator: str = "http://prometheus:9090/graph?g0.expr=up",
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": dict(labels),
        "annotations": {"summary": summary} if summary else {},
        "startsAt": "2026-12-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-12-01T10:05:00Z",
        "generatorURL": generator,
        "fingerprint": hashlib.sha256(json.dumps(sorted(labels.items())).encode()).hexdigest()[:16],
    }


def _am_payload(
    alerts: Sequence[Mapping[str, Any]],
    *,
    group_labels: Mapping[str, str] | None = None,
    common_annotations: Mapping[str, str] | None = None,
    group_key: str = '{}:{alertname="DiskFull"}',
    truncated: int = 0,
    external_url: str = "http://alertmanager.example:9093",
) -> dict[str, Any]:
    """What Alertmanager sends: commonLabels are the labels every alert of the group shares."""
    label_sets = [dict(a["labels"]) for a in alerts]
    common = {k: v for k, v in label_sets[0].items() if all(ls.get(k) == v for ls in label_sets)}
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": truncated,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": "watchdog",
        "groupLabels": dict(group_labels if group_labels is not None else {"alertname": "DiskFull"}),
        "commonLabels": common,
        "commonAnnotations": dict(common_annotations or {}),
        "externalURL": external_url,
        "alerts": list(alerts),
    }


def _disks(count: int, severity: str = "warning", status: str = "firing") -> list[dict[str, Any]]:
    return [
        _am_alert(
            {"alertname": "DiskFull", "severity": severity, "instance": f"db{i:03d}", "job": "node"},
            status,
            summary=f"disk of db{i:03d} is 97% full",
        )
        for i in range(count)
    ]


def _gcp_payload(state: str | None = "open", **incident: Any) -> dict[str, Any]:
    """A Cloud Monitoring webhook notification, schema 1.2 (the fields Google documents)."""
    body: dict[str, Any] = {
        "incident_id": "0.mtdi83m6w8ao",
        "scoping_project_id": "ai-square-prod",
        "scoping_project_number": 286919713412,
        "url": "https://console.cloud.google.com/monitoring/alerting/incidents/0.mtdi83m6w8ao?project=x",
        "severity": "Critical",
        "started_at": 1675315787,
        "ended_at": None if state == "open" else 1675316787,
        "state": state,
        "summary": "CPU utilization for db-primary is above the threshold of 0.800 with a value of 0.970.",
        "apigee_url": "https://apigee.example",
        "observed_value": "0.970",
        "resource": {"type": "cloudsql_database", "labels": {"database_id": "ai-square:db-primary"}},
        "resource_type_display_name": "Cloud SQL Database",
        "resource_id": "",
        "resource_display_name": "db-primary",
        "resource_name": "ai-square-prod Cloud SQL Database labels {database_id=ai-square:db-primary}",
        "metric": {
            "type": "cloudsql.googleapis.com/database/cpu/utilization",
            "displayName": "CPU",
            "labels": {},
        },
        "metadata": {"system_labels": {}, "user_labels": {}},
        "policy_name": "cloudsql-cpu-high",
        "policy_user_labels": {"team": "content"},
        "documentation": {"content": "Check slow queries first.", "mime_type": "text/markdown"},
        "condition": {"displayName": "Cloud SQL CPU > 80%"},
        "condition_name": "Cloud SQL CPU > 80%",
        "threshold_value": "0.8",
    }
    body.update(incident)
    return {"incident": body, "version": "1.2"}


# --- Alertmanager parsing ---------------------------------------------------------------------------------


def test_one_group_is_one_incident_keyed_by_its_group_key() -> None:
    runbooks = _runbooks()
    got = alertmanager_spec(AM, _am_payload(_disks(3)), runbooks)
    digest = hashlib.sha256(b'{}:{alertname="DiskFull"}').hexdigest()[:16]
    spec = got.spec
    assert got.firing
    assert spec.key == f"am:prom:{digest}"
    assert (spec.alert, spec.severity, spec.policy, spec.source) == (
        "DiskFull",
        "warning",
        "default",
        "alertmanager",
    )
    assert spec.labels == {"alertname": "DiskFull"}
    assert spec.group is None
    assert spec.runbook_url == "/runbooks/DiskFull.md"
    # More alerts in the same group: the same incident. Another group: another incident.
    same = alertmanager_spec(AM, _am_payload(_disks(7)), runbooks)
    other = alertmanager_spec(AM, _am_payload(_disks(1), group_key='{}:{alertname="Other"}'), runbooks)
    assert same.spec.key == spec.key
    assert other.spec.key != spec.key
    # Another intake's group of the same key is its own incident.
    assert alertmanager_spec(
        Intake(name="prom2", kind="alertmanager"), _am_payload(_disks(1)), runbooks
    ).spec.key == (f"am:prom2:{digest}")


def test_summary_lists_the_first_ten_firing_alerts_and_counts_the_rest() -> None:
    alerts = _disks(25)
    random.Random(7).shuffle(alerts)
    payload = _am_payload(alerts, common_annotations={"summary": "Disks are filling up"}, truncated=5)
    got = alertmanager_spec(AM, payload, _runbooks())
    lines = got.spec.summary.splitlines()
    assert lines[0] == "Disks are filling up"
    assert lines[1] == "25 firing, 5 more not listed by Alertmanager (max_alerts)"
    # Sorted, so the same group always reads the same (and an unchanged group is no update).
    assert lines[2:12] == [f"• instance=db{i:03d}: disk of db{i:03d} is 97% full" for i in range(10)]
    assert lines[12] == "+20 more", "15 firing alerts not listed plus the 5 Alertmanager truncated"
    assert len(lines) == 13
    reordered = alertmanager_spec(
        AM,
        _am_payload(
            sorted(alerts, key=str), truncated=5, common_annotations={"summary": "Disks are filling up"}
        ),
        _runbooks(),
    )
    assert reordered.spec.summary == got.spec.summary
    assert got.note.startswith("now 25 firing: instance=db000: disk of db000 is 97% full, ")
    assert got.note.endswith("(+25 more)")


def test_summary_stays_bounded_whatever_the_annotations_say() -> None:
    huge = "x" * 50_000
    alerts = [
        _am_alert({"alertname": "Big", "pod": f"p{i}-" + "y" * 500}, summary=huge + str(i))
        for i in range(200)
    ]
    payload = _am_payload(
        alerts,
        group_labels={f"label{i:02d}": "v" * 1000 for i in range(40)},
        common_annotations={"description": huge},
        truncated=10_000,
    )
    got = alertmanager_spec(AM, payload, _runbooks())
    assert len(got.spec.summary) < 2500
    lines = got.spec.summary.splitlines()
    shown = [line for line in lines if line.startswith("• ")]
    assert 5 <= len(shown) < 10, "as many alerts as fit"
    assert lines[-1] == f"+{200 - len(shown) + 10_000} more"
    assert len(got.note) <= 600
    assert len(got.spec.labels) == 20
    assert sorted(got.spec.labels) == [f"label{i:02d}" for i in range(20)]
    assert all(len(v) <= 200 for v in got.spec.labels.values())
    assert got.spec.alert == "Big"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("critical", "critical"),
        ("warning", "warning"),
        ("info", "info"),
        ("page", "warning"),
        ("error", "critical"),
        ("ticket", "info"),
        ("CRITICAL", "critical"),
        (" Warning ", "warning"),
        ("sev1", "info"),  # unknown: the intake's default
        ("", "info"),
    ],
)
def test_severity_comes_from_the_severity_label(word: str, expected: str) -> None:
    intake = Intake(name="prom", kind="alertmanager", severity="info")
    got = alertmanager_spec(intake, _am_payload(_disks(2, severity=word)), _runbooks())
    assert got.spec.severity == expected


def test_without_a_severity_label_the_intake_decides_and_a_mixed_group_takes_the_highest() -> None:
    plain = [_am_alert({"alertname": "X", "instance": "a"})]
    assert alertmanager_spec(AM, _am_payload(plain), _runbooks()).spec.severity == "warning"
    crit = Intake(name="p", kind="alertmanager", severity="critical")
    assert alertmanager_spec(crit, _am_payload(plain), _runbooks()).spec.severity == "critical"
    mixed = [
        *_disks(3, severity="warning"),
        _am_alert({"alertname": "DiskFull", "severity": "critical", "instance": "z"}),
    ]
    assert alertmanager_spec(AM, _am_payload(mixed), _runbooks()).spec.severity == "critical"
    # Only firing alerts count while any fires: a resolved critical one does not make the group critical.
    mixed[-1]["status"] = "resolved"
    assert alertmanager_spec(AM, _am_payload(mixed), _runbooks()).spec.severity == "warning"


def test_alert_name_falls_back_to_group_labels_then_alertmanager() -> None:
    alerts = [
        _am_alert({"alertname": "A", "service": "api"}),
        _am_alert({"alertname": "B", "service": "api"}),
    ]
    by_service = _am_payload(alerts, group_labels={"service": "api", "cluster": "eu"})
    got = alertmanager_spec(AM, by_service, _runbooks())
    assert got.spec.alert == "eu/api"
    assert got.spec.labels == {"service": "api", "cluster": "eu"}
    assert got.spec.runbook_url == "/runbooks/external-alert.md", "no runbook of its own: the generic one"
    assert got.spec.summary.splitlines()[1:] == ["• alertname=A", "• alertname=B"]
    nothing = alertmanager_spec(AM, _am_payload(alerts, group_labels={}), _runbooks())
    assert nothing.spec.alert == "alertmanager"
    assert nothing.spec.labels == {}


def test_an_alert_name_is_never_looked_up_as_a_path() -> None:
    runbooks = _runbooks()
    for name in ("../../etc/passwd", "a/b", ".hidden", "x y"):
        got = alertmanager_spec(AM, _am_payload([_am_alert({"alertname": name})]), runbooks)
        assert got.spec.runbook_url == "/runbooks/external-alert.md"
    assert runbooks.asked == ["external-alert"] * 4


def test_links_are_http_urls_only() -> None:
    alerts = [_am_alert({"alertname": "DiskFull", "instance": "a"})]
    payload = _am_payload(alerts, common_annotations={"runbook_url": "https://wiki.example/disk"})
    got = alertmanager_spec(AM, payload, _runbooks())
    assert got.spec.links == (
        ("Alertmanager", "http://alertmanager.example:9093"),
        ("Source", "http://prometheus:9090/graph?g0.expr=up"),
        ("Source runbook", "https://wiki.example/disk"),
    )
    bad = [_am_alert({"alertname": "DiskFull"}, generator="javascript:alert(1)")]
    for url in ("", "ftp://x", "javascript:alert(1)", "http://a b"):
        got = alertmanager_spec(AM, _am_payload(bad, external_url=url), _runbooks())
        assert got.spec.links == ()


def test_alerts_that_read_the_same_are_each_counted() -> None:
    """Alerts that differ only past what a line shows (a label value past its first 60 characters)."""
    twins = [_am_alert({"alertname": "Twin", "path": "/" + "a" * 80 + str(i)}) for i in range(2)]
    got = alertmanager_spec(AM, _am_payload(twins, group_labels={"alertname": "Twin"}), _runbooks())
    line = "• path=/" + "a" * 58 + "…"
    assert got.spec.summary.splitlines() == ["2 firing", line, line]


def test_resolved_group_and_partly_resolved_group() -> None:
    done = alertmanager_spec(AM, _am_payload(_disks(3, status="resolved")), _runbooks())
    assert not done.firing
    assert done.spec.summary == "all 3 alert(s) resolved"
    assert done.note == ""
    partly = _disks(3)
    partly[0]["status"] = "resolved"
    got = alertmanager_spec(AM, _am_payload(partly), _runbooks())
    assert got.firing
    assert got.spec.summary.splitlines()[0] == "2 firing"
    assert "db000" not in got.spec.summary


def _valid_am() -> dict[str, Any]:
    return _am_payload(_disks(2))


def _with(path: Sequence[str | int], value: Any, *, delete: bool = False) -> dict[str, Any]:
    doc = _valid_am()
    node: Any = doc
    for step in path[:-1]:
        node = node[step]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


MALFORMED_AM: list[tuple[Any, str]] = [
    ([], "the body: expected a JSON object, got a list"),
    ("firing", "the body: expected a JSON object, got a string"),
    (None, "the body: expected a JSON object, got null"),
    (3, "the body: expected a JSON object, got a number"),
    ({}, "version: expected '4'"),
    (_with(["version"], "3"), "version: expected '4'"),
    (_with(["version"], 4), "got 4"),
    (_with(["status"], None, delete=True), "status: missing"),
    (_with(["status"], "pending"), "status: expected 'firing' or 'resolved', got 'pending'"),
    (_with(["status"], 1), "status: expected a string, got a number"),
    (_with(["groupKey"], None, delete=True), "groupKey: missing"),
    (_with(["groupKey"], ""), "groupKey: empty"),
    (_with(["groupKey"], ["k"]), "groupKey: expected a string, got a list"),
    (_with(["alerts"], None, delete=True), "alerts: expected a list, got null"),
    (_with(["alerts"], {}), "alerts: expected a list, got an object"),
    (_with(["alerts"], []), "alerts: empty"),
    (_with(["alerts"], [1]), "alerts[0]: expected a JSON object, got a number"),
    (_with(["alerts", 1, "status"], None, delete=True), "alerts[1].status: missing"),
    (_with(["alerts", 1, "status"], "unknown"), "alerts[1].status: expected 'firing' or 'resolved'"),
    (_with(["alerts", 0, "labels"], ["a"]), "alerts[0].labels: expected a JSON object, got a list"),
    (
        _with(["alerts", 0, "labels", "instance"], 5),
        "alerts[0].labels.instance: expected a string, got a number",
    ),
    (
        _with(["alerts", 0, "annotations", "summary"], {"a": 1}),
        "alerts[0].annotations.summary: expected a string",
    ),
    (_with(["alerts", 0, "generatorURL"], 5), "alerts[0].generatorURL: expected a string"),
    (_with(["alerts", 0, "startsAt"], 0), "alerts[0].startsAt: expected a string"),
    (_with(["groupLabels"], "alertname"), "groupLabels: expected a JSON object, got a string"),
    (_with(["commonLabels", "severity"], True), "commonLabels.severity: expected a string, got a boolean"),
    (_with(["commonAnnotations"], [1]), "commonAnnotations: expected a JSON object"),
    (_with(["externalURL"], {}), "externalURL: expected a string, got an object"),
    (_with(["truncatedAlerts"], -1), "truncatedAlerts: expected a count"),
    (_with(["truncatedAlerts"], "3"), "truncatedAlerts: expected a count"),
    (_with(["truncatedAlerts"], True), "truncatedAlerts: expected a count"),
    (_with(["truncatedAlerts"], 1.5), "truncatedAlerts: expected a count"),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED_AM)
def test_malformed_alertmanager_payloads_say_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(IntakeError) as caught:
        alertmanager_spec(AM, body, _runbooks())
    assert isinstance(caught.value, ValueError)
    assert message in str(caught.value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), value=_json)
def test_any_damage_to_a_payload_is_an_intake_error_or_a_valid_alert(data: st.DataObject, value: Any) -> None:
    """Whatever part of a valid payload is replaced by whatever JSON, the parsers answer with an alert or an
    IntakeError: never KeyError, TypeError, AttributeError."""
    for body, parse, intake in (
        (_valid_am(), alertmanager_spec, AM),
        (_gcp_payload(), cloud_monitoring_spec, GCP),
    ):
        paths = list(_paths(body))
        path = data.draw(st.sampled_from(paths))
        node: Any = body
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        try:
            got = parse(intake, body, _runbooks())
        except IntakeError:
            continue
        assert got.spec.key and got.spec.alert and len(got.spec.summary) < 2500
        assert got.spec.severity in ("info", "warning", "critical")


@given(body=_json)
def test_arbitrary_json_is_an_intake_error(body: Any) -> None:
    for parse, intake in ((alertmanager_spec, AM), (cloud_monitoring_spec, GCP)):
        with pytest.raises(IntakeError):
            parse(intake, body, _runbooks())


# --- Cloud Monitoring parsing -----------------------------------------------------------------------------


def test_cloud_monitoring_open_incident() -> None:
    got = cloud_monitoring_spec(GCP, _gcp_payload(), _runbooks())
    spec = got.spec
    assert got.firing and got.note == ""
    assert spec.key == "gcp:gcp:0.mtdi83m6w8ao"
    assert (spec.alert, spec.severity, spec.source) == ("cloudsql-cpu-high", "critical", "cloud_monitoring")
    assert spec.summary.splitlines() == [
        "CPU utilization for db-primary is above the threshold of 0.800 with a value of 0.970.",
        "observed 0.970, threshold 0.8",
        "resource: ai-square-prod Cloud SQL Database labels {database_id=ai-square:db-primary}",
        "condition: Cloud SQL CPU > 80%",
        "Check slow queries first.",
    ]
    assert spec.links == (
        (
            "Cloud Monitoring",
            "https://console.cloud.google.com/monitoring/alerting/incidents/0.mtdi83m6w8ao?project=x",
        ),
    )
    assert spec.labels == {
        "project": "ai-square-prod",
        "resource_type": "cloudsql_database",
        "database_id": "ai-square:db-primary",
        "condition": "Cloud SQL CPU > 80%",
        "team": "content",
    }
    assert spec.runbook_url == "/runbooks/external-alert.md"


def test_cloud_monitoring_closed_incident_resolves_the_same_key() -> None:
    opened = cloud_monitoring_spec(GCP, _gcp_payload("open"), _runbooks())
    closed = cloud_monitoring_spec(GCP, _gcp_payload("closed"), _runbooks())
    assert not closed.firing
    assert closed.spec.key == opened.spec.key
    assert cloud_monitoring_spec(GCP, _gcp_payload("OPEN"), _runbooks()).firing


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("Critical", "critical"),
        ("Error", "critical"),
        ("Warning", "warning"),
        ("No severity", "warning"),
        (None, "warning"),
    ],
)
def test_cloud_monitoring_severity(word: str | None, expected: str) -> None:
    assert cloud_monitoring_spec(GCP, _gcp_payload(severity=word), _runbooks()).spec.severity == expected


def test_cloud_monitoring_minimal_payload_and_numbers() -> None:
    body = {"version": "1.2", "incident": {"incident_id": "i-1", "state": "open", "observed_value": 0.97}}
    got = cloud_monitoring_spec(GCP, body, _runbooks())
    assert got.spec.alert == "cloud-monitoring"
    assert got.spec.summary == "observed 0.97, threshold ?"
    assert got.spec.labels == {} and got.spec.links == ()
    bare = {
        "version": "1.2",
        "incident": {"incident_id": "i-1", "state": "closed", "documentation": "see wiki"},
    }
    assert cloud_monitoring_spec(GCP, bare, _runbooks()).spec.summary == "see wiki"


MALFORMED_GCP: list[tuple[Any, str]] = [
    ([], "the body: expected a JSON object, got a list"),
    ({"incident": {}}, "version: expected '1.2' or '1.1'"),
    ({**_gcp_payload(), "version": 1.2}, "version: expected"),
    ({"version": "1.2"}, "incident: expected a JSON object, got null"),
    ({"version": "1.2", "incident": "x"}, "incident: expected a JSON object, got a string"),
    (_gcp_payload(incident_id=None), "incident.incident_id: missing"),
    (_gcp_payload(incident_id=12), "incident.incident_id: expected a string, got a number"),
    (_gcp_payload(state="acknowledged"), "incident.state: expected 'open' or 'closed', got 'acknowledged'"),
    (_gcp_payload(state=None), "incident.state: missing"),
    (_gcp_payload(policy_name=["p"]), "incident.policy_name: expected a string, got a list"),
    (_gcp_payload(observed_value={}), "incident.observed_value: expected a string or a number"),
    (_gcp_payload(threshold_value=True), "incident.threshold_value: expected a string or a number"),
    (_gcp_payload(severity=3), "incident.severity: expected a string, got a number"),
    (_gcp_payload(resource=[]), "incident.resource: expected a JSON object, got a list"),
    (_gcp_payload(resource={"labels": {"a": 1}}), "incident.resource.labels.a: expected a string"),
    (_gcp_payload(policy_user_labels="x"), "incident.policy_user_labels: expected a JSON object"),
    (_gcp_payload(documentation=5), "incident.documentation: expected a JSON object, got a number"),
    (_gcp_payload(url=5), "incident.url: expected a string"),
]


@pytest.mark.parametrize(("body", "message"), MALFORMED_GCP)
def test_malformed_cloud_monitoring_payloads_say_what_is_wrong(body: Any, message: str) -> None:
    with pytest.raises(IntakeError) as caught:
        cloud_monitoring_spec(GCP, body, _runbooks())
    assert message in str(caught.value)


# --- the HTTP routes, on loopback over a real manager and store -------------------------------------------


@pytest.fixture
def config() -> WatchdogConfig:
    """The repository's config: its intake section has ``prometheus`` (alertmanager) and ``gcp``."""
    return load_config(REPO, environ={"TARGET_BASE_URL": "https://svc.example"})


@dataclass
class _View:
    incidents: IncidentManager


@dataclass
class _Served:
    url: str
    manager: IncidentManager
    store: MemoryStore | SqliteStore
    clock: Clock

    async def incidents(self, prefix: str) -> list[Incident]:
        return [i for i in await self.manager.list_incidents() if i.key.startswith(prefix)]

    async def pages(self) -> list[OutboxItem]:
        return await self.store.claim(NOTIFY_TOPIC, "test", 10_000, 600, self.clock.now())


@contextlib.asynccontextmanager
async def _serve(
    config: WatchdogConfig,
    tmp_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    intakes: Sequence[Intake] | None = None,
    store: MemoryStore | SqliteStore | None = None,
    clock: Clock | None = None,
    home: _Home | None = None,
    **options: Any,
) -> AsyncIterator[_Served]:
    store = store if store is not None else SqliteStore(tmp_path / "state.db")
    clock = clock or FakeClock()
    await store.open()
    manager = IncidentManager(config, store, clock)
    routes = intake_routes(
        _View(manager),
        home or _Home(asyncio.get_running_loop()),
        config.intake if intakes is None else intakes,
        {"WATCHDOG_INTAKE_TOKEN": TOKEN} if env is None else env,
        **options,
    )
    try:
        async with serve_asgi(Starlette(routes=routes)) as url:
            yield _Served(url, manager, store, clock)
    finally:
        await store.close()


def _bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_alertmanager_group_fires_updates_and_resolves_one_incident(
    config: WatchdogConfig, tmp_path: Path
) -> None:
    async with _serve(config, tmp_path) as served, httpx.AsyncClient(base_url=served.url) as client:
        first = await client.post(ALERTMANAGER_PATH, json=_am_payload(_disks(3)), headers=_bearer())
        assert first.status_code == 200, first.text
        key = first.json()["incident"]
        assert first.json() == {"status": "ok", "incident": key, "event": "fired"}
        assert key.startswith("am:prometheus:")
        (incident,) = await served.incidents("am:")
        assert incident.state == "firing"
        assert incident.data["severity"] == "warning"
        assert incident.data["labels"] == {"alertname": "DiskFull"}
        assert incident.data["source"] == "alertmanager"
        assert incident.data["runbook_url"].endswith("runbooks/external-alert.md")
        pages = await served.pages()
        assert [(p.payload["event"], p.payload["level"]) for p in pages] == [("fired", "L1")]
        # Alertmanager re-sends an unchanged group (repeat_interval): nothing changes, nobody is paged.
        again = await client.post(ALERTMANAGER_PATH, json=_am_payload(_disks(3)), headers=_bearer())
        assert again.json()["event"] == "unchanged"
        assert await served.pages() == []
        # Four more disks: the same incident, its summary updated and a note in its thread.
        grown = await client.post(ALERTMANAGER_PATH, json=_am_payload(_disks(7)), headers=_bearer())
        assert grown.json() == {"status": "ok", "incident": key, "event": "updated"}
        (incident,) = await served.incidents("am:")
        assert incident.data["summary"].startswith("7 firing\n")
        (note,) = await served.pages()
        assert note.payload["event"] == "note" and note.payload["level"] == "L1"
        assert note.payload["note"].startswith("now 7 firing: instance=db000")
        resolved = _am_payload(_disks(7, status="resolved"))
        gone = await client.post(ALERTMANAGER_PATH, json=resolved, headers=_bearer())
        assert gone.json() == {"status": "ok", "incident": key, "event": "resolved"}
        (incident,) = await served.incidents("am:")
        assert incident.state == "resolved"
        assert incident.data["resolution"] == "all 7 alert(s) resolved"
        assert [p.payload["state"] for p in await served.pages()] == ["resolved"]
        late = await client.post(ALERTMANAGER_PATH, json=resolved, headers=_bearer())
        assert late.json()["event"] == "unchanged"


async def test_critical_group_pages_l1_and_l3_at_once(config: WatchdogConfig, tmp_path: Path) -> None:
    async with _serve(config, tmp_path) as served, httpx.AsyncClient(base_url=served.url) as client:
        answer = await client.post(
            ALERTMANAGER_PATH, json=_am_payload(_disks(2, severity="critical")), headers=_bearer()
        )
        assert answer.json()["event"] == "fired"
        assert sorted(p.payload["level"] for p in await served.pages()) == ["L1", "L3"]


async def test_cloud_monitoring_token_in_the_url_or_basic_auth(
    config: WatchdogConfig, tmp_path: Path
) -> None:
    basic = base64.b64encode(f"gcp:{TOKEN}".encode()).decode()
    async with _serve(config, tmp_path) as served, httpx.AsyncClient(base_url=served.url) as client:
        opened = await client.post(CLOUD_MONITORING_PATH, params={"auth_token": TOKEN}, json=_gcp_payload())
        assert opened.json() == {"status": "ok", "incident": "gcp:gcp:0.mtdi83m6w8ao", "event": "fired"}
        (incident,) = await served.incidents("gcp:")
        assert incident.data["severity"] == "critical" and incident.data["alert"] == "cloudsql-cpu-high"
        assert sorted(p.payload["level"] for p in await served.pages()) == ["L1", "L3"]
        closed = await client.post(
            CLOUD_MONITORING_PATH, headers={"Authorization": f"Basic {basic}"}, json=_gcp_payload("closed")
        )
        assert closed.json()["event"] == "resolved"
        reopened = await client.post(
            CLOUD_MONITORING_PATH, headers=_bearer(), json=_gcp_payload(incident_id="2")
        )
        assert reopened.json()["event"] == "fired"


async def test_wrong_or_missing_token_is_401(config: WatchdogConfig, tmp_path: Path) -> None:
    body = _am_payload(_disks(1))
    wrong_basic = base64.b64encode(b"gcp:nope").decode()
    good_basic = base64.b64encode(f"x:{TOKEN}".encode()).decode()
    async with _serve(config, tmp_path) as served, httpx.AsyncClient(base_url=served.url) as client:
        attempts: list[tuple[str, dict[str, Any]]] = [
            (ALERTMANAGER_PATH, {}),
            (ALERTMANAGER_PATH, {"headers": _bearer("nope")}),
            (ALERTMANAGER_PATH, {"headers": _bearer(TOKEN + "x")}),
            (ALERTMANAGER_PATH, {"headers": {"Authorization": "Bearer"}}),
            (ALERTMANAGER_PATH, {"headers": {"Authorization": TOKEN}}),
            (ALERTMANAGER_PATH, {"headers": {"Authorization": "Bearer é".encode()}}),
            # Alertmanager can send headers: the URL and basic auth are for Cloud Monitoring only.
            (ALERTMANAGER_PATH, {"params": {"auth_token": TOKEN}}),
            (ALERTMANAGER_PATH, {"headers": {"Authorization": f"Basic {good_basic}"}}),
            (CLOUD_MONITORING_PATH, {"params": {"auth_token": "nope"}}),
            (CLOUD_MONITORING_PATH, {"headers": {"Authorization": f"Basic {wrong_basic}"}}),
            (CLOUD_MONITORING_PATH, {"headers": {"Authorization": "Basic !!notbase64"}}),
        ]
        for path, kwargs in attempts:
            answer = await client.post(path, json=body, **kwargs)
            assert answer.status_code == 401, (path, kwargs, answer.text)
            assert answer.json() == {"status": "error", "error": "missing or wrong token"}
            assert answer.headers["www-authenticate"].startswith("Bearer")
        assert await served.incidents("") == []


async def test_no_token_configured_is_503_naming_the_variable(config: WatchdogConfig, tmp_path: Path) -> None:
    async with _serve(config, tmp_path, env={}) as served, httpx.AsyncClient(base_url=served.url) as client:
        answer = await client.post(ALERTMANAGER_PATH, json=_am_payload(_disks(1)), headers=_bearer())
        assert answer.status_code == 503
        assert answer.json()["error"] == "intake prometheus has no token: set WATCHDOG_INTAKE_TOKEN"
    custom = [Intake(name="cm", kind="cloud_monitoring", token_env="GCP_WEBHOOK_TOKEN")]
    env = {"WATCHDOG_INTAKE_TOKEN": TOKEN, "GCP_WEBHOOK_TOKEN": ""}
    async with (
        _serve(config, tmp_path, env=env, intakes=custom) as served,
        httpx.AsyncClient(base_url=served.url) as client,
    ):
        answer = await client.post(CLOUD_MONITORING_PATH, json=_gcp_payload(), params={"auth_token": TOKEN})
        assert answer.status_code == 503
        assert answer.json()["error"] == "intake cm has no token: set GCP_WEBHOOK_TOKEN"


async def test_a_kind_not_configured_is_404(config: WatchdogConfig, tmp_path: Path) -> None:
    only_am = [Intake(name="prom", kind="alertmanager")]
    async with (
        _serve(config, tmp_path, intakes=only_am) as served,
        httpx.AsyncClient(base_url=served.url) as client,
    ):
        answer = await client.post(CLOUD_MONITORING_PATH, json=_gcp_payload(), headers=_bearer())
        assert answer.status_code == 404
        assert answer.json()["error"].startswith("no cloud_monitoring intake is configured")
        assert (await client.get(ALERTMANAGER_PATH, headers=_bearer())).status_code == 405
        ok = await client.post(ALERTMANAGER_PATH, json=_am_payload(_disks(1)), headers=_bearer())
        assert ok.json()["incident"].startswith("am:prom:")


async def test_bodies_over_one_mib_are_413_declared_or_streamed(
    config: WatchdogConfig, tmp_path: Path
) -> None:
    big = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    async with _serve(config, tmp_path) as served, httpx.AsyncClient(base_url=served.url) as client:
        declared = await client.post(ALERTMANAGER_PATH, content=big, headers=_bearer())
        assert declared.status_code == 413
        assert declared.json()["error"] == "the body is larger than 1048576 bytes"
        streamed = await client.post(ALERTMANAGER_PATH, content=chunks(), headers=_bearer())
        assert streamed.status_code == 413
        # Just under the limit is read (and here refused as no Alertmanager payload).
        fits = b'{"pad": "' + b"x" * (1024 * 1024 - 20) + b'"}'
        assert (await client.post(ALERTMANAGER_PATH, content=fits, headers=_bearer())).status_code == 400


async def test_a_body_that_trickles_in_is_408(config: WatchdogConfig, tmp_path: Path) -> None:
    async def slow() -> AsyncIterator[bytes]:
        yield b'{"version": "4", '
        await asyncio.sleep(1.0)
        yield b'"status": "firing"}'

    async with (
        _serve(config, tmp_path, body_deadline_s=0.3) as served,
        httpx.AsyncClient(base_url=served.url) as client,
    ):
        answer = await client.post(ALERTMANAGER_PATH, content=slow(), headers=_bearer())
        assert answer.status_code == 408
        assert answer.json()["error"] == "the body did not arrive within 0.3 s"


async def test_bad_json_and_bad_payloads_are_400_with_the_reason(
    config: WatchdogConfig, tmp_path: Path
) -> None:
    async with _serve(config, tmp_path) as served, httpx.AsyncClient(base_url=served.url) as client:
        for content, reason in [
            (b"", "the body is not JSON: Expecting value"),
            (b"{not json", "the body is not JSON: Expecting property name"),
            (b"\xff\xfe\x00", "the body is not JSON"),
            (b"[" * 100_000 + b"]" * 100_000, "the body is not JSON"),
            (b'{"version": "4"}', "invalid alertmanager payload: status: missing"),
            (json.dumps(_gcp_payload()).encode(), "invalid alertmanager payload: version: expected '4'"),
        ]:
            answer = await client.post(ALERTMANAGER_PATH, content=content, headers=_bearer())
            assert answer.status_code == 400, (content[:40], answer.text)
            assert answer.json()["error"].startswith(reason), answer.json()
        assert await served.incidents("") == []


async def test_a_store_that_fails_is_503_so_the_sender_retries(
    config: WatchdogConfig, tmp_path: Path
) -> None:
    store = MemoryStore()
    async with (
        _serve(config, tmp_path, store=store) as served,
        httpx.AsyncClient(base_url=served.url) as client,
    ):
        store.set_unavailable("database is down")
        answer = await client.post(ALERTMANAGER_PATH, json=_am_payload(_disks(1)), headers=_bearer())
        assert answer.status_code == 503
        assert "database is down" in answer.json()["error"]
        store.set_unavailable(None)
        retried = await client.post(ALERTMANAGER_PATH, json=_am_payload(_disks(1)), headers=_bearer())
        assert retried.json()["event"] == "fired"


async def test_a_stalled_daemon_is_503_within_the_deadline_and_the_work_still_lands(
    config: WatchdogConfig, tmp_path: Path
) -> None:
    """The daemon's loop (another thread here, as in ``watchdog run``) stops answering: the request gets
    503 at its deadline, a second one is refused at once (one call may wait), and the first one's work
    finishes once the loop moves again: the incident is there, not lost."""
    daemon_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=daemon_loop.run_forever, daemon=True)
    thread.start()
    store = MemoryStore()
    try:
        async with (
            _serve(
                config, tmp_path, store=store, home=_Home(daemon_loop), deadline_s=0.3, max_in_flight=1
            ) as served,
            httpx.AsyncClient(base_url=served.url) as client,
        ):
            daemon_loop.call_soon_threadsafe(time.sleep, 1.5)  # the daemon's loop is stuck for 1.5 s
            started = time.monotonic()
            first = await client.post(ALERTMANAGER_PATH, json=_am_payload(_disks(2)), headers=_bearer())
            assert first.status_code == 503
            assert first.json()["error"] == "the daemon did not answer within 0.3 s; retry"
            assert time.monotonic() - started < 1.2
            busy = await client.post(
                ALERTMANAGER_PATH, json=_am_payload(_disks(2), group_key="other"), headers=_bearer()
            )
            assert busy.status_code == 503
            assert busy.json()["error"] == "the daemon is busy with earlier notifications; retry"

            async def landed() -> bool:
                return bool(await _on(daemon_loop, served.incidents("am:")))

            await _until(landed, "the late call landing", timeout_s=10)
            (incident,) = await _on(daemon_loop, served.incidents("am:"))
            assert incident.state == "firing"
            retry = await client.post(ALERTMANAGER_PATH, json=_am_payload(_disks(2)), headers=_bearer())
            assert retry.json()["event"] == "unchanged", "the retry finds the incident the late call opened"
    finally:
        daemon_loop.call_soon_threadsafe(daemon_loop.stop)
        thread.join(5)
        daemon_loop.close()


async def _on(loop: asyncio.AbstractEventLoop, coro: Awaitable[list[Incident]]) -> list[Incident]:
    async def run() -> list[Incident]:
        return await coro

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))


# --- the real Alertmanager, end to end --------------------------------------------------------------------


def _alertmanager_binary() -> str:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        reason = (
            "prometheus-alertmanager (Debian package) is not installed; "
            "make deps (scripts/deps.sh) installs it"
        )
        pytest.fail(reason)  # make test runs make deps first, which installs it: absent is a failure
    return binary


@contextlib.asynccontextmanager
async def _alertmanager(tmp_path: Path, webhook: str, token: str) -> AsyncIterator[str]:
    """A real Alertmanager on a free loopback port, no clustering, delivering every group to ``webhook``
    with the token as a bearer token; yields its base URL and stops it (by its pid) afterwards."""
    binary = _alertmanager_binary()
    port = closed_port()
    (tmp_path / "alertmanager.yml").write_text(
        "route:\n"
        "  receiver: watchdog\n"
        "  group_by: [alertname]\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: watchdog\n"
        "    webhook_configs:\n"
        f"      - url: {webhook}\n"
        "        send_resolved: true\n"
        "        http_config:\n"
        f"          authorization: {{type: Bearer, credentials: {token}}}\n"
    )
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={tmp_path / 'alertmanager.yml'}",
        f"--storage.path={tmp_path / 'am-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        stdout=log,
        stderr=log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=2) as client:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(httpx.TransportError):  # not listening yet
                    if (await client.get("/-/ready")).status_code == 200:
                        break
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"alertmanager did not start: {(tmp_path / 'alertmanager.log').read_text()}"
                    )
                await asyncio.sleep(0.1)
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


def _v2_alerts(
    names: Sequence[str], *, alertname: str, severity: str, ended: bool = False
) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    ends = now - timedelta(minutes=1) if ended else now + timedelta(hours=1)
    return [
        {
            "labels": {"alertname": alertname, "severity": severity, "instance": name, "job": "node"},
            "annotations": {"summary": f"{alertname} on {name}"},
            "startsAt": (now - timedelta(minutes=5)).isoformat(),
            "endsAt": ends.isoformat(),
            "generatorURL": f"http://prometheus.example:9090/graph?g0.expr=up%7Binstance%3D%22{name}%22%7D",
        }
        for name in names
    ]


async def _until(
    check: Callable[[], Awaitable[bool]], what: str, log: Path | None = None, timeout_s: float = 30
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout_s} s{_tail(log)}")
        await asyncio.sleep(0.05)


def _tail(log: Path | None) -> str:
    return f"; alertmanager log:\n{log.read_text()[-3000:]}" if log is not None and log.exists() else ""


async def test_real_alertmanager_fires_and_resolves_an_incident(
    config: WatchdogConfig, tmp_path: Path
) -> None:
    _alertmanager_binary()
    log = tmp_path / "alertmanager.log"
    async with (
        _serve(config, tmp_path, clock=SystemClock()) as served,
        _alertmanager(tmp_path, served.url + ALERTMANAGER_PATH, TOKEN) as am,
        httpx.AsyncClient(base_url=am, timeout=5) as client,
    ):
        posted = await client.post(
            "/api/v2/alerts", json=_v2_alerts(["db1", "db2"], alertname="DiskFull", severity="critical")
        )
        assert posted.status_code == 200, posted.text

        async def firing() -> bool:
            return any(i.state == "firing" for i in await served.incidents("am:prometheus:"))

        await _until(firing, "the incident firing", log)
        (incident,) = await served.incidents("am:")
        assert incident.data["severity"] == "critical"
        assert incident.data["labels"] == {"alertname": "DiskFull"}
        assert incident.data["alert"] == "DiskFull"
        assert incident.data["summary"].splitlines() == [
            "2 firing",
            "• instance=db1: DiskFull on db1",
            "• instance=db2: DiskFull on db2",
        ]
        links = dict(tuple(x) for x in incident.data["links"])
        assert links["Source"].startswith("http://prometheus.example:9090/graph")
        assert links["Alertmanager"].startswith("http://")
        assert sorted(p.payload["level"] for p in await served.pages()) == ["L1", "L3"]
        # The source resolves them (endsAt in the past): the incident resolves.
        ended = await client.post(
            "/api/v2/alerts",
            json=_v2_alerts(["db1", "db2"], alertname="DiskFull", severity="critical", ended=True),
        )
        assert ended.status_code == 200

        async def resolved() -> bool:
            return [i.state for i in await served.incidents("am:")] == ["resolved"]

        await _until(resolved, "the incident resolving", log)
        assert {p.payload["state"] for p in await served.pages()} == {"resolved"}


async def test_a_burst_of_500_alerts_in_one_group_is_one_incident(
    config: WatchdogConfig, tmp_path: Path
) -> None:
    """An alert storm (one rule, 500 instances) must page each level once, not 500 times."""
    _alertmanager_binary()
    log = tmp_path / "alertmanager.log"
    names = [f"pod-{i:03d}" for i in range(500)]
    async with (
        _serve(config, tmp_path, clock=SystemClock()) as served,
        _alertmanager(tmp_path, served.url + ALERTMANAGER_PATH, TOKEN) as am,
        httpx.AsyncClient(base_url=am, timeout=10) as client,
    ):
        posted = await client.post(
            "/api/v2/alerts", json=_v2_alerts(names, alertname="PodCrash", severity="warning")
        )
        assert posted.status_code == 200, posted.text

        async def all_in() -> bool:
            found = await served.incidents("am:")
            return bool(found) and found[0].data["summary"].startswith("500 firing\n")

        await _until(all_in, "one incident with all 500 alerts", log)
        incidents = await served.manager.list_incidents()
        assert len(incidents) == 1
        (incident,) = incidents
        lines = incident.data["summary"].splitlines()
        assert lines[1:11] == [f"• instance=pod-{i:03d}: PodCrash on pod-{i:03d}" for i in range(10)]
        assert lines[-1] == "+490 more"
        pages = await served.pages()
        fired = [p for p in pages if p.payload["event"] == "fired"]
        assert [p.payload["level"] for p in fired] == ["L1"], "one page for the group, at L1 (warning)"
        assert all(p.payload["event"] in ("fired", "note") for p in pages), [p.payload for p in pages]
