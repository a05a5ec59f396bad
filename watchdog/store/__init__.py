"""The watchdog's own state: probe aggregates, incidents, the outbox and the leader lease, behind role
protocols in ``base`` (``ResultWriter``, ``ResultReader``, ``IncidentStore``, ``OutboxStore``,
``LeaseStore``; ``StateStore`` is all of them) with SQLite, PostgreSQL and in-memory implementations under
one contract suite. Imports config and core only."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from watchdog.core.redact import redact_url
from watchdog.store.base import (
    LATENCY_BUCKETS_S,
    Incident,
    IncidentStore,
    Lease,
    LeaseStore,
    MinuteAggregate,
    ObservationMinute,
    OutboxEntry,
    OutboxItem,
    OutboxStore,
    RecordStore,
    ResultReader,
    ResultWriter,
    StateStore,
    StoreUnavailable,
)
from watchdog.store.memory import MemoryStore
from watchdog.store.sqlite import SqliteStore

if TYPE_CHECKING:
    from watchdog.store.postgres import PostgresStore

__all__ = [
    "LATENCY_BUCKETS_S",
    "Incident",
    "IncidentStore",
    "Lease",
    "LeaseStore",
    "MemoryStore",
    "MinuteAggregate",
    "ObservationMinute",
    "OutboxEntry",
    "OutboxItem",
    "OutboxStore",
    "PostgresStore",
    "RecordStore",
    "ResultReader",
    "ResultWriter",
    "SqliteStore",
    "StateStore",
    "StoreUnavailable",
    "open_store",
]


def __getattr__(name: str) -> Any:
    # PostgresStore is imported on first use: psycopg costs ~9 MB of RSS in a daemon on SQLite.
    if name == "PostgresStore":
        from watchdog.store.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(spec: str, **kwargs: Any) -> StateStore:
    """Build (not connect) the store named by ``spec``; call ``await store.open()`` next.

    - ``postgresql://...`` / ``postgres://...`` → PostgresStore (kwargs: schema, connect_timeout_s, ...)
    - ``memory://`` or ``:memory:`` → MemoryStore
    - ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` (SQLAlchemy style) or a plain path → SqliteStore

    Every backend accepts ``latency_buckets``, ``raw_retention_s`` and ``minute_retention_s``. An unknown
    ``scheme://`` is a ValueError rather than a file of that name, so a typo does not silently create one.
    """
    m = _SCHEME.match(spec)
    scheme = m.group(1).lower() if m else None
    if scheme in ("postgresql", "postgres"):
        from watchdog.store.postgres import PostgresStore

        return PostgresStore(spec, **kwargs)
    if scheme == "memory" or spec == ":memory:":
        return MemoryStore(**kwargs)
    if scheme == "sqlite":
        path = spec[len("sqlite:///") :] if spec.startswith("sqlite:///") else ""
        if not path:
            raise ValueError(f"sqlite store spec needs a path: sqlite:///file.db, got {spec!r}")
        return SqliteStore(path, **kwargs)
    if scheme is not None:
        raise ValueError(f"unknown store scheme {scheme!r} in {redact_url(spec)!r}")
    if not spec:
        raise ValueError("empty store spec")
    return SqliteStore(spec, **kwargs)
