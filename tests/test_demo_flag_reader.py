"""The reference service reads the watchdog's flag file the way a real service does, and obeys it.

The watchdog writes the flagd file (``watchdog.flags.flagd_file``); the reference service — the system
under test — reads it through the OpenFeature SDK and flagd's in-process provider (``watchdog.demo.flag``,
which evaluates nothing by hand). So these tests are the contract between what the watchdog writes and
what a real OpenFeature client does with it: the share, the very users (``choose_variant``), the reload
after a rollback, and what happens to a torn file.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import json
import logging
import math
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType

from watchdog.demo.flag import DEFAULT_FLAG_KEY, DEFAULT_POLL_INTERVAL_S, FlagSource, write_flag_file
from watchdog.flags.flagd_file import DEFAULT_FLAG_KEY as WRITER_FLAG_KEY
from watchdog.flags.flagd_file import FlagdFileBackend, choose_variant, read_db_percent, write_initial

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO_ROOT / "watchdog" / "demo"
N_USERS = 4000
SPLITS = [0.0, 5.0, 12.34, 50.0, 100.0]
FAST_POLL_S = 0.05
"""The provider's poll interval where a test only needs reloads to happen, not their real pace."""
MTIME_SETTLE_S = 0.03
"""The provider reloads only when the file's mtime grew, and a file's timestamp may come from the kernel's
coarse clock (an empty file here: up to ~10 ms behind), so a test leaves this long between the provider's
last load and the next write; a real rollback comes seconds after the last change."""


def _user_ids(n: int = N_USERS, seed: int = 20260101) -> list[str]:
    """Targeting keys like the service's (user ids / request ids): random UUIDs, reproducibly."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


USERS = _user_ids()
# Keys whose MurmurHash3 lands on the 32-bit boundaries (flagd-testbed), plus odd ones.
EDGE_KEYS = ["ejOoVL", "bY9fO-", "SI7p-", "6LvT0", "ceQdGm", "ä-ünïcode-😀", " spaced ", "0"]

OpenSource = Callable[..., FlagSource]


@pytest.fixture
def open_source() -> Iterator[OpenSource]:
    """Start ``FlagSource(path, **kwargs)`` (its own provider, its own OpenFeature domain); stopped after."""
    sources: list[FlagSource] = []

    def open_(path: Path | None, **kwargs: Any) -> FlagSource:
        source = FlagSource(path, **kwargs)
        sources.append(source)
        source.start()
        return source

    yield open_
    for source in sources:
        source.stop()


def _wait_until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> float:
    """Poll ``predicate`` until true; the seconds it took. Fails after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what} not reached within {timeout} s")
        time.sleep(0.005)
    return time.monotonic() - started


def _flag(**fields: Any) -> dict[str, Any]:
    flag: dict[str, Any] = {
        "state": "ENABLED",
        "variants": {"yaml": "yaml", "db": "db"},
        "defaultVariant": "yaml",
    }
    flag.update(fields)
    return flag


def _write(path: Path, content: bytes | dict[str, Any]) -> Path:
    """Replace ``path`` atomically (new inode, fresh mtime), as every well-behaved writer does."""
    time.sleep(MTIME_SETTLE_S)
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def _initial(path: Path, percent: float) -> Path:
    """The watchdog's own first write of the file."""
    write_initial(path, percent)
    return path


async def _set(backend: FlagdFileBackend, percent: float, key: str) -> None:
    """The watchdog's verified write, a little after the provider's last load (``MTIME_SETTLE_S``)."""
    await asyncio.sleep(MTIME_SETTLE_S)
    await backend.set(percent, f"test: {key}", "test", key)


def _db_users(source: FlagSource, keys: list[str]) -> set[str]:
    return {key for key in keys if source.variant_for(key) == "db"}


# --- independence, and which reader --------------------------------------------------------------------


def _outside_demo(module: str) -> bool:
    return (module == "watchdog" or module.startswith("watchdog.")) and not (
        module == "watchdog.demo" or module.startswith("watchdog.demo.")
    )


def test_demo_sources_import_only_the_demo_package_from_watchdog() -> None:
    sources = sorted(DEMO_DIR.rglob("*.py"))
    assert DEMO_DIR / "flag.py" in sources
    offenders = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                # A relative import climbing out of watchdog/demo/ (``from .. import x``) counts as outside.
                names = [node.module or ""] if node.level == 0 else (["watchdog"] if node.level > 1 else [])
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} {name}" for name in names if _outside_demo(name)]
    assert offenders == []


def test_importing_the_demo_loads_no_other_watchdog_module() -> None:
    # Whatever the top-level package itself imports is allowed; the demo must add only watchdog.demo.*.
    script = (
        "import sys, watchdog\n"
        "before = set(sys.modules)\n"
        "import watchdog.demo, watchdog.demo.__main__, watchdog.demo.flag\n"
        "print('\\n'.join(sorted(m for m in set(sys.modules) - before if m.startswith('watchdog'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert "watchdog.demo.flag" in out
    assert [m for m in out if m != "watchdog.demo" and not m.startswith("watchdog.demo.")] == []


def test_both_sides_name_the_same_flag() -> None:
    assert DEFAULT_FLAG_KEY == WRITER_FLAG_KEY == "content-data-source"


def test_the_flag_is_read_by_openfeatures_flagd_provider_in_process_from_the_file(
    tmp_path: Path, open_source: OpenSource
) -> None:
    path = _initial(tmp_path / "flags.json", 5)
    source = open_source(path)
    provider = source.provider
    assert isinstance(provider, FlagdProvider)
    assert api.get_client(domain=source.domain).provider is provider
    assert provider.config.resolver is ResolverType.FILE  # IN_PROCESS with a file path = file mode
    assert provider.config.offline_flag_source_path == str(path)
    assert provider.config.deadline_ms == round(DEFAULT_POLL_INTERVAL_S * 1000)  # the file watcher's poll
    status = source.status()
    assert status["provider_status"] == "READY" and status["error"] is None
    assert status["metadata"]["dbPercent"] == 5  # the writer's metadata, as the provider serves it
    details = source.details_for(USERS[0])
    assert details.reason == "TARGETING_MATCH" and details.variant in ("yaml", "db")


def test_the_installed_provider_buckets_like_flagd(tmp_path: Path, open_source: OpenSource) -> None:
    """flagd's own vectors (core/pkg/evaluator/fractional_test.go, "v2": MurmurHash3 of flag key +
    targeting key). flagd-core 2.x for Python hashes a CBOR encoding instead ("v3", flagd's own releases do
    not yet): same shares, other users, and the watchdog's ``choose_variant`` would no longer name them.
    pyproject.toml pins the v2 line; this test is what notices an upgrade."""
    colors = {"red": "#FF0000", "blue": "#0000FF", "green": "#00FF00", "yellow": "#FFFF00"}
    quarters = [["red", 25], ["blue", 25], ["green", 25], ["yellow", 25]]
    path = _write(
        tmp_path / "vectors.json",
        {
            "flags": {
                "headerColor": _flag(
                    variants=colors, defaultVariant="red", targeting={"fractional": quarters}
                )
            }
        },
    )
    source = open_source(path, flag_key="headerColor")
    expected = {
        "rachel@faas.com": "blue",
        "monica@faas.com": "yellow",
        "joey@faas.com": "red",
        "ross@faas.com": "blue",
    }
    got = {key: source.details_for(key).variant for key in expected}
    versions = {
        d: importlib.metadata.version(d) for d in ("openfeature-provider-flagd", "openfeature-flagd-core")
    }
    assert got == expected, f"the flagd provider no longer buckets like flagd v2: {versions}"


# --- the writer's files, obeyed by the real client -------------------------------------------------------


@pytest.mark.parametrize("percent", SPLITS)
async def test_the_client_splits_users_exactly_as_the_writer_says(
    tmp_path: Path, open_source: OpenSource, percent: float
) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 0)
    await FlagdFileBackend(path).set(percent, "test split", "test", f"split-{percent}")
    source = open_source(path)
    keys = USERS + EDGE_KEYS
    first = [source.variant_for(key) for key in keys]
    # Exactly the users the watchdog predicts, so a canary's cohort is known on both sides ...
    predicted = [choose_variant(WRITER_FLAG_KEY, key, percent) for key in keys]
    assert [k for k, got, want in zip(keys, first, predicted, strict=True) if got != want] == []
    # ... the same user always gets the same answer ...
    assert [source.variant_for(key) for key in keys] == first
    # ... and therefore the share, within binomial noise.
    db = first[:N_USERS].count("db")
    p = percent / 100
    if p in (0.0, 1.0):
        assert db == N_USERS * p
    else:
        sd = math.sqrt(N_USERS * p * (1 - p))
        assert abs(db - N_USERS * p) <= 4 * sd, (db, N_USERS * p, sd)


async def test_widening_keeps_the_canary_cohort_and_rollback_empties_it(
    tmp_path: Path, open_source: OpenSource
) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 0)
    backend = FlagdFileBackend(path)
    source = open_source(path, poll_interval_s=FAST_POLL_S)
    keys = USERS[:2000]
    assert _db_users(source, keys) == set()
    previous: set[str] = set()
    for percent in [5.0, 25.0, 50.0, 100.0]:
        await _set(backend, percent, f"widen-{percent}")
        expected = {k for k in keys if choose_variant(WRITER_FLAG_KEY, k, percent) == "db"}

        def obeyed(expected: set[str] = expected) -> bool:
            return _db_users(source, keys) == expected

        _wait_until(obeyed, what=f"{percent} % obeyed")
        assert previous <= expected  # sticky: nobody leaves the database cohort while it grows
        previous = expected
    assert previous == set(keys)
    await _set(backend, 0, "rollback-1")
    _wait_until(lambda: _db_users(source, keys) == set(), what="rollback obeyed")
    _wait_until(lambda: source.reloads >= 6, what="six loads counted")  # the first read and five changes


# --- files the provider cannot use ---------------------------------------------------------------------


def test_a_torn_file_keeps_the_last_good_split_until_repaired(
    tmp_path: Path, open_source: OpenSource, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 25)
    source = open_source(path, poll_interval_s=FAST_POLL_S)
    keys = USERS[:3000]
    before = [source.variant_for(key) for key in keys]
    assert "db" in before and "yaml" in before

    whole = path.read_bytes()
    with caplog.at_level(logging.WARNING):
        path.write_bytes(whole[: len(whole) // 2])  # a non-atomic writer caught mid-write
        _wait_until(lambda: source.status()["provider_status"] == "ERROR", what="the provider noticed")
        time.sleep(10 * FAST_POLL_S)  # ten more polls of the torn file
        assert [source.variant_for(key) for key in keys] == before  # the last good flags, not the default
    status = source.status()
    assert status["error"] is not None and "Could not parse JSON" in status["error"]
    # The provider logs it at every poll, with a traceback; the service lets each cause through once.
    provider_records = [r for r in caplog.records if r.name == "openfeature.contrib"]
    assert len(provider_records) == 1 and provider_records[0].exc_info is None

    time.sleep(MTIME_SETTLE_S)
    write_initial(path, 50)  # repaired: the next good version is picked up
    _wait_until(lambda: source.status()["provider_status"] == "READY", what="recovered")
    expected = [choose_variant(WRITER_FLAG_KEY, key, 50) for key in keys]
    _wait_until(lambda: [source.variant_for(key) for key in keys] == expected, what="50 % obeyed")
    assert source.status()["error"] is None


@pytest.mark.parametrize(
    ("content", "outcome"),
    [
        (b"", "last good"),
        (b'{"flags": {"content-data-source": {"state": "ENAB', "last good"),
        (b"[]", "last good"),
        (json.dumps({"flags": {DEFAULT_FLAG_KEY: _flag(state=1)}}).encode(), "last good"),
        (json.dumps({"flags": {DEFAULT_FLAG_KEY: _flag(variants=[])}}).encode(), "last good"),
        # Well-formed documents without the flag: FLAG_NOT_FOUND, the application's coded default.
        (json.dumps({"flags": {"other-flag": _flag(defaultVariant="db")}}).encode(), "yaml"),
        (b"{}", "yaml"),
        # DISABLED: the coded default whatever the flag says.
        (
            json.dumps({"flags": {DEFAULT_FLAG_KEY: _flag(state="DISABLED", defaultVariant="db")}}).encode(),
            "yaml",
        ),
    ],
)
def test_what_the_client_does_with_a_bad_document(
    tmp_path: Path, open_source: OpenSource, content: bytes, outcome: str
) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 100)
    source = open_source(path, poll_interval_s=FAST_POLL_S)
    assert source.variant_for("someone") == "db"
    loads = source.reloads
    _write(path, content)
    if outcome == "last good":
        _wait_until(lambda: source.status()["provider_status"] == "ERROR", what="the provider noticed")
        assert {source.variant_for(key) for key in USERS[:200]} == {"db"}
    else:
        _wait_until(lambda: source.variant_for("someone") == "yaml", what="the coded default")
        assert {source.variant_for(key) for key in USERS[:200]} == {"yaml"}
        assert source.reloads > loads or source.status()["provider_status"] == "READY"


def test_no_good_file_yet_serves_yaml_then_follows_the_file(tmp_path: Path, open_source: OpenSource) -> None:
    missing = tmp_path / "missing.json"
    source = open_source(missing, poll_interval_s=FAST_POLL_S)  # starts: never raises
    assert _db_users(source, USERS[:200]) == set()
    status = source.status()
    assert status["provider_status"] == "ERROR" and status["error"] is not None
    assert status["evaluation_error"] is not None

    write_initial(missing, 100)  # appears later: picked up
    _wait_until(lambda: _db_users(source, USERS[:200]) == set(USERS[:200]), what="the new file obeyed")
    assert source.status()["provider_status"] == "READY"


# --- sources side by side, lifecycle, fixed split -----------------------------------------------------


def test_two_services_in_one_process_follow_their_own_files(tmp_path: Path, open_source: OpenSource) -> None:
    all_db = open_source(_initial(tmp_path / "a.json", 100))
    all_yaml = open_source(_initial(tmp_path / "b.json", 0))
    assert all_db.domain != all_yaml.domain
    assert _db_users(all_db, USERS[:300]) == set(USERS[:300])
    assert _db_users(all_yaml, USERS[:300]) == set()
    all_db.stop()
    assert all_db.variant_for(USERS[0]) == "yaml"  # stopped: no provider, the coded default
    assert _db_users(all_yaml, USERS[:300]) == set()


@pytest.mark.parametrize("percent", [0, 5, 12.34, 100])
def test_fixed_split_is_a_private_file_read_the_same_way(open_source: OpenSource, percent: float) -> None:
    source = open_source(None, fixed_db_percent=percent)
    keys = USERS[:3000]
    assert [source.variant_for(key) for key in keys] == [
        choose_variant(WRITER_FLAG_KEY, k, percent) for k in keys
    ]
    private = source.watched_path
    assert private is not None and private.exists()
    assert source.status()["path"] is None and source.status()["metadata"]["dbPercent"] == percent
    source.stop()
    assert not private.exists()


@pytest.mark.parametrize("bad", [-1, 100.5, math.nan, math.inf])
def test_fixed_split_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="db_percent"):
        FlagSource(None, fixed_db_percent=bad)


# --- the other direction: the demo's bootstrap file, read by the watchdog -------------------------------


@pytest.mark.parametrize("percent", [0, 0.5, 12.34, 100])
async def test_demo_written_file_is_read_alike_by_the_watchdog(
    tmp_path: Path, open_source: OpenSource, percent: float
) -> None:
    path = tmp_path / "nested" / "flags.json"
    write_flag_file(path, percent)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert read_db_percent(json.loads(path.read_text())) == pytest.approx(percent)
    backend = FlagdFileBackend(path)
    assert (await backend.get()).db_percent == pytest.approx(percent)
    source = open_source(path, poll_interval_s=FAST_POLL_S)
    keys = USERS[:2000]
    assert [source.variant_for(k) for k in keys] == [
        choose_variant(WRITER_FLAG_KEY, k, percent) for k in keys
    ]
    await _set(backend, 50, "k-50")  # the watchdog manages the file afterwards
    expected = {k for k in keys if choose_variant(WRITER_FLAG_KEY, k, 50) == "db"}
    _wait_until(lambda: _db_users(source, keys) == expected, what="the watchdog's 50 % obeyed")
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_write_flag_file_refuses_a_bad_percent(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="db_percent"):
        write_flag_file(tmp_path / "flags.json", 101)
    assert not (tmp_path / "flags.json").exists()
