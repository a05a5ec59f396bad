"""Sends what the alerting layer enqueued: claims outbox rows, delivers each page through its targets'
notifiers, falls back to the next channel on a permanent error, retries later on a transient one."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from watchdog.core.clock import Clock
from watchdog.notify.base import NOTIFY_TOPIC, Notifier, NotifyError, Page
from watchdog.store.base import OutboxItem, OutboxStore

_log = logging.getLogger("watchdog.notify.dispatch")

MAX_ATTEMPTS = 8


class Dispatcher:
    def __init__(
        self,
        store: OutboxStore,
        notifiers: Mapping[str, Notifier],
        clock: Clock,
        worker: str,
        *,
        fallback: str = "log",
        claim_lease_s: float = 60.0,
    ) -> None:
        if fallback not in notifiers:
            raise ValueError(f"fallback notifier {fallback!r} is not configured")
        self._store = store
        self._notifiers = dict(notifiers)
        self._clock = clock
        self._worker = worker
        self._fallback = fallback
        self._lease = claim_lease_s

    async def run_once(self, limit: int = 20) -> int:
        """Deliver up to ``limit`` pages; returns how many were delivered."""
        items = await self._store.claim(NOTIFY_TOPIC, self._worker, limit, self._lease, self._clock.now())
        delivered = 0
        for item in items:
            if await self._deliver(item):
                delivered += 1
        return delivered

    def _channels(self, targets: Sequence[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
        chain: list[tuple[str, Mapping[str, Any]]] = []
        for target in targets:
            kind = str(target.get("type", ""))
            if kind in self._notifiers:
                chain.append((kind, target))
            else:
                _log.warning("no %s notifier configured; page goes to the next channel", kind)
        if not any(kind == self._fallback for kind, _ in chain):
            chain.append((self._fallback, {"type": self._fallback}))
        return chain

    async def _deliver(self, item: OutboxItem) -> bool:
        payload = item.payload
        page = Page(
            key=str(payload["key"]),
            title=str(payload["title"]),
            severity=str(payload["severity"]),
            state=str(payload["state"]),
            summary=str(payload.get("summary", "")),
            runbook_url=str(payload.get("runbook_url", "")),
            labels={str(k): str(v) for k, v in dict(payload.get("labels", {})).items()},
            level=str(payload.get("level", "L1")),
        )
        errors: list[str] = []
        for kind, _target in self._channels(list(payload.get("targets", []))):
            try:
                await self._notifiers[kind].send(page)
            except NotifyError as exc:
                errors.append(f"{kind}: {exc}")
                if exc.permanent:
                    continue
                await self._retry(item, "; ".join(errors))
                return False
            await self._store.complete(item.id, self._worker, self._clock.now())
            return True
        await self._retry(item, "; ".join(errors) or "no channel accepted the page")
        return False

    async def _retry(self, item: OutboxItem, error: str) -> None:
        if item.attempts >= MAX_ATTEMPTS:
            _log.error("giving up on page %s after %d attempts: %s", item.dedup_key, item.attempts, error)
            await self._store.complete(item.id, self._worker, self._clock.now())
            return
        delay = min(300.0, 2.0**item.attempts)
        _log.warning("page %s not delivered (%s); retrying in %.0f s", item.dedup_key, error, delay)
        await self._store.retry_later(item.id, self._worker, error, self._clock.now() + delay)
