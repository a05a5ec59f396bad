"""FlagBackend over Unleash's admin API: ``db_percent`` is the ``rollout`` parameter of the feature's
``flexibleRollout`` strategy in one environment; rollback sets it to 0.

Endpoints (Unleash 4.x+ admin API, token in the ``Authorization`` header)::

    GET  /api/admin/projects/{project}/features/{feature}/environments/{env}          enabled + strategies
    PUT  /api/admin/projects/{project}/features/{feature}/environments/{env}/strategies/{id}
    POST /api/admin/projects/{project}/features/{feature}/environments/{env}/on       (promote from off)

The share served from the database is 0 while the environment is off or the strategy disabled, else the
strategy's ``rollout`` (whole percents: Unleash's SDKs read it with ``int()``, so 0.5 is refused with a
ValueError rather than rounded). The strategy to drive is the environment's only ``flexibleRollout`` one,
or ``strategy_id``; when none can be found, or other enabled strategies also turn the feature on (then the
rollout alone does not decide the share and a rollback through it would not reach 0), the backend says so
with a FlagError and changes nothing: turn the environment off by hand (``POST …/off``) in that case.

Who, why, when and the idempotency keys are kept as extra strategy parameters (``watchdogUpdatedBy``,
``watchdogReason``, ``watchdogUpdatedAt``, ``watchdogIdempotencyKey``, ``watchdogIdempotencyLog``): Unleash
keeps unknown parameters and SDKs ignore them; Unleash's own event log records the token's user as well.
The PUT sends the strategy as read, with only those parameters (and ``disabled`` when promoting) changed.

Unleash offers no compare-and-set on a strategy: two writers in different processes can race, and the
read-back after every write turns a lost race into a FlagError (never a silent success). Writers sharing one
backend instance are serialised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from watchdog.core.clock import Clock, SystemClock
from watchdog.flags._remote import (
    DEFAULT_DEADLINE_S,
    DEFAULT_TIMEOUT_S,
    CorruptDocument,
    bounded,
    excerpt,
    mismatch,
    same_change,
)
from watchdog.flags.base import FlagError, FlagState
from watchdog.flags.flagd_file import IDEMPOTENCY_LOG_SIZE, normalize_percent
from watchdog.flags.http import check_status, transport_guard

T = TypeVar("T")

log = logging.getLogger("watchdog.flags")

STRATEGY = "flexibleRollout"
P_BY, P_REASON, P_AT, P_KEY, P_LOG = (
    "watchdogUpdatedBy",
    "watchdogReason",
    "watchdogUpdatedAt",
    "watchdogIdempotencyKey",
    "watchdogIdempotencyLog",
)


@dataclass(frozen=True, slots=True)
class _Environment:
    enabled: bool
    strategy: dict[str, Any]
    rollout: int | None
    """None: the rollout parameter is missing or not a whole percent (a damaged strategy)."""

    @property
    def db_percent(self) -> float:
        if not self.enabled or self.strategy.get("disabled") is True or self.rollout is None:
            return 0.0
        return float(self.rollout)

    @property
    def parameters(self) -> dict[str, str]:
        params = self.strategy.get("parameters")
        return dict(params) if isinstance(params, Mapping) else {}

    def state(self) -> FlagState:
        params = self.parameters
        try:
            updated_at = float(params.get(P_AT, "0") or 0)
        except ValueError:
            updated_at = 0.0
        return FlagState(
            db_percent=self.db_percent,
            updated_at=updated_at if math.isfinite(updated_at) else 0.0,
            updated_by=str(params.get(P_BY, "")),
            reason=str(params.get(P_REASON, "")),
            idempotency_key=str(params.get(P_KEY, "")),
        )

    def idempotency_log(self) -> list[tuple[str, float]]:
        entries: list[tuple[str, float]] = []
        try:
            decoded = json.loads(self.parameters.get(P_LOG, "[]"))
        except ValueError:
            decoded = []
        if isinstance(decoded, list):
            for item in decoded:
                if isinstance(item, list) and len(item) == 2 and isinstance(item[1], int | float):
                    entries.append((str(item[0]), float(item[1])))
        return entries


class UnleashFlagBackend:
    """FlagBackend over an Unleash feature's flexibleRollout strategy (module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        token: str,
        project: str = "default",
        feature: str,
        environment: str,
        strategy_id: str | None = None,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        deadline: float = DEFAULT_DEADLINE_S,
    ) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.project = project
        self.feature = feature
        self.environment = environment
        self.strategy_id = strategy_id
        self._clock: Clock = clock or SystemClock()
        self._timeout = timeout
        self._deadline = deadline
        self._lock = asyncio.Lock()
        self._base = (
            f"{self.url}/api/admin/projects/{quote(project, safe='')}/features/{quote(feature, safe='')}"
            f"/environments/{quote(environment, safe='')}"
        )
        self.name = f"unleash:{self.url}/{project}/{feature}@{environment}"

    @classmethod
    def from_config(cls, config: Any, env: Mapping[str, str], clock: Clock) -> UnleashFlagBackend:
        token = env.get(config.token_env, "")
        if not token:
            raise FlagError(
                f"{config.token_env} is not set: the unleash flag backend needs an admin API token"
            )
        return cls(
            config.url,
            token=token,
            project=config.project,
            feature=config.feature,
            environment=config.environment,
            strategy_id=config.strategy_id,
            clock=clock,
            timeout=config.timeout,
            deadline=config.deadline,
        )

    # --- FlagBackend --------------------------------------------------------------------------------

    async def get(self) -> FlagState:
        async def attempt() -> FlagState:
            async with self._client() as client:
                environment = await self._read(client)
            if environment.rollout is None:
                raise CorruptDocument(self._bad_rollout(environment))
            return environment.state()

        return await bounded(f"reading {self.name}", self._clock, self._deadline, self._guard(attempt))

    async def set(self, db_percent: float, reason: str, updated_by: str, idempotency_key: str) -> FlagState:
        percent = normalize_percent(db_percent)
        if not percent.is_integer():
            raise ValueError(f"Unleash's flexibleRollout takes whole percents (0..100), got {db_percent}")
        rollout = int(percent)

        async def attempt() -> FlagState:
            async with self._client() as client:
                current = await self._read(client)
                if current.rollout is None:
                    if rollout != 0:
                        raise FlagError(
                            f"{self._bad_rollout(current)}; refusing to overwrite a strategy the watchdog "
                            "cannot read (only a rollback to 0 % may replace it)"
                        )
                    log.warning("rollback replaces a damaged rollout: %s", self._bad_rollout(current))
                else:
                    for key, applied in current.idempotency_log():
                        if idempotency_key and key == idempotency_key:
                            if not math.isclose(applied, percent, abs_tol=1e-9):
                                raise FlagError(
                                    f"idempotency key {idempotency_key!r} was already used for "
                                    f"db_percent={applied}, refusing to reuse it for {percent}"
                                )
                            return current.state()
                now = self._clock.now()
                log_entries = [e for e in current.idempotency_log() if e[0] != idempotency_key]
                if idempotency_key:
                    log_entries.append((idempotency_key, percent))
                params = current.parameters | {
                    "rollout": str(rollout),
                    P_BY: updated_by,
                    P_REASON: reason,
                    P_AT: repr(now),
                    P_KEY: idempotency_key,
                    P_LOG: json.dumps([list(e) for e in log_entries[-IDEMPOTENCY_LOG_SIZE:]]),
                }
                strategy = {k: v for k, v in current.strategy.items() if k not in ("id", "featureName")}
                strategy["parameters"] = params
                if rollout > 0:
                    strategy["disabled"] = False
                strategy_url = f"{self._base}/strategies/{quote(str(current.strategy['id']), safe='')}"
                response = await client.put(strategy_url, json=strategy)
                check_status(response, f"PUT strategy of {self.name}")
                if rollout > 0 and not current.enabled:
                    check_status(await client.post(f"{self._base}/on"), f"turning on {self.name}")
                try:
                    written = await self._read(client)
                except FlagError as exc:
                    raise FlagError(f"read-back failed on {self.name}: {exc}") from exc
            state = written.state()
            if same_change(state, percent, idempotency_key):
                return state
            if idempotency_key and any(
                key == idempotency_key and math.isclose(value, percent, abs_tol=1e-9)
                for key, value in written.idempotency_log()
            ):
                return state  # applied, then superseded by someone else's change
            raise mismatch(self.name, percent, idempotency_key, state)

        async with self._lock:
            return await bounded(f"setting {self.name}", self._clock, self._deadline, self._guard(attempt))

    # --- internals ------------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=self._timeout,
            headers={
                "Authorization": self._token,
                "Accept": "application/json",
                "User-Agent": "sre-watchdog",
            },
            follow_redirects=False,
        )

    async def _read(self, client: httpx.AsyncClient) -> _Environment:
        response = await client.get(self._base)
        if response.status_code == 404:
            raise FlagError(
                f"{self.name}: project, feature or environment not found (HTTP 404: {excerpt(response.text)})"
            )
        check_status(response, f"GET {self.name}")
        try:
            document = response.json()
        except ValueError as exc:
            raise CorruptDocument(f"{self.name} did not answer JSON: {exc}") from exc
        if not isinstance(document, Mapping) or not isinstance(document.get("strategies"), list):
            raise CorruptDocument(
                f"{self.name}: the answer has no 'strategies' list: {excerpt(response.text)}"
            )
        strategies = [s for s in document["strategies"] if isinstance(s, Mapping)]
        ours = self._pick(strategies)
        others = [
            str(s.get("name")) + ":" + str(s.get("id"))
            for s in strategies
            if s is not ours and s.get("disabled") is not True
        ]
        if others:
            raise FlagError(
                f"{self.name}: other enabled strategies also turn the feature on ({', '.join(others)}), "
                f"so the {STRATEGY} rollout alone does not decide the database share; remove or disable "
                "them, or roll back by turning the environment off (POST …/off)"
            )
        return _Environment(
            enabled=document.get("enabled") is True, strategy=dict(ours), rollout=_rollout(ours)
        )

    def _pick(self, strategies: list[Mapping[str, Any]]) -> Mapping[str, Any]:
        if self.strategy_id is not None:
            for strategy in strategies:
                if str(strategy.get("id")) == self.strategy_id:
                    if strategy.get("name") != STRATEGY:
                        raise FlagError(
                            f"{self.name}: strategy {self.strategy_id} is {strategy.get('name')!r}, "
                            f"not {STRATEGY}"
                        )
                    return strategy
            raise FlagError(f"{self.name}: strategy {self.strategy_id} not found in the environment")
        rollouts = [s for s in strategies if s.get("name") == STRATEGY]
        if len(rollouts) == 1 and "id" in rollouts[0]:
            return rollouts[0]
        names = [str(s.get("name")) for s in strategies] or ["none"]
        if not rollouts:
            raise FlagError(
                f"{self.name}: no {STRATEGY} strategy found (strategies there: {', '.join(names)}); "
                "the watchdog sets the database share through one; add it, or roll back by turning the "
                "environment off (POST …/off)"
            )
        raise FlagError(
            f"{self.name}: {len(rollouts)} {STRATEGY} strategies; say which one with strategy_id "
            f"({', '.join(str(s.get('id')) for s in rollouts)})"
        )

    def _bad_rollout(self, environment: _Environment) -> str:
        value = environment.parameters.get("rollout")
        return f"{self.name}: the {STRATEGY} rollout parameter is {value!r}, not a whole percent 0..100"

    def _guard(self, attempt: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        return transport_guard(self.name, attempt)


def _rollout(strategy: Mapping[str, Any]) -> int | None:
    params = strategy.get("parameters")
    value = params.get("rollout") if isinstance(params, Mapping) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        return None
    return number if 0 <= number <= 100 else None
