"""The one place a notifier kind is registered: escalation targets name a kind (``type: slack``), wiring
builds one notifier per registered kind. A new channel is its module plus one line in ``NOTIFIER_KINDS``.

A factory gets the environment (passed in, never read from ``os.environ`` here) and returns None when the
environment does not configure its kind: ``slack`` is built only when ``SLACK_BOT_TOKEN`` is set. A target
whose kind is not built is delivered to the fallback channel, ``log``, with a warning: a page is never
dropped for want of a channel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from watchdog.notify.base import Notifier
from watchdog.notify.log import LogNotifier
from watchdog.notify.slack import SlackNotifier

FALLBACK_KIND = "log"

NotifierFactory = Callable[[Mapping[str, str]], Notifier | None]

NOTIFIER_KINDS: dict[str, NotifierFactory] = {
    "log": lambda env: LogNotifier(),
    "slack": SlackNotifier.from_env,
}


def build_notifiers(kinds: Iterable[str], env: Mapping[str, str]) -> dict[str, Notifier]:
    """One notifier per registered kind among ``kinds`` that ``env`` configures, plus the fallback; other
    kinds are left to the dispatcher's fallback."""
    built: dict[str, Notifier] = {}
    for kind in sorted({*kinds, FALLBACK_KIND}):
        factory = NOTIFIER_KINDS.get(kind)
        notifier = factory(env) if factory is not None else None
        if notifier is not None:
            built[kind] = notifier
    return built
