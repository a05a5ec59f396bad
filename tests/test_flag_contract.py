"""The flag contract (watchdog.flags.base) for every backend, plus flagd-file specifics."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import stat
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from watchdog.core.clock import FakeClock
from watchdog.flags import flagd_file
from watchdog.flags.base import FlagBackend, FlagError
from watchdog.flags.flagd_file import (
    DEFAULT_FLAG_KEY,
    FlagdFileBackend,
    _distribute,
    choose_variant,
    murmur3_32,
    parse_flag,
    read_db_percent,
    write_initial,
)
from watchdog.flags.memory import MemoryFlagBackend

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Harness:
    backend: FlagBackend
    clock: FakeClock
    lose_writes: Callable[[], None]
    """Make the next writes vanish (accepted but not stored), so read-back verification must catch it."""


@pytest.fixture(params=["memory", "flagd-file"])
def harness(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    clock = FakeClock()
    if request.param == "memory":
        memory = MemoryFlagBackend(0.0, clock=clock)

        def lose_memory_writes() -> None:
            memory.drop_writes = True

        return Harness(memory, clock, lose_memory_writes)
    path = tmp_path / "flags.json"
    write_initial(path, 0.0, now=clock.now())

    def lose_file_writes() -> None:
        monkeypatch.setattr(flagd_file, "_atomic_write", lambda path, document: None)

    return Harness(FlagdFileBackend(path, clock=clock), clock, lose_file_writes)


# --- contract ----------------------------------------------------------------------------------------


async def test_starts_at_yaml(harness: Harness) -> None:
    assert (await harness.backend.get()).db_percent == 0.0


async def test_set_reads_back_and_records_who_why_when(harness: Harness) -> None:
    harness.clock.advance(60)
    state = await harness.backend.set(5, reason="canary start", updated_by="alice", idempotency_key="k-1")
    assert state.db_percent == 5.0
    assert state.reason == "canary start"
    assert state.updated_by == "alice"
    assert state.idempotency_key == "k-1"
    assert state.updated_at == pytest.approx(harness.clock.now())
    assert await harness.backend.get() == state


async def test_each_change_records_its_own_metadata(harness: Harness) -> None:
    await harness.backend.set(5, "canary", "alice", "k-1")
    harness.clock.advance(30)
    rolled = await harness.backend.set(0, "error budget burn 14.4x on db cohort", "sre-watchdog", "inc-7")
    got = await harness.backend.get()
    assert got == rolled
    assert (got.db_percent, got.updated_by, got.idempotency_key) == (0.0, "sre-watchdog", "inc-7")
    assert got.reason == "error budget burn 14.4x on db cohort"
    assert got.updated_at == pytest.approx(harness.clock.now())


@pytest.mark.parametrize(("requested", "stored"), [(0.5, 0.5), (3.333, 3.33), (99.999, 100.0), (100, 100.0)])
async def test_fractional_percent_at_hundredth_resolution(
    harness: Harness, requested: float, stored: float
) -> None:
    state = await harness.backend.set(requested, "r", "u", f"k-{requested}")
    assert state.db_percent == pytest.approx(stored)
    assert (await harness.backend.get()).db_percent == pytest.approx(stored)


async def test_same_key_and_value_is_a_noop(harness: Harness) -> None:
    first = await harness.backend.set(0, "rollback", "sre-watchdog", "inc-1")
    harness.clock.advance(120)
    again = await harness.backend.set(0, "rollback (retry)", "sre-watchdog", "inc-1")
    assert again == first  # not re-stamped: the retry changed nothing
    assert (await harness.backend.get()).updated_at == first.updated_at


async def test_retry_after_someone_elses_change_does_not_undo_it(harness: Harness) -> None:
    await harness.backend.set(5, "canary", "alice", "k-canary")
    await harness.backend.set(10, "widen", "bob", "k-widen")
    # A redelivered outbox entry for the first change must not roll bob's change back.
    state = await harness.backend.set(5, "canary", "alice", "k-canary")
    assert state.db_percent == 10.0
    assert state.idempotency_key == "k-widen"


async def test_reusing_a_key_for_another_value_is_refused(harness: Harness) -> None:
    await harness.backend.set(5, "canary", "alice", "k-1")
    with pytest.raises(FlagError, match="already used"):
        await harness.backend.set(50, "oops", "alice", "k-1")
    assert (await harness.backend.get()).db_percent == 5.0


@pytest.mark.parametrize("bad", [-0.01, 100.5, math.nan, math.inf, True])
async def test_invalid_percent_is_rejected_without_writing(harness: Harness, bad: Any) -> None:
    before = await harness.backend.get()
    with pytest.raises(ValueError):
        await harness.backend.set(bad, "r", "u", "k-bad")
    assert await harness.backend.get() == before


async def test_lost_write_fails_read_back(harness: Harness) -> None:
    harness.lose_writes()
    with pytest.raises(FlagError, match="read-back"):
        await harness.backend.set(5, "canary", "alice", "k-lost")
    assert (await harness.backend.get()).db_percent == 0.0


async def test_backend_has_a_name(harness: Harness) -> None:
    assert isinstance(harness.backend.name, str) and harness.backend.name


# --- memory specifics --------------------------------------------------------------------------------


async def test_memory_history_lists_applied_changes_only() -> None:
    backend = MemoryFlagBackend(0)
    await backend.set(5, "canary", "alice", "a")
    await backend.set(5, "canary", "alice", "a")  # no-op
    await backend.set(0, "rollback", "sre-watchdog", "b")
    assert [(s.db_percent, s.idempotency_key) for s in backend.history] == [(5.0, "a"), (0.0, "b")]


async def test_memory_fail_writes() -> None:
    backend = MemoryFlagBackend(5)
    backend.fail_writes = True
    with pytest.raises(FlagError):
        await backend.set(0, "rollback", "sre-watchdog", "k")
    assert (await backend.get()).db_percent == 5.0 and backend.history == []


# --- flagd file specifics ----------------------------------------------------------------------------


def _leftover_temp_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def _doc(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


async def test_file_layout_is_flagd_format(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 0)
    clock = FakeClock()
    await FlagdFileBackend(path, clock=clock).set(5, "canary start", "alice", "rollout-42")
    document = _doc(path)
    assert document["$schema"] == "https://flagd.dev/schema/v0/flags.json"
    flag = document["flags"]["content-data-source"]
    assert flag["state"] == "ENABLED"
    assert flag["variants"] == {"yaml": "yaml", "db": "db"}
    assert flag["defaultVariant"] == "yaml"
    assert flag["targeting"] == {"fractional": [["db", 500], ["yaml", 9500]]}
    meta = flag["metadata"]
    assert meta["dbPercent"] == 5
    assert meta["updatedBy"] == "alice"
    assert meta["reason"] == "canary start"
    assert meta["idempotencyKey"] == "rollout-42"
    assert meta["updatedAt"] == "2026-01-01T00:00:00Z"
    assert meta["updatedAtEpoch"] == clock.now()
    # flagd only allows scalar metadata values
    assert all(isinstance(v, str | int | float | bool) for v in meta.values())


async def test_write_initial_sets_fractional_weights_out_of_10000(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "flags.json"
    write_initial(path, 0.5)
    flag = _doc(path)["flags"][DEFAULT_FLAG_KEY]
    assert flag["targeting"] == {"fractional": [["db", 50], ["yaml", 9950]]}
    assert read_db_percent(_doc(path)) == 0.5
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


async def test_corrupted_json_is_a_flag_error(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 5)
    path.write_text('{"flags": {"content-data-source": {"state": "ENAB')
    backend = FlagdFileBackend(path)
    with pytest.raises(FlagError, match="not valid JSON"):
        await backend.get()
    with pytest.raises(FlagError, match="not valid JSON"):
        await backend.set(0, "rollback", "sre-watchdog", "k")


async def test_missing_file_and_missing_flag_are_flag_errors(tmp_path: Path) -> None:
    with pytest.raises(FlagError, match="does not exist"):
        await FlagdFileBackend(tmp_path / "nope.json").get()
    path = tmp_path / "flags.json"
    path.write_text(json.dumps({"flags": {"other": {}}}))
    with pytest.raises(FlagError, match="not found"):
        await FlagdFileBackend(path).get()
    with pytest.raises(FlagError, match="does not exist"):
        await FlagdFileBackend(tmp_path / "nope.json").set(0, "r", "u", "k")
    assert not (tmp_path / "nope.json").exists()  # a wrong path is not silently created


async def test_other_flags_and_unknown_fields_are_preserved(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 0)
    document = _doc(path)
    other = {
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "metadata": {"owner": "growth"},
    }
    document["flags"]["new-header"] = other
    document["metadata"] = {"flagSetId": "ai-square"}
    document["flags"][DEFAULT_FLAG_KEY]["metadata"]["ticket"] = "SRE-12"
    path.write_text(json.dumps(document))
    os.chmod(path, 0o640)
    await FlagdFileBackend(path).set(5, "canary", "alice", "k")
    after = _doc(path)
    assert after["flags"]["new-header"] == other
    assert after["metadata"] == {"flagSetId": "ai-square"}
    assert after["flags"][DEFAULT_FLAG_KEY]["metadata"]["ticket"] == "SRE-12"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert _leftover_temp_files(tmp_path) == []


async def test_symlinked_flag_file_keeps_its_link(tmp_path: Path) -> None:
    real = tmp_path / "real" / "flags.json"
    write_initial(real, 0)
    link = tmp_path / "flags.json"
    link.symlink_to(real)
    await FlagdFileBackend(link).set(5, "canary", "alice", "k")
    assert link.is_symlink()
    assert read_db_percent(_doc(real)) == 5.0


_SUBPROCESS_WRITER = """
import asyncio, sys
from watchdog.flags.flagd_file import FlagdFileBackend
async def main() -> None:
    backend = FlagdFileBackend(sys.argv[1], flag_key="second-flag")
    for i in range(int(sys.argv[2])):
        await backend.set(i % 101, "subprocess writer", "proc", f"proc-{i}")
asyncio.run(main())
"""


async def test_concurrent_writers_never_tear_the_file_nor_lose_updates(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 0)
    document = _doc(path)
    document["flags"]["second-flag"] = json.loads(json.dumps(document["flags"][DEFAULT_FLAG_KEY]))
    path.write_text(json.dumps(document))

    stop = threading.Event()
    torn: list[str] = []
    reads = 0

    def reader() -> None:
        # Readers never take the lock (flagd doesn't): atomic rename alone must keep every read whole.
        nonlocal reads
        while not stop.is_set():
            try:
                parse_flag(json.loads(path.read_bytes()))
                parse_flag(json.loads(path.read_bytes()), "second-flag")
                reads += 1
            except (ValueError, FlagError) as exc:
                torn.append(repr(exc))

    reader_thread = threading.Thread(target=reader)
    reader_thread.start()
    writes = 30
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _SUBPROCESS_WRITER,
        str(path),
        str(writes),
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        writers = [FlagdFileBackend(path) for _ in range(4)]
        await asyncio.gather(
            *(
                backend.set((w * writes + i) % 101, "thread writer", f"w{w}", f"w{w}-{i}")
                for i in range(writes)
                for w, backend in enumerate(writers)
            )
        )
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stop.set()
        reader_thread.join()
    assert torn == []
    assert reads > 0
    final = _doc(path)
    # Both flags carry a value from their own writers: neither writer's read-modify-write clobbered the other.
    assert final["flags"]["second-flag"]["metadata"]["idempotencyKey"] == f"proc-{writes - 1}"
    assert final["flags"][DEFAULT_FLAG_KEY]["metadata"]["updatedBy"].startswith("w")
    assert _leftover_temp_files(tmp_path) == []


# --- parsing -----------------------------------------------------------------------------------------


def _flag_doc(**flag: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "state": "ENABLED",
        "variants": {"yaml": "yaml", "db": "db"},
        "defaultVariant": "yaml",
    }
    base.update(flag)
    return {"flags": {DEFAULT_FLAG_KEY: base}}


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ({"targeting": {"fractional": [["db", 5], ["yaml", 95]]}}, 5.0),
        ({"targeting": {"fractional": [["yaml", 9950], ["db", 50]]}}, 0.5),
        ({"targeting": {"fractional": [["db"], ["yaml"]]}}, 50.0),  # flagd's default weight is 1
        ({"targeting": {"fractional": [None, ["db", 1], ["yaml", 3]]}}, 25.0),
        ({}, 0.0),
        ({"defaultVariant": "db"}, 100.0),
        ({"state": "DISABLED", "defaultVariant": "db"}, 0.0),  # flagd: FLAG_NOT_FOUND → coded default yaml
        ({"targeting": {}}, 0.0),
    ],
)
def test_read_db_percent(flag: dict[str, Any], expected: float) -> None:
    assert read_db_percent(_flag_doc(**flag)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({}, "no 'flags'"),
        (_flag_doc(variants={"yaml": "yaml"}), "variants"),
        (_flag_doc(defaultVariant="json"), "defaultVariant"),
        (_flag_doc(state="ON"), "state"),
        (_flag_doc(targeting={"if": [True, "db", "yaml"]}), "single 'fractional'"),
        (_flag_doc(targeting={"fractional": [["db", 0.5], ["yaml", 99.5]]}), "integers"),
        (_flag_doc(targeting={"fractional": [["db", 0], ["yaml", 0]]}), "sum"),
        (_flag_doc(targeting={"fractional": [["json", 5], ["yaml", 95]]}), "bad fractional entry"),
        (_flag_doc(targeting={"fractional": [{"var": "email"}, ["db", 5], ["yaml", 95]]}), "bucketing"),
        (_flag_doc(targeting={"fractional": [["db", -5], ["yaml", 105]]}), "weight"),
    ],
)
def test_unusable_documents_are_flag_errors(document: Any, message: str) -> None:
    with pytest.raises(FlagError, match=message):
        read_db_percent(document)


# --- flagd-compatible bucketing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"hello", 0x248BFA47),
        (b"The quick brown fox jumps over the lazy dog", 0x2E4FF723),
        # keys from flagd-testbed chosen to hit the hash boundaries
        (b"ejOoVL", 0),
        (b"bY9fO-", 1),
        (b"SI7p-", 2**31 - 1),
        (b"6LvT0", 2**31),
        (b"ceQdGm", 2**32 - 1),
    ],
)
def test_murmur3_reference_vectors(data: bytes, expected: int) -> None:
    assert murmur3_32(data) == expected


_SUITS = [("clubs", 25), ("diamonds", 25), ("hearts", 25), ("spades", 25)]


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("v1", {"jack": "spades", "queen": "clubs", "ten": "diamonds", "nine": "hearts", "3": "diamonds"}),
        ("v2", {"jack": "hearts", "queen": "spades", "ten": "clubs", "nine": "diamonds", "3": "clubs"}),
    ],
)
def test_fractional_matches_flagd_testbed(algorithm: Any, expected: dict[str, str]) -> None:
    # flagd-testbed custom-ops.json "fractional-flag": bucketing value is flagKey + user name.
    got = {name: _distribute("fractional-flag" + name, _SUITS, algorithm) for name in expected}
    assert got == expected
    coin = [("heads", 1), ("tails", 1)]
    assert _distribute("fractional-flag-shorthand" + "jon@company.com", coin, algorithm) == "heads"
    assert _distribute("fractional-flag-shorthand" + "jane@company.com", coin, algorithm) == "tails"


def test_hash_edge_cases_v2() -> None:
    halves = [("lower", 50), ("upper", 50)]
    got = [_distribute(key, halves) for key in ["ejOoVL", "bY9fO-", "SI7p-", "6LvT0", "ceQdGm"]]
    assert got == ["lower", "lower", "lower", "upper", "upper"]


@pytest.mark.parametrize("algorithm", ["v2", "v1"])
def test_split_distribution_at_5_percent(algorithm: Any) -> None:
    rng = random.Random(20260101)
    keys = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(10_000)]
    db = sum(choose_variant(DEFAULT_FLAG_KEY, key, 5.0, algorithm) == "db" for key in keys)
    assert 400 <= db <= 600, db  # 5 % ± 1 %
    assert all(choose_variant(DEFAULT_FLAG_KEY, key, 0.0, algorithm) == "yaml" for key in keys)
    assert all(choose_variant(DEFAULT_FLAG_KEY, key, 100.0, algorithm) == "db" for key in keys)
    # Sticky and monotonic: widening the canary keeps everyone who was already in it.
    in_canary = {key for key in keys if choose_variant(DEFAULT_FLAG_KEY, key, 5.0, algorithm) == "db"}
    assert all(choose_variant(DEFAULT_FLAG_KEY, key, 10.0, algorithm) == "db" for key in in_canary)


def test_parsed_flag_evaluation_agrees_with_choose_variant() -> None:
    parsed = parse_flag(_flag_doc(targeting={"fractional": [["db", 500], ["yaml", 9500]]}))
    keys = [f"user-{i}" for i in range(2000)]
    assert [parsed.evaluate(k) for k in keys] == [choose_variant(DEFAULT_FLAG_KEY, k, 5.0) for k in keys]
    disabled = parse_flag(_flag_doc(state="DISABLED", targeting={"fractional": [["db", 1], ["yaml", 0]]}))
    assert {disabled.evaluate(k) for k in keys} == {"yaml"}
