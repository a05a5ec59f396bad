"""From signals to pages, and the escalation chain.

Incidents change state by compare-and-set in the store; every page a change causes is written to the outbox
*in the same transaction* (``transition_incident(..., outbox=...)``), deduplicated by incident version. So:
two replicas sharing a PostgreSQL store never page twice for one change (one wins the compare-and-set), and
a crash at any point never leaves a change without its pages or pages without their change.

Escalation timers live in the incident itself (``next_escalation_at``, ``next_repeat_at``,
``ack_expires_at``): ``tick`` reads the open incidents once and makes every change that is due, each its own
compare-and-set. After a restart, even a SIGKILL, the next tick finds the same timers and acts on time.

Lifecycle: firing → acknowledged → resolved (and acknowledged → firing again when the acknowledgement times
out). ``info`` alerts are recorded and posted to the first level without escalating; ``warning`` starts at
L1 and escalates level by level while unacknowledged (each level's ``ack_within``); ``critical`` also pages
the policy's ``critical_pages_immediately`` level at once. While unacknowledged the level reached is paged
again every ``repeat_every``. Muted alerts (a silence, a maintenance window, or inhibition by the alert that
explains them) are recorded and not paged; an alert that fires again within the policy's ``flap_window``
of resolving continues its incident's thread, marked flapping, instead of paging afresh.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from watchdog.config.alerts import EscalationPolicy, MaintenanceWindow, ProbeAlert, SloAlert
from watchdog.config.loader import WatchdogConfig
from watchdog.core.clock import Clock
from watchdog.core.durations import format_duration
from watchdog.core.labels import labels_match
from watchdog.core.results import Outcome, ProbeResult
from watchdog.incidents.silences import Mute, Silence, SilenceBook, active_window, identity, mute_for
from watchdog.notify.base import NOTIFY_TOPIC
from watchdog.store.base import (
    Incident,
    IncidentStore,
    OutboxEntry,
    OutboxStore,
    RecordStore,
    ResultReader,
)

_log = logging.getLogger("watchdog.incidents.manager")

FIRING = "firing"
ACKNOWLEDGED = "acknowledged"
RESOLVED = "resolved"
OPEN_STATES = (FIRING, ACKNOWLEDGED)
FLAPPING_AFTER = 3
"""Re-fires within the flap window after which the incident's pages say it is flapping."""
CAS_RETRIES = 5


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

    @property
    def burn_rates(self) -> Mapping[str, float]: ...

    @property
    def rules(self) -> tuple[str, ...]:
        """The rules firing (``page-1h-5m``...)."""
        ...


@dataclass(frozen=True, slots=True)
class Transition:
    key: str
    state: str
    version: int
    event: str = ""


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """One alert as the incident layer sees it, whatever raised it (an SLO, a probe, Alertmanager...)."""

    key: str
    alert: str
    severity: str
    policy: str
    summary: str
    labels: Mapping[str, str] = field(default_factory=dict)
    source: str = "watchdog"
    runbook_url: str = ""
    links: tuple[tuple[str, str], ...] = ()
    budget_left: str = ""
    group: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Source-specific data kept on the incident (e.g. the SLO burn tier)."""


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an acknowledge/resolve/silence did: ``status`` is ``done``, ``unchanged`` (already so),
    ``not_found`` or ``conflict`` (e.g. acknowledging a resolved incident)."""

    status: str
    message: str
    incident: Incident | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("done", "unchanged")


class AlertStore(IncidentStore, OutboxStore, RecordStore, ResultReader, Protocol):
    """The store roles incident handling uses: incidents (compare-and-set), the outbox, records
    (silences), recent results."""


def _span(seconds: float) -> str:
    """A wait as config spells it: ``30m``, ``2h30m``."""
    return format_duration(max(0, round(seconds)))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _percent(share: float) -> str:
    """Budget left as people read it: "62 %", or "none (overspent 14x)" past exhaustion."""
    if share < 0:
        return f"none (overspent {1 - share:.3g}x)"
    return f"{share * 100:.3g} %"


class _Fields(dict[str, str]):
    """format_map values; a field the alert kind lacks reads as ``?`` rather than failing the page."""

    def __missing__(self, key: str) -> str:
        return "?"


class IncidentManager:
    def __init__(self, config: WatchdogConfig, store: AlertStore, clock: Clock) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self.silences = SilenceBook(store)
        self._policies = {p.name: p for p in config.escalation}
        self._slo_alerts = [a for a in config.alerts if isinstance(a, SloAlert)]
        self._probe_alerts = [a for a in config.alerts if isinstance(a, ProbeAlert)]
        self._rule_rates = {(s.name, r.rule_id): r.burn_rate for s in config.slos for r in s.alerts}
        self._no_data_tier = {s.name: s.no_data_severity for s in config.slos}
        # inhibited alert → the alerts that explain it (with the rule's reason)
        self._inhibitors: dict[str, list[tuple[str, str]]] = {}
        self._inhibit_grace: dict[tuple[str, str], float] = {}
        self._source_resolved_at: dict[str, float] = {}
        """Inhibiting alerts → when this manager last resolved one (``_recently_inhibited``)."""
        """(target, source) → how long the target stays muted after the source resolves."""
        for rule in config.inhibit:
            for target in rule.targets:
                self._inhibitors.setdefault(target, []).append((rule.source, rule.reason or rule.name))
                grace = self._inhibit_grace.get((target, rule.source), 0.0)
                self._inhibit_grace[(target, rule.source)] = max(grace, rule.grace)
        self._announced: set[str] = set()
        self.on_enqueued: Callable[[], None] | None = None
        """Called (on the daemon's loop) after a change put pages in the outbox: the daemon wakes its
        dispatcher, so a page decided outside the evaluation (a button, the API, an intake) goes out now."""

    # -- queries -------------------------------------------------------------------------------------
    async def get(self, key: str) -> Incident | None:
        return await self._store.get_incident(key)

    async def list_incidents(self, states: Sequence[str] | None = None) -> list[Incident]:
        return await self._store.list_incidents(states)

    def policy(self, name: str) -> EscalationPolicy | None:
        return self._policies.get(name)

    def runbook_url(self, alert: str) -> str:
        """Where ``alert``'s runbook is published (``runbook_base_url``) or its local path; "" when the config
        has no ``runbooks/<alert>.md``, so callers can fall back (external alerts use ``external-alert``)."""
        path = self._config.runbooks.get(alert)
        if path is None and "/" not in alert and not alert.startswith("."):
            candidate = self._config.root / "runbooks" / f"{alert}.md"
            path = candidate if candidate.is_file() else None
        if path is None:
            return ""
        base = self._config.settings.runbook_base_url
        return f"{base.rstrip('/')}/{alert}.md" if base else str(path.resolve())

    async def open_slo_incidents(self) -> list[tuple[str, str]]:
        """(slo, "page" | "ticket" | "no_data") pairs whose incidents are open, so a restarted engine
        resolves them instead of forgetting them."""
        open_keys = {i.key for i in await self._store.list_incidents(list(OPEN_STATES))}
        pairs: list[tuple[str, str]] = []
        for alert in self._slo_alerts:
            if _incident_key(alert.name) in open_keys:
                pairs.append((alert.slo, alert.burn))
            if _incident_key(alert.name, "no_data") in open_keys:
                pairs.append((alert.slo, "no_data"))
        return pairs

    # -- signals in ----------------------------------------------------------------------------------
    async def handle_slo_signals(
        self, signals: Sequence[SloSignal], budget_left: Mapping[str, float] | None = None
    ) -> list[Transition]:
        """``budget_left``: each SLO's error budget remaining (a share, 0.62), shown on its pages."""
        done: list[Transition] = []
        for signal in signals:
            for alert in self._slo_alerts:
                if alert.slo != signal.slo:
                    continue
                no_data = signal.reason == "no_data"
                # A no-data signal goes to every alert of its SLO; a burn-rate one to its tier's alerts.
                if not no_data and alert.burn != signal.severity:
                    continue
                key = _incident_key(alert.name, "no_data" if no_data else "")
                left = (budget_left or {}).get(alert.slo)
                left_text = _percent(left) if left is not None and math.isfinite(left) else ""
                if signal.state != "firing":
                    moved = await self.clear(key, signal.summary)
                else:
                    rates = list(signal.burn_rates.values())
                    value = "no data" if no_data else (f"{max(rates):.3g}×" if rates else "?")
                    # The threshold of the rule that fired (14.4× for the 1 h rule, 6× for the 6 h one).
                    rule_rates = self._rule_rates
                    fired = [rule_rates[(alert.slo, r)] for r in signal.rules if (alert.slo, r) in rule_rates]
                    fields = _Fields(
                        slo=alert.slo,
                        value=value,
                        threshold=f"{min(fired):g}×" if fired else "?",
                        budget_left=left_text or "?",
                        detail=signal.summary,
                    )
                    summary = self._summary(alert.summary, fields, signal.summary)
                    spec = self._spec(alert, key, summary, {"slo": alert.slo}, "slo", left_text)
                    if no_data and self._no_data_tier.get(alert.slo) == "ticket":
                        # Missing data is the SLO's no_data_severity, not the alert's: a ticket, not a page.
                        spec = replace(spec, severity="info")
                    moved = await self.fire(spec)
                if moved:
                    done.append(moved)
        return done

    async def evaluate_probe_alerts(self) -> list[Transition]:
        done: list[Transition] = []
        now = self._clock.now()
        for alert in self._probe_alerts:
            limit = max(50, (alert.min_failures + alert.min_successes) * 4)
            recent = await self._store.recent(alert.probe, limit=limit)
            key = _incident_key(alert.name)
            current = await self._store.get_incident(key)
            was_open = current is not None and current.state in OPEN_STATES
            firing, value, reason, detail = _probe_alert_state(alert, recent, now, was_open)
            if firing:
                fields = _Fields(
                    probe=alert.probe,
                    value=str(value),
                    threshold=str(alert.min_failures),
                    reason=reason,
                    labels=" ".join(f"{k}={v}" for k, v in sorted(alert.match.items())),
                    detail=detail,
                )
                summary = self._summary(alert.summary, fields, detail)
                moved = await self.fire(self._spec(alert, key, summary, {"probe": alert.probe}, "probe", ""))
            elif was_open:
                moved = await self.clear(key, detail)
            else:
                moved = None
            if moved:
                done.append(moved)
        return done

    def _summary(self, template: str, fields: _Fields, detail: str) -> str:
        if not template:
            return detail
        text = template.format_map(fields)
        # A template that says nothing of the details still gets the engine's sentence after it.
        return text if "{detail}" in template or "{reason}" in template else f"{text} {detail}".strip()

    def _spec(
        self,
        alert: SloAlert | ProbeAlert,
        key: str,
        summary: str,
        labels: Mapping[str, str],
        source: str,
        budget_left: str,
    ) -> AlertSpec:
        extra = {"burn": alert.burn} if isinstance(alert, SloAlert) else {}
        return AlertSpec(
            key=key,
            alert=alert.name,
            severity=alert.severity,
            policy=alert.escalation,
            summary=summary,
            labels={**labels, **alert.labels},
            source=source,
            runbook_url=self.runbook_url(alert.name),
            budget_left=budget_left,
            group=alert.group,
            extra=extra,
        )

    # -- firing and resolving ------------------------------------------------------------------------
    async def fire(self, spec: AlertSpec, *, update_note: str = "") -> Transition | None:
        """Open an incident for ``spec`` (or continue a flapping one). An incident already open is left as
        it is, unless ``update_note`` says what changed (e.g. more alerts in an Alertmanager group): then its
        summary is updated and the note posted in its thread."""
        for _ in range(CAS_RETRIES):
            now = self._clock.now()
            current = await self._store.get_incident(spec.key)
            if current is not None and current.state in OPEN_STATES:
                if not update_note or current.data.get("summary") == spec.summary:
                    return None
                data = {**current.data, "summary": spec.summary, "links": [list(x) for x in spec.links]}
                outbox = self._notes(spec.key, current.version + 1, data, current.state, "note", update_note)
                moved = await self._cas(current, current.state, data, now, outbox, "note")
            else:
                moved = await self._open(spec, current, now)
            if moved is not None:
                return moved
        _log.warning("incident %s: gave up after %d concurrent updates", spec.key, CAS_RETRIES)
        return None

    async def _open(self, spec: AlertSpec, current: Incident | None, now: float) -> Transition | None:
        policy = self._policies.get(spec.policy)
        mute, inhibit_ended_at = await self._mute(spec.alert, spec.labels, now)
        version = 1 if current is None else current.version + 1
        resolved_at = float(current.data.get("resolved_at") or 0) if current is not None else 0.0
        flap_window = policy.flap_window if policy is not None else 0.0
        base = {
            "alert": spec.alert,
            "severity": spec.severity,
            "policy": spec.policy,
            "summary": spec.summary,
            "labels": dict(spec.labels),
            "source": spec.source,
            "runbook_url": spec.runbook_url,
            "links": [list(x) for x in spec.links],
            "budget_left": spec.budget_left,
            "group": spec.group,
            "muted_by": mute.to_dict() if mute else None,
            # Muted by a source that has already resolved: its grace runs from then.
            "inhibit_ended_at": inhibit_ended_at,
            "acked_by": "",
            "acked_at": None,
            "ack_expires_at": None,
            "resolved_at": None,
            "resolved_by": "",
            **spec.extra,
        }
        if (
            current is not None
            and resolved_at
            and now - resolved_at < flap_window
            and current.data.get("paged")
        ):
            # Flapping: same episode and thread; the levels already paged hear of it in the thread.
            flaps = [t for t in current.data.get("flaps", []) if now - float(t) < flap_window] + [now]
            data = {**current.data, **base, "flaps": flaps, "muted": current.data.get("muted", [])}
            data.update(self._timers(policy, spec.severity, int(data.get("level", 0)), now))
            note = "fired again" + (
                f" (flapping: {len(flaps)} times in {_span(flap_window)})"
                if len(flaps) >= FLAPPING_AFTER
                else ""
            )
            outbox = [] if mute else self._notes(spec.key, version, data, FIRING, "refired", note)
            return await self._cas(current, FIRING, data, now, outbox, "refired")
        levels = [] if mute else _levels_to_page(policy, spec.severity)
        level_index = _index_of(policy, levels[-1]) if levels else 0
        thread = await self._thread_for(spec, version)
        data = {
            **base,
            "since": now,
            "episode": version,
            "thread": thread,
            "level": level_index,
            "paged": levels,
            "flaps": [],
            "muted": [],
        }
        data.update(self._timers(policy, spec.severity, level_index, now) if levels else _no_timers())
        outbox = []
        for level in levels:
            outbox.append(
                self._page_entry(spec.key, version, data, FIRING, "fired", level, _targets(policy, [level]))
            )
        moved = await self._cas(current, FIRING, data, now, outbox, "fired", key=spec.key)
        if moved is not None and mute is not None and mute.kind == "inhibited":
            await self._note_muted(mute.name, spec.alert)
        return moved

    async def clear(self, key: str, summary: str, *, actor: str = "") -> Transition | None:
        """Resolve the incident if it is open (the alert stopped firing, or someone resolved it)."""
        for _ in range(CAS_RETRIES):
            now = self._clock.now()
            current = await self._store.get_incident(key)
            if current is None or current.state not in OPEN_STATES:
                return None
            data = {**current.data, "resolved_at": now, "resolved_by": actor, **_no_timers()}
            if summary:
                data["resolution"] = summary
            lasted = _span(now - float(current.data.get("since", now)))
            note = f"resolved by {actor}" if actor else f"resolved after {lasted}"
            outbox = self._notes(key, current.version + 1, data, RESOLVED, "resolved", note, actor=actor)
            moved = await self._cas(current, RESOLVED, data, now, outbox, "resolved")
            if moved is not None:
                alert = str(current.data.get("alert", ""))
                if any(alert == src for sources in self._inhibitors.values() for src, _ in sources):
                    self._source_resolved_at[alert] = now
                return moved
        return None

    # -- actions (Slack buttons, CLI, HTTP API) --------------------------------------------------------
    async def acknowledge(self, key: str, actor: str) -> ActionResult:
        for _ in range(CAS_RETRIES):
            now = self._clock.now()
            current = await self._store.get_incident(key)
            if current is None:
                return ActionResult("not_found", f"no incident {key!r}")
            if current.state == RESOLVED:
                return ActionResult("conflict", f"{key} is already resolved", current)
            if current.state == ACKNOWLEDGED:
                by = current.data.get("acked_by") or "someone"
                return ActionResult("unchanged", f"{key} was already acknowledged by {by}", current)
            policy = self._policies.get(str(current.data.get("policy", "")))
            timeout = policy.ack_timeout if policy is not None else None
            data = {
                **current.data,
                "acked_by": actor,
                "acked_at": now,
                "ack_expires_at": now + timeout if timeout else None,
                "next_escalation_at": None,
                "next_repeat_at": None,
            }
            note = f"acknowledged by {actor}" + (f" for {_span(timeout)}" if timeout else "")
            outbox = self._notes(
                key, current.version + 1, data, ACKNOWLEDGED, "acknowledged", note, actor=actor
            )
            moved = await self._cas(current, ACKNOWLEDGED, data, now, outbox, "acknowledged")
            if moved is not None:
                incident = await self._store.get_incident(key)
                return ActionResult("done", note, incident)
        return ActionResult("conflict", f"{key} is changing too fast; try again")

    async def resolve(self, key: str, actor: str) -> ActionResult:
        current = await self._store.get_incident(key)
        if current is None:
            return ActionResult("not_found", f"no incident {key!r}")
        if current.state == RESOLVED:
            return ActionResult("unchanged", f"{key} is already resolved", current)
        moved = await self.clear(key, "", actor=actor)
        incident = await self._store.get_incident(key)
        if moved is None:
            return ActionResult("unchanged", f"{key} is already resolved", incident)
        return ActionResult("done", f"resolved by {actor}", incident)

    async def silence_incident(
        self, key: str, duration_s: float, actor: str, reason: str = ""
    ) -> ActionResult:
        """Silence this incident's alert (its name and labels) for ``duration_s``."""
        current = await self._store.get_incident(key)
        if current is None:
            return ActionResult("not_found", f"no incident {key!r}")
        labels = {str(k): str(v) for k, v in dict(current.data.get("labels") or {}).items()}
        matchers = identity(str(current.data.get("alert", "")), labels)
        now = self._clock.now()
        for existing in await self.silences.all():
            # A double click (or a replayed request) finds the silence the first click made.
            covers = existing.ends_at >= now + duration_s - 60
            if existing.active(now) and dict(existing.matchers) == matchers and covers:
                incident = await self._store.get_incident(key)
                message = f"already silenced until {_iso(existing.ends_at)} ({existing.id})"
                return ActionResult("unchanged", message, incident)
        silence = await self.silences.add(
            matchers,
            starts_at=now,
            ends_at=now + duration_s,
            author=actor,
            reason=reason or f"silenced from incident {key}",
            now=now,
        )
        await self.tick()
        incident = await self._store.get_incident(key)
        return ActionResult(
            "done", f"silenced for {_span(duration_s)} by {actor} ({silence.id})", incident
        )

    async def add_silence(
        self, matchers: Mapping[str, str], duration_s: float, author: str, reason: str
    ) -> Silence:
        now = self._clock.now()
        silence = await self.silences.add(
            matchers, starts_at=now, ends_at=now + duration_s, author=author, reason=reason, now=now
        )
        await self.tick()
        return silence

    async def remove_silence(self, silence_id: str) -> bool:
        removed = await self.silences.remove(silence_id)
        if removed:
            await self.tick()
        return removed

    # -- the timers ----------------------------------------------------------------------------------
    async def tick(self) -> list[Transition]:
        """Make every change that is due: escalations, repeats, acknowledgements that timed out, alerts
        muted or unmuted by silences, maintenance windows and inhibition; announce maintenance windows."""
        now = self._clock.now()
        await self._announce_maintenance(now)
        open_incidents = await self._store.list_incidents(list(OPEN_STATES))
        if not open_incidents:
            return []
        silences = [s for s in await self.silences.all() if s.active(now)]
        windows = active_window(self._config.maintenance, now)
        open_alerts = {str(i.data.get("alert")) for i in open_incidents if _can_inhibit(i)}
        done: list[Transition] = []
        for incident in open_incidents:
            moved = await self._step(incident, now, silences, windows, open_alerts)
            if moved is not None:
                done.append(moved)
        return done

    async def _step(
        self,
        incident: Incident,
        now: float,
        silences: Sequence[Silence],
        windows: Sequence[MaintenanceWindow],
        open_alerts: set[str],
    ) -> Transition | None:
        data = dict(incident.data)
        alert = str(data.get("alert", ""))
        labels = {str(k): str(v) for k, v in dict(data.get("labels") or {}).items()}
        policy = self._policies.get(str(data.get("policy", "")))
        severity = str(data.get("severity", "warning"))
        mute = mute_for(identity(alert, labels), silences, windows, now) or self._inhibited(
            alert, open_alerts
        )
        muted_by = data.get("muted_by")
        version = incident.version + 1
        key = incident.key
        if mute is not None:
            if muted_by == mute.to_dict():
                if data.get("inhibit_ended_at") is None:
                    return None
                data["inhibit_ended_at"] = None  # the source fires again: no grace running
                return await self._cas(incident, incident.state, data, now, [], "")
            data.update(muted_by=mute.to_dict(), inhibit_ended_at=None, **_no_timers())
            outbox = self._notes(key, version, data, incident.state, "muted", f"muted: {mute.describe()}")
            return await self._cas(incident, incident.state, data, now, outbox, "muted")
        if muted_by:
            note = ""
            if not data.get("paged") and isinstance(muted_by, dict) and muted_by.get("kind") == "inhibited":
                # Muted from the start by an alert that has resolved: its errors are still in this alert's
                # windows, so wait out the rule's grace before calling it a fault of its own.
                source = str(muted_by.get("name", ""))
                grace = self._inhibit_grace.get((alert, source), 0.0)
                ended = data.get("inhibit_ended_at")
                if ended is None and grace > 0:
                    data["inhibit_ended_at"] = now
                    return await self._cas(incident, incident.state, data, now, [], "")
                if ended is not None and now - float(ended) < grace:
                    return None
                if grace > 0:
                    note = f"still firing {format_duration(grace)} after {source} resolved"
            data["muted_by"] = None
            data["inhibit_ended_at"] = None
            if not data.get("paged"):
                # Never paged (muted from the start): page it now, as it would have been.
                levels = _levels_to_page(policy, severity)
                data.update(paged=levels, level=_index_of(policy, levels[-1]), since=data.get("since", now))
                data.update(self._timers(policy, severity, int(data["level"]), now))
                outbox = [
                    self._page_entry(
                        key, version, data, incident.state, "fired", lv, _targets(policy, [lv]), note
                    )
                    for lv in levels
                ]
                return await self._cas(incident, incident.state, data, now, outbox, "fired")
            if incident.state == FIRING:
                data.update(self._timers(policy, severity, int(data.get("level", 0)), now))
            why = (
                Mute(**muted_by).describe()
                if isinstance(muted_by, dict) and set(muted_by) == {"kind", "name", "reason"}
                else "the mute"
            )
            outbox = self._notes(
                key, version, data, incident.state, "unmuted", f"{why} ended; paging resumes"
            )
            return await self._cas(incident, incident.state, data, now, outbox, "unmuted")
        if policy is None:
            return None
        if incident.state == ACKNOWLEDGED:
            expires = data.get("ack_expires_at")
            if expires is None or now < float(expires):
                return None
            level = int(data.get("level", 0))
            data.update(acked_by="", acked_at=None, ack_expires_at=None)
            data.update(self._timers(policy, severity, level, now))
            name = policy.levels[level].level
            note = (
                f"the acknowledgement by {incident.data.get('acked_by') or 'someone'} timed out; still firing"
            )
            entry = self._page_entry(
                key, version, data, FIRING, "reopened", name, _targets(policy, [name]), note
            )
            outbox = [entry, *self._notes(key, version, data, FIRING, "note", note, skip_level=name)]
            return await self._cas(incident, FIRING, data, now, outbox, "reopened")
        next_escalation = data.get("next_escalation_at")
        if next_escalation is not None and now >= float(next_escalation):
            level = int(data.get("level", 0))
            if level + 1 >= len(policy.levels):
                data["next_escalation_at"] = None
                return await self._cas(incident, FIRING, data, now, [], "")
            previous = policy.levels[level]
            nxt = policy.levels[level + 1]
            waited = _span(now - float(data.get("level_paged_at", data.get("since", now))))
            note = f"escalated to {nxt.level} ({nxt.who}): not acknowledged for {waited}"
            paged = (
                [*data.get("paged", []), nxt.level]
                if nxt.level not in data.get("paged", [])
                else list(data["paged"])
            )
            data.update(level=level + 1, paged=paged)
            data.update(self._timers(policy, severity, level + 1, now))
            entry = self._page_entry(
                key, version, data, FIRING, "escalated", nxt.level, _targets(policy, [nxt.level]), note
            )
            notes = self._notes(key, version, data, FIRING, "note", note, skip_level=nxt.level)
            _log.warning("incident %s escalated %s → %s", key, previous.level, nxt.level)
            return await self._cas(incident, FIRING, data, now, [entry, *notes], "escalated")
        next_repeat = data.get("next_repeat_at")
        if next_repeat is not None and now >= float(next_repeat) and policy.repeat_every:
            reached = policy.levels[int(data.get("level", 0))].level
            data["next_repeat_at"] = now + policy.repeat_every
            data["repeats"] = int(data.get("repeats", 0)) + 1
            note = f"still firing and not acknowledged (reminder {data['repeats']})"
            entry = self._page_entry(
                key, version, data, FIRING, "repeat", reached, _targets(policy, [reached]), note
            )
            return await self._cas(incident, FIRING, data, now, [entry], "repeat")
        return None

    def _timers(
        self, policy: EscalationPolicy | None, severity: str, level: int, now: float
    ) -> dict[str, Any]:
        """The escalation and repeat timers from paging level ``level`` (an index) at ``now``."""
        if policy is None or severity == "info":
            return {**_no_timers(), "level_paged_at": now}
        ack_within = policy.levels[level].ack_within if level < len(policy.levels) else None
        has_next = level + 1 < len(policy.levels)
        return {
            "next_escalation_at": now + ack_within if ack_within and has_next else None,
            "next_repeat_at": now + policy.repeat_every if policy.repeat_every else None,
            "level_paged_at": now,
        }

    # -- muting --------------------------------------------------------------------------------------
    async def _mute(
        self, alert: str, labels: Mapping[str, str], now: float
    ) -> tuple[Mute | None, float | None]:
        """What mutes a firing alert now, and when its inhibiting source resolved if it already has."""
        silences = [s for s in await self.silences.all() if s.active(now)]
        mute = mute_for(identity(alert, labels), silences, self._config.maintenance, now)
        if mute is not None or alert not in self._inhibitors:
            return mute, None
        open_alerts = {
            str(i.data.get("alert"))
            for i in await self._store.list_incidents(list(OPEN_STATES))
            if _can_inhibit(i)
        }
        mute = self._inhibited(alert, open_alerts)
        if mute is not None:
            return mute, None
        return self._recently_inhibited(alert, now)

    def _recently_inhibited(self, alert: str, now: float) -> tuple[Mute | None, float | None]:
        """A source of this alert that resolved less than its grace ago: an alert first firing now is most
        likely still its errors leaving the windows (``InhibitRule.grace``). Known to the manager that
        resolved it (the leader); a new leader knows only what it resolves itself."""
        for source, reason in self._inhibitors.get(alert, []):
            at = self._source_resolved_at.get(source)
            if at is not None and source != alert and now - at < self._inhibit_grace.get((alert, source), 0):
                return Mute("inhibited", source, reason), at
        return None, None

    def _inhibited(self, alert: str, open_alerts: set[str]) -> Mute | None:
        for source, reason in self._inhibitors.get(alert, []):
            if source in open_alerts and source != alert:
                return Mute("inhibited", source, reason)
        return None

    async def _note_muted(self, source_alert: str, muted_alert: str) -> None:
        """Tell the inhibiting incident's thread which alert it muted (best effort)."""
        for _ in range(CAS_RETRIES):
            source = next(
                (
                    i
                    for i in await self._store.list_incidents(list(OPEN_STATES))
                    if i.data.get("alert") == source_alert
                ),
                None,
            )
            if source is None or muted_alert in source.data.get("muted", []):
                return
            data = {**source.data, "muted": [*source.data.get("muted", []), muted_alert]}
            note = f"muted {muted_alert}: explained by this incident"
            outbox = self._notes(source.key, source.version + 1, data, source.state, "note", note)
            if await self._cas(source, source.state, data, self._clock.now(), outbox, "note") is not None:
                return

    # -- maintenance ---------------------------------------------------------------------------------
    async def _announce_maintenance(self, now: float) -> None:
        for window in self._config.maintenance:
            if window.announce is None:
                continue
            start, end = window.start.timestamp(), window.end.timestamp()
            if start <= now < end:
                event, note = (
                    "start",
                    f"maintenance {window.name} started: {window.reason}; until {_iso(end)}",
                )
            elif end <= now < end + 86400:
                event, note = "end", f"maintenance {window.name} ended: alerts matching it page again"
            else:
                continue
            dedup = f"maintenance:{window.name}:{start:.0f}:{event}"
            if dedup in self._announced:
                continue
            policy = self._policies.get(window.announce)
            first = policy.levels[0].level if policy else "L1"
            payload = {
                "key": f"maintenance:{window.name}",
                "title": f"maintenance {window.name}",
                "severity": "info",
                "state": "resolved" if event == "end" else "firing",
                "summary": note,
                "labels": dict(window.match),
                "level": first,
                "targets": [t.model_dump() for t in _targets(policy, [first])],
                "since": _iso(start),
                "event": "maintenance",
                "actions": False,
            }
            await self._store.enqueue(NOTIFY_TOPIC, payload, dedup, now)
            self._announced.add(dedup)

    # -- pages ---------------------------------------------------------------------------------------
    async def _cas(
        self,
        current: Incident | None,
        state: str,
        data: Mapping[str, Any],
        now: float,
        outbox: Sequence[OutboxEntry],
        event: str,
        key: str = "",
    ) -> Transition | None:
        incident = await self._store.transition_incident(
            current.key if current is not None else key,
            None if current is None else current.version,
            state,
            data,
            now,
            outbox,
        )
        if incident is None:
            return None  # another replica made this change; it pages, we do not
        if outbox and self.on_enqueued is not None:
            self.on_enqueued()
        if event in ("fired", "resolved", "refired", "acknowledged", "reopened"):
            _log.warning(
                "incident %s %s",
                incident.key,
                event,
                extra={
                    "incident": incident.key,
                    "state": state,
                    "severity": data.get("severity"),
                    "event": event,
                },
            )
        return Transition(incident.key, state, incident.version, event)

    def _page_entry(
        self,
        key: str,
        version: int,
        data: Mapping[str, Any],
        state: str,
        event: str,
        level: str,
        targets: Sequence[Any],
        note: str = "",
        actor: str = "",
    ) -> OutboxEntry:
        payload = {
            "key": key,
            "title": data.get("alert", key),
            "severity": data.get("severity", "warning"),
            "state": state,
            "summary": data.get("summary", ""),
            "runbook_url": data.get("runbook_url", ""),
            "labels": dict(data.get("labels") or {}),
            "level": level,
            "targets": [t.model_dump() if hasattr(t, "model_dump") else dict(t) for t in targets],
            "since": _iso(float(data.get("since") or self._clock.now())),
            "event": event,
            "note": note,
            "actor": actor,
            "budget_left": data.get("budget_left", ""),
            "links": list(data.get("links") or []),
            "muted": list(data.get("muted") or []),
            "acked_by": data.get("acked_by", ""),
            "thread": data.get("thread", ""),
            "actions": state != RESOLVED,
        }
        return OutboxEntry(NOTIFY_TOPIC, payload, f"{key}:v{version}:{level}:{event}")

    def _notes(
        self,
        key: str,
        version: int,
        data: Mapping[str, Any],
        state: str,
        event: str,
        note: str,
        *,
        actor: str = "",
        skip_level: str | None = None,
    ) -> list[OutboxEntry]:
        """A follow-up to every level already paged (into their threads), one outbox item per level."""
        policy = self._policies.get(str(data.get("policy", "")))
        entries = []
        for level in data.get("paged", []):
            if level == skip_level:
                continue
            targets = _targets(policy, [level])
            entries.append(self._page_entry(key, version, data, state, event, level, targets, note, actor))
        return entries

    async def _thread_for(self, spec: AlertSpec, version: int) -> str:
        """The thread an incident's pages go to: its group's open thread, if a member of its group is open;
        else its own."""
        if spec.group:
            for other in await self._store.list_incidents(list(OPEN_STATES)):
                if (
                    other.key != spec.key
                    and other.data.get("group") == spec.group
                    and other.data.get("thread")
                ):
                    return str(other.data["thread"])
            return f"group:{spec.group}:{spec.key}@{version}"
        return f"{spec.key}@{version}"


def _can_inhibit(incident: Incident) -> bool:
    """An open incident mutes the alerts it explains unless it is itself inhibited (a chain would mute
    everything). A silenced one still does, as in Alertmanager: silencing the root cause must not start
    paging its symptoms."""
    muted_by = incident.data.get("muted_by")
    return not (isinstance(muted_by, dict) and muted_by.get("kind") == "inhibited")


def _no_timers() -> dict[str, Any]:
    return {"next_escalation_at": None, "next_repeat_at": None}


def _incident_key(alert: str, variant: str = "") -> str:
    return f"alert:{alert}:{variant}" if variant else f"alert:{alert}"


def _index_of(policy: EscalationPolicy | None, level: str) -> int:
    if policy is None:
        return 0
    for i, lv in enumerate(policy.levels):
        if lv.level == level:
            return i
    return 0


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


def _targets(policy: EscalationPolicy | None, levels: Sequence[str]) -> list[Any]:
    if policy is None:
        return []
    return [t for lv in policy.levels if lv.level in levels for t in lv.notify]


def _probe_alert_state(
    alert: ProbeAlert, recent: Sequence[ProbeResult], now: float, was_open: bool
) -> tuple[bool, int, str, str]:
    """(firing, failures in a row, reason, sentence). Fires when some series of the probe has failed at
    least ``min_failures`` times in a row, the streak having lasted ``for``. An open alert stays open until
    every series it watches has ``min_successes`` good results in a row."""
    by_series: dict[tuple[tuple[str, str], ...], list[ProbeResult]] = {}
    for r in recent:  # newest first
        if labels_match(r.labels, alert.match):
            by_series.setdefault(tuple(sorted(r.labels.items())), []).append(r)
    bad = {Outcome.FAILED, Outcome.DEGRADED} if alert.degraded_counts else {Outcome.FAILED}
    recovering = False
    for results in by_series.values():
        streak: list[ProbeResult] = []
        for r in results:
            if r.outcome not in bad:
                break
            streak.append(r)
        if len(streak) >= alert.min_failures and now - streak[-1].started_at >= alert.for_:
            labels = " ".join(f"{k}={v}" for k, v in sorted(streak[0].labels.items()))
            where = f" ({labels})" if labels else ""
            sentence = f"{alert.probe}{where} failed {len(streak)} times in a row: {streak[0].reason}"
            return True, len(streak), streak[0].reason, sentence
        if was_open:
            good = 0
            for r in results:
                if r.outcome in bad:
                    break
                good += 1
            if good < alert.min_successes and (streak or good < len(results)):
                recovering = True
    if recovering:
        return (
            True,
            0,
            "recovering",
            f"{alert.probe} is recovering (needs {alert.min_successes} good results in a row)",
        )
    return False, 0, "", f"{alert.probe} passes again"
