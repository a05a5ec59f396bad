"""The notifier contract: ``send`` a page to the one target it names (``channel``, ``mentions``); permanent
failures fall back to the fallback channel, transient ones are retried by the dispatcher."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class NotifyError(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Page:
    key: str
    """Dedup key of the incident this page is about."""
    title: str
    severity: str
    state: str
    """firing | resolved | acknowledged"""
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


class Notifier(Protocol):
    name: str

    async def send(self, page: Page) -> None:
        """Deliver the page or raise NotifyError."""
        ...


NOTIFY_TOPIC = "notify"
"""Outbox topic of pages waiting to be sent."""
