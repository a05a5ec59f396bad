"""The flag contract (watchdog.flags.base) for every backend, plus each backend's specifics and faults.

Backends: memory (the fake), the flagd file, PostgreSQL (the local server at 127.0.0.1:5432, trust auth, a
fresh database per session, dropped at the end), Redis (127.0.0.1:6379, keys under a per-session prefix,
deleted at the end), Google Cloud Storage (gcp-storage-emulator in-process on a free loopback port, with the
object preconditions real GCS enforces added in front of it), a generic HTTP webhook and Unleash's admin
API (Starlette fakes on loopback that speak their protocols). The local PostgreSQL and Redis fail, never
skip, when unreachable: `make deps` (scripts/deps.sh) provides them.

Faults, on every remote backend: unreachable (a clear FlagError within the bound), a transient failure then
OK (retried), a corrupted document (never overwritten blindly; a rollback replaces it and says so), a lost
write (caught by the read-back), concurrent writers from separate instances (replicas: nobody clobbers
anybody, the same key is applied once, a key reused for another value is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import random
import socket
import stat
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as redis_sync
from loopback import closed_port, hanging_server, serve_asgi
from psycopg import sql
from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from watchdog.config.flags import (
    FlagConfig,
    FlagdFileFlagConfig,
    GcsFlagConfig,
    HttpFlagConfig,
    PostgresFlagConfig,
    RedisFlagConfig,
    UnleashFlagConfig,
)
from watchdog.core.clock import FakeClock, SystemClock
from watchdog.flags import flagd_file
from watchdog.flags.base import FlagBackend, FlagError, FlagState
from watchdog.flags.flagd_file import (
    DEFAULT_FLAG_KEY,
    FlagdFileBackend,
    _distribute,
    _idempotency_log,
    choose_variant,
    murmur3_32,
    parse_flag,
    read_db_percent,
    write_initial,
)
from watchdog.flags.gcs import GcsFlagBackend
from watchdog.flags.http import HttpFlagBackend
from watchdog.flags.memory import MemoryFlagBackend
from watchdog.flags.postgres import PostgresFlagBackend
from watchdog.flags.redis import RedisFlagBackend
from watchdog.flags.registry import FLAG_BACKENDS, build_flag_backend
from watchdog.flags.unleash import UnleashFlagBackend

REPO_ROOT = Path(__file__).resolve().parents[1]
PG_DSN = os.environ.get("WATCHDOG_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("WATCHDOG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SESSION = uuid.uuid4().hex[:8]
GCS_BUCKET = "watchdog-flags"
UNLEASH_TOKEN = "*:production.unleash-admin-token"
WEBHOOK_TOKEN = "webhook-s3cret"
REMOTE_KINDS = ["postgres", "redis", "gcs", "http", "unleash"]
_seq = itertools.count()

# Remote backends under test: short per-request timeouts, the default 10 s deadline. Retries sleep on the
# harness's FakeClock, so backoff costs no wall time; the bound itself is tested with a real clock.
TIMEOUT = 1.0


@dataclass
class Harness:
    backend: FlagBackend
    clock: FakeClock
    lose_writes: Callable[[], None]
    """Make the next writes vanish (accepted but not stored), so read-back verification must catch it."""
    whole_percent_only: bool = False
    """Unleash's rollout is a whole percent: finer shares are refused (ValueError), not rounded."""
    sibling: Callable[[FakeClock], FlagBackend] | None = None
    """Another instance on the same flag (another replica), with its own clock."""


@dataclass
class Remote(Harness):
    kind: str = ""
    fail_next: Callable[[int], None] = lambda n: None
    """Make the next ``n`` requests (or connections) fail as an overloaded or restarting backend would."""
    corrupt: Callable[[], None] = lambda: None
    """Replace the stored flag with something unusable (truncated JSON where the store allows it)."""
    raw: Callable[[], str] = lambda: ""
    """What the store holds now, as text (to prove an unusable document was left alone)."""
    unreachable: Callable[[], FlagBackend] | None = None
    """The same kind of backend pointed at a loopback port nothing listens on."""
    writes: Callable[[], int] | None = None
    """How many writes the store applied since the flag was created (where the store can count)."""
    backup_kept: Callable[[], bool] | None = None
    """Whether the unusable document a rollback replaced was kept beside the flag."""
    extras: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(
    params=[
        "memory",
        "flagd-file",
        pytest.param("postgres", marks=pytest.mark.postgres),
        "redis",
        "gcs",
        "http",
        "unleash",
    ]
)
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    clock = FakeClock()
    if request.param == "memory":
        memory = MemoryFlagBackend(0.0, clock=clock)

        def lose_memory_writes() -> None:
            memory.drop_writes = True

        yield Harness(memory, clock, lose_memory_writes)
        return
    if request.param == "flagd-file":
        path = tmp_path / "flags.json"
        write_initial(path, 0.0, now=clock.now())

        def lose_file_writes() -> None:
            monkeypatch.setattr(flagd_file, "_atomic_write", lambda path, document: None)

        yield Harness(
            FlagdFileBackend(path, clock=clock),
            clock,
            lose_file_writes,
            sibling=lambda c: FlagdFileBackend(path, clock=c),
        )
        return
    async with remote_harness(request.param, request, clock, monkeypatch) as remote:
        yield remote


@pytest.fixture(
    params=[pytest.param(k, marks=[pytest.mark.postgres] if k == "postgres" else []) for k in REMOTE_KINDS]
)
async def remote(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Remote]:
    async with remote_harness(request.param, request, FakeClock(), monkeypatch) as built:
        yield built


# --- contract ----------------------------------------------------------------------------------------


async def test_starts_at_yaml(harness: Harness) -> None:
    assert (await harness.backend.get()).db_percent == 0.0


async def test_set_reads_back_and_records_who_why_when(harness: Harness) -> None:
    harness.clock.advance(60)
    state = await harness.backend.set(5, reason="canary start", updated_by="alice", idempotency_key="k-1")
    assert state.db_percent == 5.0
    assert state.reason == "canary start"
    assert state.updated_by == "alice"
    assert state.idempotency_key == "k-1"
    assert state.updated_at == pytest.approx(harness.clock.now())
    assert await harness.backend.get() == state


async def test_each_change_records_its_own_metadata(harness: Harness) -> None:
    await harness.backend.set(5, "canary", "alice", "k-1")
    harness.clock.advance(30)
    rolled = await harness.backend.set(0, "error budget burn 14.4x on db cohort", "sre-watchdog", "inc-7")
    got = await harness.backend.get()
    assert got == rolled
    assert (got.db_percent, got.updated_by, got.idempotency_key) == (0.0, "sre-watchdog", "inc-7")
    assert got.reason == "error budget burn 14.4x on db cohort"
    assert got.updated_at == pytest.approx(harness.clock.now())


@pytest.mark.parametrize(("requested", "stored"), [(0.5, 0.5), (3.333, 3.33), (99.999, 100.0), (100, 100.0)])
async def test_fractional_percent_at_hundredth_resolution(
    harness: Harness, requested: float, stored: float
) -> None:
    if harness.whole_percent_only and not stored.is_integer():
        before = await harness.backend.get()
        with pytest.raises(ValueError, match="whole percents"):
            await harness.backend.set(requested, "r", "u", f"k-{requested}")
        assert await harness.backend.get() == before
        return
    state = await harness.backend.set(requested, "r", "u", f"k-{requested}")
    assert state.db_percent == pytest.approx(stored)
    assert (await harness.backend.get()).db_percent == pytest.approx(stored)


async def test_same_key_and_value_is_a_noop(harness: Harness) -> None:
    first = await harness.backend.set(0, "rollback", "sre-watchdog", "inc-1")
    harness.clock.advance(120)
    again = await harness.backend.set(0, "rollback (retry)", "sre-watchdog", "inc-1")
    assert again == first  # not re-stamped: the retry changed nothing
    assert (await harness.backend.get()).updated_at == first.updated_at


async def test_retry_after_someone_elses_change_does_not_undo_it(harness: Harness) -> None:
    await harness.backend.set(5, "canary", "alice", "k-canary")
    await harness.backend.set(10, "widen", "bob", "k-widen")
    # A redelivered outbox entry for the first change must not roll bob's change back.
    state = await harness.backend.set(5, "canary", "alice", "k-canary")
    assert state.db_percent == 10.0
    assert state.idempotency_key == "k-widen"


async def test_reusing_a_key_for_another_value_is_refused(harness: Harness) -> None:
    await harness.backend.set(5, "canary", "alice", "k-1")
    with pytest.raises(FlagError, match="already used"):
        await harness.backend.set(50, "oops", "alice", "k-1")
    assert (await harness.backend.get()).db_percent == 5.0


@pytest.mark.parametrize("bad", [-0.01, 100.5, math.nan, math.inf, True])
async def test_invalid_percent_is_rejected_without_writing(harness: Harness, bad: Any) -> None:
    before = await harness.backend.get()
    with pytest.raises(ValueError):
        await harness.backend.set(bad, "r", "u", "k-bad")
    assert await harness.backend.get() == before


async def test_lost_write_fails_read_back(harness: Harness) -> None:
    harness.lose_writes()
    with pytest.raises(FlagError, match="read-back"):
        await harness.backend.set(5, "canary", "alice", "k-lost")
    assert (await harness.backend.get()).db_percent == 0.0


async def test_backend_has_a_name(harness: Harness) -> None:
    assert isinstance(harness.backend.name, str) and harness.backend.name


# --- remote backends: the services, the fakes, the faults ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def flag_pg_dsn() -> Iterator[str]:
    """A fresh database for this session's flag tables on the local server, dropped at the end."""
    name = f"wdflags_{SESSION}"
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(PG_DSN)
    info["dbname"] = name
    yield psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """Every Redis key of this session starts with this; all of them are deleted at the end."""
    prefix = f"wdtest:{SESSION}:"
    yield prefix
    client = redis_sync.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class GcsEmulator:
    """gcp-storage-emulator in this process on a free loopback port, with what real GCS does and the
    emulator lacks added in front of its object handlers: ``ifGenerationMatch`` preconditions on uploads and
    downloads (412). Plus switches for faults: the next requests answer 503, uploads acknowledged but not
    stored. Its HTTP server handles one request at a time, so a precondition check and the write it guards
    are atomic, as on GCS."""

    def __init__(self) -> None:
        from gcp_storage_emulator import server as emulator_server  # type: ignore[import-untyped]
        from gcp_storage_emulator.handlers import objects  # type: ignore[import-untyped]

        self.port = _free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.fail_next = 0
        self.drop_writes = False
        self.uploads: Counter[str] = Counter()
        self.preconditions_failed = 0
        self._objects = objects
        self._patched: list[tuple[dict[str, Any], str, Any]] = []
        for _, handlers in emulator_server.HANDLERS:
            for method, handler in list(handlers.items()):
                if handler in (objects.insert, objects.download, objects.get):
                    handlers[method] = self._wrap(handler)
                    self._patched.append((handlers, method, handler))
        logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
        self.server = emulator_server.create_server(
            "127.0.0.1", self.port, in_memory=True, default_bucket=GCS_BUCKET
        )
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        for handlers, method, handler in self._patched:
            handlers[method] = handler

    def reset(self) -> None:
        self.fail_next = 0
        self.drop_writes = False

    def _wrap(self, handler: Any) -> Any:
        from gcp_storage_emulator.exceptions import NotFound  # type: ignore[import-untyped]

        def guarded(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
            if self.fail_next > 0:
                self.fail_next -= 1
                response.status = HTTPStatus.SERVICE_UNAVAILABLE
                response.json({"error": {"code": 503, "message": "injected: backend error"}})
                return None
            bucket = request.params["bucket_name"]
            name = request.params.get("object_id")
            if handler is self._objects.insert:
                data = request.data if isinstance(request.data, dict) else {}
                name = request.query.get("name", [None])[0] or data.get("meta", {}).get("name")
            expected = request.query.get("ifGenerationMatch")
            old: tuple[bytes, dict[str, Any]] | None = None
            try:
                obj = storage.get_file_obj(bucket, name)
                old = (storage.get_file(bucket, name), dict(obj))
                generation = str(obj["generation"])
            except NotFound:
                generation = "0"
            if expected is not None and expected[0] != generation:
                self.preconditions_failed += 1
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json(
                    {
                        "error": {
                            "code": 412,
                            "message": "At least one of the pre-conditions you specified did not hold.",
                        }
                    }
                )
                return None
            result = handler(request, response, storage, *args, **kwargs)
            if handler is self._objects.insert and response.status == HTTPStatus.OK:
                self.uploads[name] += 1
                if self.drop_writes and old is not None:
                    storage.create_file(bucket, name, old[0], old[1])  # acknowledged, not kept
            return result

        return guarded

    def client(self) -> Any:
        import google.cloud.storage as storage  # type: ignore[import-untyped]
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project="test",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": self.host},
        )


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[GcsEmulator]:
    emulator = GcsEmulator()
    yield emulator
    emulator.stop()


class FlakyProxy:
    """A TCP proxy on loopback in front of PostgreSQL or Redis; ``refuse(n)`` makes it close the next ``n``
    connections as soon as they are accepted (a restarting or overloaded server)."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._refuse = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    def refuse(self, n: int) -> None:
        self._refuse += n

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refuse > 0:
            self._refuse -= 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                return  # a side closed: the finally closes the other
            finally:
                dst.close()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


class FakeWebhook:
    """A flag service speaking the webhook protocol of watchdog.flags.http: GET state with an ETag; PUT
    with Idempotency-Key (replayed: ``Idempotent-Replayed: true``; reused for another value: 422) and
    If-Match (stale: 412); bearer token; faults: 500s, writes dropped, an unreadable GET body."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.state: dict[str, Any] = {
            "db_percent": 0.0,
            "updated_at": clock.now(),
            "updated_by": "initial",
            "reason": "initial state",
            "idempotency_key": "",
        }
        self.version = 1
        self.applied: dict[str, float] = {}
        self.fail_next = 0
        self.drop_writes = False
        self.garbage: bytes | None = None
        self.writes = 0
        self.requests: list[tuple[str, dict[str, str]]] = []

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/flag", self.handle, methods=["GET", "PUT", "POST"])])

    async def handle(self, request: Request) -> Response:
        self.requests.append((request.method, dict(request.headers)))
        if request.headers.get("authorization") != f"Bearer {WEBHOOK_TOKEN}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        if self.fail_next > 0:
            self.fail_next -= 1
            return JSONResponse({"error": "injected"}, status_code=500)
        etag = f'"{self.version}"'
        if request.method == "GET":
            if self.garbage is not None:
                return Response(self.garbage, media_type="application/json", headers={"ETag": etag})
            return JSONResponse(self.state, headers={"ETag": etag})
        body = await request.json()
        key = request.headers.get("idempotency-key", "")
        if key and key in self.applied:
            if not math.isclose(self.applied[key], body["db_percent"], abs_tol=1e-9):
                return JSONResponse({"error": "key reused with another value"}, status_code=422)
            return JSONResponse(self.state, headers={"Idempotent-Replayed": "true", "ETag": etag})
        if "if-match" in request.headers and request.headers["if-match"] != etag:
            return JSONResponse({"error": "stale"}, status_code=412)
        if key:
            self.applied[key] = body["db_percent"]
        self.writes += 1
        if not self.drop_writes:
            self.garbage = None
            self.state = {**body, "updated_at": self.clock.now()}
            self.version += 1
        return JSONResponse(self.state, headers={"ETag": f'"{self.version}"'})


class FakeUnleash:
    """Unleash's admin API for one feature: GET the environment (enabled + strategies), PUT a strategy
    (validated as Unleash does: a name, string parameters), POST on/off; an admin token in Authorization
    (no Bearer prefix); faults: 500s, writes dropped."""

    PROJECT = "default"
    ENV = "production"

    def __init__(self) -> None:
        self.enabled = True
        self.strategies: list[dict[str, Any]] = [
            {
                "id": "6b5157cb-343a-41e7-bfa3-7b4ec3044840",
                "name": "flexibleRollout",
                "title": "db canary",
                "disabled": False,
                "featureName": DEFAULT_FLAG_KEY,
                "sortOrder": 0,
                "segments": [],
                "constraints": [{"contextName": "appName", "operator": "IN", "values": ["web"]}],
                "parameters": {"rollout": "0", "stickiness": "default", "groupId": DEFAULT_FLAG_KEY},
                "variants": [],
            }
        ]
        self.fail_next = 0
        self.drop_writes = False
        self.puts = 0
        self.requests: list[tuple[str, str, str]] = []

    def app(self) -> Starlette:
        base = "/api/admin/projects/{project}/features/{feature}/environments/{environment}"
        return Starlette(
            routes=[
                Route(base, self.get_environment, methods=["GET"]),
                Route(base + "/strategies/{strategy_id}", self.put_strategy, methods=["PUT"]),
                Route(base + "/on", self.turn_on, methods=["POST"]),
                Route(base + "/off", self.turn_off, methods=["POST"]),
            ]
        )

    def _gate(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.url.path, request.headers.get("authorization", "")))
        if request.headers.get("authorization") != UNLEASH_TOKEN:
            return JSONResponse({"message": "You must log in to use Unleash."}, status_code=401)
        if self.fail_next > 0:
            self.fail_next -= 1
            return JSONResponse({"message": "Unexpected error"}, status_code=500)
        params = request.path_params
        if (params["project"], params["feature"], params["environment"]) != (
            self.PROJECT,
            DEFAULT_FLAG_KEY,
            self.ENV,
        ):
            return JSONResponse({"message": "Could not find feature"}, status_code=404)
        return None

    async def get_environment(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        return JSONResponse(
            {
                "name": self.ENV,
                "environment": self.ENV,
                "featureName": DEFAULT_FLAG_KEY,
                "type": "production",
                "enabled": self.enabled,
                "strategies": json.loads(json.dumps(self.strategies)),
            }
        )

    async def put_strategy(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        body = await request.json()
        params = body.get("parameters", {})
        if not isinstance(body.get("name"), str) or not all(isinstance(v, str) for v in params.values()):
            return JSONResponse({"message": "validation error: parameters must be strings"}, status_code=400)
        for index, strategy in enumerate(self.strategies):
            if strategy["id"] == request.path_params["strategy_id"]:
                self.puts += 1
                updated = {**body, "id": strategy["id"], "featureName": DEFAULT_FLAG_KEY}
                if not self.drop_writes:
                    self.strategies[index] = updated
                return JSONResponse(updated)
        return JSONResponse({"message": "Could not find strategy"}, status_code=404)

    async def turn_on(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        self.enabled = True
        return JSONResponse({"name": DEFAULT_FLAG_KEY})

    async def turn_off(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        self.enabled = False
        return JSONResponse({"name": DEFAULT_FLAG_KEY})


def _pg_exec(
    dsn: str, statement: sql.Composed | sql.SQL, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


TRUNCATED = b'{"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": {"content-data-source": {"sta'


@contextlib.asynccontextmanager
async def remote_harness(
    kind: str, request: pytest.FixtureRequest, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Remote]:
    n = next(_seq)
    if kind == "postgres":
        dsn: str = request.getfixturevalue("flag_pg_dsn")
        table = f"flags_{n}"
        proxy = FlakyProxy("127.0.0.1", 5432)
        await proxy.start()
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        via_proxy = psycopg.conninfo.make_conninfo(**{**info, "host": "127.0.0.1", "port": str(proxy.port)})  # type: ignore[arg-type]

        def pg(c: FakeClock, target: str = via_proxy) -> PostgresFlagBackend:
            return PostgresFlagBackend(target, table=table, clock=c, timeout=TIMEOUT)

        backend = pg(clock)
        await backend.create(0.0, updated_by="initial", reason="initial state")
        ident = sql.Identifier(table)

        def pg_lose_writes() -> None:
            _pg_exec(
                dsn,
                sql.SQL(
                    "CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN OLD; END'; "
                    "CREATE TRIGGER swallow BEFORE UPDATE ON {t} FOR EACH ROW EXECUTE FUNCTION {fn}()"
                ).format(fn=sql.Identifier(f"{table}_swallow"), t=ident),
            )

        def pg_corrupt() -> None:
            # jsonb only holds JSON: the damage a table can carry is a document that is not a flagd one.
            bad = '{"flags": {"content-data-source": {"state": "ENABLED", "variants": {"yaml": "yaml"}}}}'
            _pg_exec(dsn, sql.SQL("UPDATE {} SET document = %s::jsonb").format(ident), (bad,))

        def pg_raw() -> str:
            return str(_pg_exec(dsn, sql.SQL("SELECT document::text FROM {}").format(ident))[0][0])

        def pg_writes() -> int:
            return int(_pg_exec(dsn, sql.SQL("SELECT version - 1 FROM {}").format(ident))[0][0])

        def pg_backup() -> bool:
            rows = _pg_exec(dsn, sql.SQL("SELECT corrupt_document IS NOT NULL FROM {}").format(ident))
            return bool(rows[0][0])

        try:
            yield Remote(
                backend=backend,
                clock=clock,
                lose_writes=pg_lose_writes,
                sibling=pg,
                kind=kind,
                fail_next=proxy.refuse,
                corrupt=pg_corrupt,
                raw=pg_raw,
                unreachable=lambda: pg(
                    FakeClock(), f"postgresql://postgres@127.0.0.1:{closed_port()}/{info['dbname']}"
                ),
                writes=pg_writes,
                backup_kept=pg_backup,
                extras={"dsn": dsn, "table": table},
            )
        finally:
            await proxy.stop()
    elif kind == "redis":
        prefix: str = request.getfixturevalue("redis_prefix")
        key = f"{prefix}{n}"
        proxy = FlakyProxy("127.0.0.1", 6379)
        await proxy.start()
        db = REDIS_URL.rsplit("/", 1)[-1]

        def rd(c: FakeClock, url: str = f"redis://127.0.0.1:{proxy.port}/{db}") -> RedisFlagBackend:
            return RedisFlagBackend(url, redis_key=key, clock=c, timeout=TIMEOUT)

        backend_r = rd(clock)
        await backend_r.create(0.0, updated_by="initial", reason="initial state")
        client = redis_sync.Redis.from_url(REDIS_URL, socket_timeout=5)

        def redis_lose_writes() -> None:
            monkeypatch.setattr(RedisFlagBackend, "_queue_write", lambda self, pipe, data: None)

        def redis_corrupt() -> None:
            client.set(key, TRUNCATED)

        def redis_raw() -> str:
            value = client.get(key)
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else repr(value)

        try:
            yield Remote(
                backend=backend_r,
                clock=clock,
                lose_writes=redis_lose_writes,
                sibling=rd,
                kind=kind,
                fail_next=proxy.refuse,
                corrupt=redis_corrupt,
                raw=redis_raw,
                unreachable=lambda: rd(FakeClock(), f"redis://127.0.0.1:{closed_port()}/0"),
                backup_kept=lambda: bool(list(client.scan_iter(match=f"{key}:corrupt:*"))),
            )
        finally:
            client.close()
            await proxy.stop()
    elif kind == "gcs":
        emulator: GcsEmulator = request.getfixturevalue("gcs_emulator")
        emulator.reset()
        name = f"{SESSION}/{n}/flags.json"
        bucket = emulator.client().bucket(GCS_BUCKET)

        def gcs(c: FakeClock, host: str = emulator.host) -> GcsFlagBackend:
            return GcsFlagBackend(GCS_BUCKET, name, clock=c, timeout=TIMEOUT, emulator_host=host)

        backend_g = gcs(clock)
        await backend_g.create(0.0, updated_by="initial", reason="initial state")
        baseline = emulator.uploads[name]

        def gcs_lose_writes() -> None:
            emulator.drop_writes = True

        def gcs_fail_next(count: int) -> None:
            emulator.fail_next += count

        try:
            yield Remote(
                backend=backend_g,
                clock=clock,
                lose_writes=gcs_lose_writes,
                sibling=gcs,
                kind=kind,
                fail_next=gcs_fail_next,
                corrupt=lambda: bucket.blob(name).upload_from_string(TRUNCATED),
                raw=lambda: bucket.blob(name).download_as_bytes().decode("utf-8", "replace"),
                unreachable=lambda: gcs(FakeClock(), f"http://127.0.0.1:{closed_port()}"),
                writes=lambda: emulator.uploads[name] - baseline,
                backup_kept=lambda: any(
                    b.name.startswith(f"{name}.corrupt-") for b in bucket.list_blobs(prefix=name)
                ),
                extras={"emulator": emulator, "object": name},
            )
        finally:
            emulator.reset()
    elif kind == "http":
        fake = FakeWebhook(clock)
        async with serve_asgi(fake.app()) as base:

            def wh(c: FakeClock, url: str = f"{base}/flag") -> HttpFlagBackend:
                return HttpFlagBackend(url, token=WEBHOOK_TOKEN, clock=c, timeout=TIMEOUT)

            def wh_lose_writes() -> None:
                fake.drop_writes = True

            def wh_fail_next(count: int) -> None:
                fake.fail_next += count

            def wh_corrupt() -> None:
                fake.garbage = TRUNCATED

            yield Remote(
                backend=wh(clock),
                clock=clock,
                lose_writes=wh_lose_writes,
                sibling=wh,
                kind=kind,
                fail_next=wh_fail_next,
                corrupt=wh_corrupt,
                raw=lambda: (fake.garbage or b"").decode() or json.dumps(fake.state),
                unreachable=lambda: wh(FakeClock(), f"http://127.0.0.1:{closed_port()}/flag"),
                writes=lambda: fake.writes,
                extras={"fake": fake, "base": base},
            )
    elif kind == "unleash":
        fake_u = FakeUnleash()
        async with serve_asgi(fake_u.app()) as base:

            def un(c: FakeClock, url: str = base) -> UnleashFlagBackend:
                return UnleashFlagBackend(
                    url,
                    token=UNLEASH_TOKEN,
                    feature=DEFAULT_FLAG_KEY,
                    environment=FakeUnleash.ENV,
                    clock=c,
                    timeout=TIMEOUT,
                )

            def un_lose_writes() -> None:
                fake_u.drop_writes = True

            def un_fail_next(count: int) -> None:
                fake_u.fail_next += count

            def un_corrupt() -> None:
                fake_u.strategies[0]["parameters"]["rollout"] = "5%"

            yield Remote(
                backend=un(clock),
                clock=clock,
                lose_writes=un_lose_writes,
                whole_percent_only=True,
                sibling=None,  # Unleash has no compare-and-set: see watchdog.flags.unleash
                kind=kind,
                fail_next=un_fail_next,
                corrupt=un_corrupt,
                raw=lambda: json.dumps(fake_u.strategies),
                unreachable=lambda: un(FakeClock(), f"http://127.0.0.1:{closed_port()}"),
                writes=lambda: fake_u.puts,
                extras={"fake": fake_u, "base": base},
            )
    else:
        raise AssertionError(kind)


# --- faults, on every remote backend -----------------------------------------------------------------


async def test_unreachable_backend_fails_clearly_within_the_bound(remote: Remote) -> None:
    assert remote.unreachable is not None
    backend = remote.unreachable()
    started = time.monotonic()
    with pytest.raises(FlagError, match=r"gave up after \d+ attempts|no verified answer") as read_error:
        await backend.get()
    with pytest.raises(FlagError, match=r"gave up after \d+ attempts|no verified answer") as write_error:
        await backend.set(0, "rollback", "sre-watchdog", "inc-unreachable")
    assert time.monotonic() - started < 2 * 10.0
    for error in (read_error.value, write_error.value):
        assert backend.name.split(":")[0] in str(error)  # says which backend


async def test_hanging_backend_is_bounded_by_the_deadline() -> None:
    # A server that accepts and never answers, real time: the deadline, not the retries, ends the call.
    async with hanging_server() as url:
        backend = HttpFlagBackend(f"{url}/flag", clock=SystemClock(), timeout=0.5, deadline=1.5)
        started = time.monotonic()
        with pytest.raises(FlagError, match=r"no verified answer within 1.5 s|gave up"):
            await backend.set(0, "rollback", "sre-watchdog", "inc-hang")
        assert time.monotonic() - started < 3.0


async def test_transient_failure_is_retried(remote: Remote) -> None:
    remote.fail_next(1)
    state = await remote.backend.set(5, "canary", "alice", "k-retry")
    assert (state.db_percent, state.idempotency_key) == (5.0, "k-retry")
    assert await remote.backend.get() == state
    remote.fail_next(2)
    assert (await remote.backend.get()).db_percent == 5.0


async def test_corrupted_document_is_never_overwritten_blindly(
    remote: Remote, caplog: pytest.LogCaptureFixture
) -> None:
    remote.corrupt()
    damaged = remote.raw()
    with pytest.raises(FlagError):
        await remote.backend.get()
    with pytest.raises(FlagError, match="refusing to overwrite"):
        await remote.backend.set(5, "widen", "alice", "k-widen")
    assert remote.raw() == damaged
    # A rollback still produces a valid flag, and says so.
    with caplog.at_level(logging.WARNING, logger="watchdog.flags"):
        rolled = await remote.backend.set(0, "db errors 14x budget", "sre-watchdog", "inc-9")
    assert (rolled.db_percent, rolled.idempotency_key) == (0.0, "inc-9")
    assert await remote.backend.get() == rolled
    assert any("rollback replaces" in r.getMessage() for r in caplog.records)
    assert remote.raw() != damaged
    if remote.backup_kept is not None:
        assert remote.backup_kept(), "the unreadable document is kept beside the flag"
    if remote.kind in ("postgres", "redis", "gcs"):
        metadata = json.loads(remote.raw())["flags"][DEFAULT_FLAG_KEY]["metadata"]
        assert "refusing" not in metadata["repairedFrom"] and metadata["repairedFrom"]  # says what was wrong
        await remote.backend.set(5, "canary again", "alice", "k-again")
        assert "repairedFrom" not in json.loads(remote.raw())["flags"][DEFAULT_FLAG_KEY]["metadata"]


async def test_concurrent_writers_same_key_apply_once(remote: Remote) -> None:
    writers = (
        [remote.sibling(FakeClock(remote.clock.now() + i)) for i in range(4)]
        if remote.sibling is not None
        else [remote.backend] * 4
    )
    before = remote.writes() if remote.writes is not None else 0
    results = await asyncio.gather(*(w.set(0, "rollback", "sre-watchdog", "inc-42") for w in writers))
    # Each replica answers with the one state that was written (a second write would carry its own clock).
    assert len(set(results)) == 1
    assert await remote.backend.get() == results[0]
    if remote.writes is not None:
        assert remote.writes() - before == 1


CROSS_PROCESS_KINDS = [pytest.param("postgres", marks=pytest.mark.postgres), "redis", "gcs", "http"]
"""Unleash's admin API has no compare-and-set (see watchdog.flags.unleash): two replicas driving it can race,
and only the read-back catches it; its writers are serialised within one backend instance (tested above)."""


@pytest.mark.parametrize("remote", CROSS_PROCESS_KINDS, indirect=True)
async def test_concurrent_writers_key_reused_for_another_value_one_wins(remote: Remote) -> None:
    assert remote.sibling is not None
    a, b = remote.sibling(FakeClock()), remote.sibling(FakeClock())
    outcomes = await asyncio.gather(
        a.set(5, "canary", "alice", "k-same"), b.set(50, "oops", "bob", "k-same"), return_exceptions=True
    )
    won = [o for o in outcomes if isinstance(o, FlagState)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert isinstance(lost[0], FlagError) and "already used" in str(lost[0])
    assert await remote.backend.get() == won[0]


@pytest.mark.parametrize("remote", CROSS_PROCESS_KINDS, indirect=True)
async def test_concurrent_writers_never_clobber_each_other(remote: Remote) -> None:
    assert remote.sibling is not None
    writers = [remote.sibling(FakeClock()) for _ in range(4)]
    outcomes = await asyncio.gather(
        *(w.set(10 + i, "step", f"w{i}", f"k-w{i}") for i, w in enumerate(writers)), return_exceptions=True
    )
    final = await remote.backend.get()
    assert final.idempotency_key in {f"k-w{i}" for i in range(4)}
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            # Only the webhook (no history to consult) may see a later writer in its read-back.
            assert remote.kind == "http" and "read-back mismatch" in str(outcome), outcome
    if remote.kind == "gcs":
        assert remote.extras["emulator"].preconditions_failed > 0, (
            "the writers raced: GCS refused the stale ones"
        )
    if remote.kind != "http":
        assert all(isinstance(o, FlagState) for o in outcomes), outcomes
        document = json.loads(remote.raw())
        log = dict(_idempotency_log(document["flags"][DEFAULT_FLAG_KEY]["metadata"]))
        assert {f"k-w{i}" for i in range(4)} <= set(log), "every write landed on top of the previous one"
    else:
        fake: FakeWebhook = remote.extras["fake"]
        assert set(fake.applied) >= {f"k-w{i}" for i in range(4)}


# --- backend specifics ------------------------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_waits_out_a_stuck_row_lock(request: pytest.FixtureRequest) -> None:
    dsn: str = request.getfixturevalue("flag_pg_dsn")
    table = f"flags_lock_{next(_seq)}"
    backend = PostgresFlagBackend(dsn, table=table, clock=SystemClock(), timeout=0.3, deadline=8.0)
    await backend.create(5.0)
    holder = await psycopg.AsyncConnection.connect(dsn)
    try:
        await holder.execute(sql.SQL("SELECT 1 FROM {} FOR UPDATE").format(sql.Identifier(table)))
        release = asyncio.get_running_loop().call_later(1.0, lambda: asyncio.ensure_future(holder.rollback()))
        started = time.monotonic()
        state = await backend.set(0, "rollback", "sre-watchdog", "inc-lock")
        assert state.db_percent == 0.0
        assert time.monotonic() - started >= 0.9  # it waited for the lock (retrying), then went through
        release.cancel()
    finally:
        await holder.close()


@pytest.mark.postgres
async def test_postgres_missing_row_or_table_is_reported_never_created(
    request: pytest.FixtureRequest,
) -> None:
    dsn: str = request.getfixturevalue("flag_pg_dsn")
    missing_table = PostgresFlagBackend(dsn, table=f"nope_{next(_seq)}", clock=FakeClock())
    with pytest.raises(FlagError, match="does not exist"):
        await missing_table.set(0, "rollback", "sre-watchdog", "k")
    table = f"flags_{next(_seq)}"
    await PostgresFlagBackend(dsn, table=table, flag_key="other").create()
    with pytest.raises(FlagError, match="no row for flag"):
        await PostgresFlagBackend(dsn, table=table, clock=FakeClock()).set(0, "rollback", "sre-watchdog", "k")
    count = _pg_exec(dsn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))[0][0]
    assert count == 1


@pytest.mark.parametrize(
    "remote", [pytest.param("postgres", marks=pytest.mark.postgres), "redis", "gcs"], indirect=True
)
async def test_document_backends_write_the_flagd_layout(remote: Remote) -> None:
    await remote.backend.set(5, "canary start", "alice", "rollout-42")
    document = json.loads(remote.raw())
    flag = document["flags"][DEFAULT_FLAG_KEY]
    assert flag["targeting"] == {"fractional": [["db", 500], ["yaml", 9500]]}
    assert flag["metadata"]["updatedBy"] == "alice"
    assert read_db_percent(document) == 5.0
    assert all(isinstance(v, str | int | float | bool) for v in flag["metadata"].values())


@pytest.mark.parametrize("remote", ["redis", "gcs"], indirect=True)
async def test_document_backends_keep_other_flags(remote: Remote) -> None:
    document = json.loads(remote.raw())
    other = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}
    document["flags"]["new-header"] = other
    if remote.kind == "redis":
        client = redis_sync.Redis.from_url(REDIS_URL)
        client.set(remote.backend.redis_key, json.dumps(document))  # type: ignore[attr-defined]
        client.close()
    else:
        emulator: GcsEmulator = remote.extras["emulator"]
        emulator.client().bucket(GCS_BUCKET).blob(remote.extras["object"]).upload_from_string(
            json.dumps(document)
        )
    await remote.backend.set(5, "canary", "alice", "k")
    assert json.loads(remote.raw())["flags"]["new-header"] == other


async def test_gcs_read_and_write_are_tied_to_one_generation(request: pytest.FixtureRequest) -> None:
    emulator: GcsEmulator = request.getfixturevalue("gcs_emulator")
    name = f"{SESSION}/gen-{next(_seq)}.json"
    backend = GcsFlagBackend(GCS_BUCKET, name, clock=FakeClock(), emulator_host=emulator.host)
    with pytest.raises(FlagError, match="does not exist"):
        await backend.set(0, "rollback", "sre-watchdog", "k")  # a wrong object is never created
    await backend.create(5)
    blob = emulator.client().bucket(GCS_BUCKET).get_blob(name)
    assert blob.content_type == "application/json"
    stale = blob.generation
    await backend.set(10, "widen", "alice", "k-10")
    # A writer holding the old generation is refused by GCS: the precondition is what the backend relies on.
    from google.api_core.exceptions import PreconditionFailed

    with pytest.raises(PreconditionFailed):
        emulator.client().bucket(GCS_BUCKET).blob(name).upload_from_string(b"{}", if_generation_match=stale)
    assert (await backend.get()).db_percent == 10.0


async def test_http_sends_token_idempotency_key_and_if_match() -> None:
    fake = FakeWebhook(FakeClock())
    async with serve_asgi(fake.app()) as base:
        backend = HttpFlagBackend(f"{base}/flag", token=WEBHOOK_TOKEN, clock=FakeClock())
        await backend.set(5, "canary", "alice", "k-1")
        _, headers = next(r for r in fake.requests if r[0] == "PUT")
        assert headers["authorization"] == f"Bearer {WEBHOOK_TOKEN}"
        assert headers["idempotency-key"] == "k-1"
        assert headers["if-match"] == '"1"'
        # A refused token is reported at once, not retried.
        fake.requests.clear()
        wrong = HttpFlagBackend(f"{base}/flag", token="wrong", clock=FakeClock())
        with pytest.raises(FlagError, match="HTTP 401"):
            await wrong.set(0, "rollback", "sre-watchdog", "k-2")
        assert len(fake.requests) == 1
        post = HttpFlagBackend(f"{base}/flag", method="POST", token=WEBHOOK_TOKEN, clock=FakeClock())
        assert (await post.set(0, "rollback", "sre-watchdog", "k-3")).db_percent == 0.0


async def test_unleash_maps_db_percent_to_the_rollout_and_keeps_the_strategy() -> None:
    fake = FakeUnleash()
    async with serve_asgi(fake.app()) as base:
        backend = UnleashFlagBackend(
            base + "/",
            token=UNLEASH_TOKEN,
            feature=DEFAULT_FLAG_KEY,
            environment="production",
            clock=FakeClock(),
        )
        await backend.set(25, "promote", "alice", "k-25")
        strategy = fake.strategies[0]
        assert strategy["parameters"]["rollout"] == "25"
        assert strategy["parameters"]["groupId"] == DEFAULT_FLAG_KEY  # untouched parameters survive
        assert strategy["constraints"] == [{"contextName": "appName", "operator": "IN", "values": ["web"]}]
        assert strategy["title"] == "db canary"
        assert all(auth == UNLEASH_TOKEN for _, _, auth in fake.requests)  # no Bearer prefix
        # Off means nobody is on the database path; promoting turns the environment back on.
        fake.enabled = False
        assert (await backend.get()).db_percent == 0.0
        assert (await backend.set(30, "promote", "alice", "k-30")).db_percent == 30.0
        assert fake.enabled
        rolled = await backend.set(0, "rollback", "sre-watchdog", "inc-1")
        assert fake.strategies[0]["parameters"]["rollout"] == "0" and rolled.db_percent == 0.0


async def test_unleash_says_so_when_the_strategy_cannot_be_found() -> None:
    fake = FakeUnleash()
    async with serve_asgi(fake.app()) as base:
        backend = UnleashFlagBackend(
            base, token=UNLEASH_TOKEN, feature=DEFAULT_FLAG_KEY, environment="production", clock=FakeClock()
        )
        fake.strategies = [{"id": "s-9", "name": "default", "parameters": {}, "constraints": []}]
        with pytest.raises(FlagError, match=r"no flexibleRollout strategy found.*environment off"):
            await backend.set(0, "rollback", "sre-watchdog", "inc-1")
        fake.strategies = [
            FakeUnleash().strategies[0],
            {"id": "s-2", "name": "userWithId", "disabled": False, "parameters": {"userIds": "a"}},
        ]
        with pytest.raises(FlagError, match="other enabled strategies"):
            await backend.get()
        assert fake.puts == 0
        wrong_env = UnleashFlagBackend(
            base, token=UNLEASH_TOKEN, feature=DEFAULT_FLAG_KEY, environment="staging", clock=FakeClock()
        )
        with pytest.raises(FlagError, match="not found"):
            await wrong_env.get()


# --- config and registry ------------------------------------------------------------------------------


_FLAG_CONFIG: TypeAdapter[Any] = TypeAdapter(FlagConfig)

EXAMPLES: dict[str, dict[str, Any]] = {
    "flagd_file": {"backend": "flagd_file", "path": "/etc/flagd/flags.json"},
    "postgres": {"backend": "postgres", "dsn_env": "FLAG_DATABASE_URL"},
    "redis": {"backend": "redis"},
    "gcs": {"backend": "gcs", "bucket": "my-flags", "object": "flags.json"},
    "http": {"backend": "http", "url": "https://flags.internal/content", "token_env": "FLAG_TOKEN"},
    "unleash": {"backend": "unleash", "url": "https://unleash.example.com/api/", "environment": "production"},
}
ENV = {
    "FLAG_DATABASE_URL": "postgresql://flags:pw@flags-db:5432/flags",
    "FLAG_REDIS_URL": "redis://:pw@flags-redis:6379/0",
    "FLAG_TOKEN": "t",
    "UNLEASH_API_TOKEN": "u",
}


def test_flag_config_defaults() -> None:
    configs = {kind: _FLAG_CONFIG.validate_python(doc) for kind, doc in EXAMPLES.items()}
    assert isinstance(configs["flagd_file"], FlagdFileFlagConfig)
    assert configs["flagd_file"].key == DEFAULT_FLAG_KEY
    assert (
        isinstance(configs["postgres"], PostgresFlagConfig) and configs["postgres"].table == "watchdog_flags"
    )
    assert isinstance(configs["redis"], RedisFlagConfig) and configs["redis"].url_env == "FLAG_REDIS_URL"
    assert isinstance(configs["gcs"], GcsFlagConfig)
    assert isinstance(configs["http"], HttpFlagConfig) and configs["http"].method == "PUT"
    unleash = configs["unleash"]
    assert isinstance(unleash, UnleashFlagConfig)
    assert (unleash.url, unleash.project, unleash.feature) == (
        "https://unleash.example.com",
        "default",
        DEFAULT_FLAG_KEY,
    )
    assert all(c.deadline == 10.0 and c.timeout == 3.0 for c in configs.values())


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"backend": "flagd-file", "path": "x"}, "backend must be one of flagd_file, postgres, redis"),
        ({"path": "x"}, "backend must be one of"),
        ({"backend": "postgres", "dsn_env": "DATABASE_URL"}, "must not live in the database it guards"),
        ({"backend": "postgres", "dsn_env": "FLAGS", "table": "a;drop"}, "not a table name"),
        ({"backend": "redis", "url": "redis://x"}, "Extra inputs are not permitted"),
        ({"backend": "gcs", "bucket": "gs://b", "object": "f.json"}, "without gs://"),
        ({"backend": "http", "url": "ftp://x"}, "http:// or https:// URL"),
        ({"backend": "http", "url": "https://u:p@x/flag"}, "must not carry credentials"),
        ({"backend": "unleash", "url": "https://u"}, "environment"),
        ({"backend": "redis", "timeout": "30s"}, "must not exceed deadline"),
        ({"backend": "redis", "url_env": "1BAD"}, "not an environment variable name"),
    ],
)
def test_flag_config_errors_say_what_is_wrong(document: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _FLAG_CONFIG.validate_python(document)


def test_registry_builds_one_backend_per_kind() -> None:
    expected = {
        "flagd_file": FlagdFileBackend,
        "postgres": PostgresFlagBackend,
        "redis": RedisFlagBackend,
        "gcs": GcsFlagBackend,
        "http": HttpFlagBackend,
        "unleash": UnleashFlagBackend,
    }
    assert len(FLAG_BACKENDS) == len(EXAMPLES)
    for kind, doc in EXAMPLES.items():
        backend = build_flag_backend(_FLAG_CONFIG.validate_python(doc), ENV, FakeClock())
        assert isinstance(backend, expected[kind])
        assert "pw" not in backend.name  # names are shown in pages and logs: no secrets


@pytest.mark.parametrize("kind", ["postgres", "redis", "unleash", "http"])
def test_registry_names_the_missing_variable(kind: str) -> None:
    config = _FLAG_CONFIG.validate_python(EXAMPLES[kind])
    variable = {
        "postgres": "FLAG_DATABASE_URL",
        "redis": "FLAG_REDIS_URL",
        "unleash": "UNLEASH_API_TOKEN",
    }.get(kind, "FLAG_TOKEN")
    with pytest.raises(FlagError, match=f"{variable} is not set"):
        build_flag_backend(config, {}, FakeClock())


# --- memory specifics --------------------------------------------------------------------------------


async def test_memory_history_lists_applied_changes_only() -> None:
    backend = MemoryFlagBackend(0)
    await backend.set(5, "canary", "alice", "a")
    await backend.set(5, "canary", "alice", "a")  # no-op
    await backend.set(0, "rollback", "sre-watchdog", "b")
    assert [(s.db_percent, s.idempotency_key) for s in backend.history] == [(5.0, "a"), (0.0, "b")]


async def test_memory_fail_writes() -> None:
    backend = MemoryFlagBackend(5)
    backend.fail_writes = True
    with pytest.raises(FlagError):
        await backend.set(0, "rollback", "sre-watchdog", "k")
    assert (await backend.get()).db_percent == 5.0 and backend.history == []


# --- flagd file specifics ----------------------------------------------------------------------------


def _leftover_temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def _doc(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


async def test_file_layout_is_flagd_format(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 0)
    clock = FakeClock()
    await FlagdFileBackend(path, clock=clock).set(5, "canary start", "alice", "rollout-42")
    document = _doc(path)
    assert document["$schema"] == "https://flagd.dev/schema/v0/flags.json"
    flag = document["flags"]["content-data-source"]
    assert flag["state"] == "ENABLED"
    assert flag["variants"] == {"yaml": "yaml", "db": "db"}
    assert flag["defaultVariant"] == "yaml"
    assert flag["targeting"] == {"fractional": [["db", 500], ["yaml", 9500]]}
    meta = flag["metadata"]
    assert meta["dbPercent"] == 5
    assert meta["updatedBy"] == "alice"
    assert meta["reason"] == "canary start"
    assert meta["idempotencyKey"] == "rollout-42"
    assert meta["updatedAt"] == "2026-01-01T00:00:00Z"
    assert meta["updatedAtEpoch"] == clock.now()
    # flagd only allows scalar metadata values
    assert all(isinstance(v, str | int | float | bool) for v in meta.values())


async def test_write_initial_sets_fractional_weights_out_of_10000(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "flags.json"
    write_initial(path, 0.5)
    flag = _doc(path)["flags"][DEFAULT_FLAG_KEY]
    assert flag["targeting"] == {"fractional": [["db", 50], ["yaml", 9950]]}
    assert read_db_percent(_doc(path)) == 0.5
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def _backups(folder: Path) -> list[Path]:
    return sorted(folder.glob("flags.json.corrupt-*"))


async def test_corrupted_json_is_a_flag_error(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 5)
    path.write_text('{"flags": {"content-data-source": {"state": "ENAB')
    backend = FlagdFileBackend(path)
    with pytest.raises(FlagError, match="not valid JSON"):
        await backend.get()
    with pytest.raises(FlagError, match="not valid JSON"):
        await backend.set(5, "promote", "sre-watchdog", "k0")  # never overwritten blindly
    assert path.read_text() == '{"flags": {"content-data-source": {"state": "ENAB'
    # A rollback still produces a valid document, and keeps the damaged one beside it.
    state = await backend.set(0, "rollback", "sre-watchdog", "k")
    assert state.db_percent == 0.0 and (await backend.get()).db_percent == 0.0
    (backup,) = _backups(tmp_path)
    assert backup.read_text() == '{"flags": {"content-data-source": {"state": "ENAB'


async def test_missing_file_and_missing_flag_are_flag_errors(tmp_path: Path) -> None:
    with pytest.raises(FlagError, match="does not exist"):
        await FlagdFileBackend(tmp_path / "nope.json").get()
    path = tmp_path / "flags.json"
    path.write_text(json.dumps({"flags": {"other": {}}}))
    with pytest.raises(FlagError, match="not found"):
        await FlagdFileBackend(path).get()
    with pytest.raises(FlagError, match="does not exist"):
        await FlagdFileBackend(tmp_path / "nope.json").set(0, "r", "u", "k")
    assert not (tmp_path / "nope.json").exists()  # a wrong path is not silently created


async def test_other_flags_and_unknown_fields_are_preserved(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 0)
    document = _doc(path)
    other = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "metadata": {"owner": "growth"},
    }
    document["flags"]["new-header"] = other
    document["metadata"] = {"flagSetId": "ai-square"}
    document["flags"][DEFAULT_FLAG_KEY]["metadata"]["ticket"] = "SRE-12"
    path.write_text(json.dumps(document))
    os.chmod(path, 0o640)
    await FlagdFileBackend(path).set(5, "canary", "alice", "k")
    after = _doc(path)
    assert after["flags"]["new-header"] == other
    assert after["metadata"] == {"flagSetId": "ai-square"}
    assert after["flags"][DEFAULT_FLAG_KEY]["metadata"]["ticket"] == "SRE-12"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert _leftover_temp_files(tmp_path) == []


async def test_symlinked_flag_file_keeps_its_link(tmp_path: Path) -> None:
    real = tmp_path / "real" / "flags.json"
    write_initial(real, 0)
    link = tmp_path / "flags.json"
    link.symlink_to(real)
    await FlagdFileBackend(link).set(5, "canary", "alice", "k")
    assert link.is_symlink()
    assert read_db_percent(_doc(real)) == 5.0


_SUBPROCESS_WRITER = """
import asyncio, sys
from watchdog.flags.flagd_file import FlagdFileBackend
async def main() -> None:
    backend = FlagdFileBackend(sys.argv[1], flag_key="second-flag")
    for i in range(int(sys.argv[2])):
        await backend.set(i % 101, "subprocess writer", "proc", f"proc-{i}")
asyncio.run(main())
"""


async def test_concurrent_writers_never_tear_the_file_nor_lose_updates(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 0)
    document = _doc(path)
    document["flags"]["second-flag"] = json.loads(json.dumps(document["flags"][DEFAULT_FLAG_KEY]))
    path.write_text(json.dumps(document))

    stop = threading.Event()
    torn: list[str] = []
    reads = 0

    def reader() -> None:
        # Readers never take the lock (flagd doesn't): atomic rename alone must keep every read whole.
        nonlocal reads
        while not stop.is_set():
            try:
                parse_flag(json.loads(path.read_bytes()))
                parse_flag(json.loads(path.read_bytes()), "second-flag")
                reads += 1
            except (ValueError, FlagError) as exc:
                torn.append(repr(exc))

    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    writes = 30
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SUBPROCESS_WRITER,
        str(path),
        str(writes),
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        writers = [FlagdFileBackend(path) for _ in range(4)]
        await asyncio.gather(
            *(
                backend.set((w * writes + i) % 101, "thread writer", f"w{w}", f"w{w}-{i}")
                for i in range(writes)
                for w, backend in enumerate(writers)
            )
        )
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stop.set()
        reader_thread.join()
    assert torn == []
    assert reads > 0
    final = _doc(path)
    # Both flags carry a value from their own writers: neither writer's read-modify-write clobbered the other.
    assert final["flags"]["second-flag"]["metadata"]["idempotencyKey"] == f"proc-{writes - 1}"
    assert final["flags"][DEFAULT_FLAG_KEY]["metadata"]["updatedBy"].startswith("w")
    assert _leftover_temp_files(tmp_path) == []


# --- parsing -----------------------------------------------------------------------------------------


def _flag_doc(**flag: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "state": "ENABLED",
        "variants": {"yaml": "yaml", "db": "db"},
        "defaultVariant": "yaml",
    }
    base.update(flag)
    return {"flags": {DEFAULT_FLAG_KEY: base}}


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ({"targeting": {"fractional": [["db", 5], ["yaml", 95]]}}, 5.0),
        ({"targeting": {"fractional": [["yaml", 9950], ["db", 50]]}}, 0.5),
        ({"targeting": {"fractional": [["db"], ["yaml"]]}}, 50.0),  # flagd's default weight is 1
        ({"targeting": {"fractional": [None, ["db", 1], ["yaml", 3]]}}, 25.0),
        ({}, 0.0),
        ({"defaultVariant": "db"}, 100.0),
        ({"state": "DISABLED", "defaultVariant": "db"}, 0.0),  # flagd: FLAG_NOT_FOUND → coded default yaml
        ({"targeting": {}}, 0.0),
    ],
)
def test_read_db_percent(flag: dict[str, Any], expected: float) -> None:
    assert read_db_percent(_flag_doc(**flag)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({}, "no 'flags'"),
        (_flag_doc(variants={"yaml": "yaml"}), "variants"),
        (_flag_doc(defaultVariant="json"), "defaultVariant"),
        (_flag_doc(state="ON"), "state"),
        (_flag_doc(targeting={"if": [True, "db", "yaml"]}), "single 'fractional'"),
        (_flag_doc(targeting={"fractional": [["db", 0.5], ["yaml", 99.5]]}), "integers"),
        (_flag_doc(targeting={"fractional": [["db", 0], ["yaml", 0]]}), "sum"),
        (_flag_doc(targeting={"fractional": [["json", 5], ["yaml", 95]]}), "bad fractional entry"),
        (_flag_doc(targeting={"fractional": [{"var": "email"}, ["db", 5], ["yaml", 95]]}), "bucketing"),
        (_flag_doc(targeting={"fractional": [["db", -5], ["yaml", 105]]}), "weight"),
    ],
)
def test_unusable_documents_are_flag_errors(document: Any, message: str) -> None:
    with pytest.raises(FlagError, match=message):
        read_db_percent(document)


# --- flagd-compatible bucketing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"hello", 0x248BFA47),
        (b"The quick brown fox jumps over the lazy dog", 0x2E4FF723),
        # keys from flagd-testbed chosen to hit the hash boundaries
        (b"ejOoVL", 0),
        (b"bY9fO-", 1),
        (b"SI7p-", 2**31 - 1),
        (b"6LvT0", 2**31),
        (b"ceQdGm", 2**32 - 1),
    ],
)
def test_murmur3_reference_vectors(data: bytes, expected: int) -> None:
    assert murmur3_32(data) == expected


_SUITS = [("clubs", 25), ("diamonds", 25), ("hearts", 25), ("spades", 25)]


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("v1", {"jack": "spades", "queen": "clubs", "ten": "diamonds", "nine": "hearts", "3": "diamonds"}),
        ("v2", {"jack": "hearts", "queen": "spades", "ten": "clubs", "nine": "diamonds", "3": "clubs"}),
    ],
)
def test_fractional_matches_flagd_testbed(algorithm: Any, expected: dict[str, str]) -> None:
    # flagd-testbed custom-ops.json "fractional-flag": bucketing value is flagKey + user name.
    got = {name: _distribute("fractional-flag" + name, _SUITS, algorithm) for name in expected}
    assert got == expected
    coin = [("heads", 1), ("tails", 1)]
    assert _distribute("fractional-flag-shorthand" + "jon@company.com", coin, algorithm) == "heads"
    assert _distribute("fractional-flag-shorthand" + "jane@company.com", coin, algorithm) == "tails"


def test_hash_edge_cases_v2() -> None:
    halves = [("lower", 50), ("upper", 50)]
    got = [_distribute(key, halves) for key in ["ejOoVL", "bY9fO-", "SI7p-", "6LvT0", "ceQdGm"]]
    assert got == ["lower", "lower", "lower", "upper", "upper"]


@pytest.mark.parametrize("algorithm", ["v2", "v1"])
def test_split_distribution_at_5_percent(algorithm: Any) -> None:
    rng = random.Random(20260101)
    keys = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(10_000)]
    db = sum(choose_variant(DEFAULT_FLAG_KEY, key, 5.0, algorithm) == "db" for key in keys)
    assert 400 <= db <= 600, db  # 5 % ± 1 %
    assert all(choose_variant(DEFAULT_FLAG_KEY, key, 0.0, algorithm) == "yaml" for key in keys)
    assert all(choose_variant(DEFAULT_FLAG_KEY, key, 100.0, algorithm) == "db" for key in keys)
    # Sticky and monotonic: widening the canary keeps everyone who was already in it.
    in_canary = {key for key in keys if choose_variant(DEFAULT_FLAG_KEY, key, 5.0, algorithm) == "db"}
    assert all(choose_variant(DEFAULT_FLAG_KEY, key, 10.0, algorithm) == "db" for key in in_canary)


def test_parsed_flag_evaluation_agrees_with_choose_variant() -> None:
    parsed = parse_flag(_flag_doc(targeting={"fractional": [["db", 500], ["yaml", 9500]]}))
    keys = [f"user-{i}" for i in range(2000)]
    assert [parsed.evaluate(k) for k in keys] == [choose_variant(DEFAULT_FLAG_KEY, k, 5.0) for k in keys]
    disabled = parse_flag(_flag_doc(state="DISABLED", targeting={"fractional": [["db", 1], ["yaml", 0]]}))
    assert {disabled.evaluate(k) for k in keys} == {"yaml"}
