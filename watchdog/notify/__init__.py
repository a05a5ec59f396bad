"""Notifiers, one module per integration, behind the ``Notifier`` protocol in ``base`` (log, Slack; a
recording fake for tests), the registry of kinds wiring builds from, and ``dispatch``: outbox rows claimed
and sent, one delivery per target, retried on transient errors and handed to the log on permanent ones or
after the last attempt, so a page is never dropped. Imports the store, config and core only."""
