"""The notifier contract: ``send`` a page to the one target it names (``channel``, ``mentions``); permanent
failures fall back to the fallback channel, transient ones are retried by the dispatcher.

A page is either an incident's *parent* message (``thread_ref`` None: a new message; the notifier returns a
reference to it, e.g. Slack's channel id and ``ts``, which the dispatcher keeps) or a *follow-up* posted
into that parent's thread (``thread_ref`` set: escalated, acknowledged, resolved, muted...), after which the
notifier brings the parent up to date when ``update_parent`` is set. Kinds without threads (log) return
None and post every page alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class NotifyError(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


EVENTS = frozenset(
    {
        "fired",
        "refired",
        "escalated",
        "repeat",
        "acknowledged",
        "reopened",
        "resolved",
        "muted",
        "unmuted",
        "note",
        "test",
        "maintenance",
    }
)
"""What a page reports. ``fired``/``escalated``/``repeat``/``reopened`` call people (mentions); the others
are notes about an incident people already know of."""

CALLING_EVENTS = frozenset({"fired", "escalated", "repeat", "reopened", "test"})


@dataclass(frozen=True, slots=True)
class Page:
    key: str
    """Dedup key of the incident this page is about."""
    title: str
    severity: str
    state: str
    """The incident's state now: firing | acknowledged | resolved."""
    summary: str
    runbook_url: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    level: str = "L1"
    channel: str = ""
    """The target's channel (``#oncall`` or a channel id) for channel kinds such as slack; empty for log."""
    mentions: tuple[str, ...] = ()
    """The target's user or group ids to mention (``U…``/``W…`` users, ``S…`` user groups)."""
    since: str = ""
    """When the incident started, as the payload carries it (ISO 8601), if it does."""
    event: str = "fired"
    """One of ``EVENTS``."""
    note: str = ""
    """What happened, for follow-ups: "acknowledged by @ana", "escalated to L2 (tech lead)"..."""
    actor: str = ""
    """Who acted (a Slack user id, ``cli:<user>``, ``api``), when someone did."""
    budget_left: str = ""
    """The SLO's error budget left, for SLO alerts ("62 %")."""
    links: tuple[tuple[str, str], ...] = ()
    """(text, url) pairs: the source's own page for alerts from elsewhere (Alertmanager, Cloud Monitoring)."""
    muted: tuple[str, ...] = ()
    """Alerts this incident explains and mutes (inhibition)."""
    acked_by: str = ""
    thread_ref: Mapping[str, str] | None = None
    """Where the parent message is (set by the dispatcher for follow-ups), as the notifier returned it."""
    update_parent: bool = False
    """After posting a follow-up, edit the parent to show the incident's state now."""
    actions: bool = True
    """Offer Acknowledge / Resolve / Silence where the channel can (Slack buttons)."""

    @property
    def calls_people(self) -> bool:
        return self.event in CALLING_EVENTS


class Notifier(Protocol):
    name: str

    async def send(self, page: Page) -> Mapping[str, str] | None:
        """Deliver the page or raise NotifyError. Returns where a parent message went (for threads), or
        None."""
        ...


NOTIFY_TOPIC = "notify"
"""Outbox topic of pages waiting to be sent."""
