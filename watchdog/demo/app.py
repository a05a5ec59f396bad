"""The reference service: the watched app's HTTP contract (shared/target-system.md) with a YAML/DB data path.

Routes (as in production unless noted):
  GET|HEAD /api/health               full health contract; 503 when the database is down or times out (2 s)
  GET|HEAD /api/monitoring/health    services view; 503 when the database is down
  GET      /api/simple-health        liveness only, no database
  POST     /api/auth/login           demo accounts, sets ``sessionToken``; 401 bad password, 403 unverified
  GET      /api/auth/check           ``{authenticated, user}`` from the cookie
  POST     /api/auth/logout          clears the cookie
  GET      /api/pbl/scenarios, /api/assessment/scenarios, /api/discovery/scenarios, /api/ksa, /api/relations
           ``?lang=en|zhTW|zhCN&source=yaml|unified|hybrid``; headers ``X-Data-Source: yaml|db``,
           ``X-Cache: HIT|MISS``, ``X-Request-Id``
  GET|POST|DELETE /_faults           fault injection on the DB path (reference service only)
  GET      /_flag                    how this instance reads its flag: provider status, reloads, last error
  GET      /metrics                  requests and latency per cohort (Prometheus text; see ``metrics.py``)

Data path per request: ``source=yaml`` pins YAML, ``source=unified`` pins the database (so probes can
measure a cohort even at a 5 % canary), anything else asks the flag through the OpenFeature client
(``flag.py``: the flagd in-process provider reading the flagd file), the targeting key being the session
user or else the request id (``X-Request-Id`` if the caller sent one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from openfeature.flag_evaluation import Reason
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from watchdog.demo.auth import (
    REMEMBER_ME_SECONDS,
    SESSION_COOKIE,
    SESSION_SECONDS,
    DemoUser,
    SessionSigner,
)
from watchdog.demo.content import (
    CONTENT_DIR,
    Content,
    Mode,
    Scenario,
    load_content,
    normalize_language,
    render_assessment,
    render_discovery,
    render_ksa,
    render_pbl,
    render_relations,
)
from watchdog.demo.database import (
    ContentDatabase,
    DatabaseError,
    DatabaseUnavailable,
    PostgresContentDatabase,
    SqliteContentDatabase,
)
from watchdog.demo.faults import FaultInjector, Faults
from watchdog.demo.flag import DEFAULT_FLAG_KEY, DEFAULT_POLL_INTERVAL_S, FlagSource
from watchdog.demo.metrics import (
    EXPOSITION_CONTENT_TYPE,
    METRICS_PATH,
    STATE_COHORT,
    STATE_SELECTION,
    MetricsMiddleware,
    ServiceMetrics,
)
from watchdog.demo.ratelimit import RateLimitMiddleware, RateLimits

log = logging.getLogger(__name__)

Module = Literal["pbl", "assessment", "discovery", "ksa", "relations"]
DataSource = Literal["yaml", "db"]
T = TypeVar("T")

_SCENARIO_MODULES: dict[str, tuple[Mode, Callable[[list[Scenario], str, str], dict[str, Any]]]] = {
    "pbl": ("pbl", render_pbl),
    "assessment": ("assessment", render_assessment),
    "discovery": ("discovery", render_discovery),
}

# Error bodies the production routes return when loading fails.
_ERRORS: dict[Module, dict[str, Any]] = {
    "pbl": {
        "success": False,
        "error": {"code": "FETCH_SCENARIOS_ERROR", "message": "Failed to fetch PBL scenarios"},
    },
    "assessment": {"success": False, "error": "Failed to load assessment scenarios"},
    "discovery": {"error": "Internal server error"},
    "ksa": {"error": "Failed to load KSA data"},
    "relations": {"error": "Failed to load relations data"},
}
DISCOVERY_UNAVAILABLE = {"error": "Discovery is temporarily unavailable"}
DEFAULT_MEMORY_LIMIT = 512 * 1024 * 1024  # the app's assumed heap limit


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, KiB on Linux


def _total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return DEFAULT_MEMORY_LIMIT


class _ResponseCache:
    """Tiny TTL cache standing in for the app's Redis cache (the source of ``X-Cache``). Keys are
    (module, language, data source) over a fixed set of languages, so it cannot grow unbounded."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[tuple[str, str, str], tuple[float, bytes]] = {}

    def get(self, key: tuple[str, str, str]) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: tuple[str, str, str], body: bytes) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, body)

    def clear(self) -> None:
        self._entries.clear()


class ReferenceService:
    """State and handlers behind ``create_app``; reachable as ``app.state.service``."""

    def __init__(
        self,
        *,
        content: Content,
        faults: Faults,
        flag: FlagSource,
        database_url: str | None,
        sqlite_path: Path | None,
        cache_ttl: float,
        slow_db_ms: float,
        health_timeout: float,
        environment: str,
        version: str,
        memory_limit_bytes: int,
        session_secret: bytes,
        rng: random.Random,
        metrics: ServiceMetrics,
    ) -> None:
        self.content = content
        self.faults = faults
        self.flag = flag
        self.metrics = metrics
        self.database_url = database_url
        self.sqlite_path = sqlite_path
        self.cache = _ResponseCache(cache_ttl)
        self.slow_db_ms = slow_db_ms
        self.health_timeout = health_timeout
        self.environment = environment
        self.version = version
        self.memory_limit_bytes = memory_limit_bytes
        self.sessions = SessionSigner(session_secret)
        self.injector = FaultInjector(faults, rng)
        self._db: ContentDatabase | None = None
        self._tempdir: Path | None = None
        self._started = time.monotonic()

    # --- lifecycle -----------------------------------------------------------------------------------

    @property
    def db(self) -> ContentDatabase:
        if self._db is None:
            raise DatabaseUnavailable("the reference service has not started")
        return self._db

    async def startup(self) -> None:
        self._started = time.monotonic()
        # The provider's first load reads the file: off the event loop, like any blocking call.
        await asyncio.to_thread(self.flag.start)
        if self.database_url:
            self._db = PostgresContentDatabase(self.database_url)
        else:
            path = self.sqlite_path
            if path is None:
                self._tempdir = Path(tempfile.mkdtemp(prefix="refsvc-"))
                path = self._tempdir / "content.db"
            self._db = SqliteContentDatabase(path)
        try:
            await self._db.start(self.content)
        except DatabaseError as exc:
            # The YAML path must keep serving while the database is unreachable; DB-path requests
            # retry the connection (and the seeding) on their own.
            log.warning("database not ready at startup (%s); DB-path requests will retry", exc)

    async def shutdown(self) -> None:
        await asyncio.to_thread(self.flag.stop)
        if self._db is not None:
            await self._db.close()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    async def _db_call(self, call: Callable[[], Awaitable[T]], *, content_query: bool = True) -> T:
        started = time.perf_counter()
        outcome = "error"
        try:
            await self.injector.before_db_call(content_query=content_query)
            result = await call()
            outcome = "ok"
            return result
        finally:
            self.metrics.db_queries.labels("content" if content_query else "ping", outcome).observe(
                time.perf_counter() - started
            )

    # --- health --------------------------------------------------------------------------------------

    async def _check_database(self) -> tuple[dict[str, Any], float | None]:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(
                self._db_call(lambda: self.db.ping(), content_query=False), self.health_timeout
            )
        except TimeoutError:
            return {"status": False, "error": "Database timeout"}, None
        except DatabaseError as exc:
            return {"status": False, "error": str(exc)}, None
        elapsed_ms = (time.perf_counter() - start) * 1000.0
        return {"status": True, "responseTime": round(elapsed_ms)}, elapsed_ms

    async def health(self, request: Request) -> Response:
        if request.method == "HEAD":
            return Response(status_code=200)  # readiness: the process answers, nothing else
        database, elapsed_ms = await self._check_database()
        used = _rss_bytes()
        percentage = used / self.memory_limit_bytes * 100.0
        status = "healthy"
        if elapsed_ms is not None and elapsed_ms > self.slow_db_ms:
            status = "degraded"
        if percentage > 90:
            status = "degraded"
        if not database["status"]:
            status = "unhealthy"
        body = {
            "status": status,
            "timestamp": _now_iso(),
            "version": self.version,
            "environment": self.environment,
            "checks": {
                "database": database,
                # No Redis behind the reference service; like production, Redis never degrades status.
                "redis": {"status": False, "error": "Redis not configured"},
                "memory": {
                    "status": percentage < 90,
                    "used": used,
                    "limit": self.memory_limit_bytes,
                    "percentage": round(percentage),
                },
            },
            "uptime": time.monotonic() - self._started,
        }
        return JSONResponse(body, status_code=503 if status == "unhealthy" else 200)

    async def monitoring_health(self, request: Request) -> Response:
        if request.method == "HEAD":
            return Response(status_code=200)
        database, _ = await self._check_database()
        service_db: dict[str, Any] = {"status": "up" if database["status"] else "down"}
        service_db.update({k: v for k, v in database.items() if k != "status"})
        used, total = _rss_bytes(), _total_memory_bytes()
        memory = {
            "used": round(used / 1024 / 1024),
            "total": round(total / 1024 / 1024),
            "percentage": round(used / total * 100),
        }
        status = "healthy"
        if memory["percentage"] > 90:
            status = "degraded"
        if service_db["status"] == "down":
            status = "unhealthy"
        body = {
            "status": status,
            "timestamp": _now_iso(),
            "uptime": round(time.monotonic() - self._started),
            "services": {"database": service_db, "redis": {"status": "disabled"}, "memory": memory},
            "environment": self.environment,
            "version": self.version,
        }
        return JSONResponse(
            body,
            status_code=503 if status == "unhealthy" else 200,
            headers={"Cache-Control": "no-cache, no-store, must-revalidate"},
        )

    async def simple_health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "healthy",
                "timestamp": _now_iso(),
                "environment": self.environment,
                "uptime": time.monotonic() - self._started,
                "message": "Simple health check - no database or Redis checks",
            }
        )

    # --- auth ----------------------------------------------------------------------------------------

    def current_user(self, request: Request) -> DemoUser | None:
        return self.sessions.verify(request.cookies.get(SESSION_COOKIE))

    async def login(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        email = body.get("email") if isinstance(body, dict) else None
        password = body.get("password") if isinstance(body, dict) else None
        if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
            return JSONResponse({"success": False, "error": "Email and password are required"}, 400)
        user = self.sessions.authenticate(email, password)
        if user is None:
            return JSONResponse({"success": False, "error": "Invalid email or password"}, 401)
        if not user.email_verified:
            return JSONResponse(
                {
                    "success": False,
                    "error": "Please verify your email before logging in",
                    "requiresVerification": True,
                },
                403,
            )
        lifetime = REMEMBER_ME_SECONDS if body.get("rememberMe") is True else SESSION_SECONDS
        response = JSONResponse({"success": True, "message": "Login successful", "user": user.public()})
        response.set_cookie(
            SESSION_COOKIE,
            self.sessions.issue(user, lifetime),
            max_age=lifetime,
            path="/",
            httponly=True,
            samesite="lax",
        )
        return response

    async def check(self, request: Request) -> Response:
        user = self.current_user(request)
        return JSONResponse(
            {
                "authenticated": user is not None,
                "user": user.public() if user else None,
                "tokenExpiringSoon": False,
            }
        )

    async def logout(self, request: Request) -> Response:
        response = JSONResponse({"success": True, "message": "Logged out successfully"})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- content -------------------------------------------------------------------------------------

    def choose_source(self, request: Request, targeting_key: str) -> DataSource:
        """The data path for this request, noted in ``request.state`` for the per-cohort metrics."""
        pinned = request.query_params.get("source")
        source: DataSource
        if pinned in ("yaml", "unified"):
            source, selection = ("yaml" if pinned == "yaml" else "db"), "pinned"
        else:
            # The real client's answer: the OpenFeature SDK, flagd's in-process provider, the flag file.
            details = self.flag.details_for(targeting_key)
            source, selection = ("db" if details.value == "db" else "yaml"), "flag"
            reason = details.reason.value if isinstance(details.reason, Reason) else str(details.reason)
            self.metrics.flag_evaluations.labels(self.flag.flag_key, source, reason).inc()
        setattr(request.state, STATE_COHORT, source)
        setattr(request.state, STATE_SELECTION, selection)
        return source

    async def _render(self, module: Module, lang: str, source: DataSource) -> dict[str, Any]:
        content = self.content
        scenario_module = _SCENARIO_MODULES.get(module)
        if scenario_module is not None:
            mode, render = scenario_module
            if source == "db":
                scenarios = await self._db_call(lambda: self.db.scenarios(mode))
            else:
                scenarios = list(content.by_mode[mode])
            return render(scenarios, lang, source)
        if module == "ksa":
            sections = await self._db_call(lambda: self.db.ksa()) if source == "db" else list(content.ksa)
            return render_ksa(sections, lang)
        if source == "db":
            domains = await self._db_call(lambda: self.db.domains())
            sections = await self._db_call(lambda: self.db.ksa())
        else:
            domains, sections = list(content.domains), list(content.ksa)
        return render_relations(domains, sections, lang)

    def content_endpoint(self, module: Module) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if module == "discovery" and self.faults.discovery_unavailable:
                return JSONResponse(DISCOVERY_UNAVAILABLE, 503)
            request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
            user = self.current_user(request)
            source = self.choose_source(request, user.id if user else request_id)
            lang = normalize_language(request.query_params.get("lang"))
            headers = {"X-Data-Source": source, "X-Request-Id": request_id, "X-Cache": "MISS"}
            key = (module, lang, source)
            # While DB faults are injected the DB path skips the cache, so clients see the injected rate.
            use_cache = self.cache.ttl > 0 and not (source == "db" and self.faults.db_faulty)
            if use_cache and (cached := self.cache.get(key)) is not None:
                headers["X-Cache"] = "HIT"
                return Response(cached, media_type="application/json", headers=headers)
            try:
                payload = await self._render(module, lang, source)
            except DatabaseError as exc:
                log.info("%s on the DB path failed: %s", request.url.path, exc)
                return JSONResponse(_ERRORS[module], 500, headers=headers)
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            if use_cache:
                self.cache.put(key, body)
            return Response(body, media_type="application/json", headers=headers)

        return endpoint

    # --- control plane (reference service only) ------------------------------------------------------

    async def faults_endpoint(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.reset()
        elif request.method == "POST":
            try:
                changes = await request.json()
            except ValueError:
                return JSONResponse({"error": "body must be a JSON object"}, 400)
            if not isinstance(changes, dict):
                return JSONResponse({"error": "body must be a JSON object"}, 400)
            try:
                self.faults.update(changes)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, 400)
            log.info("faults set: %s", self.faults.to_dict())
        return JSONResponse(self.faults.to_dict())

    async def flag_endpoint(self, request: Request) -> Response:
        return JSONResponse(self.flag.status())

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=EXPOSITION_CONTENT_TYPE)


def create_app(
    *,
    flag_path: Path | None = None,
    database_url: str | None = None,
    sqlite_path: Path | None = None,
    faults: Faults | None = None,
    rate_limits: bool | RateLimits = True,
    flag_key: str = DEFAULT_FLAG_KEY,
    db_percent: float = 0.0,
    flag_poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    cache_ttl: float = 5.0,
    slow_db_ms: float = 1000.0,
    health_timeout: float = 2.0,
    environment: str = "development",
    version: str = "1.0.0",
    content_dir: Path | None = None,
    memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT,
    session_secret: bytes | None = None,
    random_seed: int | None = None,
) -> Starlette:
    """Build the reference service.

    ``flag_path``: flagd file deciding the split, read through the OpenFeature SDK and flagd's in-process
    provider, which looks for changes every ``flag_poll_interval_s`` (the provider's default, 0.5 s);
    without it ``db_percent`` is a fixed split (a private flag file, read the same way). ``database_url``:
    PostgreSQL DSN for the DB path; otherwise ``sqlite_path`` or, when that is None too, a throwaway SQLite
    file removed at shutdown. ``DATABASE_URL`` is not read here (the
    command line does) so tests never pick up a stray environment. ``faults``: shared, mutable fault
    switches (also settable over ``/_faults``). ``rate_limits``: True for the production limits, False
    to disable (benchmarks), or a ``RateLimits``. ``slow_db_ms``: a successful ``SELECT 1`` slower than
    this makes /api/health ``degraded``; ``health_timeout`` (2 s in production) makes it ``unhealthy``.
    """
    if database_url and sqlite_path is not None:
        raise ValueError("pass database_url or sqlite_path, not both")
    if cache_ttl < 0 or slow_db_ms < 0 or health_timeout <= 0:
        raise ValueError("cache_ttl and slow_db_ms must be >= 0 and health_timeout > 0")
    limits = rate_limits if isinstance(rate_limits, RateLimits) else RateLimits(enabled=rate_limits)
    service = ReferenceService(
        content=load_content(content_dir or CONTENT_DIR),
        faults=faults if faults is not None else Faults(),
        flag=FlagSource(
            Path(flag_path) if flag_path is not None else None,
            flag_key=flag_key,
            fixed_db_percent=db_percent,
            poll_interval_s=flag_poll_interval_s,
        ),
        database_url=database_url,
        sqlite_path=Path(sqlite_path) if sqlite_path is not None else None,
        cache_ttl=cache_ttl,
        slow_db_ms=slow_db_ms,
        health_timeout=health_timeout,
        environment=environment,
        version=version,
        memory_limit_bytes=memory_limit_bytes,
        session_secret=session_secret or secrets.token_bytes(32),
        rng=random.Random(random_seed),
        metrics=ServiceMetrics(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.startup()
        try:
            yield
        finally:
            await service.shutdown()

    routes = [
        Route("/api/health", service.health, methods=["GET", "HEAD"]),
        Route("/api/monitoring/health", service.monitoring_health, methods=["GET", "HEAD"]),
        Route("/api/simple-health", service.simple_health, methods=["GET"]),
        Route("/api/auth/login", service.login, methods=["POST"]),
        Route("/api/auth/check", service.check, methods=["GET"]),
        Route("/api/auth/logout", service.logout, methods=["POST"]),
        Route("/api/pbl/scenarios", service.content_endpoint("pbl"), methods=["GET"]),
        Route("/api/assessment/scenarios", service.content_endpoint("assessment"), methods=["GET"]),
        Route("/api/discovery/scenarios", service.content_endpoint("discovery"), methods=["GET"]),
        Route("/api/ksa", service.content_endpoint("ksa"), methods=["GET"]),
        Route("/api/relations", service.content_endpoint("relations"), methods=["GET"]),
        Route("/_faults", service.faults_endpoint, methods=["GET", "POST", "DELETE"]),
        Route("/_flag", service.flag_endpoint, methods=["GET"]),
        Route(METRICS_PATH, service.metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            # Outermost, so rate-limited (429) and failed requests are counted too.
            Middleware(MetricsMiddleware, metrics=service.metrics, routes=[route.path for route in routes]),
            Middleware(RateLimitMiddleware, limits=limits),
        ],
    )
    app.state.service = service
    return app
