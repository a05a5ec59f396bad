"""Notifiers, one module per integration, behind the ``Notifier`` protocol in ``base`` (log; a recording
fake for tests), the registry of kinds wiring builds from, and ``dispatch``: outbox rows claimed and sent,
with fallback on permanent errors. Imports the store, config and core only."""
