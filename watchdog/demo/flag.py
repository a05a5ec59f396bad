"""How the reference service reads the content-source flag on its own, as a flagd in-process provider does.

The reference service is the system under test, so this module shares no code with the watchdog (which
*writes* the file through ``watchdog.flags.flagd_file``): a bug in one parser must not hide behind the
same bug in the other. Both follow the flagd flag-definition format, and ``tests/test_demo_flag_reader.py``
checks that the two independent implementations agree.

The file is a flagd flag-definition document::

    {"$schema": "https://flagd.dev/schema/v0/flags.json",
     "flags": {"content-data-source": {
        "state": "ENABLED", "variants": {"yaml": "yaml", "db": "db"}, "defaultVariant": "yaml",
        "targeting": {"fractional": [["db", 500], ["yaml", 9500]]}}}}

and is evaluated as flagd does (flagd ``core/pkg/evaluator``: ``json.go``, ``fractional.go``; the
flagd-testbed ``fractional``, ``disabled`` and edge-case suites), for the evaluation context
``{"targetingKey": <key>, "$flagd": {"flagKey": <flag key>, "timestamp": <now>}}``:

* A document flagd would refuse to load keeps the last good version in force (flagd keeps its previous
  flags when an update fails): not JSON (NaN/Infinity included), not an object, no ``flags`` object, a flag
  that is not an object or whose ``state``/``defaultVariant``/``variants``/``metadata`` have the wrong JSON
  type, or a ``defaultVariant`` that is not one of the flag's variants — for *any* flag of the document,
  as flagd validates them all. This reader also refuses (its own limit, not flagd's) targeting other than
  one ``fractional`` rule whose arguments use no JSONLogic operators beyond ``var`` and ``cat``.
* The flag missing from a loadable document: flagd answers FLAG_NOT_FOUND and the application falls back
  to its coded default, ``yaml``. ``error`` says so.
* ``"state": "DISABLED"``: flagd resolves with reason DISABLED and the application gets its coded default,
  ``yaml`` — whatever ``defaultVariant`` says. Any other state (or none) is enabled: flagd only looks for
  ``DISABLED``.
* No targeting (absent, ``null`` or ``{}``): ``defaultVariant`` (reason STATIC); without a
  ``defaultVariant``, the coded default (FALLBACK).
* ``fractional``: the first argument, once evaluated, is the bucketing value if it is a string; otherwise
  (dropped when null) the bucketing value is flag key + targeting key, and an empty targeting key matches
  nothing. The bucketing value's MurmurHash3 (x86, 32-bit, seed 0, unsigned) ``h`` picks
  ``(h * total_weight) >> 32`` in ``[0, total_weight)``; variants own consecutive weight ranges in listed
  order. A weight defaults to 1 when omitted or null; negative weights count as 0. The rule matches
  nothing — so ``defaultVariant`` is served — when an entry is not a non-empty list, a weight is not a
  number or not an integer, a weight or the total exceeds 2**31 - 1, or the total is 0.
* A variant chosen by the rule that the flag does not define is an evaluation error: coded default.
* What the application receives is the chosen variant's *value*, as an OpenFeature client sees it: the
  service reads the database when that value is ``"db"`` and YAML otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import mmh3

log = logging.getLogger(__name__)

DEFAULT_FLAG_KEY = "content-data-source"
"""The flag the reference service asks for unless told otherwise."""
CODED_DEFAULT: Literal["yaml"] = "yaml"
"""What the application falls back to whenever flagd resolves no value: the safe, pre-migration path."""
WEIGHT_SCALE = 10_000
"""A fixed split (no flag file) and ``write_flag_file`` use weights out of 10,000: 0.01 % resolution."""
SCHEMA_URL = "https://flagd.dev/schema/v0/flags.json"
_MAX_WEIGHT = 2**31 - 1
_SUPPORTED_OPERATORS = frozenset({"var", "cat"})

Source = Literal["yaml", "db"]


class FlagFileError(Exception):
    """The flag file cannot be used: flagd would refuse it, or it is beyond what this reader evaluates."""


# --- the JSONLogic subset the fractional rule needs ----------------------------------------------------


def _check_supported(node: Any, flag_key: str) -> None:
    if isinstance(node, list):
        for item in node:
            _check_supported(item, flag_key)
    elif isinstance(node, dict):
        if len(node) != 1 or next(iter(node)) not in _SUPPORTED_OPERATORS:
            raise FlagFileError(
                f"flag {flag_key!r}: the reference service evaluates 'fractional' with 'var' and 'cat' "
                f"only, not {json.dumps(node)[:80]}"
            )
        _check_supported(next(iter(node.values())), flag_key)


def _number_text(value: float) -> str:
    # JSONLogic's cat in flagd's engine prints numbers as Go's FormatFloat(n, 'f', -1, 64): 1.0 -> "1".
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return repr(value)


def _apply(node: Any, data: Mapping[str, Any]) -> Any:
    """Evaluate ``node`` (already checked by ``_check_supported``) against the evaluation context."""
    if isinstance(node, list):
        return [_apply(item, data) for item in node]
    if not isinstance(node, dict):
        return node
    ((operator, raw_args),) = node.items()
    args = _apply(raw_args, data)
    if operator == "var":
        return _var(args, data)
    return _cat(args)


def _var(args: Any, data: Mapping[str, Any]) -> Any:
    default: Any = None
    if isinstance(args, list):
        if not args:
            return data
        default = args[1] if len(args) > 1 else None
        args = args[0]
    if args is None or args == "":
        return data
    if isinstance(args, bool) or not isinstance(args, str | int | float):
        return default
    value: Any = data
    for part in (args if isinstance(args, str) else _number_text(args)).split("."):
        if not part:
            continue
        if not isinstance(value, Mapping):
            return default
        value = value.get(part)
        if value is None:
            return default
    return value


def _cat(args: Any) -> str | None:
    items = args if isinstance(args, list) else [args]
    parts: list[str] = []
    for item in items:
        if item is None:
            parts.append("")
        elif isinstance(item, str):
            parts.append(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            parts.append(_number_text(item))
        else:
            return None  # not a string: fractional then buckets on flag key + targeting key
    text = "".join(parts)
    # flagd's JSONLogic engine trims the joined result when cat has more than one argument.
    return text.strip() if len(items) > 1 else text


# --- fractional -----------------------------------------------------------------------------------------


def _split_bucketing(args: list[Any]) -> tuple[str | None, list[Any]]:
    """The explicit bucketing value (None: flag key + targeting key) and the distribution entries."""
    first = args[0]
    if isinstance(first, str):
        return first, args[1:]
    return None, args[1:] if first is None else args


def _weights(entries: list[Any]) -> list[tuple[Any, int]] | None:
    """``(variant, weight)`` per entry with flagd's weight rules; None where flagd's rule fails."""
    weighted: list[tuple[Any, int]] = []
    for entry in entries:
        if not isinstance(entry, list) or not entry or isinstance(entry[0], list | dict):
            return None
        weight = 1
        if len(entry) >= 2 and entry[1] is not None:
            raw = entry[1]
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                return None
            if not math.isfinite(raw) or raw != int(raw) or raw > _MAX_WEIGHT:
                return None
            weight = max(int(raw), 0)
        weighted.append((entry[0], weight))
    total = sum(weight for _, weight in weighted)
    if not 0 < total <= _MAX_WEIGHT:
        return None
    return weighted


def _fractional(args: Any, flag_key: str, targeting_key: str | None) -> Any:
    """flagd's ``fractional`` on evaluated arguments: the chosen entry's variant, or None (no match)."""
    if not isinstance(args, list) or not args:
        return None
    bucketing, entries = _split_bucketing(args)
    if bucketing is None:
        if not targeting_key:
            return None
        bucketing = flag_key + targeting_key
    weighted = _weights(entries)
    if weighted is None:
        return None
    total = sum(weight for _, weight in weighted)
    bucket = (mmh3.hash(bucketing.encode("utf-8"), 0, signed=False) * total) >> 32
    range_end = 0
    for variant, weight in weighted:
        range_end += weight
        if bucket < range_end:
            return variant
    return None  # unreachable: bucket < total


def _variant_name(result: Any) -> str | None:
    """The variant name flagd reads from a targeting result (it strips the JSON quotes); None = no match."""
    if result is None:
        return None
    if isinstance(result, str):
        return result
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, int | float):
        return _number_text(result)
    return json.dumps(result)


# --- the flag --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Flag:
    key: str
    disabled: bool
    variants: Mapping[str, Any]
    default_variant: str | None
    fractional: Any
    """The ``fractional`` arguments as written (JSONLogic, evaluated per request); None: no targeting."""

    def _context(self, targeting_key: str | None) -> dict[str, Any]:
        context: dict[str, Any] = {"$flagd": {"flagKey": self.key, "timestamp": int(time.time())}}
        if targeting_key is not None:
            context["targetingKey"] = targeting_key
        return context

    def _source_of(self, variant: str | None) -> Source:
        if variant is None or variant not in self.variants:
            return CODED_DEFAULT  # no default variant (FALLBACK) or an undefined variant (GENERAL error)
        return "db" if self.variants[variant] == "db" else "yaml"

    def resolve(self, targeting_key: str) -> Source:
        if self.disabled:
            return CODED_DEFAULT
        if self.fractional is None:
            return self._source_of(self.default_variant)
        args = _apply(self.fractional, self._context(targeting_key))
        name = _variant_name(_fractional(args, self.key, targeting_key))
        return self._source_of(self.default_variant if name is None else name)

    @property
    def db_percent(self) -> float:
        """Share of the bucket space (0..100) resolved to the database."""
        if self.disabled:
            return 0.0
        default_share = 100.0 if self._source_of(self.default_variant) == "db" else 0.0
        if self.fractional is None:
            return default_share
        args = _apply(self.fractional, self._context(None))
        if not isinstance(args, list) or not args:
            return default_share
        weighted = _weights(_split_bucketing(args)[1])
        if weighted is None:
            return default_share
        total = sum(weight for _, weight in weighted)
        db = 0
        for variant, weight in weighted:
            name = _variant_name(variant)
            if self._source_of(self.default_variant if name is None else name) == "db":
                db += weight
        return db * 100.0 / total


def _fixed_flag(flag_key: str, db_percent: float) -> _Flag:
    db_weight = round(db_percent * WEIGHT_SCALE / 100.0)
    return _Flag(
        key=flag_key,
        disabled=False,
        variants={"yaml": "yaml", "db": "db"},
        default_variant="yaml",
        fractional=[["db", db_weight], ["yaml", WEIGHT_SCALE - db_weight]],
    )


def _check_percent(db_percent: float) -> float:
    if isinstance(db_percent, bool) or not isinstance(db_percent, int | float):
        raise ValueError(f"db_percent must be a number, got {db_percent!r}")
    if not math.isfinite(db_percent) or not 0.0 <= db_percent <= 100.0:
        raise ValueError(f"db_percent must be within 0..100, got {db_percent}")
    return float(db_percent)


def _check_flag(key: str, flag: Any) -> None:
    """What flagd checks when it loads a document (JSON types of the fields, defaultVariant)."""
    if flag is None:
        return  # flagd decodes a null flag as an empty one
    if not isinstance(flag, dict):
        raise FlagFileError(f"flag {key!r} must be a JSON object")
    for field, kind in (("state", str), ("defaultVariant", str), ("variants", dict), ("metadata", dict)):
        value = flag.get(field)
        if value is not None and not isinstance(value, kind):
            raise FlagFileError(f"flag {key!r}: {field} has the wrong JSON type ({json.dumps(value)[:40]})")
    default = flag.get("defaultVariant")
    if default and default not in (flag.get("variants") or {}):
        raise FlagFileError(f"flag {key!r}: defaultVariant {default!r} is not one of its variants")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _read_flag(path: Path, flag_key: str) -> _Flag | None:
    """The flag as flagd would load it from ``path``; None when the document does not define it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FlagFileError(f"cannot read flag file {path}: {exc.strerror or exc}") from exc
    try:
        document = json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:
        raise FlagFileError(f"flag file {path} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise FlagFileError(f"flag file {path} must contain a JSON object")
    flags = document.get("flags")
    if not isinstance(flags, dict):
        raise FlagFileError(f"flag file {path} has no 'flags' object")
    for key, flag in flags.items():
        _check_flag(key, flag)
    flag = flags.get(flag_key)
    if flag is None:
        return None
    targeting = flag.get("targeting")
    if targeting is None or targeting == {}:
        fractional = None
    elif isinstance(targeting, dict) and list(targeting) == ["fractional"]:
        fractional = targeting["fractional"]
        _check_supported(fractional, flag_key)
    else:
        raise FlagFileError(
            f"flag {flag_key!r}: the reference service only evaluates a single 'fractional' targeting rule"
        )
    return _Flag(
        key=flag_key,
        disabled=flag.get("state") == "DISABLED",
        variants=flag.get("variants") or {},
        default_variant=flag.get("defaultVariant") or None,
        fractional=fractional,
    )


# --- the source the service asks ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signature:
    mtime_ns: int
    size: int
    inode: int


class FlagSource:
    """The current split, from a flagd file re-read only when it changes, or a fixed percentage.

    Each call costs one ``stat`` (microseconds, so it is done inline on the event loop); the file is
    re-read only when mtime, size or inode changed — an atomic rename always yields a new inode, so a
    change within one mtime tick is still seen. A broken file keeps the last good version, as flagd does;
    with no good version ever read the service serves YAML, the safe default. See the module docstring for
    how a missing or DISABLED flag resolves (YAML, the coded default).
    """

    def __init__(
        self, path: Path | None, *, flag_key: str = DEFAULT_FLAG_KEY, fixed_db_percent: float = 0.0
    ) -> None:
        self.path = path
        self.flag_key = flag_key
        self.fixed_db_percent = fixed_db_percent
        self._fixed = _fixed_flag(flag_key, _check_percent(fixed_db_percent))
        self._signature: _Signature | None = None
        self._loaded = False
        self._flag: _Flag | None = None
        self.error: str | None = None
        self.reloads = 0

    def _refresh(self) -> None:
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._note_error(f"cannot stat flag file {self.path}: {exc.strerror}")
            return
        signature = _Signature(st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            flag = _read_flag(self.path, self.flag_key)
        except FlagFileError as exc:
            self._note_error(str(exc))
            return
        self._loaded = True
        self._flag = flag
        self.reloads += 1
        if flag is None:
            self.error = f"flag {self.flag_key!r} not found in {self.path}: serving {CODED_DEFAULT}"
            log.warning("%s (flagd: FLAG_NOT_FOUND, the coded default)", self.error)
            return
        self.error = None
        log.info("flag %s reloaded from %s: db_percent=%s", self.flag_key, self.path, flag.db_percent)

    def _note_error(self, message: str) -> None:
        if message != self.error:
            log.warning("%s (keeping %s)", message, "last good flag" if self._loaded else "all-YAML default")
        self.error = message

    @property
    def db_percent(self) -> float:
        self._refresh()
        if self.path is None:
            return self.fixed_db_percent
        return self._flag.db_percent if self._flag is not None else 0.0

    def variant_for(self, targeting_key: str) -> Source:
        """``yaml`` or ``db`` for this user/request, flagd-compatible and sticky per targeting key."""
        self._refresh()
        if self.path is None:
            return self._fixed.resolve(targeting_key)
        if self._flag is None:
            return CODED_DEFAULT
        return self._flag.resolve(targeting_key)

    def status(self) -> dict[str, Any]:
        percent = self.db_percent
        return {
            "flag_key": self.flag_key,
            "path": str(self.path) if self.path is not None else None,
            "db_percent": percent,
            "error": self.error,
            "reloads": self.reloads,
        }


# --- bootstrapping a file (python -m watchdog.demo --init-flag) -----------------------------------------


def write_flag_file(path: Path, db_percent: float, *, flag_key: str = DEFAULT_FLAG_KEY) -> None:
    """Create ``path`` holding only ``flag_key`` at ``db_percent`` (weights out of 10,000), atomically.

    Only for starting the service standalone; in a real set-up the watchdog owns and rewrites the file."""
    percent = _check_percent(db_percent)
    db_weight = round(percent * WEIGHT_SCALE / 100.0)
    now = time.time()
    document = {
        "$schema": SCHEMA_URL,
        "flags": {
            flag_key: {
                "state": "ENABLED",
                "variants": {"yaml": "yaml", "db": "db"},
                "defaultVariant": "yaml",
                "targeting": {"fractional": [["db", db_weight], ["yaml", WEIGHT_SCALE - db_weight]]},
                "metadata": {
                    "dbPercent": db_weight * 100 / WEIGHT_SCALE,
                    "updatedBy": "reference-service",
                    "updatedAt": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "updatedAtEpoch": now,
                    "reason": "initial flag file",
                },
            }
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)  # flagd or the watchdog may run as another user
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
