"""Leadership between replicas: one named lease in the shared store, renewed on every evaluation tick.

Only the leader turns signals into incidents (every replica evaluates SLOs, since each serves /metrics).
Losing the store means losing leadership: a replica that cannot renew must assume another one took over.
Even two leaders at once would not double-page: incident transitions are compare-and-set.
"""

from __future__ import annotations

import contextlib
import logging

from watchdog.core.clock import Clock
from watchdog.store.base import LeaseStore, StoreUnavailable

_log = logging.getLogger(__name__)

LEADER_LEASE = "leader"


class LeaderLease:
    def __init__(self, store: LeaseStore, instance: str, clock: Clock, *, ttl_s: float) -> None:
        self._store = store
        self._clock = clock
        self.instance = instance
        self.ttl_s = ttl_s
        self.is_leader = False

    async def renew(self) -> bool:
        """Take or renew the lease; returns whether this replica leads now."""
        try:
            now = self._clock.now()
            lease = await self._store.acquire_lease(LEADER_LEASE, self.instance, self.ttl_s, now)
        except StoreUnavailable:
            lease = None
        was_leader, self.is_leader = self.is_leader, lease is not None
        if self.is_leader != was_leader:
            _log.info(
                "leadership %s", "acquired" if self.is_leader else "lost", extra={"instance": self.instance}
            )
        return self.is_leader

    async def release(self) -> None:
        """Hand the lease back at shutdown so another replica need not wait for it to expire."""
        if not self.is_leader:
            return
        with contextlib.suppress(StoreUnavailable):
            await self._store.release_lease(LEADER_LEASE, self.instance)
        self.is_leader = False
