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
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from watchdog.core.clock import Clock, SystemClock
from watchdog.flags.base import FlagError, FlagState
from watchdog.flags.flagd_format import (
    DEFAULT_FLAG_KEY,
    IDEMPOTENCY_LOG_SIZE,
    SCHEMA_URL,
    WEIGHT_SCALE,
    FractionalAlgorithm,
    ParsedFlag,
    Variant,
    _distribute,
    _idempotency_log,
    canonical_distribution,
    canonical_flag,
    choose_variant,
    murmur3_32,
    normalize_percent,
    parse_flag,
    read_db_percent,
    state_of,
)


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


# The format moved to flagd_format (so the backends' shared rules need not import this module); its names
# stay importable from here, where they have always been.
__all__ = [
    "DEFAULT_FLAG_KEY",
    "IDEMPOTENCY_LOG_SIZE",
    "SCHEMA_URL",
    "WEIGHT_SCALE",
    "FlagdFileBackend",
    "FractionalAlgorithm",
    "ParsedFlag",
    "Variant",
    "_distribute",
    "_idempotency_log",
    "canonical_distribution",
    "canonical_flag",
    "choose_variant",
    "load_document",
    "murmur3_32",
    "normalize_percent",
    "parse_flag",
    "read_db_percent",
    "state_of",
    "write_initial",
]
