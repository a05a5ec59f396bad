"""Sends what the alerting layer enqueued: claims outbox rows and delivers each page to every one of its
targets, each target exactly once.

* A page with several targets is split into one outbox item per target (the page's dedup key plus
  ``#<index>:<kind>:<channel>``, enqueued idempotently, then the page's own item is completed); a page with
  one target (or none) is delivered directly. So a target that succeeded is never sent again because
  another one failed: each has its own attempts and backoff.
* A target's notifier gets the page with the target's ``channel`` and ``mention`` ids. A permanent error,
  or a kind that is not configured, sends the page to the fallback channel (``log``) at once; a transient
  error retries with backoff (2 s, 4 s, … 300 s), and after ``MAX_ATTEMPTS`` transient failures the page
  goes to the fallback channel, with an error line saying so: an outage delays a page, never drops it.
  Should the fallback fail too, the item is retried later (every 300 s at most), never completed.
* Threads: a page naming a ``thread`` whose parent message this target already has (a record kept in the
  store: ``thread`` records, one per thread, kind and channel) is sent as a follow-up in that thread, and
  updates the parent when it is about the parent's incident. Only a page that calls people (fired,
  escalated...) opens a thread: it is sent as a parent and where it went is recorded. A note whose parent
  is not there yet (its page is still being retried) waits for it, ``NOTE_WAITS`` times ``NOTE_WAIT_S``
  apart, then goes out on its own, never as a parent: a note must not take the page's place.
* One bad item never stalls the others: a malformed payload is logged (with its payload) and completed; a
  notifier raising something other than ``NotifyError`` counts as a transient failure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from watchdog.core.clock import Clock
from watchdog.notify.base import NOTIFY_TOPIC, Notifier, NotifyError, Page
from watchdog.store.base import OutboxItem, OutboxStore, RecordStore

_log = logging.getLogger("watchdog.notify.dispatch")

NOTE_WAITS = 10
NOTE_WAIT_S = 1.0
FAILING_AFTER = 3
"""Transient failures in a row after which a notifier kind counts as failing (``failing``)."""
MAX_ATTEMPTS = 8
MAX_BACKOFF_S = 300.0
THREAD_RECORD = "thread"


class DispatchStore(OutboxStore, RecordStore, Protocol):
    """The outbox, and records of where each thread's parent message went."""


class MalformedPage(ValueError):
    """An outbox payload that is not a page: it can never be delivered."""


def _targets(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    targets = payload.get("targets", [])
    if not isinstance(targets, list) or not all(isinstance(t, Mapping) for t in targets):
        raise MalformedPage(f"targets must be a list of mappings, not {type(targets).__name__}")
    return targets


def _page(payload: Mapping[str, Any], target: Mapping[str, Any] | None) -> Page:
    if not isinstance(payload, Mapping):
        raise MalformedPage(f"payload is a {type(payload).__name__}, not a mapping")
    missing = [k for k in ("key", "title", "severity", "state") if not isinstance(payload.get(k), str)]
    if missing:
        raise MalformedPage(f"missing or not a string: {', '.join(missing)}")
    labels = payload.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise MalformedPage("labels must be a mapping")
    mentions: Any = (target or {}).get("mention") or []
    if not isinstance(mentions, list | tuple):
        raise MalformedPage("a target's mention must be a list")
    channel = (target or {}).get("channel")
    links = payload.get("links") or []
    if not isinstance(links, list) or not all(isinstance(x, list | tuple) and len(x) == 2 for x in links):
        raise MalformedPage("links must be a list of [text, url] pairs")
    muted = payload.get("muted") or []
    if not isinstance(muted, list):
        raise MalformedPage("muted must be a list")
    return Page(
        key=payload["key"],
        title=payload["title"],
        severity=payload["severity"],
        state=payload["state"],
        summary=str(payload.get("summary") or ""),
        runbook_url=str(payload.get("runbook_url") or ""),
        labels={str(k): str(v) for k, v in labels.items()},
        level=str(payload.get("level") or "L1"),
        channel=str(channel) if channel else "",
        mentions=tuple(str(m) for m in mentions),
        since=str(payload.get("since") or ""),
        event=str(payload.get("event") or "fired"),
        note=str(payload.get("note") or ""),
        actor=str(payload.get("actor") or ""),
        budget_left=str(payload.get("budget_left") or ""),
        links=tuple((str(text), str(url)) for text, url in links),
        muted=tuple(str(m) for m in muted),
        acked_by=str(payload.get("acked_by") or ""),
        actions=bool(payload.get("actions", True)),
    )


def _describe(kind: str, page: Page) -> str:
    return f"{kind} {page.channel}" if page.channel else kind


class Dispatcher:
    def __init__(
        self,
        store: DispatchStore,
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
        self._streaks: dict[str, int] = {}
        self._failing: dict[str, str] = {}

    @property
    def failing(self) -> dict[str, str]:
        """Notifier kinds failing now → their last error: a permanent error, or ``FAILING_AFTER`` transient
        ones in a row; a kind leaves this as soon as one of its deliveries succeeds."""
        return dict(self._failing)

    def _note_failure(self, kind: str, error: str, permanent: bool) -> None:
        self._streaks[kind] = self._streaks.get(kind, 0) + 1
        if permanent or self._streaks[kind] >= FAILING_AFTER:
            self._failing[kind] = error

    def _note_success(self, kind: str) -> None:
        self._streaks.pop(kind, None)
        self._failing.pop(kind, None)

    async def release_own_claims(self) -> int:
        """At start: items this worker (the same instance name) claimed before a crash go out now, not when
        their claims expire."""
        released = await self._store.release_claims(self._worker)
        if released:
            _log.warning("released %d page(s) claimed before a restart; sending them now", released)
        return released

    async def run_once(self, limit: int = 20) -> int:
        """Deliver up to ``limit`` outbox items; returns how many target deliveries succeeded (a page split
        into per-target items is delivered in the same call)."""
        delivered = 0
        budget = limit
        while budget > 0:
            items = await self._store.claim(
                NOTIFY_TOPIC, self._worker, budget, self._lease, self._clock.now()
            )
            if not items:
                break
            budget -= len(items)
            split = False
            for item in items:
                try:
                    outcome = await self._handle(item)
                except Exception:  # a store error on one item: the others still go; its claim expires
                    _log.exception("page %s: dispatching failed; its claim will expire", item.dedup_key)
                    continue
                split = split or outcome is None
                delivered += 1 if outcome else 0
            if not split:
                break
        return delivered

    async def _handle(self, item: OutboxItem) -> bool | None:
        """True if delivered, False if not (retried later, or malformed and dropped), None if split."""
        try:
            payload = item.payload
            if not isinstance(payload, Mapping):
                raise MalformedPage(f"payload is a {type(payload).__name__}, not a mapping")
            targets = _targets(payload)
            if len(targets) > 1:
                _page(payload, targets[0])  # refuse a malformed page before splitting it
                await self._split(item, payload, targets)
                return None
            page = _page(payload, targets[0] if targets else None)
        except MalformedPage as exc:
            _log.error(
                "page %s is malformed and cannot be delivered (%s); dropped: %.2000r",
                item.dedup_key,
                exc,
                item.payload,
            )
            await self._store.complete(item.id, self._worker, self._clock.now())
            return False
        kind = str(targets[0].get("type", "")) if targets else self._fallback
        thread = str(payload.get("thread") or "")
        return await self._deliver(item, kind, page, thread)

    async def _split(
        self, item: OutboxItem, payload: Mapping[str, Any], targets: Sequence[Mapping[str, Any]]
    ) -> None:
        now = self._clock.now()
        for index, target in enumerate(targets):
            key = f"{item.dedup_key}#{index}:{target.get('type', '')}:{target.get('channel') or ''}"
            # Idempotent: a split interrupted before completing its page is redone without duplicates.
            await self._store.enqueue(NOTIFY_TOPIC, {**payload, "targets": [dict(target)]}, key, now)
        await self._store.complete(item.id, self._worker, now)

    async def _deliver(self, item: OutboxItem, kind: str, page: Page, thread: str) -> bool:
        if kind == self._fallback:
            return await self._to_fallback(item, page, None)
        notifier = self._notifiers.get(kind)
        if notifier is None:
            _log.warning("no %s notifier configured; page goes to the next channel", kind)
            return await self._to_fallback(item, page, None)
        record_key = f"{thread}|{kind}|{page.channel}"
        if thread:
            parent = await self._store.get_record(THREAD_RECORD, record_key)
            if parent is not None:
                ref = {k: str(v) for k, v in parent.items() if k in ("channel", "ts")}
                page = replace(page, thread_ref=ref, update_parent=parent.get("key") == page.key)
            elif not page.calls_people and item.attempts <= NOTE_WAITS:
                await self._store.retry_later(
                    item.id, self._worker, "waiting for the thread's page", self._clock.now() + NOTE_WAIT_S
                )
                return False
        try:
            sent_to = await notifier.send(page)
        except NotifyError as exc:
            error = f"{_describe(kind, page)}: {exc}"
            self._note_failure(kind, str(exc), exc.permanent)
            if exc.permanent:
                return await self._to_fallback(item, page, error)
            return await self._transient(item, page, error)
        except Exception as exc:  # a notifier bug must not stall the queue: treated as transient
            _log.exception("page %s: the %s notifier raised unexpectedly", item.dedup_key, kind)
            self._note_failure(kind, f"{type(exc).__name__}: {exc}", False)
            return await self._transient(item, page, f"{_describe(kind, page)}: {type(exc).__name__}: {exc}")
        self._note_success(kind)
        now = self._clock.now()
        if thread and page.thread_ref is None and page.calls_people and sent_to:
            await self._store.put_record(THREAD_RECORD, record_key, {**sent_to, "key": page.key}, now)
        await self._store.complete(item.id, self._worker, now)
        return True

    async def _transient(self, item: OutboxItem, page: Page, error: str) -> bool:
        if item.attempts >= MAX_ATTEMPTS:
            _log.error(
                "page %s not delivered after %d attempts (%s); delivering it to %s instead",
                item.dedup_key,
                item.attempts,
                error,
                self._fallback,
            )
            return await self._to_fallback(item, page, error)
        await self._retry(item, error, min(MAX_BACKOFF_S, 2.0**item.attempts))
        return False

    async def _to_fallback(self, item: OutboxItem, page: Page, error: str | None) -> bool:
        """Deliver to the fallback channel; ``error`` says why the target's own channel did not take it."""
        if error is not None:
            _log.warning("page %s: %s; delivering it to %s", item.dedup_key, error, self._fallback)
        try:
            await self._notifiers[self._fallback].send(page)
        except Exception as exc:  # even the last resort failed: keep the page, try again later
            errors = f"{error}; " if error else ""
            errors += f"{self._fallback}: {type(exc).__name__}: {exc}"
            delay = min(MAX_BACKOFF_S, 2.0**item.attempts)
            if item.attempts >= MAX_ATTEMPTS:
                _log.error(
                    "page %s: the fallback channel failed too (%s); kept, retrying", item.dedup_key, errors
                )
            await self._retry(item, errors, delay)
            return False
        await self._store.complete(item.id, self._worker, self._clock.now())
        return True

    async def _retry(self, item: OutboxItem, error: str, delay: float) -> None:
        _log.warning("page %s not delivered (%s); retrying in %.0f s", item.dedup_key, error, delay)
        await self._store.retry_later(item.id, self._worker, error, self._clock.now() + delay)
