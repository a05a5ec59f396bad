"""The watchdog watching itself: its own failures paged at most once per cause, and the heartbeat.

* **Store unavailable** for over ``STORE_DOWN_AFTER_S``: the outbox lives in the store, so this page is
  sent straight through the notifiers to the first level of ``settings.self_escalation``, once; a
  "recovered" follow-up is sent when the store answers again.
* **A notifier failing** (a permanent error such as an invalid token or an unknown channel, or a streak of
  transient ones): an incident ``watchdog-notifier-failing`` per notifier kind, through the normal chain (the
  store works), resolved by the next delivery that succeeds on that kind.
* **Scheduler stalled**: an evaluation that ran ``STALL_FACTOR`` intervals late means the event loop or the
  machine was starved; an incident ``watchdog-scheduler-stalled`` says by how much, and resolves after
  ``STALL_CLEAR_S`` on time. A loop that never runs again cannot page itself: the heartbeat is for that.
* **Heartbeat**: ``settings.heartbeat.url`` requested every ``every`` while the store answers and the
  evaluation is on time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import httpx

from watchdog.config.alerts import NotifyTarget
from watchdog.config.loader import WatchdogConfig
from watchdog.config.settings import Heartbeat
from watchdog.core.clock import Clock
from watchdog.core.redact import redact_url
from watchdog.incidents.manager import AlertSpec, IncidentManager
from watchdog.notify.base import Notifier, Page
from watchdog.notify.registry import FALLBACK_KIND

_log = logging.getLogger(__name__)

STORE_DOWN_AFTER_S = 60.0
STALL_FACTOR = 3.0
STALL_CLEAR_S = 600.0
NOTIFIER_FAILING = "watchdog-notifier-failing"
SCHEDULER_STALLED = "watchdog-scheduler-stalled"
STORE_UNAVAILABLE = "watchdog-store-unavailable"


class SelfWatch:
    def __init__(
        self,
        config: WatchdogConfig,
        incidents: IncidentManager,
        notifiers: Mapping[str, Notifier],
        clock: Clock,
        instance: str,
    ) -> None:
        self._config = config
        self._incidents = incidents
        self._notifiers = notifiers
        self._clock = clock
        self._instance = instance
        self._policy = config.settings.self_escalation
        self.store_down_since: float | None = None
        self._store_paged = False
        self._last_evaluation: float | None = None
        self._stalled_at: float | None = None
        self._stall_s = 0.0

    # -- store -----------------------------------------------------------------------------------------
    async def store_failed(self, error: str) -> None:
        now = self._clock.now()
        if self.store_down_since is None:
            self.store_down_since = now
        if self._store_paged or now - self.store_down_since < STORE_DOWN_AFTER_S:
            return
        self._store_paged = True
        summary = (
            f"the watchdog's state store has not answered for {now - self.store_down_since:.0f} s "
            f"({error}); pages and escalation timers wait in it until it is back"
        )
        await self._page_directly("firing", "fired", summary)

    async def store_ok(self) -> None:
        if self.store_down_since is None:
            return
        down_for = self._clock.now() - self.store_down_since
        self.store_down_since = None
        if self._store_paged:
            self._store_paged = False
            summary = f"the state store answers again after {down_for:.0f} s"
            await self._page_directly("resolved", "resolved", summary)

    async def _page_directly(self, state: str, event: str, summary: str) -> None:
        """Around the outbox (it is in the store that is down): each first-level target, once, best effort."""
        policy = self._incidents.policy(self._policy)
        # Critical: the first level and the policy's critical level, as any critical page.
        targets: list[NotifyTarget | None] = [None]
        if policy is not None:
            levels = [policy.levels[0].level, policy.critical_pages_immediately]
            targets = [t for lv in policy.levels if lv.level in levels for t in lv.notify]
        base = Page(
            key=f"watchdog:{STORE_UNAVAILABLE}:{self._instance}",
            title=STORE_UNAVAILABLE,
            severity="critical",
            state=state,
            summary=summary,
            runbook_url=self._incidents.runbook_url(STORE_UNAVAILABLE),
            labels={"instance": self._instance},
            level=policy.levels[0].level if policy is not None else "L1",
            event=event,
            actions=False,
        )
        for target in targets:
            kind = target.type if target is not None else FALLBACK_KIND
            page = base
            if target is not None:
                page = replace(base, channel=target.channel or "", mentions=tuple(target.mention))
            notifier = self._notifiers.get(kind) or self._notifiers.get(FALLBACK_KIND)
            if notifier is None:
                continue
            try:
                await notifier.send(page)
            except Exception as exc:  # best effort: the log has it either way
                _log.error("could not page that the store is down (%s): %s", kind, exc)
        _log.error("%s: %s", STORE_UNAVAILABLE, summary)

    # -- notifiers -------------------------------------------------------------------------------------
    async def notifiers_checked(self, failing: Mapping[str, str]) -> None:
        """``failing``: notifier kind → its last error, for kinds failing now (the dispatcher's view)."""
        for kind in sorted({*failing, *self._notifiers}):
            key = f"watchdog:{NOTIFIER_FAILING}:{kind}"
            if kind in failing:
                await self._incidents.fire(
                    AlertSpec(
                        key=key,
                        alert=NOTIFIER_FAILING,
                        severity="warning",
                        policy=self._policy,
                        summary=f"the {kind} notifier keeps failing: {failing[kind]}; pages go to the log",
                        labels={"notifier": kind},
                        runbook_url=self._incidents.runbook_url(NOTIFIER_FAILING),
                    )
                )
            else:
                await self._incidents.clear(key, f"the {kind} notifier delivers again")

    # -- scheduler -------------------------------------------------------------------------------------
    async def evaluation_ran(self, interval_s: float) -> None:
        now = self._clock.now()
        previous, self._last_evaluation = self._last_evaluation, now
        key = f"watchdog:{SCHEDULER_STALLED}:{self._instance}"
        if previous is not None and now - previous > STALL_FACTOR * interval_s:
            self._stalled_at = now
            self._stall_s = now - previous
            await self._incidents.fire(
                AlertSpec(
                    key=key,
                    alert=SCHEDULER_STALLED,
                    severity="warning",
                    policy=self._policy,
                    summary=(
                        f"the evaluation ran {self._stall_s:.0f} s after the previous one (every "
                        f"{interval_s:g} s expected): the event loop or the machine was starved"
                    ),
                    labels={"instance": self._instance},
                    runbook_url=self._incidents.runbook_url(SCHEDULER_STALLED),
                )
            )
        elif self._stalled_at is not None and now - self._stalled_at >= STALL_CLEAR_S:
            self._stalled_at = None
            await self._incidents.clear(key, f"on time for {STALL_CLEAR_S:.0f} s")

    def healthy(self, interval_s: float) -> bool:
        """Store answering and evaluation on time: what the heartbeat vouches for."""
        now = self._clock.now()
        last = self._last_evaluation
        on_time = last is not None and now - last <= STALL_FACTOR * interval_s
        return self.store_down_since is None and on_time


class HeartbeatSender:
    def __init__(self, config: Heartbeat, client: httpx.AsyncClient | None = None) -> None:
        self._config = config
        self._client = client or httpx.AsyncClient(timeout=config.timeout, follow_redirects=True)
        self._owns_client = client is None
        self.sent = 0
        self.failed = 0

    async def beat(self) -> bool:
        try:
            response = await self._client.request(self._config.method, self._config.url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.failed += 1
            _log.warning("heartbeat to %s failed: %s", redact_url(self._config.url), type(exc).__name__)
            return False
        self.sent += 1
        return True

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
