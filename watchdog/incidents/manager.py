"""From signals to pages: incidents change state by compare-and-set in the store, and only the writer that
wins a transition enqueues the page (outbox, deduplicated by incident version). Two replicas sharing a
PostgreSQL store therefore never page twice for one transition.

Escalation timers (L1 → L2 → L3 on missing acknowledgement) and acknowledgements build on these incidents.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from watchdog.config.alerts import EscalationPolicy, ProbeAlert, SloAlert
from watchdog.config.loader import WatchdogConfig
from watchdog.core.clock import Clock
from watchdog.core.labels import labels_match
from watchdog.core.results import Outcome, ProbeResult
from watchdog.notify.base import NOTIFY_TOPIC
from watchdog.store.base import IncidentStore, OutboxStore, ResultReader

_log = logging.getLogger("watchdog.incidents.manager")

FIRING = "firing"
RESOLVED = "resolved"


class SloSignal(Protocol):
    """What the SLO engine hands over (``watchdog.slo.model.AlertSignal``); a protocol, so this layer does
    not import the engine."""

    @property
    def slo(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def summary(self) -> str: ...
    @property
    def at(self) -> float: ...
    @property
    def reason(self) -> str:
        """``burn_rate`` or ``no_data``: each is its own incident, so one never resolves the other."""
        ...


@dataclass(frozen=True, slots=True)
class Transition:
    key: str
    state: str
    version: int


class AlertStore(IncidentStore, OutboxStore, ResultReader, Protocol):
    """The store roles incident handling uses: incidents (compare-and-set), the outbox, recent results."""


class IncidentManager:
    def __init__(self, config: WatchdogConfig, store: AlertStore, clock: Clock) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self._policies = {p.name: p for p in config.escalation}
        self._slo_alerts = [a for a in config.alerts if isinstance(a, SloAlert)]
        self._probe_alerts = [a for a in config.alerts if isinstance(a, ProbeAlert)]

    async def open_slo_incidents(self) -> list[tuple[str, str]]:
        """(slo, "page" | "ticket" | "no_data") pairs whose incidents are firing, so a restarted engine
        resolves them instead of forgetting them."""
        firing = {i.key for i in await self._store.list_incidents([FIRING])}
        pairs = []
        for alert in self._slo_alerts:
            if _incident_key(alert.name) in firing:
                pairs.append((alert.slo, "ticket" if alert.severity == "ticket" else "page"))
            if _incident_key(alert.name, "no_data") in firing:
                pairs.append((alert.slo, "no_data"))
        return pairs

    async def handle_slo_signals(self, signals: Sequence[SloSignal]) -> list[Transition]:
        done: list[Transition] = []
        for signal in signals:
            for alert in self._slo_alerts:
                if alert.slo != signal.slo:
                    continue
                no_data = signal.reason == "no_data"
                # A no-data signal goes to every alert of its SLO; a burn-rate signal to the alerts of its
                # severity (page/critical alerts take page signals, ticket alerts ticket signals).
                if not no_data and (alert.severity == "ticket") != (signal.severity == "ticket"):
                    continue
                state = FIRING if signal.state == "firing" else RESOLVED
                summary = f"{alert.summary} {signal.summary}".strip()
                moved = await self._transition(
                    alert, state, summary, {"slo": alert.slo}, variant="no_data" if no_data else ""
                )
                if moved:
                    done.append(moved)
        return done

    async def evaluate_probe_alerts(self) -> list[Transition]:
        done: list[Transition] = []
        now = self._clock.now()
        for alert in self._probe_alerts:
            recent = await self._store.recent(alert.probe, limit=max(50, alert.min_failures * 4))
            firing, summary = _probe_alert_state(alert, recent, now)
            moved = await self._transition(
                alert, FIRING if firing else RESOLVED, summary, {"probe": alert.probe}
            )
            if moved:
                done.append(moved)
        return done

    async def _transition(
        self,
        alert: SloAlert | ProbeAlert,
        state: str,
        summary: str,
        labels: Mapping[str, str],
        variant: str = "",
    ) -> Transition | None:
        key = _incident_key(alert.name, variant)
        current = await self._store.get_incident(key)
        if current is None and state == RESOLVED:
            return None
        if current is not None and current.state == state:
            return None
        now = self._clock.now()
        data: dict[str, Any] = {
            "alert": alert.name,
            "severity": alert.severity,
            "summary": summary,
            "labels": dict(labels),
            "since": now,
        }
        incident = await self._store.transition_incident(
            key, None if current is None else current.version, state, data, now
        )
        if incident is None:
            return None  # another replica made this transition; it pages, we do not
        # A firing page says since when it fires; a resolved one, since when it had been firing.
        fired_at = now if current is None or state == FIRING else float(current.data.get("since", now))
        await self._enqueue_pages(alert, key, state, summary, labels, incident.version, now, fired_at)
        _log.warning(
            "incident %s %s", key, state, extra={"incident": key, "state": state, "severity": alert.severity}
        )
        return Transition(key, state, incident.version)

    async def _enqueue_pages(
        self,
        alert: SloAlert | ProbeAlert,
        key: str,
        state: str,
        summary: str,
        labels: Mapping[str, str],
        version: int,
        now: float,
        fired_at: float,
    ) -> None:
        policy = self._policies.get(alert.escalation)
        levels = _levels_to_page(policy, alert.severity)
        for level in levels:
            targets = [t.model_dump() for t in level_targets(policy, level)]
            payload = {
                "key": key,
                "title": alert.name,
                "severity": alert.severity,
                "state": state,
                "summary": summary,
                "runbook_url": self.runbook_url(alert.name),
                "labels": dict(labels),
                "level": level,
                "targets": targets,
                "since": datetime.fromtimestamp(fired_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
            }
            await self._store.enqueue(NOTIFY_TOPIC, payload, f"{key}:v{version}:{level}", now)

    def runbook_url(self, alert: str) -> str:
        base = self._config.settings.runbook_base_url
        if base:
            return f"{base.rstrip('/')}/{alert}.md"
        path = self._config.runbooks.get(alert)
        return str(path.resolve()) if path else ""


def _incident_key(alert: str, variant: str = "") -> str:
    return f"alert:{alert}:{variant}" if variant else f"alert:{alert}"


def _levels_to_page(policy: EscalationPolicy | None, severity: str) -> list[str]:
    if policy is None:
        return ["L1"]
    first = policy.levels[0].level
    levels: list[str] = [first]
    if severity == "critical" and policy.critical_pages_immediately:
        extra = policy.critical_pages_immediately
        if extra != first and any(lv.level == extra for lv in policy.levels):
            levels.append(extra)
    return levels


def level_targets(policy: EscalationPolicy | None, level: str) -> list[Any]:
    if policy is None:
        return []
    for lv in policy.levels:
        if lv.level == level:
            return list(lv.notify)
    return []


def _probe_alert_state(alert: ProbeAlert, recent: Sequence[ProbeResult], now: float) -> tuple[bool, str]:
    """Firing when some series of the probe has failed at least ``min_failures`` times in a row, the
    streak having lasted ``for``. Resolves when every series' latest result is good again."""
    by_series: dict[tuple[tuple[str, str], ...], list[ProbeResult]] = {}
    for r in recent:  # newest first
        if labels_match(r.labels, alert.labels):
            by_series.setdefault(tuple(sorted(r.labels.items())), []).append(r)
    bad = {Outcome.FAILED, Outcome.DEGRADED} if alert.degraded_counts else {Outcome.FAILED}
    for results in by_series.values():
        streak: list[ProbeResult] = []
        for r in results:
            if r.outcome not in bad:
                break
            streak.append(r)
        if len(streak) >= alert.min_failures and now - streak[-1].started_at >= alert.for_:
            labels = " ".join(f"{k}={v}" for k, v in sorted(streak[0].labels.items()))
            where = f" ({labels})" if labels else ""
            return True, f"{alert.probe}{where} failed {len(streak)} times in a row: {streak[0].reason}"
    return False, f"{alert.probe} passes again"
