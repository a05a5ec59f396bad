"""Notifiers: one module per integration (log, Slack, ...)."""
