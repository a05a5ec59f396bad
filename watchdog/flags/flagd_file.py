"""The default flag backend: a JSON file in the OpenFeature/flagd flag-definition format.

The file is what flagd (or any in-process flagd provider) reads, so the application and the watchdog agree
on one artefact that does not live in the database being migrated: the kill switch must not share fate
with the component it protects. Layout written by this module::

    {
      "$schema": "https://flagd.dev/schema/v0/flags.json",
      "flags": {
        "content-data-source": {
          "state": "ENABLED",
          "variants": {"yaml": "yaml", "db": "db"},
          "defaultVariant": "yaml",
          "targeting": {"fractional": [["db", 500], ["yaml", 9500]]},
          "metadata": {
            "dbPercent": 5,
            "updatedBy": "sre-watchdog",
            "updatedAt": "2026-01-01T00:00:00Z",
            "updatedAtEpoch": 1767225600.0,
            "reason": "canary start",
            "idempotencyKey": "rollout-42",
            "idempotencyLog": "[[\\"rollout-42\\", 5.0]]"
          }
        }
      }
    }

Weights are integers out of ``WEIGHT_SCALE`` (10,000 = basis points) because flagd truncates weights to
integers; a canary of 0.5 % is ``[["db", 50], ["yaml", 9950]]``. The resolution is therefore 0.01
percentage points and every backend in this package quantizes to it. The ``targeting`` is the source of
truth; ``metadata.dbPercent`` only mirrors it for people reading the file.

flagd evaluates ``fractional`` by hashing ``flagKey + targetingKey`` with MurmurHash3 (x86, 32-bit, seed 0)
and mapping the unsigned hash onto ``[0, totalWeight)`` as ``(hash * totalWeight) >> 32``; variants own
consecutive weight ranges in the order they are listed (current flagd core, "v2"). Older flagd releases
used ``|int32(hash)| / MaxInt32 * 100`` against percentage ranges ("v1"). ``choose_variant`` and
``ParsedFlag.evaluate`` implement both (v2 by default), checked against the flagd-testbed vectors, so the
reference service splits users exactly the way flagd would.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import math
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import mmh3

from watchdog.core.clock import Clock, SystemClock
from watchdog.flags.base import FlagError, FlagState

DEFAULT_FLAG_KEY = "content-data-source"
SCHEMA_URL = "https://flagd.dev/schema/v0/flags.json"
WEIGHT_SCALE = 10_000
"""Sum of the fractional weights we write: weights are basis points of traffic."""
IDEMPOTENCY_LOG_SIZE = 50
"""How many recent (idempotency key, percent) pairs the file remembers, so a retried change that arrives
after someone else's change is still recognised as already applied."""

Variant = Literal["yaml", "db"]
_INT32_MAX = 2**31 - 1


# --- flagd-compatible hashing -------------------------------------------------------------------------


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, unsigned: the hash flagd buckets ``fractional`` splits with."""
    return int(mmh3.hash(data, seed, signed=False))


FractionalAlgorithm = Literal["v2", "v1"]
"""``v2``: current flagd core, ``bucket = (hash * totalWeight) >> 32`` on the unsigned hash, integer ranges.
``v1``: older flagd/providers, ``|int32(hash)| / MaxInt32 * 100`` against percentage ranges."""


def _distribute(
    bucketing_value: str, distribution: Sequence[tuple[str, int]], algorithm: FractionalAlgorithm = "v2"
) -> str | None:
    """flagd's ``fractional`` for an already-parsed distribution; None where flagd would match nothing."""
    total = sum(weight for _, weight in distribution)
    if total <= 0:
        return None
    h = murmur3_32(bucketing_value.encode("utf-8"))
    if algorithm == "v2":
        bucket = (h * total) >> 32
        range_end = 0
        for name, weight in distribution:
            range_end += weight
            if bucket < range_end:
                return name
        return None
    signed = h - 2**32 if h >= 2**31 else h
    fbucket = abs(signed) / _INT32_MAX * 100.0  # -2**31 lands a hair above 100 and matches nothing
    frange_end = 0.0
    for name, weight in distribution:
        frange_end += 100.0 * weight / total
        if fbucket < frange_end:
            return name
    return None


def canonical_distribution(db_percent: float) -> tuple[tuple[str, int], tuple[str, int]]:
    """The ``fractional`` entries this module writes for a share: ``(("db", w), ("yaml", SCALE - w))``."""
    db_weight = round(normalize_percent(db_percent) * WEIGHT_SCALE / 100.0)
    return ("db", db_weight), ("yaml", WEIGHT_SCALE - db_weight)


def choose_variant(
    flag_key: str, targeting_key: str, db_percent: float, algorithm: FractionalAlgorithm = "v2"
) -> Variant:
    """Which variant flagd serves ``targeting_key`` for the canonical layout at ``db_percent``.

    Deterministic per (flag, targeting key), and the db range is the low end of the bucket space, so a
    user in the canary stays in it while the share only grows."""
    chosen = _distribute(flag_key + targeting_key, canonical_distribution(db_percent), algorithm)
    return "db" if chosen == "db" else "yaml"


# --- parsing -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedFlag:
    """One flag of a flagd document, reduced to what the YAML/DB split needs."""

    key: str
    enabled: bool
    default_variant: str
    distribution: tuple[tuple[str, int], ...]
    """``fractional`` entries in file order with flagd's integer weights; empty = no targeting."""
    metadata: Mapping[str, Any]

    @property
    def db_percent(self) -> float:
        if not self.enabled:
            # flagd answers FLAG_NOT_FOUND for a disabled flag, so applications fall back to their coded
            # default, which for this migration is YAML.
            return 0.0
        if not self.distribution:
            return 100.0 if self.default_variant == "db" else 0.0
        total = sum(weight for _, weight in self.distribution)
        db = sum(weight for name, weight in self.distribution if name == "db")
        return db * 100.0 / total

    def evaluate(self, targeting_key: str, algorithm: FractionalAlgorithm = "v2") -> str:
        """The variant flagd resolves for ``targeting_key`` (any order of entries); the default variant
        where flagd would match none, ``yaml`` when the flag is disabled (flagd: FLAG_NOT_FOUND)."""
        if not self.enabled:
            return "yaml"
        if not self.distribution:
            return self.default_variant
        chosen = _distribute(self.key + targeting_key, self.distribution, algorithm)
        return self.default_variant if chosen is None else chosen


def parse_flag(document: Any, flag_key: str = DEFAULT_FLAG_KEY) -> ParsedFlag:
    """Validate ``document`` (a parsed flagd JSON file) and extract ``flag_key``; FlagError if unusable."""
    if not isinstance(document, Mapping):
        raise FlagError("flag file must contain a JSON object")
    flags = document.get("flags")
    if not isinstance(flags, Mapping):
        raise FlagError("flag file has no 'flags' object")
    flag = flags.get(flag_key)
    if flag is None:
        raise FlagError(f"flag {flag_key!r} not found in the flag file")
    if not isinstance(flag, Mapping):
        raise FlagError(f"flag {flag_key!r} must be a JSON object")
    state = flag.get("state", "ENABLED")
    if state not in ("ENABLED", "DISABLED"):
        raise FlagError(f"flag {flag_key!r}: state must be ENABLED or DISABLED, got {state!r}")
    variants = flag.get("variants")
    if not isinstance(variants, Mapping) or set(variants) != {"yaml", "db"}:
        raise FlagError(f"flag {flag_key!r}: variants must be exactly 'yaml' and 'db'")
    default = flag.get("defaultVariant")
    if default not in variants:
        raise FlagError(f"flag {flag_key!r}: defaultVariant {default!r} is not one of its variants")
    metadata = flag.get("metadata", {})
    if not isinstance(metadata, Mapping):
        raise FlagError(f"flag {flag_key!r}: metadata must be a JSON object")
    return ParsedFlag(
        key=flag_key,
        enabled=state == "ENABLED",
        default_variant=str(default),
        distribution=_parse_targeting(flag_key, flag.get("targeting"), variants),
        metadata=metadata,
    )


def _parse_targeting(
    flag_key: str, targeting: Any, variants: Mapping[str, Any]
) -> tuple[tuple[str, int], ...]:
    if targeting is None or targeting == {}:
        return ()
    if not isinstance(targeting, Mapping) or set(targeting) != {"fractional"}:
        # Arbitrary JSONLogic cannot be turned into one percentage; refuse rather than guess.
        raise FlagError(f"flag {flag_key!r}: targeting must be a single 'fractional' rule")
    entries = targeting["fractional"]
    if not isinstance(entries, list) or not entries:
        raise FlagError(f"flag {flag_key!r}: 'fractional' must be a non-empty list")
    if entries[0] is None:
        entries = entries[1:]  # flagd skips a null bucketing expression and uses flagKey + targetingKey
    if not entries or not isinstance(entries[0], list):
        raise FlagError(
            f"flag {flag_key!r}: custom bucketing expressions are not supported; "
            "flagd's default (flagKey + targetingKey) is"
        )
    distribution: list[tuple[str, int]] = []
    for entry in entries:
        if not isinstance(entry, list) or not 1 <= len(entry) <= 2 or entry[0] not in variants:
            raise FlagError(f"flag {flag_key!r}: bad fractional entry {entry!r}")
        weight: Any = entry[1] if len(entry) == 2 else 1
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise FlagError(f"flag {flag_key!r}: bad fractional weight {weight!r}")
        if weight != int(weight):
            # Current flagd rejects the whole rule (and serves the default) on a non-integer weight.
            raise FlagError(f"flag {flag_key!r}: fractional weights must be integers, got {weight!r}")
        distribution.append((str(entry[0]), int(weight)))
    total = sum(weight for _, weight in distribution)
    if not 0 < total <= _INT32_MAX:
        raise FlagError(f"flag {flag_key!r}: fractional weights must sum to 1..{_INT32_MAX}, got {total}")
    return tuple(distribution)


def read_db_percent(document: Any, flag_key: str = DEFAULT_FLAG_KEY) -> float:
    """Share of traffic (0..100) that ``flag_key`` in this parsed flagd document sends to the database."""
    return parse_flag(document, flag_key).db_percent


def normalize_percent(db_percent: float) -> float:
    """Validate and quantize a requested share to the file's resolution (0.01 percentage points)."""
    if isinstance(db_percent, bool) or not isinstance(db_percent, int | float):
        raise ValueError(f"db_percent must be a number, got {db_percent!r}")
    if not math.isfinite(db_percent) or not 0.0 <= db_percent <= 100.0:
        raise ValueError(f"db_percent must be within 0..100, got {db_percent}")
    return round(db_percent * WEIGHT_SCALE / 100.0) * 100.0 / WEIGHT_SCALE


def state_of(parsed: ParsedFlag) -> FlagState:
    meta = parsed.metadata
    updated_at = meta.get("updatedAtEpoch")
    if not isinstance(updated_at, int | float) or isinstance(updated_at, bool):
        updated_at = _parse_iso(meta.get("updatedAt"))
    return FlagState(
        db_percent=parsed.db_percent,
        updated_at=float(updated_at),
        updated_by=str(meta.get("updatedBy", "")),
        reason=str(meta.get("reason", "")),
        idempotency_key=str(meta.get("idempotencyKey", "")),
    )


def _parse_iso(value: Any) -> float:
    if not isinstance(value, str):
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _idempotency_log(metadata: Mapping[str, Any]) -> list[tuple[str, float]]:
    # flagd metadata values must be scalars, so the log is stored as a JSON-encoded string.
    raw = metadata.get("idempotencyLog")
    log: list[tuple[str, float]] = []
    if isinstance(raw, str):
        try:
            decoded = json.loads(raw)
        except ValueError:
            decoded = []
        if isinstance(decoded, list):
            for item in decoded:
                if isinstance(item, list) and len(item) == 2 and isinstance(item[1], int | float):
                    log.append((str(item[0]), float(item[1])))
    current = metadata.get("idempotencyKey")
    if isinstance(current, str) and current and all(key != current for key, _ in log):
        # A file written by hand or by an older tool may only carry the current key.
        percent = metadata.get("dbPercent")
        if isinstance(percent, int | float) and not isinstance(percent, bool):
            log.append((current, float(percent)))
    return log


def canonical_flag(
    db_percent: float,
    *,
    updated_by: str,
    reason: str,
    idempotency_key: str,
    updated_at: float,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The flag object for a ``db_percent`` split, keeping unknown keys and metadata of ``previous``."""
    percent = normalize_percent(db_percent)
    (_, db_weight), (_, yaml_weight) = canonical_distribution(percent)
    flag: dict[str, Any] = dict(previous or {})
    old_meta = flag.get("metadata")
    metadata: dict[str, Any] = dict(old_meta) if isinstance(old_meta, Mapping) else {}
    log = [entry for entry in _idempotency_log(metadata) if entry[0] != idempotency_key]
    if idempotency_key:
        log.append((idempotency_key, percent))
    metadata.update(
        {
            "dbPercent": int(percent) if percent.is_integer() else percent,
            "updatedBy": updated_by,
            "updatedAt": _iso(updated_at),
            "updatedAtEpoch": updated_at,
            "reason": reason,
            "idempotencyKey": idempotency_key,
            "idempotencyLog": json.dumps([list(entry) for entry in log[-IDEMPOTENCY_LOG_SIZE:]]),
        }
    )
    flag.update(
        {
            # Written every time: a DISABLED flag or a db default would silently defeat the split.
            "state": "ENABLED",
            "variants": {"yaml": "yaml", "db": "db"},
            "defaultVariant": "yaml",
            "targeting": {"fractional": [["db", db_weight], ["yaml", yaml_weight]]},
            "metadata": metadata,
        }
    )
    return flag


# --- file I/O ----------------------------------------------------------------------------------------


def load_document(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FlagError(f"flag file {path} does not exist") from None
    except OSError as exc:
        raise FlagError(f"cannot read flag file {path}: {exc}") from exc
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise FlagError(f"flag file {path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise FlagError(f"flag file {path} must contain a JSON object")
    return document


def _atomic_write(path: Path, document: Mapping[str, Any]) -> None:
    """Write a complete new file next to ``path`` and rename it over: readers (flagd, the app, the
    watchdog) see either the old or the new file, never a torn one, and a crash leaves the old one."""
    data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644  # mkstemp creates 0600; flagd may run as another user and must be able to read it
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    # The rename itself is only durable once the directory entry is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write cycles across processes and threads.

    The data file is replaced on every write, so locking it would lock a stale inode; a sibling lock
    file is stable. flock locks belong to the open file description, so two threads of one process
    exclude each other too."""
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _target(path: Path) -> Path:
    # Replace the real file, not a symlink pointing at it, so symlinked layouts keep working.
    return path.resolve() if path.is_symlink() else path


def write_initial(
    path: Path | str,
    db_percent: float = 0.0,
    *,
    flag_key: str = DEFAULT_FLAG_KEY,
    updated_by: str = "sre-watchdog",
    reason: str = "initial flag file",
    now: float | None = None,
) -> None:
    """Create (or overwrite) ``path`` holding only ``flag_key`` at ``db_percent``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flag = canonical_flag(
        db_percent,
        updated_by=updated_by,
        reason=reason,
        idempotency_key="",
        updated_at=time.time() if now is None else now,
    )
    target = _target(path)
    with _locked(target):
        _atomic_write(target, {"$schema": SCHEMA_URL, "flags": {flag_key: flag}})


class FlagdFileBackend:
    """FlagBackend over a flagd flag-definition file (see the module docstring for the layout)."""

    def __init__(
        self, path: Path | str, flag_key: str = DEFAULT_FLAG_KEY, *, clock: Clock | None = None
    ) -> None:
        self.path = Path(path)
        self.flag_key = flag_key
        self.name = f"flagd-file:{self.path}"
        self._clock: Clock = clock or SystemClock()

    async def get(self) -> FlagState:
        return await asyncio.to_thread(self._get_sync)

    async def set(self, db_percent: float, reason: str, updated_by: str, idempotency_key: str) -> FlagState:
        percent = normalize_percent(db_percent)
        return await asyncio.to_thread(self._set_sync, percent, reason, updated_by, idempotency_key)

    def _get_sync(self) -> FlagState:
        return state_of(parse_flag(load_document(self.path), self.flag_key))

    def _set_sync(self, percent: float, reason: str, updated_by: str, idempotency_key: str) -> FlagState:
        # The same rules as every other backend (watchdog.flags._remote): a document the watchdog cannot
        # read is never overwritten, except by a rollback to 0 %, which writes a valid document and keeps
        # the damaged one beside it (``<file>.corrupt-<epoch>``).
        from watchdog.flags._remote import CorruptDocument, decode, plan_change, verify_document

        target = _target(self.path)
        where = f"flag file {target}"
        with _locked(target):
            try:
                raw = target.read_bytes()
            except FileNotFoundError:
                raise FlagError(f"flag file {target} does not exist") from None
            except OSError as exc:
                raise FlagError(f"cannot read flag file {target}: {exc}") from exc
            current: Any
            try:
                current = decode(raw, where)
            except CorruptDocument as exc:
                current = exc
            now = self._clock.now()
            plan = plan_change(
                current,
                flag_key=self.flag_key,
                percent=percent,
                reason=reason,
                updated_by=updated_by,
                idempotency_key=idempotency_key,
                now=now,
                where=where,
            )
            if plan.document is None:
                return plan.state
            try:
                if plan.repaired:
                    target.with_name(f"{target.name}.corrupt-{now:.0f}").write_bytes(raw)
                _atomic_write(target, plan.document)
            except OSError as exc:
                raise FlagError(f"cannot write flag file {target}: {exc}") from exc
            # Read back through the same parser the readers use: proves the bytes on disk say what we meant.
            return verify_document(
                load_document(target),
                flag_key=self.flag_key,
                percent=percent,
                idempotency_key=idempotency_key,
                where=where,
            )
