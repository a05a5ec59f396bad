"""The flagd flag-definition format the watchdog writes and reads: the document layout, fractional
bucketing (flagd's murmur3), parsing and the canonical flag (``flagd_file`` has the whole description).
Shared by every backend (``flagd_file``, ``_remote``); no I/O here."""


from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import mmh3

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


