"""The reference service's flag reader (watchdog.demo.flag) against the watchdog's writer and flagd's vectors.

The watchdog writes the flagd file (``watchdog.flags.flagd_file``) and the reference service — the system
under test — reads it with its own code (``watchdog.demo.flag``). Two independent implementations of one
contract must agree key by key; where the reader goes beyond what the writer ever writes, it is checked
against vectors from flagd's own test suites (flagd ``core/pkg/evaluator/fractional_test.go`` and the
flagd-testbed ``fractional.feature`` / ``edge-case-flags.json``, "v2" integer bucketing).
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from watchdog.demo.flag import DEFAULT_FLAG_KEY, FlagSource, write_flag_file
from watchdog.flags.base import FlagError
from watchdog.flags.flagd_file import DEFAULT_FLAG_KEY as WRITER_FLAG_KEY
from watchdog.flags.flagd_file import (
    FlagdFileBackend,
    choose_variant,
    parse_flag,
    read_db_percent,
    write_initial,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO_ROOT / "watchdog" / "demo"
N_KEYS = 20_000
SPLITS = [0.0, 5.0, 12.34, 25.0, 50.0, 100.0]


def _keys(n: int = N_KEYS, seed: int = 20260101) -> list[str]:
    """Targeting keys like the service's (request ids / user ids): random UUIDs, reproducibly."""
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


KEYS = _keys()
# Keys whose MurmurHash3 lands on the 32-bit boundaries (flagd-testbed), plus odd ones.
EDGE_KEYS = ["ejOoVL", "bY9fO-", "SI7p-", "6LvT0", "ceQdGm", "ä-ünïcode-😀", " spaced ", "0"]


def _flag(**fields: Any) -> dict[str, Any]:
    flag: dict[str, Any] = {
        "state": "ENABLED",
        "variants": {"yaml": "yaml", "db": "db"},
        "defaultVariant": "yaml",
    }
    flag.update(fields)
    return flag


def _write(path: Path, flags: dict[str, Any]) -> Path:
    """Replace ``path`` atomically (new inode), as every well-behaved writer does."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(json.dumps({"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": flags}))
    os.replace(tmp, path)
    return path


def _db_count(source: FlagSource, keys: list[str]) -> int:
    return sum(source.variant_for(key) == "db" for key in keys)


# --- independence ---------------------------------------------------------------------------------------


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


# --- the writer's files, read by the reference service ------------------------------------------------


@pytest.mark.parametrize("percent", SPLITS)
async def test_reader_splits_traffic_as_the_writer_says(tmp_path: Path, percent: float) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 0)
    await FlagdFileBackend(path).set(percent, "test split", "test", f"split-{percent}")
    source = FlagSource(path)

    db = _db_count(source, KEYS)
    if percent == 0:
        assert db == 0
    elif percent == 100:
        assert db == N_KEYS
    else:
        p = percent / 100
        sd = math.sqrt(N_KEYS * p * (1 - p))
        assert abs(db - N_KEYS * p) <= 4 * sd, (db, N_KEYS * p, sd)
    assert source.db_percent == pytest.approx(percent)
    assert source.status() == {
        "flag_key": DEFAULT_FLAG_KEY,
        "path": str(path),
        "db_percent": pytest.approx(percent),
        "error": None,
        "reloads": 1,
    }


@pytest.mark.parametrize("percent", SPLITS)
def test_reader_and_writer_pick_the_same_variant_for_every_key(tmp_path: Path, percent: float) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, percent)
    source = FlagSource(path)
    keys = KEYS[:5000] + EDGE_KEYS
    reader = [source.variant_for(key) for key in keys]
    writer = [choose_variant(WRITER_FLAG_KEY, key, percent) for key in keys]
    disagreements = [(k, r, w) for k, r, w in zip(keys, reader, writer, strict=True) if r != w]
    assert disagreements == []
    # and the writer's own parse of the file it wrote gives the same answers
    parsed = parse_flag(json.loads(path.read_text()))
    assert [parsed.evaluate(key) for key in keys] == reader


async def test_widening_split_is_seen_on_change_only_and_keeps_the_canary_cohort(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 0)
    backend = FlagdFileBackend(path)
    source = FlagSource(path)
    keys = KEYS[:4000]
    assert _db_count(source, keys) == 0
    assert source.reloads == 1
    previous: set[str] = set()
    for step, percent in enumerate([5.0, 12.34, 25.0, 50.0, 100.0], start=2):
        await backend.set(percent, "widen", "test", f"widen-{percent}")
        in_db = {key for key in keys if source.variant_for(key) == "db"}
        assert source.reloads == step  # re-read once per change, not per call
        assert previous <= in_db  # sticky: nobody leaves the database cohort while it grows
        previous = in_db
    assert previous == set(keys)
    await backend.set(0, "rollback", "sre-watchdog", "rollback-1")
    assert _db_count(source, keys) == 0
    assert source.db_percent == 0.0


def test_half_written_file_keeps_the_last_good_split(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 25)
    source = FlagSource(path)
    keys = KEYS[:3000]
    before = [source.variant_for(key) for key in keys]
    assert "db" in before and "yaml" in before

    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # a non-atomic writer caught mid-write
    assert [source.variant_for(key) for key in keys] == before
    status = source.status()
    assert status["db_percent"] == pytest.approx(25.0)
    assert "not valid JSON" in status["error"]
    assert status["reloads"] == 1

    write_initial(path, 50)  # repaired: the next good version is picked up
    assert source.db_percent == pytest.approx(50.0)
    assert source.error is None
    assert source.reloads == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"flags": {"content-data-source": {"state": "ENAB', "not valid JSON"),
        (b"[]", "JSON object"),
        (b'{"flags": {"content-data-source": {"variants": {"yaml": "yaml"}, "defaultVariant": "db"}}}', "db"),
        (
            b'{"flags": {"content-data-source": {"targeting": {"fractional": [["db", NaN]]}}}}',
            "not valid JSON",
        ),
        (json.dumps({"flags": {"content-data-source": _flag(state=1)}}).encode(), "state"),
        (
            json.dumps(
                {
                    "flags": {
                        "content-data-source": _flag(),
                        "sibling": {"variants": {}, "defaultVariant": "x"},
                    }
                }
            ).encode(),
            "sibling",
        ),
        (
            json.dumps(
                {"flags": {"content-data-source": _flag(targeting={"if": [True, "db", "yaml"]})}}
            ).encode(),
            "fractional",
        ),
    ],
)
def test_documents_flagd_would_refuse_keep_the_last_good_split(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 100)
    source = FlagSource(path)
    assert source.variant_for("someone") == "db"
    tmp = tmp_path / "next.json"
    tmp.write_bytes(content)
    os.replace(tmp, path)
    assert source.variant_for("someone") == "db"
    assert source.db_percent == 100.0
    assert source.error is not None and message in source.error


def test_never_read_a_good_file_serves_yaml(tmp_path: Path) -> None:
    missing = FlagSource(tmp_path / "missing.json")
    assert _db_count(missing, KEYS[:200]) == 0
    assert missing.db_percent == 0.0
    assert missing.error is not None and "cannot stat" in missing.error
    assert missing.reloads == 0

    torn = tmp_path / "torn.json"
    torn.write_text(
        '{"flags": {"content-data-source": {"state": "ENABLED", "targeting": {"fractional": [["db"'
    )
    source = FlagSource(torn)
    assert _db_count(source, KEYS[:200]) == 0
    assert source.status()["error"] is not None and source.reloads == 0
    write_initial(torn, 100)  # appears later: picked up
    assert _db_count(source, KEYS[:200]) == 200


def test_atomic_replace_within_the_same_mtime_tick_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    # Same byte length on purpose: only the inode tells the two versions apart.
    all_yaml = {DEFAULT_FLAG_KEY: _flag(targeting={"fractional": [["db", 0], ["yaml", 10000]]})}
    all_db = {DEFAULT_FLAG_KEY: _flag(targeting={"fractional": [["db", 10000], ["yaml", 0]]})}
    _write(path, all_yaml)
    source = FlagSource(path)
    assert _db_count(source, KEYS[:500]) == 0
    old = path.stat()

    tmp = tmp_path / "flags.json.next"
    tmp.write_text(json.dumps({"$schema": "https://flagd.dev/schema/v0/flags.json", "flags": all_db}))
    os.utime(tmp, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(tmp, path)
    new = path.stat()
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    assert new.st_ino != old.st_ino

    assert _db_count(source, KEYS[:500]) == 500
    assert source.reloads == 2


# --- DISABLED and missing flags: the coded default ------------------------------------------------------


async def test_disabled_flag_serves_yaml_whatever_it_says_and_the_writer_agrees(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    disabled = _flag(
        state="DISABLED", defaultVariant="db", targeting={"fractional": [["db", 1], ["yaml", 0]]}
    )
    _write(path, {DEFAULT_FLAG_KEY: disabled})
    source = FlagSource(path)
    # flagd: reason DISABLED, the caller's coded default (flagd-testbed disabled.feature) — here yaml.
    assert _db_count(source, KEYS[:2000]) == 0
    assert source.db_percent == 0.0
    assert source.error is None
    document = json.loads(path.read_text())
    assert read_db_percent(document) == 0.0
    assert {parse_flag(document).evaluate(key) for key in KEYS[:2000]} == {"yaml"}

    # The watchdog's next write always re-enables the flag, and the reader follows.
    await FlagdFileBackend(path).set(100, "cutover", "test", "k-100")
    assert _db_count(source, KEYS[:2000]) == 2000


def test_flag_missing_from_a_valid_file_serves_yaml(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_initial(path, 100)
    source = FlagSource(path)
    assert source.variant_for("u") == "db"
    # A well-formed document without our flag: flagd answers FLAG_NOT_FOUND, the app uses its coded default.
    _write(path, {"other-flag": _flag(defaultVariant="db")})
    assert _db_count(source, KEYS[:500]) == 0
    assert source.db_percent == 0.0
    assert source.error is not None and "not found" in source.error
    assert source.reloads == 2
    # The writer refuses to report a state for such a file rather than guess.
    with pytest.raises(FlagError, match="not found"):
        read_db_percent(json.loads(path.read_text()))


# --- flagd's own vectors ----------------------------------------------------------------------------------


def _chosen(tmp_path: Path, flag_key: str, flag: dict[str, Any], targeting_key: str) -> str | None:
    """Which variant the reader resolves (None: the coded default). One file per variant, in which only that
    variant's value is "db": the reader's answer is "db" exactly for the variant flagd would choose."""
    hits = []
    for variant in flag["variants"]:
        values = {name: "db" if name == variant else "other" for name in flag["variants"]}
        path = _write(tmp_path / f"{flag_key}.{variant}.json", {flag_key: {**flag, "variants": values}})
        if FlagSource(path, flag_key=flag_key).variant_for(targeting_key) == "db":
            hits.append(variant)
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


SUITS = [["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]
CARDS = {"clubs": "c", "diamonds": "d", "hearts": "h", "spades": "s", "wild": "w"}
COLORS = {"red": "#FF0000", "blue": "#0000FF", "green": "#00FF00", "yellow": "#FFFF00"}
QUARTERS = [["red", 25], ["blue", 25], ["green", 25], ["yellow", 25]]
FLAGKEY_PLUS_TARGETING_KEY = {"cat": [{"var": "$flagd.flagKey"}, {"var": "targetingKey"}]}


@pytest.mark.parametrize(
    ("flag_key", "targeting", "variants", "default", "expected"),
    [
        # flagd-testbed fractional.feature @fractional-v2 ("user.name" is our targeting key here)
        (
            "fractional-flag",
            {"fractional": [FLAGKEY_PLUS_TARGETING_KEY, *SUITS]},
            CARDS,
            "wild",
            {"jack": "hearts", "queen": "spades", "ten": "clubs", "nine": "diamonds", "3": "clubs"},
        ),
        (
            "fractional-flag-A-shared-seed",
            {"fractional": [{"cat": ["shared-seed", {"var": "targetingKey"}]}, *SUITS]},
            CARDS,
            "wild",
            {"seven": "hearts", "eight": "diamonds", "nine": "clubs", "two": "spades"},
        ),
        (
            "fractional-flag-shorthand",
            {"fractional": [["heads"], ["tails", 1]]},
            {"heads": "heads", "tails": "tails", "draw": "draw"},
            "draw",
            {"jon@company.com": "heads", "jane@company.com": "tails"},
        ),
        (
            "fractional-hash-edge-flag",
            {"fractional": [{"var": "targetingKey"}, ["lower", 50], ["upper", 50]]},
            {"lower": "lower", "upper": "upper"},
            "lower",
            {"ejOoVL": "lower", "bY9fO-": "lower", "SI7p-": "lower", "6LvT0": "upper", "ceQdGm": "upper"},
        ),
        (
            "fractional-single-entry-flag",
            {"fractional": [["single", 1]]},
            {"single": "single", "fallback": "fallback"},
            "fallback",
            {"some-targeting-key": "single"},
        ),
        # flagd core/pkg/evaluator/fractional_test.go ("email" is our targeting key here)
        (
            "headerColor",
            {"fractional": [FLAGKEY_PLUS_TARGETING_KEY, *QUARTERS]},
            COLORS,
            "red",
            {
                "rachel@faas.com": "blue",
                "monica@faas.com": "yellow",
                "joey@faas.com": "red",
                "ross@faas.com": "blue",
            },
        ),
        (
            "customSeededHeaderColor",
            {"fractional": [{"cat": ["my-seed", {"var": "targetingKey"}]}, *QUARTERS]},
            COLORS,
            "red",
            {
                "rachel@faas.com": "green",
                "monica@faas.com": "red",
                "joey@faas.com": "blue",
                "ross@faas.com": "green",
            },
        ),
        (
            "footerColor",
            {"fractional": [{"var": "targetingKey"}, *QUARTERS]},
            COLORS,
            "red",
            {"ross@faas.com": "red"},
        ),
        (
            "headerColor",
            {"fractional": [["blue", 50], ["green", 50]]},
            COLORS,
            "red",
            {"foo@foo.com": "green", "": "red"},  # an empty targeting key matches nothing: defaultVariant
        ),
        (
            "headerColor",
            {"fractional": [{"var": "email"}, ["red", 50], ["blue", 50]]},  # missing var: default bucketing
            COLORS,
            "red",
            {"foo@foo.com": "blue"},
        ),
        # flagd-testbed edge cases and TestFractionalEvaluationNegativeClamping
        (
            "clampedWeightFlag",
            {"fractional": [["red", -1000], ["green", 1]]},
            COLORS,
            "blue",
            {"some-targeting-key": "green"},
        ),
        (
            "fractional-zero-weights-flag",
            {"fractional": [{"var": "targetingKey"}, ["one", 0], ["two", 0]]},
            {"one": "one", "two": "two", "fallback": "fallback"},
            "fallback",
            {"any-user": "fallback"},
        ),
        (
            "fractional-null-bucket-key-flag",
            {"fractional": [{"var": "missing_key"}, ["one", 50], ["two", 50]]},
            {"one": "one", "two": "two", "fallback": "fallback"},
            "fallback",
            {"": "fallback"},
        ),
    ],
)
def test_reader_matches_flagd_vectors(
    tmp_path: Path,
    flag_key: str,
    targeting: dict[str, Any],
    variants: dict[str, str],
    default: str,
    expected: dict[str, str],
) -> None:
    flag = {"state": "ENABLED", "variants": variants, "defaultVariant": default, "targeting": targeting}
    got = {key: _chosen(tmp_path, flag_key, flag, key) for key in expected}
    assert got == expected


@pytest.mark.parametrize(
    ("flag", "expected", "share"),
    [
        # flagd rejects the rule (not the file) on a non-integer or non-numeric weight: defaultVariant.
        (_flag(defaultVariant="db", targeting={"fractional": [["db", 0.5], ["yaml", 99.5]]}), "db", 100.0),
        (_flag(targeting={"fractional": [["db", "5"], ["yaml", 95]]}), "yaml", 0.0),
        (_flag(targeting={"fractional": [["db", 2**31], ["yaml", 1]]}), "yaml", 0.0),
        # A weight of null is the default weight, 1; a negative weight counts 0.
        (_flag(targeting={"fractional": [["db", None], ["yaml", 0]]}), "db", 100.0),
        (_flag(targeting={"fractional": [["db", 5], ["yaml", -5]]}), "db", 100.0),
        # A variant the flag does not define is an evaluation error: the coded default.
        (_flag(defaultVariant="db", targeting={"fractional": [["postgres", 1]]}), "yaml", 0.0),
        # No targeting: the default variant; no default variant either: the coded default.
        (_flag(defaultVariant="db"), "db", 100.0),
        (_flag(defaultVariant="db", targeting={}), "db", 100.0),
        (_flag(defaultVariant=None), "yaml", 0.0),
        # The value, not the variant name, is what the application receives.
        (_flag(variants={"yaml": "db", "db": "yaml"}, defaultVariant="yaml"), "db", 100.0),
        (_flag(variants={"yaml": "yaml", "db": True}, defaultVariant="db"), "yaml", 0.0),
        # flagd only looks for DISABLED; any other state is enabled.
        (_flag(state="ON", defaultVariant="db"), "db", 100.0),
    ],
)
def test_flagd_semantics_beyond_what_the_writer_writes(
    tmp_path: Path, flag: dict[str, Any], expected: str, share: float
) -> None:
    source = FlagSource(_write(tmp_path / "flags.json", {DEFAULT_FLAG_KEY: flag}))
    assert {source.variant_for(key) for key in KEYS[:300]} == {expected}
    assert source.db_percent == share
    assert source.error is None


def test_explicit_default_bucketing_expression_equals_the_implicit_one(tmp_path: Path) -> None:
    # {"cat": [flagKey, targetingKey]} is flagd's documented default, spelled out; the writer never writes it.
    targeting = {"fractional": [FLAGKEY_PLUS_TARGETING_KEY, ["db", 1234], ["yaml", 8766]]}
    source = FlagSource(_write(tmp_path / "flags.json", {DEFAULT_FLAG_KEY: _flag(targeting=targeting)}))
    keys = KEYS[:3000]
    assert [source.variant_for(key) for key in keys] == [
        choose_variant(WRITER_FLAG_KEY, k, 12.34) for k in keys
    ]
    assert source.db_percent == pytest.approx(12.34)


def test_variants_listed_yaml_first_bucket_differently(tmp_path: Path) -> None:
    # Ranges follow the listed order: [["yaml", 9500], ["db", 500]] gives db the *top* 5 % of the hash space.
    targeting = {"fractional": [["yaml", 9500], ["db", 500]]}
    source = FlagSource(_write(tmp_path / "flags.json", {DEFAULT_FLAG_KEY: _flag(targeting=targeting)}))
    keys = KEYS[:5000]
    reader = {key for key in keys if source.variant_for(key) == "db"}
    canonical = {key for key in keys if choose_variant(WRITER_FLAG_KEY, key, 5.0) == "db"}
    assert source.db_percent == pytest.approx(5.0)
    assert reader and canonical and not reader & canonical
    parsed = parse_flag({"flags": {WRITER_FLAG_KEY: _flag(targeting=targeting)}})
    assert reader == {key for key in keys if parsed.evaluate(key) == "db"}


# --- no file: a fixed split ------------------------------------------------------------------------------


@pytest.mark.parametrize("percent", [0, 5, 12.34, 100])
def test_fixed_split_buckets_like_the_writer(percent: float) -> None:
    source = FlagSource(None, fixed_db_percent=percent)
    keys = KEYS[:3000]
    assert [source.variant_for(key) for key in keys] == [
        choose_variant(WRITER_FLAG_KEY, k, percent) for k in keys
    ]
    assert source.db_percent == percent
    assert source.status() == {
        "flag_key": DEFAULT_FLAG_KEY,
        "path": None,
        "db_percent": percent,
        "error": None,
        "reloads": 0,
    }


@pytest.mark.parametrize("bad", [-1, 100.5, math.nan, math.inf])
def test_fixed_split_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="db_percent"):
        FlagSource(None, fixed_db_percent=bad)


# --- the other direction: the demo's bootstrap file, read by the watchdog -------------------------------


@pytest.mark.parametrize("percent", [0, 0.5, 12.34, 100])
async def test_demo_written_file_is_read_alike_by_the_watchdog(tmp_path: Path, percent: float) -> None:
    path = tmp_path / "nested" / "flags.json"
    write_flag_file(path, percent)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert read_db_percent(json.loads(path.read_text())) == pytest.approx(percent)
    backend = FlagdFileBackend(path)
    assert (await backend.get()).db_percent == pytest.approx(percent)
    source = FlagSource(path)
    keys = KEYS[:2000]
    assert [source.variant_for(k) for k in keys] == [
        choose_variant(WRITER_FLAG_KEY, k, percent) for k in keys
    ]
    await backend.set(
        50, "watchdog takes over", "test", "k-50"
    )  # the watchdog can manage the file afterwards
    assert source.db_percent == pytest.approx(50.0)
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_write_flag_file_refuses_a_bad_percent(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="db_percent"):
        write_flag_file(tmp_path / "flags.json", 101)
    assert not (tmp_path / "flags.json").exists()
