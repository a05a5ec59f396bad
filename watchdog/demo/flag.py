"""How the reference service reads the content-source flag (what a flagd in-process provider does)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.flags.base import FlagError
from watchdog.flags.flagd_file import DEFAULT_FLAG_KEY, ParsedFlag, choose_variant, load_document, parse_flag

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Signature:
    mtime_ns: int
    size: int
    inode: int


class FlagSource:
    """The current split, from a flagd file re-parsed only when it changes, or a fixed percentage.

    Each call costs one ``stat`` (microseconds, so it is done inline on the event loop); the file is
    re-read only when mtime, size or inode changed — an atomic rename always yields a new inode, so a
    change within one mtime tick is still seen. A broken file keeps the last good split, as flagd does;
    with no good version ever read the service serves YAML, the safe default.
    """

    def __init__(
        self, path: Path | None, *, flag_key: str = DEFAULT_FLAG_KEY, fixed_db_percent: float = 0.0
    ) -> None:
        self.path = path
        self.flag_key = flag_key
        self.fixed_db_percent = fixed_db_percent
        self._signature: _Signature | None = None
        self._flag: ParsedFlag | None = None
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
            flag = parse_flag(load_document(self.path), self.flag_key)
        except FlagError as exc:
            self._note_error(str(exc))
            return
        self._flag = flag
        self.error = None
        self.reloads += 1
        log.info("flag %s reloaded from %s: db_percent=%s", self.flag_key, self.path, flag.db_percent)

    def _note_error(self, message: str) -> None:
        if message != self.error:
            log.warning("%s (keeping %s)", message, "last good flag" if self._flag else "all-YAML default")
        self.error = message

    @property
    def db_percent(self) -> float:
        self._refresh()
        if self.path is None:
            return self.fixed_db_percent
        return self._flag.db_percent if self._flag is not None else 0.0

    def variant_for(self, targeting_key: str) -> str:
        """``yaml`` or ``db`` for this user/request, flagd-compatible and sticky per targeting key."""
        self._refresh()
        if self.path is None:
            return choose_variant(self.flag_key, targeting_key, self.fixed_db_percent)
        if self._flag is None:
            return "yaml"
        return self._flag.evaluate(targeting_key)

    def status(self) -> dict[str, Any]:
        percent = self.db_percent
        return {
            "flag_key": self.flag_key,
            "path": str(self.path) if self.path is not None else None,
            "db_percent": percent,
            "error": self.error,
            "reloads": self.reloads,
        }
