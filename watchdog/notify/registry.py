"""The one place a notifier kind is registered: escalation targets name a kind (``type: log``), wiring
builds one notifier per registered kind. A new channel is its module plus one line in ``NOTIFIER_KINDS``.

A target whose kind is not registered (``slack`` until its notifier lands) is delivered to the fallback
channel, ``log``, with a warning: a page is never dropped for want of a channel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from watchdog.notify.base import Notifier
from watchdog.notify.log import LogNotifier

FALLBACK_KIND = "log"

NOTIFIER_KINDS: dict[str, Callable[[], Notifier]] = {
    "log": LogNotifier,
}


def build_notifiers(kinds: Iterable[str]) -> dict[str, Notifier]:
    """One notifier per registered kind among ``kinds``, plus the fallback; unknown kinds are left to the
    dispatcher's fallback."""
    wanted = {*kinds, FALLBACK_KIND}
    return {kind: NOTIFIER_KINDS[kind]() for kind in sorted(wanted) if kind in NOTIFIER_KINDS}
