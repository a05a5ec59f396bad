"""Cloud Run traffic rollback: the seed's rollback step 2 ("restore the old Cloud Run version"), as the
escalation of a flag rollback that did not bring the error rate back (``cloud_run:`` of a rollout,
``watchdog.config.rollouts.CloudRunRollback``).

When the guard has flipped the flag back to YAML and verified it, it calls ``after_flag_rollback`` on each
check while the rollout is held rolled back. The flag gets ``after`` to take effect (providers poll, caches
drain); from then on the rollout's ``cohort`` is counted and judged by the guard's sequential test against the
rollout's error limit: conclusive evidence that it still breaks the limit sends 100 % of the service's traffic
to the previous serving revision; conclusive evidence that it is back under the limit ends the watch
("recovered"); neither keeps watching.

"Previous serving revision", from the service's ``traffic_statuses`` (what is served, a ``LATEST`` entry
resolved to ``latest_ready_revision``) and its revisions ordered by creation:

- the suspect is the newest revision that serves traffic;
- when traffic is split, the previous one is the other serving revision with the largest share (on a tie the
  newer): it is what most users were served, and it still serves now;
- when the suspect serves 100 %, the previous one is the newest revision created before it that became Ready
  (a deploy moves all traffic from the revision then newest to the new one; a revision that never became
  Ready never served). A revision deployed with ``--no-traffic`` that became Ready would be taken for it:
  the Admin API keeps no traffic history.

The choice is stored in the record before the update, so a retried attempt (another check, the other replica,
a restart) sends traffic to the same revision instead of choosing again from the new state.

The update is a read-modify-write of the whole service (``get_service``, then ``update_service`` of that
service with only ``traffic`` changed, sent with its ``etag`` so a concurrent change fails with ABORTED
instead of being overwritten); tags stay reachable at 0 %. The long-running operation is awaited, then the
service is read back: the rollback counts only when ``traffic_statuses`` says 100 % to the revision chosen.
It is audited (record ``traffic-audit``: previous → new split, reason, actor, time, evidence), paged
("cloud-run-rolled-back", a warning with the evidence) and held until a person releases it
(``watchdog traffic release``); the watchdog does not judge or touch the traffic again meanwhile.

Failures: UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL and RESOURCE_EXHAUSTED are retried with backoff within the
attempt's ``timeout``; PERMISSION_DENIED, UNAUTHENTICATED, NOT_FOUND and INVALID_ARGUMENT (and no previous
revision to go to) will not get better by retrying: "cloud-run-rollback-failed" pages at once (critical) and
the record is held as ``failed``. Any other failure ends the attempt; the next check retries with backoff and
the critical page goes out after ``FAILED_AFTER`` failed attempts, once.

The Admin API v2 is reached with google-cloud-run's async clients, imported on first use. An
``http://HOST:PORT`` endpoint (``google_cloud.endpoints["run"]``) is a plaintext gRPC channel without
credentials (a server on loopback in tests); otherwise Google's endpoint (or the one given) with Application
Default Credentials.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from watchdog.canary.sequential import rate_above, rate_below
from watchdog.config.rollouts import Cohort, Rollout
from watchdog.core.clock import Clock
from watchdog.incidents.manager import AlertSpec, IncidentManager
from watchdog.store.base import Incident, IncidentStore, RecordStore

if TYPE_CHECKING:
    from google.cloud.run_v2 import RevisionsAsyncClient, Service, ServicesAsyncClient

_log = logging.getLogger(__name__)

ARMED = "armed"
RECOVERED = "recovered"
ROLLING_BACK = "rolling_back"
ROLLED_BACK = "rolled_back"
FAILED = "failed"
RELEASED = "released"
HELD_STATES = (ROLLED_BACK, FAILED)
"""States that hold the traffic until a person releases it."""
FAILED_AFTER = 3
"""Failed attempts (of the kind worth retrying) after which "cloud-run-rollback-failed" pages."""
MAX_BACKOFF_S = 30.0
AUDIT_RECORD = "traffic-audit"
ROLLED_BACK_ALERT = "cloud-run-rolled-back"
FAILED_ALERT = "cloud-run-rollback-failed"
ACTOR = "watchdog"
FIRST_RETRY_S = 0.2
MAX_RETRY_S = 2.0

_TRANSIENT = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "RESOURCE_EXHAUSTED"})
_PERMANENT = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED", "NOT_FOUND", "INVALID_ARGUMENT"})

T = TypeVar("T")


class TrafficError(Exception):
    """The traffic could not be read, changed or verified. ``permanent``: retrying will not help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Counted(Protocol):
    @property
    def events(self) -> int: ...

    @property
    def failed(self) -> int: ...


CountFn = Callable[[str, Cohort, float, float, "float | None"], Awaitable[Counted]]
"""The guard's ``count(role, cohort, since, now, latency_threshold_s)``."""


class TrafficStore(IncidentStore, RecordStore, Protocol):
    """The traffic record (compare-and-set) and the audit trail."""


# -- what the service serves -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RevisionInfo:
    name: str
    """Short name, as traffic targets take it (``content-00002-abc``)."""
    created: float
    ready: bool


@dataclass(frozen=True)
class ServiceView:
    name: str
    etag: str
    serving: dict[str, int]
    """Revision → percent of traffic it is served now (``traffic_statuses``; entries at 0 % left out)."""
    latest_ready: str
    revisions: list[RevisionInfo] = field(default_factory=list)
    raw: Any = None
    """The ``run_v2.Service`` as read, sent back with only its traffic changed."""


def describe_split(serving: Mapping[str, int]) -> str:
    if not serving:
        return "no revision"
    return ", ".join(f"{rev} {pct} %" for rev, pct in sorted(serving.items(), key=lambda kv: (-kv[1], kv[0])))


def choose_previous(view: ServiceView) -> tuple[str, str]:
    """(suspect, previous): the newest serving revision and the one to send all traffic to (module doc)."""
    created = {r.name: r.created for r in view.revisions}
    serving = {rev: pct for rev, pct in view.serving.items() if pct > 0}
    if not serving:
        raise TrafficError(f"{view.name} serves no revision", permanent=True)
    suspect = max(serving, key=lambda rev: (created.get(rev, float("-inf")), rev))
    others = {rev: pct for rev, pct in serving.items() if rev != suspect}
    if others:
        previous = max(others, key=lambda rev: (others[rev], created.get(rev, float("-inf"))))
        return suspect, previous
    if suspect not in created:
        raise TrafficError(f"the serving revision {suspect} is not in the revision list", permanent=True)
    older = [r for r in view.revisions if r.ready and r.created < created[suspect]]
    if not older:
        raise TrafficError(
            f"no revision of {view.name} older than {suspect} became Ready: nothing to roll back to",
            permanent=True,
        )
    return suspect, max(older, key=lambda r: r.created).name


# -- the Admin API -----------------------------------------------------------------------------------------
class CloudRunAdmin:
    """The calls the rollback makes, through google-cloud-run's async clients (made on first use, in the
    running event loop). ``retries`` counts the calls retried after a transient error."""

    def __init__(self, service: str, endpoint: str = "") -> None:
        self.service = service
        self.endpoint = endpoint
        self.retries = 0
        self._services: ServicesAsyncClient | None = None
        self._revisions: RevisionsAsyncClient | None = None
        self._channel: Any = None

    def _clients(self) -> tuple[ServicesAsyncClient, RevisionsAsyncClient]:
        if self._services is not None and self._revisions is not None:
            return self._services, self._revisions
        try:
            from google.api_core.client_options import ClientOptions
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud.run_v2 import RevisionsAsyncClient, ServicesAsyncClient
            from google.cloud.run_v2.services.revisions.transports import RevisionsGrpcAsyncIOTransport
            from google.cloud.run_v2.services.services.transports import ServicesGrpcAsyncIOTransport
        except ImportError as exc:
            raise TrafficError(
                f"google-cloud-run is not installed ({exc}); install sre-watchdog[gcp]", permanent=True
            ) from None

        if self.endpoint.startswith("http://"):
            from grpc import aio  # type: ignore[import-untyped]

            self._channel = aio.insecure_channel(self.endpoint.removeprefix("http://").rstrip("/"))
            self._services = ServicesAsyncClient(
                transport=ServicesGrpcAsyncIOTransport(channel=self._channel)
            )
            self._revisions = RevisionsAsyncClient(
                transport=RevisionsGrpcAsyncIOTransport(channel=self._channel)
            )
            return self._services, self._revisions
        host = self.endpoint.removeprefix("https://").rstrip("/")
        options = ClientOptions(api_endpoint=host) if host else None
        try:
            self._services = ServicesAsyncClient(client_options=options)
            self._revisions = RevisionsAsyncClient(client_options=options)
        except DefaultCredentialsError as exc:
            raise TrafficError(
                f"no Application Default Credentials for the Cloud Run Admin API ({exc})", permanent=True
            ) from None
        return self._services, self._revisions

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        else:
            for client in (self._services, self._revisions):
                if client is not None:
                    await client.transport.close()  # type: ignore[no-untyped-call]
        self._services = self._revisions = self._channel = None

    async def _call(self, what: str, deadline: float, call: Callable[[float], Awaitable[T]]) -> T:
        """``call(timeout)``, retried with backoff on transient errors until ``deadline`` (monotonic)."""
        from google.api_core import exceptions as gexc

        delay = FIRST_RETRY_S
        while True:
            left = deadline - time.monotonic()
            try:
                return await call(max(0.5, left))
            except gexc.GoogleAPICallError as exc:
                code = _code(exc)
                if code in _TRANSIENT and time.monotonic() + delay < deadline:
                    self.retries += 1
                    _log.info("cloud run %s: %s, retrying in %.1f s", what, code, delay)
                    await asyncio.sleep(delay)
                    delay = min(MAX_RETRY_S, delay * 2)
                    continue
                raise TrafficError(f"{what}: {code}: {_message(exc)}", permanent=code in _PERMANENT) from None

    async def read(self, deadline: float) -> ServiceView:
        """The service as served now, and its revisions."""
        services, revisions = self._clients()
        raw = await self._call(
            "get_service", deadline, lambda t: services.get_service(name=self.service, retry=None, timeout=t)
        )

        async def listing(timeout_s: float) -> list[RevisionInfo]:
            pager = await revisions.list_revisions(parent=self.service, retry=None, timeout=timeout_s)
            return [_revision(r) async for r in pager]

        listed = await self._call("list_revisions", deadline, listing)
        return _view(raw, listed)

    async def serving(self, deadline: float) -> ServiceView:
        """Only the service (no revision list): for the read-back."""
        services, _ = self._clients()
        raw = await self._call(
            "get_service", deadline, lambda t: services.get_service(name=self.service, retry=None, timeout=t)
        )
        return _view(raw, [])

    async def route_all_to(self, view: ServiceView, revision: str, deadline: float) -> None:
        """Send 100 % to ``revision``: the service as read, its traffic replaced, sent with its etag; the
        long-running operation awaited."""
        from google.cloud.run_v2 import Service, TrafficTarget, TrafficTargetAllocationType

        services, _ = self._clients()
        by_revision = TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
        updated = Service.deserialize(Service.serialize(view.raw))
        targets = [TrafficTarget(type_=by_revision, revision=revision, percent=100)]
        for old in view.raw.traffic:
            if not old.tag:
                continue
            if old.type_ == by_revision and old.revision == revision:
                targets[0].tag = old.tag  # the tag keeps pointing at the revision now serving all
            else:
                targets.append(TrafficTarget(type_=old.type_, revision=old.revision, tag=old.tag, percent=0))
        updated.traffic = targets
        operation = await self._call(
            "update_service",
            deadline,
            lambda t: services.update_service(service=updated, retry=None, timeout=t),
        )

        def finished(_timeout_s: float) -> Awaitable[bool]:
            return operation.done(retry=None)  # type: ignore[no-untyped-call]

        def outcome(_timeout_s: float) -> Awaitable[Any]:
            return operation.result()  # type: ignore[no-untyped-call]

        delay = FIRST_RETRY_S
        while not await self._call("operation", deadline, finished):
            if time.monotonic() + delay >= deadline:
                raise TrafficError("update_service: the operation did not finish in time")
            await asyncio.sleep(delay)
            delay = min(MAX_RETRY_S, delay * 2)
        await self._call("update_service result", deadline, outcome)


def _revision(raw: Any) -> RevisionInfo:
    ready = any(c.type_ == "Ready" and c.state.name == "CONDITION_SUCCEEDED" for c in raw.conditions)
    created = raw.create_time.timestamp() if raw.create_time else 0.0
    deleted = bool(raw.delete_time)
    return RevisionInfo(_short(raw.name), float(created), ready and not deleted)


def _view(raw: Service, revisions: list[RevisionInfo]) -> ServiceView:
    latest = _short(raw.latest_ready_revision)
    serving: dict[str, int] = {}
    for status in raw.traffic_statuses:
        if status.percent <= 0:
            continue
        revision = _short(status.revision) or latest
        serving[revision] = serving.get(revision, 0) + int(status.percent)
    return ServiceView(raw.name, raw.etag, serving, latest, revisions, raw)


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _code(exc: Any) -> str:
    code = getattr(exc, "grpc_status_code", None)
    return str(code.name) if code is not None else type(exc).__name__


def _message(exc: Any) -> str:
    return str(getattr(exc, "message", "") or exc)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- the escalation ----------------------------------------------------------------------------------------
class TrafficRollback:
    """One rollout's Cloud Run traffic rollback; its state is the store record ``traffic:<rollout>``
    (compare-and-set, so two replicas roll back once)."""

    def __init__(
        self,
        rollout: Rollout,
        admin: CloudRunAdmin,
        store: TrafficStore,
        incidents: IncidentManager,
        clock: Clock,
    ) -> None:
        if rollout.cloud_run is None:
            raise ValueError(f"rollout {rollout.name} has no cloud_run section")
        self.rollout = rollout
        self.settings = rollout.cloud_run
        self.admin = admin
        self._store = store
        self._incidents = incidents
        self._clock = clock
        self.key = f"traffic:{rollout.name}"

    @property
    def store(self) -> TrafficStore:
        return self._store

    async def record(self) -> Incident | None:
        return await self._store.get_incident(self.key)

    # -- called by the guard ---------------------------------------------------------------------------
    async def after_flag_rollback(self, flipped_at: float, count: CountFn) -> str:
        """One check while the rollout is held after the guard's verified flag rollback at ``flipped_at``;
        returns what it did or waits for, for the guard's decision."""
        now = self._clock.now()
        record = await self.record()
        if record is not None and record.state in HELD_STATES:
            return f"Cloud Run traffic held ({record.state}) until `watchdog traffic release`"
        if record is None or float(record.data.get("flag_flipped_at", -1.0)) != flipped_at:
            armed = {"flag_flipped_at": flipped_at, "judge_from": flipped_at + self.settings.after}
            version = record.version if record is not None else None
            moved = await self._store.transition_incident(self.key, version, ARMED, armed, now)
            record = moved or await self.record()
            if record is None:
                return "Cloud Run traffic: the record vanished"
        if record.state == RECOVERED:
            return "Cloud Run traffic not rolled back: " + str(record.data.get("reason", ""))
        if record.state == ROLLING_BACK:
            return await self._attempt(record)
        if record.state != ARMED:
            return f"Cloud Run traffic: {record.state}"
        judge_from = float(record.data["judge_from"])
        if now < judge_from:
            cohort_name = self.settings.cohort
            return f"Cloud Run traffic rollback armed: judging the {cohort_name} from {_iso(judge_from)}"
        cohort = self.rollout.canary if self.settings.cohort == "canary" else self.rollout.baseline
        if cohort is None:
            return "Cloud Run traffic: the rollout has no baseline cohort to judge"
        counted = await count("traffic", cohort, judge_from, now, None)
        limit, alpha = self.rollout.limits.error_rate, self.rollout.alpha
        above = rate_above(counted.events, counted.failed, limit, alpha)
        label = f"{self.settings.cohort} errors {self.settings.after:g} s after the flag rollback"
        evidence = [above.describe(label)]
        if above.conclusive:
            data = {**record.data, "evidence": evidence, "decided_at": now, "attempts": 0}
            data["reason"] = f"the flag rollback did not bring the error rate back: {evidence[0]}"
            moved = await self._store.transition_incident(self.key, record.version, ROLLING_BACK, data, now)
            if moved is None:
                return "Cloud Run traffic: another replica is rolling back"
            _log.warning(
                "rollout %s: %s; rolling Cloud Run traffic back",
                self.rollout.name,
                evidence[0],
                extra={"rollout": self.rollout.name, "evidence": evidence},
            )
            return await self._attempt(moved)
        below = rate_below(counted.events, counted.failed, limit, alpha)
        if below.conclusive:
            reason = "the flag rollback brought the error rate back: " + below.describe(label)
            data = {**record.data, "reason": reason, "recovered_at": now}
            await self._store.transition_incident(self.key, record.version, RECOVERED, data, now)
            return "Cloud Run traffic not rolled back: " + reason
        return "Cloud Run traffic rollback armed: " + evidence[0]

    # -- the rollback ----------------------------------------------------------------------------------
    async def _attempt(self, record: Incident) -> str:
        data = dict(record.data)
        now = self._clock.now()
        if now < float(data.get("next_attempt_at") or 0.0):
            return f"Cloud Run traffic rollback: next attempt at {_iso(float(data['next_attempt_at']))}"
        deadline = time.monotonic() + self.settings.timeout
        try:
            if not data.get("to_revision"):
                view = await self.admin.read(deadline)
                suspect, previous = choose_previous(view)
                data.update(
                    from_split=view.serving,
                    suspect=suspect,
                    to_revision=previous,
                    latest_ready=view.latest_ready,
                )
                moved = await self._store.transition_incident(
                    self.key, record.version, ROLLING_BACK, data, now
                )
                if moved is None:
                    return "Cloud Run traffic: another replica is rolling back"
                record = moved
            else:
                view = await self.admin.read(deadline)
            target = str(data["to_revision"])
            if view.serving != {target: 100}:
                await self.admin.route_all_to(view, target, deadline)
            after = await self.admin.serving(deadline)
            if after.serving != {target: 100}:
                raise TrafficError(
                    f"read back {describe_split(after.serving)} after sending 100 % to {target}"
                )
        except TrafficError as exc:
            return await self._failed(record, data, exc)
        return await self._done(record, data, after)

    async def _done(self, record: Incident, data: dict[str, Any], after: ServiceView) -> str:
        now = self._clock.now()
        target = str(data["to_revision"])
        before = describe_split(data.get("from_split") or {})
        done = {**data, "to_split": after.serving, "rolled_back_at": now}
        moved = await self._store.transition_incident(self.key, record.version, ROLLED_BACK, done, now)
        if moved is None:
            return "Cloud Run traffic: another replica finished the rollback"
        await self._audit(
            "rollback",
            data.get("from_split") or {},
            after.serving,
            str(data.get("reason")),
            ACTOR,
            now,
            list(data.get("evidence", [])),
        )
        summary = (
            f"Cloud Run traffic rolled back to revision {target}: {self.settings_service()} served "
            f"{before}, now {describe_split(after.serving)} (verified by reading the service back), "
            f"{now - float(data.get('decided_at', now)):.1f} s after the decision, because "
            + str(data.get("reason", ""))
            + ". Held until `watchdog traffic release`."
        )
        await self._incidents.clear(f"{self.key}:{FAILED_ALERT}", "the traffic rollback went through")
        await self._incidents.fire(self._spec(ROLLED_BACK_ALERT, "warning", summary))
        _log.warning("rollout %s: Cloud Run traffic rolled back to %s", self.rollout.name, target)
        return summary

    async def _failed(self, record: Incident, data: dict[str, Any], exc: TrafficError) -> str:
        now = self._clock.now()
        attempts = int(data.get("attempts", 0)) + 1
        data.update(attempts=attempts, last_error=str(exc))
        page = exc.permanent or (attempts >= FAILED_AFTER and not data.get("failure_paged"))
        if page:
            data["failure_paged"] = True
        state = FAILED if exc.permanent else ROLLING_BACK
        if not exc.permanent:
            data["next_attempt_at"] = now + min(MAX_BACKOFF_S, 2.0 ** (attempts - 1))
        moved = await self._store.transition_incident(self.key, record.version, state, data, now)
        _log.error(
            "rollout %s: Cloud Run traffic rollback failed (attempt %d): %s", self.rollout.name, attempts, exc
        )
        if moved is not None and page:
            then = (
                "it will not work by retrying; held until `watchdog traffic release`"
                if exc.permanent
                else f"retrying every {MAX_BACKOFF_S:g} s at most"
            )
            summary = (
                f"Cloud Run traffic rollback FAILED for {self.settings_service()} after {attempts} "
                f"attempt(s): {exc}; {then}. Roll traffic back by hand now (runbook). Why: "
                + str(data.get("reason", ""))
            )
            await self._incidents.fire(self._spec(FAILED_ALERT, "critical", summary))
        return f"Cloud Run traffic rollback failed ({exc}); attempt {attempts}"

    def settings_service(self) -> str:
        return self.admin.service

    # -- people ----------------------------------------------------------------------------------------
    async def rollback_by_hand(self, actor: str, reason: str) -> str:
        """``watchdog traffic rollback``: the same choice, update, read-back and audit; then held."""
        deadline = time.monotonic() + self.settings.timeout
        view = await self.admin.read(deadline)
        suspect, previous = choose_previous(view)
        await self.admin.route_all_to(view, previous, deadline)
        after = await self.admin.serving(deadline)
        if after.serving != {previous: 100}:
            raise TrafficError(f"read back {describe_split(after.serving)} after sending 100 % to {previous}")
        now = self._clock.now()
        record = await self.record()
        data = {
            "from_split": view.serving,
            "suspect": suspect,
            "to_revision": previous,
            "to_split": after.serving,
            "rolled_back_at": now,
            "reason": f"rolled back by {actor}: {reason}",
        }
        version = record.version if record is not None else None
        await self._store.transition_incident(self.key, version, ROLLED_BACK, data, now)
        await self._audit("rollback", view.serving, after.serving, reason, actor, now, [])
        return (
            f"traffic rolled back to revision {previous} by {actor}: {describe_split(view.serving)} → "
            f"{describe_split(after.serving)}, verified; held until `watchdog traffic release`"
        )

    async def release(self, actor: str) -> str:
        record = await self.record()
        now = self._clock.now()
        if record is None or record.state not in HELD_STATES:
            return f"nothing to release (traffic record: {record.state if record else 'none'})"
        data = {**record.data, "released_by": actor, "released_at": now}
        if await self._store.transition_incident(self.key, record.version, RELEASED, data, now) is None:
            return "the traffic record changed meanwhile; try again"
        for alert in (ROLLED_BACK_ALERT, FAILED_ALERT):
            await self._incidents.clear(f"{self.key}:{alert}", "", actor=actor)
        split = data.get("to_split") or {}
        await self._audit("release", split, split, f"released by {actor}", actor, now, [])
        return f"released by {actor}: the guard may roll Cloud Run traffic back again after a flag rollback"

    # -- audit and pages -------------------------------------------------------------------------------
    async def _audit(
        self,
        action: str,
        before: Mapping[str, int],
        after: Mapping[str, int],
        reason: str,
        actor: str,
        now: float,
        evidence: Sequence[str],
    ) -> None:
        entry = {
            "rollout": self.rollout.name,
            "service": self.admin.service,
            "action": action,
            "from": describe_split(before),
            "to": describe_split(after),
            "from_split": dict(before),
            "to_split": dict(after),
            "reason": reason,
            "actor": actor,
            "at": now,
            "evidence": list(evidence),
            "verified": action == "rollback",
        }
        await self._store.put_record(AUDIT_RECORD, f"{self.rollout.name}:{now:017.6f}:{action}", entry, now)

    def _spec(self, alert: str, severity: str, summary: str) -> AlertSpec:
        return AlertSpec(
            key=f"{self.key}:{alert}",
            alert=alert,
            severity=severity,
            policy=self.rollout.escalation,
            summary=summary,
            labels={"rollout": self.rollout.name, "service": _short(self.admin.service)},
            source="canary",
            runbook_url=self._incidents.runbook_url(alert),
            group=self.rollout.group,
        )


async def traffic_audit(store: RecordStore, rollout: str) -> list[Mapping[str, Any]]:
    return [v for k, v in await store.list_records(AUDIT_RECORD) if k.startswith(f"{rollout}:")]


def build_traffic_rollback(
    rollout: Rollout,
    google_cloud_service: str,
    endpoints: Mapping[str, str],
    store: TrafficStore,
    incidents: IncidentManager,
    clock: Clock,
) -> TrafficRollback | None:
    """The rollout's traffic rollback, or None without ``cloud_run``; the service defaults to
    ``google_cloud.cloud_run_service`` (the loader has checked one of the two is set)."""
    if rollout.cloud_run is None:
        return None
    service = rollout.cloud_run.service or google_cloud_service
    admin = CloudRunAdmin(service, endpoints.get("run", ""))
    return TrafficRollback(rollout, admin, store, incidents, clock)
