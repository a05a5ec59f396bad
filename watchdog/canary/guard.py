"""The canary guard: every ``check_every`` it counts the canary cohort (and the baseline) since the current
stage began, asks the sequential test whether the canary breaks its limits, and rolls the flag back to YAML
by itself on the first conclusive evidence: flip, verify by reading back, audit, page.

State lives in the store as the incident-like record ``rollout:<name>`` (compare-and-set), so two replicas
flip once: the one whose ``watching → rolling_back`` wins flips; a replica that dies mid-flip leaves
``rolling_back`` behind and the next check (any replica) retries with the same idempotency key, which the
flag backend applies at most once.

States: ``watching`` (a canary at ``percent`` > 0 is judged; at 0 there is nothing to judge), ``rolling_back``
(the flip is being made, retried with backoff; after ``FAILED_AFTER`` failed attempts a critical page
"rollback FAILED" goes out, once, and retries go on), ``rolled_back`` (held until a person releases it),
``held`` (a person changed the flag during the rollout, or released nothing yet: the guard does not fight
people; it says so and waits for ``release``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from watchdog.canary import cohorts
from watchdog.canary.cloud_run import TrafficRollback
from watchdog.canary.sequential import (
    RESTART_TIERS,
    RateEvidence,
    rate_above,
    rate_below,
    stage_alpha,
    tier_alpha,
)
from watchdog.config.rollouts import Cohort, Rollout
from watchdog.core.clock import Clock
from watchdog.core.labels import labels_match
from watchdog.core.results import Outcome
from watchdog.flags.base import FlagBackend, FlagError, FlagState
from watchdog.incidents.manager import AlertSpec, IncidentManager
from watchdog.slo.model import SloStatus
from watchdog.store.base import Incident, IncidentStore, MinuteAggregate, RecordStore, ResultReader

_log = logging.getLogger(__name__)

WATCHING = "watching"
ROLLING_BACK = "rolling_back"
ROLLED_BACK = "rolled_back"
HELD = "held"
FAILED_AFTER = 3
"""Failed flip attempts after which "rollback FAILED" pages (critical: L1 and L3 at once)."""
MAX_BACKOFF_S = 30.0
AUDIT_RECORD = "flag-audit"
ROLLED_BACK_ALERT = "canary-rolled-back"
ROLLBACK_FAILED_ALERT = "canary-rollback-failed"
HELD_ALERT = "canary-held"
RAW_LIMIT = 2000


class GuardStore(IncidentStore, ResultReader, RecordStore, Protocol):
    """The rollout record (compare-and-set), the cohorts' results, the audit trail."""


@dataclass(frozen=True, slots=True)
class Counts:
    events: int = 0
    failed: int = 0
    slow: int = 0
    last_at: float | None = None
    as_of: float | None = None
    """Where the cohort's data should be complete (guard clock): silence (``no_data_after``) is measured up
    to here. None: now (probes, Prometheus); a Cloud Run cohort: the newest minute Cloud Monitoring should
    have complete (~3.5 min ago), so its ingestion delay is not silence."""
    source: str = ""
    """Where the counts come from, when that belongs in the evidence (a Cloud Run revision, up to when)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One check: ``action`` is ``idle`` (no canary), ``continue``, ``hold``, ``rollback``, ``promote``,
    ``rolled_back``/``held`` (waiting for a person), or ``retrying`` (a flip that failed)."""

    action: str
    reason: str
    percent: float
    evidence: list[str] = field(default_factory=list)
    canary: Counts = field(default_factory=Counts)
    baseline: Counts | None = None


def _strongest(tests: Iterable[tuple[RateEvidence, str]]) -> tuple[RateEvidence, str]:
    """The test closest to (or furthest past) its own threshold; the first (stage-long) one on ties."""
    return max(tests, key=lambda t: t[0].log_e - math.log(1.0 / t[0].alpha))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def cohort_counts(
    store: ResultReader, cohort: Cohort, since: float, now: float, latency_threshold_s: float | None
) -> Counts:
    """The cohort's results from ``since`` to ``now``: whole minutes from the minute aggregates; the part of
    ``since``'s minute from the raw results, so a stage that began mid-minute counts nothing from before it
    (once that minute has left the recent raw results, its whole aggregate is counted instead)."""
    since_minute = math.floor(since / 60)
    aligned = since == since_minute * 60.0
    first_full = since_minute if aligned else since_minute + 1
    now_minute = math.floor(now / 60)
    events = failed = slow = 0
    last_at: float | None = None

    def add_minutes(rows: Sequence[MinuteAggregate]) -> None:
        nonlocal events, failed, slow, last_at
        for m in rows:
            events += m.count
            failed += m.failures
            if latency_threshold_s is not None:
                slow += m.count - m.count_at_or_under(latency_threshold_s)
            last_at = max(last_at or 0.0, min(now, m.minute * 60.0 + 59.0))

    if now_minute >= first_full:
        add_minutes(await store.minutes(first_full, now_minute + 1, cohort.probe, cohort.match or None))
    if aligned:
        return Counts(events, failed, slow, last_at)
    head_end = min(first_full * 60.0, now + 1e-9)
    recent = await store.recent(cohort.probe, limit=RAW_LIMIT)
    if len(recent) == RAW_LIMIT and recent[-1].started_at > since:
        # The raw results no longer reach back to the stage's start: count that whole minute.
        add_minutes(await store.minutes(since_minute, since_minute + 1, cohort.probe, cohort.match or None))
        return Counts(events, failed, slow, last_at)
    for r in recent:
        if r.started_at >= head_end:
            continue
        if r.started_at < since:
            break
        if not labels_match(r.labels, cohort.match):
            continue
        events += 1
        failed += r.outcome is Outcome.FAILED
        if latency_threshold_s is not None and r.latency_s > latency_threshold_s:
            slow += 1
        last_at = max(last_at or 0.0, r.started_at)
    return Counts(events, failed, slow, last_at)


class CanaryGuard:
    def __init__(
        self,
        rollout: Rollout,
        flag: FlagBackend,
        store: GuardStore,
        incidents: IncidentManager,
        clock: Clock,
        traffic: TrafficRollback | None = None,
    ) -> None:
        self.rollout = rollout
        self.flag = flag
        self.traffic = traffic
        """Cloud Run traffic back to the previous revision when the flag rollback was not enough."""
        self._store = store
        self._incidents = incidents
        self._clock = clock
        self.key = f"canary:{rollout.name}"
        self.last: Decision | None = None
        self._slos: dict[str, SloStatus] | None = None
        """The latest SLO evaluation (``observe_slos``): promotion waits for the service's budgets."""
        self._marks_for: float | None = None
        self._marks: list[dict[int, Counts]] = [{} for _ in RESTART_TIERS]
        """Per restart tier: the stage's canary counts when restart ``j`` began (``sequential``). Kept in
        memory: a restarted watchdog or a new leader judges the stage-long test alone until restarts
        accumulate again (5 s for the first)."""

    @property
    def store(self) -> GuardStore:
        return self._store

    def observe_slos(self, statuses: Sequence[SloStatus]) -> None:
        """The daemon hands every SLO evaluation over; promotion is gated on it (``_slo_gate``)."""
        self._slos = {s.name: s for s in statuses}

    # -- the check -------------------------------------------------------------------------------------
    async def check(self) -> Decision:
        try:
            record = await self.record()
            state = await self.flag.get()
        except FlagError as exc:
            # The kill switch cannot be read: judge nothing, say so (the daemon logs each change of state).
            decision = Decision("hold", f"cannot read the flag: {exc}", 0.0)
            self.last = decision
            return decision
        decision = await self._decide(record, state)
        self.last = decision
        return decision

    async def record(self) -> Incident:
        """The rollout's record, created at the flag's current split on first use."""
        current = await self._store.get_incident(self.key)
        if current is not None:
            return current
        now = self._clock.now()
        flag = await self.flag.get()
        data = self._stage(flag.db_percent, now, stage=1)
        created = await self._store.transition_incident(self.key, None, WATCHING, data, now)
        return created or await self._must_get()

    async def _must_get(self) -> Incident:
        record = await self._store.get_incident(self.key)
        if record is None:
            raise RuntimeError(f"rollout record {self.key} vanished")
        return record

    def _stage(self, percent: float, now: float, stage: int) -> dict[str, Any]:
        return {"percent": percent, "stage_started_at": now, "stage": stage, "attempts": 0}

    async def _decide(self, record: Incident, flag: FlagState) -> Decision:
        data = dict(record.data)
        percent = float(data.get("percent", 0.0))
        now = self._clock.now()
        if record.state == ROLLING_BACK:
            return await self._flip(record)
        if record.state in (ROLLED_BACK, HELD):
            why = str(data.get("reason", ""))
            if record.state == ROLLED_BACK and self.traffic is not None and "flipped_at" in data:
                # After the verified flag rollback: step 2 if it did not bring the error rate back.
                count = cohorts.counter(self, cohort_counts, Counts)
                why += "; " + await self.traffic.after_flag_rollback(float(data["flipped_at"]), count)
            return Decision(record.state, f"waiting for a person to release it: {why}", flag.db_percent)
        if not math.isclose(flag.db_percent, percent, abs_tol=1e-6):
            return await self._flag_moved(record, flag, now)
        if percent <= 0:
            return Decision("idle", "no canary: the flag sends nothing to the database", percent)
        since = float(data.get("stage_started_at", now)) + self.rollout.grace
        limits = self.rollout.limits
        threshold = limits.latency.threshold if limits.latency else None
        count = cohorts.counter(self, cohort_counts, Counts)
        canary = await count("canary", self.rollout.canary, since, now, threshold)
        baseline = (
            await count("baseline", self.rollout.baseline, since, now, threshold)
            if self.rollout.baseline is not None
            else None
        )
        horizon = canary.as_of if canary.as_of is not None else now
        if canary.events < self.rollout.min_samples:
            quiet_since = canary.last_at if canary.last_at is not None else since
            if horizon - quiet_since >= self.rollout.no_data_after:
                reason = (
                    f"no data: {canary.events} canary results since {_iso(since)}; holding (not promoting) "
                    + (
                        f"until the canary has traffic ({canary.source})"
                        if canary.source
                        else "until the canary probe reports"
                    )
                )
                return Decision("hold", reason, percent, canary=canary, baseline=baseline)
            return Decision("continue", f"{canary.events} canary results so far", percent, canary=canary)
        errors_p0 = limits.error_rate
        baseline_note = ""
        if (
            baseline is not None
            and limits.relative_to_baseline
            and baseline.events >= self.rollout.min_samples
        ):
            baseline_rate = baseline.failed / baseline.events
            relative = min(0.5, baseline_rate * limits.relative_to_baseline)
            if relative > errors_p0:
                errors_p0 = relative
                baseline_note = f" (the baseline fails {baseline_rate:.3%} itself)"
        windows = self._windows(since, now, canary)
        errors = _strongest((rate_above(c.events, c.failed, errors_p0, a), w) for w, c, a in windows)
        evidence = [errors[0].describe(f"canary errors{errors[1]}") + baseline_note]
        latency: RateEvidence | None = None
        if limits.latency is not None:
            slow_p0 = 1 - limits.latency.quantile
            latency, where = _strongest((rate_above(c.events, c.slow, slow_p0, a), w) for w, c, a in windows)
            evidence.append(
                latency.describe(f"canary results over {limits.latency.threshold * 1000:g} ms{where}")
            )
        if canary.source:
            evidence.append(f"canary counted from {canary.source}")
        if errors[0].conclusive or (latency is not None and latency.conclusive):
            what = "errors" if errors[0].conclusive else "latency"
            return await self._start_rollback(record, percent, what, evidence, canary, baseline)
        last = canary.last_at if canary.last_at is not None else since
        if horizon - last >= self.rollout.no_data_after:
            # What was counted still stands against the canary, but silence is not health: no promotion.
            reason = (
                f"no new canary results since {_iso(last)}; holding (not promoting) on {canary.events} "
                "results counted before"
            )
            return Decision("hold", reason, percent, evidence, canary, baseline)
        if self.rollout.promote is not None:
            promoted = await self._maybe_promote(record, percent, canary, since, now, evidence)
            if promoted is not None:
                return promoted
        return Decision("continue", "within limits so far", percent, evidence, canary, baseline)

    def _windows(self, since: float, now: float, canary: Counts) -> list[tuple[str, Counts, float]]:
        """The tests to judge: (where, counts, α) for the stage-long test and each restart of each tier
        that holds at least ``min_samples`` results (``sequential.RESTART_TIERS``)."""
        if self._marks_for != since:
            self._marks_for = since
            self._marks = [{} for _ in RESTART_TIERS]
        alpha = self.rollout.alpha
        windows = [("", canary, stage_alpha(alpha))]
        for tier, marks in zip(RESTART_TIERS, self._marks, strict=True):
            j = math.floor((now - since) / tier.every)
            if j >= 1 and j not in marks:
                marks[j] = canary
                for old in sorted(marks)[: -tier.keep]:
                    del marks[old]
            for start, mark in marks.items():
                events = canary.events - mark.events
                if events < self.rollout.min_samples:
                    continue
                counts = Counts(events, canary.failed - mark.failed, canary.slow - mark.slow, canary.last_at)
                ago = now - (since + start * tier.every)
                windows.append((f" in the last {ago:.0f} s", counts, tier_alpha(alpha, tier)))
        return windows

    # -- rollback --------------------------------------------------------------------------------------
    async def _start_rollback(
        self,
        record: Incident,
        percent: float,
        what: str,
        evidence: Sequence[str],
        canary: Counts,
        baseline: Counts | None,
    ) -> Decision:
        now = self._clock.now()
        data = {
            **record.data,
            "from_percent": percent,
            "cause": what,
            "evidence": list(evidence),
            "decided_at": now,
            "attempts": 0,
            "next_attempt_at": now,
        }
        moved = await self._store.transition_incident(self.key, record.version, ROLLING_BACK, data, now)
        if moved is None:
            return Decision(
                "rollback", "another replica is rolling back", percent, list(evidence), canary, baseline
            )
        _log.warning(
            "rollout %s: canary %s conclusive; rolling back to YAML",
            self.rollout.name,
            what,
            extra={"rollout": self.rollout.name, "evidence": list(evidence)},
        )
        decision = await self._flip(moved)
        return Decision(decision.action, decision.reason, decision.percent, list(evidence), canary, baseline)

    async def _flip(self, record: Incident) -> Decision:
        data = dict(record.data)
        now = self._clock.now()
        if now < float(data.get("next_attempt_at") or 0):
            return Decision("retrying", f"next attempt at {_iso(float(data['next_attempt_at']))}", 0.0)
        key = f"rollback:{self.rollout.name}:stage{data.get('stage', 1)}"
        reason = f"canary {data.get('cause', 'limits')} breached: " + "; ".join(data.get("evidence", []))
        before = data.get("from_percent")
        try:
            state = await self.flag.set(0.0, reason[:500], self.rollout.actor, key)
            after = await self.flag.get()
            if after.db_percent != 0.0:
                raise FlagError(f"read back {after.db_percent} % db after setting 0 %")
        except FlagError as exc:
            return await self._flip_failed(record, str(exc))
        done = {**data, "percent": 0.0, "flipped_at": now, "reason": f"rolled back to YAML: {reason}"}
        moved = await self._store.transition_incident(self.key, record.version, ROLLED_BACK, done, now)
        if moved is None:
            return Decision("rolled_back", "another replica finished the rollback", 0.0)
        await self._audit("rollback", before, 0.0, reason, state, now)
        onset = float(data.get("decided_at", now))
        summary = (
            f"Rolled back to YAML: the flag {self.flag.name} went from {before} % to 0 % database "
            f"(verified by reading it back) {now - onset:.1f} s after the decision. "
            + "; ".join(data.get("evidence", []))
        )
        await self._incidents.clear(f"rollout:{self.rollout.name}:failed", "the rollback went through")
        await self._incidents.fire(self._spec(ROLLED_BACK_ALERT, "warning", summary))
        _log.warning(
            "rollout %s rolled back to YAML", self.rollout.name, extra={"rollout": self.rollout.name}
        )
        return Decision("rolled_back", summary, 0.0, list(data.get("evidence", [])))

    async def _flip_failed(self, record: Incident, error: str) -> Decision:
        data = dict(record.data)
        now = self._clock.now()
        attempts = int(data.get("attempts", 0)) + 1
        data.update(
            attempts=attempts,
            last_error=error,
            next_attempt_at=now + min(MAX_BACKOFF_S, 2.0 ** (attempts - 1)),
        )
        page = attempts >= FAILED_AFTER and not data.get("failure_paged")
        if page:
            data["failure_paged"] = True
        moved = await self._store.transition_incident(self.key, record.version, ROLLING_BACK, data, now)
        _log.error(
            "rollout %s: the rollback flip failed (attempt %d): %s", self.rollout.name, attempts, error
        )
        if moved is not None and page:
            summary = (
                f"Rollback FAILED: the flag {self.flag.name} could not be set to 0 % database after "
                f"{attempts} "
                f"attempts ({error}); the canary is still at {data.get('from_percent')} %. Retrying every "
                f"{MAX_BACKOFF_S:g} s; roll back by hand now (runbook). Evidence: "
                + "; ".join(data.get("evidence", []))
            )
            spec = self._spec(ROLLBACK_FAILED_ALERT, "critical", summary)
            await self._incidents.fire(replace(spec, key=f"rollout:{self.rollout.name}:failed"))
        return Decision(
            "retrying", f"flip failed ({error}); attempt {attempts}", float(data.get("from_percent") or 0)
        )

    # -- people ----------------------------------------------------------------------------------------
    async def _flag_moved(self, record: Incident, flag: FlagState, now: float) -> Decision:
        data = dict(record.data)
        expected = float(data.get("percent", 0.0))
        by = flag.updated_by or "someone"
        if expected <= 0:
            # A canary starts (0 → N %): a new stage to judge from now.
            stage = self._stage(flag.db_percent, now, int(data.get("stage", 0)) + 1)
            await self._store.transition_incident(self.key, record.version, WATCHING, stage, now)
            _log.info(
                "rollout %s: canary at %s %% (set by %s); watching", self.rollout.name, flag.db_percent, by
            )
            return Decision("continue", f"canary started at {flag.db_percent} % by {by}", flag.db_percent)
        reason = (
            f"the flag changed from {expected} % to {flag.db_percent} % by {by} "
            f"({flag.reason or 'no reason'}) "
            "during the rollout; the guard holds and leaves it to people until `watchdog flag release`"
        )
        held = {**data, "reason": reason, "held_at": now, "percent": flag.db_percent}
        if await self._store.transition_incident(self.key, record.version, HELD, held, now) is not None:
            await self._incidents.fire(self._spec(HELD_ALERT, "info", reason))
        return Decision("held", reason, flag.db_percent)

    async def release(self, actor: str) -> Decision:
        """A person hands the rollout back to the guard: a new stage at the flag's current split."""
        record = await self.record()
        flag = await self.flag.get()
        now = self._clock.now()
        stage = self._stage(flag.db_percent, now, int(record.data.get("stage", 0)) + 1)
        stage["released_by"] = actor
        if await self._store.transition_incident(self.key, record.version, WATCHING, stage, now) is None:
            return Decision("conflict", "the rollout changed meanwhile; try again", flag.db_percent)
        for alert in (ROLLED_BACK_ALERT, HELD_ALERT):
            await self._incidents.clear(f"rollout:{self.rollout.name}:{alert}", "", actor=actor)
        await self._audit("release", None, flag.db_percent, f"released by {actor}", flag, now)
        return Decision(
            "continue", f"released by {actor}: watching the canary at {flag.db_percent} %", flag.db_percent
        )

    async def hold(self, actor: str, reason: str) -> Decision:
        record = await self.record()
        now = self._clock.now()
        data = {**record.data, "reason": f"held by {actor}: {reason}", "held_at": now}
        if await self._store.transition_incident(self.key, record.version, HELD, data, now) is None:
            return Decision(
                "conflict", "the rollout changed meanwhile; try again", float(data.get("percent", 0))
            )
        return Decision("held", str(data["reason"]), float(data.get("percent", 0)))

    async def set_by_hand(self, percent: float, actor: str, reason: str, action: str) -> Decision:
        """``watchdog flag rollback|promote``: a person's flip, verified and audited; the guard then judges
        the new split as a new stage (or holds after a rollback)."""
        record = await self.record()
        before = await self.flag.get()
        now = self._clock.now()
        key = f"{action}:{self.rollout.name}:{actor}:{now:.0f}"
        state = await self.flag.set(percent, reason, actor, key)
        after = await self.flag.get()
        if not math.isclose(after.db_percent, percent, abs_tol=0.01):
            raise FlagError(f"read back {after.db_percent} % after setting {percent} %")
        await self._audit(action, before.db_percent, percent, reason, state, now, actor)
        next_state = HELD if action == "rollback" else WATCHING
        data = self._stage(percent, now, int(record.data.get("stage", 0)) + 1)
        data["reason"] = f"{action} by {actor}: {reason}"
        await self._store.transition_incident(self.key, record.version, next_state, data, now)
        return Decision(action, f"{action} to {percent} % by {actor}, verified", percent)

    # -- promotion -------------------------------------------------------------------------------------
    async def _maybe_promote(
        self, record: Incident, percent: float, canary: Counts, since: float, now: float, evidence: list[str]
    ) -> Decision | None:
        promote = self.rollout.promote
        assert promote is not None
        steps = [s for s in promote.steps if s > percent + 1e-9]
        if not steps or now - since < promote.dwell:
            return None
        limits = self.rollout.limits
        good_errors = rate_below(canary.events, canary.failed, limits.error_rate, self.rollout.alpha)
        good = [good_errors]
        if limits.latency is not None:
            good.append(
                rate_below(canary.events, canary.slow, 1 - limits.latency.quantile, self.rollout.alpha)
            )
        if not all(e.conclusive for e in good):
            evidence.append(good_errors.describe("evidence the canary is within its error limit"))
            return Decision(
                "continue",
                "dwell done; not yet conclusive that the canary is healthy",
                percent,
                evidence,
                canary,
            )
        blocked = self._slo_gate(promote.slos, promote.min_budget_left)
        if blocked:
            return Decision("hold", f"not promoting: {blocked}", percent, evidence, canary)
        target = steps[0]
        key = f"promote:{self.rollout.name}:stage{record.data.get('stage', 1)}"
        reason = f"promoted after {now - since:.0f} s healthy at {percent} %: " + good_errors.describe(
            "errors"
        )
        try:
            state = await self.flag.set(target, reason, self.rollout.actor, key)
        except FlagError as exc:
            return Decision("hold", f"promotion to {target} % failed: {exc}", percent, evidence, canary)
        stage = self._stage(target, now, int(record.data.get("stage", 1)) + 1)
        if await self._store.transition_incident(self.key, record.version, WATCHING, stage, now) is None:
            return Decision("promote", "another replica promoted", target)
        await self._audit("promote", percent, target, reason, state, now)
        return Decision("promote", reason, target, evidence, canary)

    def _slo_gate(self, names: Sequence[str] | None, min_left: float) -> str:
        """Why the SLOs forbid a promotion now ("" when they allow it)."""
        if self._slos is None:
            return "no SLO evaluation yet"
        statuses = self._slos if names is None else {n: self._slos.get(n) for n in names}
        problems = []
        for name, status in statuses.items():
            if status is None:
                problems.append(f"SLO {name} was not evaluated")
            elif status.firing:
                problems.append(f"SLO {name} has {' and '.join(status.firing)} alerts firing")
            elif status.budget.remaining < min_left:
                problems.append(
                    f"SLO {name} has {max(status.budget.remaining, 0.0):.0%} of its error budget left "
                    f"(promotion needs {min_left:.0%})"
                )
        return "; ".join(problems)

    # -- audit and pages -------------------------------------------------------------------------------
    async def _audit(
        self,
        action: str,
        before: Any,
        after: float,
        reason: str,
        state: FlagState,
        now: float,
        actor: str | None = None,
    ) -> None:
        entry = {
            "rollout": self.rollout.name,
            "action": action,
            "from_percent": before,
            "to_percent": after,
            "reason": reason,
            "actor": actor or self.rollout.actor,
            "at": now,
            "backend": self.flag.name,
            "verified": True,
            "idempotency_key": state.idempotency_key,
        }
        await self._store.put_record(AUDIT_RECORD, f"{self.rollout.name}:{now:017.6f}:{action}", entry, now)

    def _spec(self, alert: str, severity: str, summary: str) -> AlertSpec:
        return AlertSpec(
            key=f"rollout:{self.rollout.name}:{alert}",
            alert=alert,
            severity=severity,
            policy=self.rollout.escalation,
            summary=summary,
            labels={"rollout": self.rollout.name},
            source="canary",
            runbook_url=self._incidents.runbook_url(alert),
            group=self.rollout.group,
        )


async def audit_trail(store: RecordStore, rollout: str) -> list[Mapping[str, Any]]:
    return [v for k, v in await store.list_records(AUDIT_RECORD) if k.startswith(f"{rollout}:")]
