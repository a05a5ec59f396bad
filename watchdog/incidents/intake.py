"""Alerts from elsewhere into the same chain: payloads of other alerting systems → ``AlertSpec``.

Pure parsing, no I/O: ``web.intake`` reads and authenticates the request, these functions turn its JSON into
the incident the manager fires or clears, and anything malformed raises ``IntakeError`` (a ``ValueError``)
with a sentence saying what and where, never ``KeyError``/``TypeError``.

- **Alertmanager** (webhook format version 4): one *notification group* is one incident, whatever its size,
  so a burst of 500 alerts in one group pages each level once, not 500 times. The key is the intake's name
  plus a hash of ``groupKey``; the summary lists the first firing alerts (bounded) and "+K more"; a change
  in the firing set of an open incident updates its summary and posts a note in its thread.
- **Google Cloud Monitoring** (webhook notification channel, schema version 1.2; 1.1 has the same fields):
  one Cloud Monitoring incident (``incident_id``) is one incident here, ``state`` open fires, closed resolves.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchdog.config.alerts import Intake, Severity
from watchdog.incidents.manager import AlertSpec

MAX_LABELS = 20
MAX_LABEL_NAME = 100
MAX_LABEL_VALUE = 200
MAX_SUMMARY = 2500
"""A page's summary stays under this (Slack's section text holds 3000)."""
LISTED_ALERTS = 10
"""Firing alerts of a group named one by one in its summary; the rest are counted as "+K more"."""
MAX_LINE = 240
MAX_HEADLINE = 600
MAX_NOTE = 600
MAX_NAME = 200
FALLBACK_RUNBOOK = "external-alert"
"""The runbook of an external alert that has none of its own (``runbooks/external-alert.md``)."""

ALERTMANAGER_VERSIONS = ("4",)
CLOUD_MONITORING_VERSIONS = ("1.2", "1.1")

_SEVERITY_WORDS: dict[str, Severity] = {
    "critical": "critical",
    "error": "critical",
    "warning": "warning",
    "page": "warning",
    "info": "info",
    "ticket": "info",
}
_RANK: dict[Severity, int] = {"info": 0, "warning": 1, "critical": 2}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class IntakeError(ValueError):
    """The payload is not what the source sends; the message says what and where (answered with 400)."""


@dataclass(frozen=True, slots=True)
class ExternalAlert:
    """What a payload means here: the alert (its key names the incident), whether it fires, and for an
    update of an open incident the note to post in its thread (``fire(spec, update_note=note)``)."""

    spec: AlertSpec
    firing: bool
    note: str = ""


# -- Alertmanager --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _AmAlert:
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str


def alertmanager_spec(intake: Intake, body: Any, runbook_url: Callable[[str], str]) -> ExternalAlert:
    """One Alertmanager webhook notification (one group) → one incident. ``runbook_url(name)`` is the
    manager's (``IncidentManager.runbook_url``): the alert's own runbook if there is one, else
    ``external-alert``'s."""
    doc = _mapping(body, "the body")
    version = doc.get("version")
    if version not in ALERTMANAGER_VERSIONS:
        raise IntakeError(
            f"version: expected {' or '.join(repr(v) for v in ALERTMANAGER_VERSIONS)} "
            f"(Alertmanager's webhook format), got {version!r}"
        )
    status = _required_str(doc, "status", "")
    if status not in ("firing", "resolved"):
        raise IntakeError(f"status: expected 'firing' or 'resolved', got {status!r}")
    group_key = _required_str(doc, "groupKey", "")
    raw_alerts = doc.get("alerts")
    if not isinstance(raw_alerts, list):
        raise IntakeError(f"alerts: expected a list, got {_kind(raw_alerts)}")
    if not raw_alerts:
        raise IntakeError("alerts: empty (a notification carries at least one alert)")
    alerts = [_am_alert(a, f"alerts[{i}]") for i, a in enumerate(raw_alerts)]
    group_labels = _str_map(doc.get("groupLabels"), "groupLabels")
    common_labels = _str_map(doc.get("commonLabels"), "commonLabels")
    common_annotations = _str_map(doc.get("commonAnnotations"), "commonAnnotations")
    external_url = _optional_str(doc, "externalURL", "")
    truncated = doc.get("truncatedAlerts", 0)
    if truncated is None:
        truncated = 0
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise IntakeError(f"truncatedAlerts: expected a count (an integer ≥ 0), got {truncated!r}")

    firing = [a for a in alerts if a.status == "firing"]
    name = _clip(
        common_labels.get("alertname")
        or "/".join(v for _, v in sorted(group_labels.items()) if v)
        or "alertmanager",
        MAX_NAME,
    )
    severity = _group_severity(firing or alerts, intake.severity)
    headline = _clip(
        common_annotations.get("summary") or common_annotations.get("description") or "", MAX_HEADLINE
    )
    # Sorted, so that the same group always reads the same (an unchanged group is no update).
    listed = sorted(((_am_line(a, common_labels, headline), a) for a in firing), key=lambda pair: pair[0])
    lines = [line for line, _ in listed]
    summary = _am_summary(headline, lines, len(alerts), truncated)
    links: list[tuple[str, str]] = []
    _add_link(links, "Alertmanager", external_url)
    ordered = [a for _, a in listed] or alerts
    _add_link(links, "Source", next((a.generator_url for a in ordered if a.generator_url), ""))
    _add_link(links, "Source runbook", common_annotations.get("runbook_url", ""))
    digest = hashlib.sha256(group_key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    spec = AlertSpec(
        key=f"am:{intake.name}:{digest}",
        alert=name,
        severity=severity,
        policy=intake.escalation,
        summary=summary,
        labels=_bounded_labels(group_labels),
        source="alertmanager",
        runbook_url=_runbook(name, runbook_url),
        links=tuple(links),
        group=None,
        extra={"intake": intake.name, "group_key": _clip(group_key, 500)},
    )
    note = ""
    if firing:
        shown = ", ".join(lines[:5])
        more = len(lines) - 5 + truncated
        note = _clip(
            f"now {len(firing)} firing: {shown}" + (f" (+{more} more)" if more > 0 else ""), MAX_NOTE
        )
    return ExternalAlert(spec, bool(firing), note)


def _am_alert(raw: Any, where: str) -> _AmAlert:
    doc = _mapping(raw, where)
    status = _required_str(doc, "status", where)
    if status not in ("firing", "resolved"):
        raise IntakeError(f"{where}.status: expected 'firing' or 'resolved', got {status!r}")
    for stamp in ("startsAt", "endsAt"):
        _optional_str(doc, stamp, where)
    _optional_str(doc, "fingerprint", where)
    return _AmAlert(
        status=status,
        labels=_str_map(doc.get("labels"), f"{where}.labels"),
        annotations=_str_map(doc.get("annotations"), f"{where}.annotations"),
        generator_url=_optional_str(doc, "generatorURL", where),
    )


def _group_severity(alerts: Sequence[_AmAlert], default: Severity) -> Severity:
    """The highest severity among the alerts (label ``severity``; unknown or absent: the intake's). With a
    common ``severity`` label that is simply it; a group mixing critical and warning alerts is critical."""
    best: Severity | None = None
    for alert in alerts:
        word = _SEVERITY_WORDS.get(alert.labels.get("severity", "").strip().lower(), default)
        if best is None or _RANK[word] > _RANK[best]:
            best = word
    return best or default


def _am_line(alert: _AmAlert, common: Mapping[str, str], headline: str) -> str:
    """One firing alert, by what sets it apart in its group (labels it does not share), and its own
    summary when that says more than the group's."""
    own = {k: v for k, v in alert.labels.items() if k not in common}
    if not own:
        own = {k: v for k, v in alert.labels.items() if k not in ("alertname", "severity")}
    ident = " ".join(f"{k}={_clip(v, 60)}" for k, v in sorted(own.items())[:6])
    text = alert.annotations.get("summary") or alert.annotations.get("description") or ""
    if text == headline:
        text = ""
    line = f"{ident}: {text}" if ident and text else ident or text or "(no labels)"
    return _clip(" ".join(line.split()), MAX_LINE)


def _am_summary(headline: str, lines: Sequence[str], total: int, truncated: int) -> str:
    if not lines:
        head = f"{headline}\n" if headline else ""
        return _clip(f"{head}all {total} alert(s) resolved", MAX_SUMMARY)
    count = f"{len(lines)} firing"
    if truncated:
        count += f", {truncated} more not listed by Alertmanager (max_alerts)"
    parts = [headline, count] if headline else [count]
    used = sum(len(p) + 1 for p in parts)
    shown = 0
    for line in lines[:LISTED_ALERTS]:
        if used + len(line) + 3 + 40 > MAX_SUMMARY:  # keep room for the "+K more" line
            break
        parts.append(f"• {line}")
        used += len(line) + 3
        shown += 1
    more = len(lines) - shown + truncated
    if more > 0:
        parts.append(f"+{more} more")
    return _clip("\n".join(parts), MAX_SUMMARY)


# -- Cloud Monitoring ----------------------------------------------------------------------------------


def cloud_monitoring_spec(intake: Intake, body: Any, runbook_url: Callable[[str], str]) -> ExternalAlert:
    """One Cloud Monitoring webhook notification → fire or clear the incident of its ``incident_id``."""
    doc = _mapping(body, "the body")
    version = doc.get("version")
    if version not in CLOUD_MONITORING_VERSIONS:
        raise IntakeError(
            f"version: expected {' or '.join(repr(v) for v in CLOUD_MONITORING_VERSIONS)} "
            f"(Cloud Monitoring's webhook schema), got {version!r}"
        )
    incident = _mapping(doc.get("incident"), "incident")
    where = "incident"
    incident_id = _required_str(incident, "incident_id", where)
    state = _required_str(incident, "state", where).strip().lower()
    if state not in ("open", "closed"):
        raise IntakeError(f"incident.state: expected 'open' or 'closed', got {incident['state']!r}")
    policy = _optional_str(incident, "policy_name", where)
    condition = _optional_str(incident, "condition_name", where)
    text = _optional_str(incident, "summary", where)
    url = _optional_str(incident, "url", where)
    project = _optional_str(incident, "scoping_project_id", where)
    resource_name = _optional_str(incident, "resource_name", where) or _optional_str(
        incident, "resource_display_name", where
    )
    observed = _scalar(incident.get("observed_value"), "incident.observed_value")
    threshold = _scalar(incident.get("threshold_value"), "incident.threshold_value")
    severity_word = incident.get("severity")
    if severity_word is not None and not isinstance(severity_word, str):
        raise IntakeError(f"incident.severity: expected a string, got {_kind(severity_word)}")
    severity = _SEVERITY_WORDS.get((severity_word or "").strip().lower(), intake.severity)
    resource = incident.get("resource")
    labels: dict[str, str] = {}
    if project:
        labels["project"] = project
    if resource is not None:
        resource_doc = _mapping(resource, "incident.resource")
        resource_type = _optional_str(resource_doc, "type", "incident.resource")
        if resource_type:
            labels["resource_type"] = resource_type
        for k, v in sorted(_str_map(resource_doc.get("labels"), "incident.resource.labels").items()):
            labels.setdefault(k, v)
    if condition:
        labels["condition"] = condition
    user_labels = _str_map(incident.get("policy_user_labels"), "incident.policy_user_labels")
    labels = {**user_labels, **labels}

    name = _clip(policy or condition or "cloud-monitoring", MAX_NAME)
    parts = [_clip(" ".join(text.split()), MAX_HEADLINE)] if text else []
    if observed or threshold:
        parts.append(f"observed {observed or '?'}, threshold {threshold or '?'}")
    if resource_name:
        parts.append(f"resource: {_clip(resource_name, MAX_LINE)}")
    if condition and condition != name:
        parts.append(f"condition: {_clip(condition, MAX_LINE)}")
    docs = _documentation(incident.get("documentation"))
    if docs:
        parts.append(_clip(docs, 800))
    summary = _clip("\n".join(parts) or f"Cloud Monitoring incident {incident_id} is {state}", MAX_SUMMARY)
    links: list[tuple[str, str]] = []
    _add_link(links, "Cloud Monitoring", url)
    spec = AlertSpec(
        key=f"gcp:{intake.name}:{_clip(incident_id, 200)}",
        alert=name,
        severity=severity,
        policy=intake.escalation,
        summary=summary,
        labels=_bounded_labels(labels),
        source="cloud_monitoring",
        runbook_url=_runbook(name, runbook_url),
        links=tuple(links),
        group=None,
        extra={"intake": intake.name},
    )
    return ExternalAlert(spec, state == "open")


def _documentation(raw: Any) -> str:
    """The policy's documentation: a string (older payloads) or ``{content, mime_type, subject}``."""
    if raw is None:
        return ""
    if isinstance(raw, str):
        return " ".join(raw.split())
    doc = _mapping(raw, "incident.documentation")
    subject = _optional_str(doc, "subject", "incident.documentation")
    content = _optional_str(doc, "content", "incident.documentation")
    return " ".join(" — ".join(p for p in (subject, content) if p).split())


# -- shared --------------------------------------------------------------------------------------------


def _runbook(name: str, runbook_url: Callable[[str], str]) -> str:
    # Only a plain file name is looked up: an alert name from outside never becomes a path elsewhere.
    own = runbook_url(name) if _SAFE_NAME.fullmatch(name) and ".." not in name else ""
    return own or runbook_url(FALLBACK_RUNBOOK)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise IntakeError(f"{where}: expected a JSON object, got {_kind(value)}")
    return value


def _required_str(doc: Mapping[str, Any], key: str, where: str) -> str:
    path = f"{where}.{key}" if where else key
    if key not in doc or doc[key] is None:
        raise IntakeError(f"{path}: missing")
    value = doc[key]
    if not isinstance(value, str):
        raise IntakeError(f"{path}: expected a string, got {_kind(value)}")
    if not value.strip():
        raise IntakeError(f"{path}: empty")
    return value


def _optional_str(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        path = f"{where}.{key}" if where else key
        raise IntakeError(f"{path}: expected a string, got {_kind(value)}")
    return value


def _scalar(value: Any, where: str) -> str:
    """A value shown as text: Cloud Monitoring sends numbers as strings, but a number is fine too."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise IntakeError(f"{where}: expected a string or a number, got {_kind(value)}")
    return _clip(str(value), 60)


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    doc = _mapping(value, where)
    out: dict[str, str] = {}
    for k, v in doc.items():
        if not isinstance(v, str):
            raise IntakeError(f"{where}.{_clip(str(k), 60)}: expected a string, got {_kind(v)}")
        out[str(k)] = v
    return out


def _bounded_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """At most ``MAX_LABELS`` labels (by name), names and values clipped: a page and a silence matcher
    stay readable whatever the source sends."""
    return {
        _clip(k, MAX_LABEL_NAME): _clip(v, MAX_LABEL_VALUE)
        for k, v in sorted(labels.items())[:MAX_LABELS]
        if k
    }


def _add_link(links: list[tuple[str, str]], text: str, url: str) -> None:
    url = url.strip()
    if (
        url.lower().startswith(("http://", "https://"))
        and len(url) <= 2000
        and not any(c.isspace() for c in url)
    ):
        links.append((text, url))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
