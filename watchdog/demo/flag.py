"""How the reference service reads the content-source flag: as a real service does, through the OpenFeature
SDK (PyPI ``openfeature-sdk``) and flagd's in-process provider (``openfeature-provider-flagd``) reading the
flagd file, so the tests prove that what the watchdog writes is what a real client obeys.

The reference service is the system under test: nothing here comes from the watchdog (which *writes* the
file through ``watchdog.flags.flagd_file``) and nothing evaluates the flag by hand. Per request the service
asks ``client.get_string_details("content-data-source", "yaml", EvaluationContext(targeting_key=...))``
and reads the database when the value is ``"db"``, YAML otherwise. What that means, as the provider
(flagd-core) does it:

* The split: flagd's ``fractional`` rule, MurmurHash3 of flag key + targeting key onto the weights, so a
  user is sticky and the database cohort only grows while the share grows. The provider line pinned in
  ``pyproject.toml`` (``openfeature-provider-flagd`` 0.5, ``openfeature-flagd-core`` 1.x) buckets exactly
  as flagd itself and ``watchdog.flags.flagd_file.choose_variant`` ("v2"); flagd-core 2.x hashes a CBOR
  encoding instead ("v3"; flagd's own releases did not, when this was written): the same shares,
  different users.
  ``tests/test_demo_flag_reader.py`` notices such an upgrade.
* Reloads: the provider polls the file's mtime every ``poll_interval_s`` (its ``deadline_ms``, 500 ms by
  default) on a thread of its own and reloads when the mtime grew; a rewrite that keeps the same mtime (two
  writes within one filesystem timestamp tick, or a file whose mtime was set back) is not seen until the
  next change.
* A file the provider cannot load (torn, not JSON, a flag it refuses): it keeps the flags it last loaded
  and keeps answering from them (provider status ERROR, retried at every poll); a file that never loaded
  (missing, torn at start): no flag, so every request gets the coded default, YAML.
* A well-formed document without the flag (FLAG_NOT_FOUND), a ``DISABLED`` flag, a variant the flag does
  not define: the coded default, YAML.

Without a flag file the service still reads its split through the provider: a private flagd file at
``fixed_db_percent`` (0 by default: all YAML) that nobody else writes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode, OpenFeatureError
from openfeature.flag_evaluation import FlagEvaluationDetails
from openfeature.provider import ProviderStatus
from openfeature.provider.no_op_provider import NoOpProvider

log = logging.getLogger(__name__)

DEFAULT_FLAG_KEY = "content-data-source"
"""The flag the reference service asks for unless told otherwise."""
CODED_DEFAULT: Literal["yaml"] = "yaml"
"""What the application falls back to whenever the provider resolves no value: the pre-migration path."""
WEIGHT_SCALE = 10_000
"""``write_flag_file`` writes weights out of 10,000: 0.01 % resolution, like the watchdog's writer."""
SCHEMA_URL = "https://flagd.dev/schema/v0/flags.json"
DEFAULT_POLL_INTERVAL_S = 0.5
"""The flagd provider's own default (``deadline_ms`` 500): how often its file watcher looks at the mtime."""

Source = Literal["yaml", "db"]

_domains = itertools.count(1)


class _OncePerCause(logging.Filter):
    """flagd's file watcher logs the same error, with a traceback, at every poll (twice a second) while the
    file is broken or missing; let each cause through once, without the traceback. Installed on the
    provider's logger (``openfeature.contrib``) only, and only affects its ``handle_error`` records."""

    def __init__(self) -> None:
        super().__init__()
        self._last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.funcName != "handle_error":
            return True
        message = record.getMessage()
        if message == self._last:
            return False
        self._last = message
        record.exc_info = None
        record.exc_text = None
        return True

    def reset(self) -> None:
        self._last = None


_PROVIDER_LOG_FILTER = _OncePerCause()
_filter_lock = threading.Lock()


def _install_log_filter() -> None:
    provider_log = logging.getLogger("openfeature.contrib")
    with _filter_lock:
        if _PROVIDER_LOG_FILTER not in provider_log.filters:
            provider_log.addFilter(_PROVIDER_LOG_FILTER)


def _check_percent(db_percent: float) -> float:
    if isinstance(db_percent, bool) or not isinstance(db_percent, int | float):
        raise ValueError(f"db_percent must be a number, got {db_percent!r}")
    if not math.isfinite(db_percent) or not 0.0 <= db_percent <= 100.0:
        raise ValueError(f"db_percent must be within 0..100, got {db_percent}")
    return float(db_percent)


class FlagSource:
    """The content-source flag through an OpenFeature client bound to its own flagd in-process provider.

    ``path``: the flagd file the provider watches; None: a private file at ``fixed_db_percent`` (0..100),
    written at ``start()``. Each instance registers its provider under a domain of its own, so several
    services in one process (tests, ``watchdog demo``) each follow their own file. ``start()`` and
    ``stop()`` block briefly (the first read of the file); before ``start()`` and after ``stop()`` every
    request gets the coded default, YAML.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        flag_key: str = DEFAULT_FLAG_KEY,
        fixed_db_percent: float = 0.0,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
    ) -> None:
        if not (isinstance(poll_interval_s, int | float) and 0.001 <= poll_interval_s <= 60):
            raise ValueError(f"poll_interval_s must be within 0.001..60, got {poll_interval_s!r}")
        self.path = path
        self.flag_key = flag_key
        self.fixed_db_percent = _check_percent(fixed_db_percent)
        self.poll_interval_s = float(poll_interval_s)
        self.domain = f"reference-service-{os.getpid()}-{next(_domains)}"
        self.client: OpenFeatureClient = api.get_client(domain=self.domain)
        self.error: str | None = None
        """The provider's last error (the file cannot be read or parsed), None once a load succeeds."""
        self.reloads = 0
        """How many times the provider loaded the file (PROVIDER_CONFIGURATION_CHANGED events)."""
        self._provider: FlagdProvider | None = None
        self._tempdir: Path | None = None
        self._lock = threading.Lock()
        self._handlers = (
            (ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._on_changed),
            (ProviderEvent.PROVIDER_READY, self._on_ready),
            (ProviderEvent.PROVIDER_ERROR, self._on_error),
        )

    @property
    def provider(self) -> FlagdProvider | None:
        """The flagd provider behind ``client`` while started."""
        return self._provider

    @property
    def watched_path(self) -> Path | None:
        """The file the provider reads: ``path``, or the private file of a fixed split once started."""
        if self.path is not None:
            return self.path
        return self._tempdir / "flags.json" if self._tempdir is not None else None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Register the provider and wait for its first load; a file it cannot load is logged, not raised:
        the provider keeps polling and the service serves YAML until a good version appears."""
        if self._provider is not None:
            raise RuntimeError("flag source already started")
        if self.path is None:
            self._tempdir = Path(tempfile.mkdtemp(prefix="refsvc-flag-"))
            write_flag_file(self._tempdir / "flags.json", self.fixed_db_percent, flag_key=self.flag_key)
        watched = self.watched_path
        assert watched is not None
        _install_log_filter()
        for event, handler in self._handlers:
            self.client.add_handler(event, handler)
        self._provider = FlagdProvider(
            resolver_type=ResolverType.IN_PROCESS,
            offline_flag_source_path=str(watched),
            deadline_ms=max(1, round(self.poll_interval_s * 1000)),
        )
        try:
            api.set_provider_and_wait(self._provider, domain=self.domain)
        except Exception as exc:  # the provider keeps polling; the service must start and serve YAML
            reason = exc.error_message if isinstance(exc, OpenFeatureError) else None
            cause = exc.__cause__ or exc
            self._note_error(
                f"flag file {watched} not loaded ({reason or 'provider not ready'}: {cause}): "
                f"serving {CODED_DEFAULT} until it loads"
            )
        else:
            log.info("flag %s read from %s through the OpenFeature flagd provider", self.flag_key, watched)

    def stop(self) -> None:
        provider, self._provider = self._provider, None
        if provider is None:
            return
        for event, handler in self._handlers:
            with contextlib.suppress(ValueError):
                self.client.remove_handler(event, handler)
        # The registry shuts the replaced provider down on a thread of its own; stop its watcher now too.
        api.set_provider(NoOpProvider(), domain=self.domain)
        provider.shutdown()
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    # --- provider events (on the SDK's event threads) ------------------------------------------------------

    def _on_changed(self, details: EventDetails) -> None:
        with self._lock:
            self.reloads += 1
            recovered, self.error = self.error, None
        _PROVIDER_LOG_FILTER.reset()
        if recovered is not None:
            log.info("flag file %s loaded again (was: %s)", self.watched_path, recovered)
        log.info("flag %s reloaded from %s", self.flag_key, self.watched_path)

    def _on_ready(self, details: EventDetails) -> None:
        with self._lock:
            self.error = None

    def _on_error(self, details: EventDetails) -> None:
        if details.error_code is ErrorCode.PROVIDER_NOT_READY:
            return  # the first load failed: start() has said so, with the cause
        message = details.message or "the flagd provider reported an error"
        self._note_error(
            f"{message} ({self.watched_path}): keeping the flags last loaded, if any, else {CODED_DEFAULT}"
        )

    def _note_error(self, message: str) -> None:
        with self._lock:
            changed = message != self.error
            self.error = message
        if changed:
            log.warning("%s", message)

    # --- evaluation -----------------------------------------------------------------------------------------

    def details_for(self, targeting_key: str) -> FlagEvaluationDetails[str]:
        """The provider's full answer for this targeting key (value, variant, reason, error, metadata)."""
        return self.client.get_string_details(
            self.flag_key, CODED_DEFAULT, EvaluationContext(targeting_key=targeting_key)
        )

    def variant_for(self, targeting_key: str) -> Source:
        """``db`` when the flag's value for this user/request is ``"db"``, else ``yaml``."""
        return "db" if self.details_for(targeting_key).value == "db" else "yaml"

    def status(self) -> dict[str, Any]:
        details = self.details_for("status")
        watched = self.watched_path
        provider_status = self.client.get_provider_status()
        evaluation_error = details.error_message or (details.error_code.value if details.error_code else None)
        # Events arrive on the SDK's thread pool, in any order: the registry's status is the truth.
        error = None
        if provider_status is not ProviderStatus.READY:
            error = self.error or f"provider status {provider_status.value}"
        return {
            "flag_key": self.flag_key,
            "path": str(self.path) if self.path is not None else None,
            "watched_path": str(watched) if watched is not None else None,
            "reader": "openfeature-sdk + openfeature-provider-flagd (in-process, file)",
            "provider_status": provider_status.value,
            "poll_interval_s": self.poll_interval_s,
            "reloads": self.reloads,
            "error": error,
            "evaluation_error": evaluation_error,
            "metadata": dict(details.flag_metadata),
        }


# --- bootstrapping a file (python -m watchdog.demo --init-flag; a fixed split) ---------------------------


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
