"""What the remote flag backends share: bounded retries, the flagd-document read-modify-write plan, and the
read-back check. The file backend (``flagd_file``) is the reference; these helpers keep the others to its
rules:

- quantized to 0.01 points (``normalize_percent``), the flagd layout written by ``canonical_flag``;
- idempotent per key: the same key and value is a no-op returning the current state, the same key with
  another value is refused ("already used"), keys remembered in ``metadata.idempotencyLog``;
- verified: after a write the backend reads again and the flag must say what was written (or a later write
  that was built on it must remember our key: someone changed it after us, nothing was lost);
- a document that exists but cannot be used is never overwritten blindly: a change is refused with a
  FlagError saying what is wrong, **except a rollback** (db 0 %), which replaces it with a valid document,
  keeps the unreadable original beside it where the backend can, records ``repairedFrom`` in the flag's
  metadata and logs a warning: the kill switch must work even on a damaged document. A document or flag
  that does not exist at all is a configuration error and is never created by ``set``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from watchdog.core.clock import Clock
from watchdog.flags.base import FlagError, FlagState
from watchdog.flags.flagd_format import (
    SCHEMA_URL,
    _idempotency_log,
    canonical_flag,
    parse_flag,
    state_of,
)

log = logging.getLogger("watchdog.flags")

DEFAULT_TIMEOUT_S = 3.0
"""One request (connect, read or write)."""
DEFAULT_DEADLINE_S = 10.0
"""One whole get/set, retries included: a rollback gets its answer (or a FlagError) within this."""
MAX_ATTEMPTS = 6
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 2.0

T = TypeVar("T")


class Transient(Exception):
    """A failure worth retrying: the backend unreachable, overloaded, or changed under us (a lost race)."""


class CorruptDocument(FlagError):
    """The flag document exists but cannot be used (not JSON, not a flagd document, the flag malformed)."""


async def bounded(what: str, clock: Clock, deadline: float, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt``, retrying ``Transient`` failures with jittered exponential backoff (tenacity), all
    within ``deadline`` seconds of real time; anything else propagates. Gives up with a FlagError that says
    what was tried and the last error."""
    errors: list[str] = []

    async def recorded() -> T:
        try:
            return await attempt()
        except Transient as exc:
            errors.append(str(exc))
            raise

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(Transient),
        stop=stop_after_attempt(MAX_ATTEMPTS),
        wait=wait_exponential(multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S)
        + wait_random(0, BACKOFF_INITIAL_S),
        sleep=clock.sleep,
        reraise=True,
    )
    timeout = asyncio.timeout(deadline)
    try:
        async with timeout:
            return await retrying(recorded)
    except Transient as exc:
        raise FlagError(f"{what}: gave up after {len(errors)} attempts; last error: {exc}") from exc
    except TimeoutError as exc:
        if not timeout.expired():
            raise
        last = f"; last error: {errors[-1]}" if errors else ""
        raise FlagError(
            f"{what}: no verified answer within {deadline:g} s ({len(errors) + 1} attempts){last}"
        ) from exc


# --- the flagd document ----------------------------------------------------------------------------------


def decode(raw: bytes | str, where: str) -> Any:
    """JSON-decode a stored document; CorruptDocument (with the parser's words) if it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise CorruptDocument(f"{where} is not valid JSON: {exc}") from exc


def encode(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _flag_present(document: Any, flag_key: str, where: str) -> None:
    """CorruptDocument when the document is not a flagd document; FlagError when our flag is absent."""
    if not isinstance(document, Mapping):
        raise CorruptDocument(f"{where} must contain a JSON object, found {type(document).__name__}")
    flags = document.get("flags")
    if not isinstance(flags, Mapping):
        raise CorruptDocument(f"{where} has no 'flags' object")
    if flag_key not in flags:
        raise FlagError(f"flag {flag_key!r} not found in {where} (flags there: {sorted(flags)[:10]})")


def read_state(document: Any, flag_key: str, where: str) -> FlagState:
    """The state of ``flag_key`` in a decoded flagd document."""
    _flag_present(document, flag_key, where)
    try:
        return state_of(parse_flag(document, flag_key))
    except FlagError as exc:
        raise CorruptDocument(f"{where}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Plan:
    """What one ``set`` attempt will do: write ``document`` (None: nothing, ``state`` is already there)."""

    document: dict[str, Any] | None
    state: FlagState
    repaired: str = ""
    """Why a rollback replaces an unusable document ("" when it does not)."""


def plan_change(
    current: Any,
    *,
    flag_key: str,
    percent: float,
    reason: str,
    updated_by: str,
    idempotency_key: str,
    now: float,
    where: str,
) -> Plan:
    """The write that takes ``current`` (a decoded document, or the CorruptDocument raised reading it) to
    ``percent``, following flagd_file's rules (module docstring). FlagError when the change is refused."""
    problem: CorruptDocument | None = current if isinstance(current, CorruptDocument) else None
    parsed = None
    if problem is None:
        try:
            _flag_present(current, flag_key, where)  # a missing flag (FlagError) is not ours to create
        except CorruptDocument as exc:
            problem = exc
        else:
            try:
                parsed = parse_flag(current, flag_key)
            except FlagError as exc:
                problem = CorruptDocument(f"{where}: {exc}")
    if parsed is None:
        if percent != 0.0:
            raise FlagError(
                f"{problem}; refusing to overwrite a flag document the watchdog cannot read "
                "(only a rollback to 0 % may replace it)"
            ) from problem
        return _repair(current, problem, flag_key, reason, updated_by, idempotency_key, now, where)
    for key, applied in _idempotency_log(parsed.metadata):
        if idempotency_key and key == idempotency_key:
            if not math.isclose(applied, percent, abs_tol=1e-9):
                raise FlagError(
                    f"idempotency key {idempotency_key!r} was already used for db_percent={applied}, "
                    f"refusing to reuse it for {percent}"
                )
            return Plan(None, state_of(parsed))
    document = dict(current)
    flags = dict(document["flags"])
    flags[flag_key] = canonical_flag(
        percent,
        updated_by=updated_by,
        reason=reason,
        idempotency_key=idempotency_key,
        updated_at=now,
        previous=flags[flag_key],
    )
    flags[flag_key]["metadata"].pop("repairedFrom", None)  # the note belongs to the repairing change only
    document["flags"] = flags
    return Plan(document, _expected(percent, reason, updated_by, idempotency_key, now))


def _repair(
    current: Any,
    problem: CorruptDocument | None,
    flag_key: str,
    reason: str,
    updated_by: str,
    idempotency_key: str,
    now: float,
    where: str,
) -> Plan:
    why = str(problem) if problem is not None else f"{where}: unreadable"
    flag = canonical_flag(
        0.0, updated_by=updated_by, reason=reason, idempotency_key=idempotency_key, updated_at=now
    )
    flag["metadata"]["repairedFrom"] = why[:500]
    if isinstance(current, Mapping) and isinstance(current.get("flags"), Mapping):
        # The document is sound and only our flag is broken: replace the flag, keep the others.
        document = dict(current)
        document["flags"] = {**current["flags"], flag_key: flag}
    else:
        document = {"$schema": SCHEMA_URL, "flags": {flag_key: flag}}
    log.warning("rollback replaces an unreadable flag document with a valid one at 0 %% db: %s", why)
    return Plan(document, _expected(0.0, reason, updated_by, idempotency_key, now), repaired=why)


def _expected(percent: float, reason: str, updated_by: str, idempotency_key: str, now: float) -> FlagState:
    return FlagState(
        db_percent=percent,
        updated_at=now,
        updated_by=updated_by,
        reason=reason,
        idempotency_key=idempotency_key,
    )


def same_change(state: FlagState, percent: float, idempotency_key: str) -> bool:
    return math.isclose(state.db_percent, percent, abs_tol=1e-9) and state.idempotency_key == idempotency_key


def verify_document(
    document: Any, *, flag_key: str, percent: float, idempotency_key: str, where: str
) -> FlagState:
    """The state read back after a write: ours, or a later one that remembers our key (someone changed the
    flag after us; our write was not lost). Otherwise FlagError: the write did not stick."""
    try:
        state = read_state(document, flag_key, where)
    except FlagError as exc:
        raise FlagError(f"read-back failed on {where}: {exc}") from exc
    if same_change(state, percent, idempotency_key):
        return state
    if idempotency_key:
        metadata = parse_flag(document, flag_key).metadata
        for key, applied in _idempotency_log(metadata):
            if key == idempotency_key and math.isclose(applied, percent, abs_tol=1e-9):
                log.info(
                    "%s: our change %r was applied and has since been superseded by %r",
                    where,
                    idempotency_key,
                    state.idempotency_key,
                )
                return state
    raise mismatch(where, percent, idempotency_key, state)


def mismatch(where: str, percent: float, idempotency_key: str, found: FlagState) -> FlagError:
    return FlagError(
        f"read-back mismatch on {where}: wanted db_percent={percent} key={idempotency_key!r}, "
        f"found db_percent={found.db_percent} key={found.idempotency_key!r} (the write was lost, or "
        "someone changed the flag right after it)"
    )


def excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
