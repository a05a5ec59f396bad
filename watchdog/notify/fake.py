"""``RecordingNotifier``, the notifier contract's fake (``tests/test_notifier_contract.py`` runs it through
the same contract as the real notifiers).

It records every page it delivers (with the target's ``channel`` and ``mentions`` the dispatcher put in it),
in order, and can be scripted to fail: the scripted exceptions (``NotifyError``\\ s, or anything else to
play a buggy notifier) are raised, one per send, before it starts succeeding. A failed send is not
recorded as sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from watchdog.notify.base import Page


class RecordingNotifier:
    """Implements the Notifier protocol: ``sent`` holds the delivered pages, ``attempts`` counts sends
    (failed ones included)."""

    def __init__(self, name: str = "fake", failures: Sequence[Exception] = ()) -> None:
        self.name = name
        self.sent: list[Page] = []
        self.attempts = 0
        self._failures = list(failures)

    def fail_next(self, *errors: Exception) -> None:
        """Script more failures, raised on the next sends after those already scripted."""
        self._failures.extend(errors)

    async def send(self, page: Page) -> Mapping[str, str] | None:
        """A parent page (no ``thread_ref``) returns ``{"channel", "ts"}`` as Slack would, so threads work
        through the fake too."""
        self.attempts += 1
        if self._failures:
            raise self._failures.pop(0)
        self.sent.append(page)
        if page.thread_ref is not None:
            return None
        return {"channel": page.channel or self.name, "ts": str(len(self.sent))}
