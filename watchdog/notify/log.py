"""A notifier that writes pages to the structured log: the demo's channel and the last-resort fallback."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping

from watchdog.notify.base import Page

_log = logging.getLogger("watchdog.page")


class LogNotifier:
    name = "log"

    def __init__(self) -> None:
        # Bounded: the daemon runs for months; tests and the demo read the recent pages.
        self.sent: deque[Page] = deque(maxlen=1000)

    async def send(self, page: Page) -> Mapping[str, str] | None:
        self.sent.append(page)
        # The target this page was meant for (a slack channel, when slack could not take it), if any.
        target = f" for {page.channel}" if page.channel else ""
        what = page.state.upper() if page.event in ("fired", "resolved") else page.event.upper()
        note = f" ({page.note})" if page.note else ""
        _log.warning(
            "PAGE %s [%s → %s%s] %s: %s%s",
            what,
            page.severity,
            page.level,
            target,
            page.title,
            page.summary,
            note,
            extra={
                "page_event": page.event,
                "page_actor": page.actor,
                "page_key": page.key,
                "page_state": page.state,
                "page_severity": page.severity,
                "page_level": page.level,
                "runbook": page.runbook_url,
                "labels": dict(page.labels),
                "page_channel": page.channel,
                "page_mentions": list(page.mentions),
            },
        )
        return None
