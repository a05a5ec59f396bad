"""``watchdog incidents``: list, show, ack, resolve, silence, unsilence and silences on a real SQLite state
store, with the repository's example config, through the top-level ``watchdog`` group (so the lazy
registration is exercised too)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from watchdog.cli.main import main
from watchdog.config import load_config
from watchdog.core.clock import SystemClock
from watchdog.incidents.manager import AlertSpec, IncidentManager
from watchdog.incidents.silences import Silence
from watchdog.store import Incident, SqliteStore

REPO = Path(__file__).resolve().parent.parent
CRITICAL = "alert:app-down"
WARNING = "alert:db-latency-burn"
INHIBITED = "alert:api-availability-burn"
"""Fired after app-down, which explains it (the example config's inhibit rule app-down-explains-api)."""


async def _fire(path: Path) -> None:
    store = SqliteStore(path)
    await store.open()
    manager = IncidentManager(load_config(REPO, environ={}), store, SystemClock())
    fired = (
        (CRITICAL, "critical", {"probe": "liveness"}),
        (WARNING, "warning", {"slo": "db-query-latency"}),
        (INHIBITED, "warning", {"slo": "api-availability"}),
    )
    for key, severity, labels in fired:
        alert = key.removeprefix("alert:")
        spec = AlertSpec(
            key=key,
            alert=alert,
            severity=severity,
            policy="default",
            summary=f"{alert} fails",
            labels=labels,
            runbook_url=manager.runbook_url(alert),
        )
        assert await manager.fire(spec) is not None
    await store.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    asyncio.run(_fire(path))
    return path


def watchdog(state: Path, *args: str, user: str = "bob") -> Result:
    """``watchdog incidents ARGS --config <repo> --store STATE`` as user ``user``."""
    return CliRunner().invoke(
        main,
        ["incidents", *args, "--config", str(REPO), "--store", str(state)],
        env={"USER": user, "COLUMNS": "250"},
    )


def _read(state: Path) -> tuple[dict[str, Incident], list[Silence]]:
    async def read() -> tuple[dict[str, Incident], list[Silence]]:
        store = SqliteStore(state)
        await store.open()
        try:
            manager = IncidentManager(load_config(REPO, environ={}), store, SystemClock())
            return {i.key: i for i in await store.list_incidents()}, await manager.silences.all()
        finally:
            await store.close()

    return asyncio.run(read())


def incident(state: Path, key: str) -> Incident:
    return _read(state)[0][key]


def silences(state: Path) -> list[Silence]:
    return _read(state)[1]


def test_list_prints_the_open_incidents(state: Path) -> None:
    listed = watchdog(state, "list")
    assert listed.exit_code == 0, listed.output
    header, *rows = (line for line in listed.stdout.splitlines() if line.strip())
    columns = "key state severity level since acked by muted by"
    assert header.split() == columns.split()
    lines = {line.split()[0]: line for line in rows}
    assert set(lines) == {CRITICAL, WARNING, INHIBITED}
    # key, state, severity, level reached: a critical page reached L3 at once, a warning L1.
    assert lines[CRITICAL].split()[1:4] == ["firing", "critical", "L3"]
    assert lines[WARNING].split()[1:4] == ["firing", "warning", "L1"]
    assert re.search(r"  \d+(\.\d)? (ms|s) ago  ", lines[CRITICAL]), "since: fired a moment ago"
    assert lines[INHIBITED].split()[1:5] == ["firing", "warning", "not", "paged"]
    assert lines[INHIBITED].rstrip().endswith("inhibited by app-down (the application itself is down)")

    as_json = json.loads(watchdog(state, "list", "--json").stdout)
    assert sorted(i["key"] for i in as_json) == sorted([CRITICAL, WARNING, INHIBITED])
    assert set(as_json[0]) == {"key", "state", "version", "data", "updated_at"}

    assert watchdog(state, "ack", WARNING).exit_code == 0
    acked = watchdog(state, "list", "--state", "acknowledged")
    (acked_row,) = [line for line in acked.stdout.splitlines() if line.startswith("alert:")]
    assert acked_row.split()[0] == WARNING
    assert "cli:bob" in acked_row, "acked by"
    assert watchdog(state, "list", "--state", "resolved").stdout.strip() == "no incidents (resolved)"
    assert len(json.loads(watchdog(state, "list", "--state", "firing,resolved", "--json").stdout)) == 2
    assert len(json.loads(watchdog(state, "list", "--state", "all", "--json").stdout)) == 3


def test_show_prints_everything_with_the_timers(state: Path) -> None:
    shown = watchdog(state, "show", WARNING)
    assert shown.exit_code == 0, shown.output
    rows = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert rows["state"].split()[0] == "firing"
    assert rows["level reached"].strip() == "L1 (paged: L1)"
    assert "in 30.0 min" in rows["next escalation at"]  # the example policy: L1 has 30 min to acknowledge
    assert rows["next escalation at"].endswith("→ L2 (tech lead)")
    assert "in 15.0 min" in rows["next reminder at"]
    assert rows["ack expires at"].strip() == "—"
    assert rows["runbook"].strip().endswith("runbooks/db-latency-burn.md")

    assert watchdog(state, "ack", WARNING, "--as", "ana").exit_code == 0
    rows = dict(line.split(":", 1) for line in watchdog(state, "show", WARNING).stdout.splitlines())
    assert rows["acked by"].strip().startswith("cli:ana at ")
    assert "in 4.0 h" in rows["ack expires at"]  # the example policy's ack_timeout
    assert rows["next escalation at"].strip() == "—"

    as_json = json.loads(watchdog(state, "show", WARNING, "--json").stdout)
    assert (as_json["key"], as_json["state"], as_json["data"]["acked_by"]) == (
        WARNING,
        "acknowledged",
        "cli:ana",
    )

    missing = watchdog(state, "show", "alert:nope")
    assert missing.exit_code == 1
    assert "no incident 'alert:nope'" in missing.stderr


def test_ack_and_resolve_with_their_exit_codes(state: Path) -> None:
    acked = watchdog(state, "ack", CRITICAL)
    assert acked.exit_code == 0
    assert acked.stdout.startswith("acknowledged by cli:bob")
    assert incident(state, CRITICAL).data["acked_by"] == "cli:bob"

    again = watchdog(state, "ack", CRITICAL, "--as", "ana")
    assert again.exit_code == 0, "already acknowledged is not an error"
    assert "already acknowledged by cli:bob" in again.stdout
    version = incident(state, CRITICAL).version

    resolved = watchdog(state, "resolve", CRITICAL, "--as", "ana")
    assert resolved.exit_code == 0
    assert incident(state, CRITICAL).data["resolved_by"] == "cli:ana"
    assert incident(state, CRITICAL).version == version + 1

    late = watchdog(state, "ack", CRITICAL)
    assert late.exit_code == 1
    assert "already resolved" in late.stderr and late.stdout == ""
    assert incident(state, CRITICAL).state == "resolved"
    assert watchdog(state, "resolve", CRITICAL).exit_code == 0

    unknown = watchdog(state, "ack", "alert:nope")
    assert unknown.exit_code == 1
    assert "no incident 'alert:nope'" in unknown.stderr
    assert "alert:nope" not in _read(state)[0]


def test_silence_an_incident_or_by_labels_then_unsilence(state: Path) -> None:
    muted = watchdog(state, "silence", CRITICAL, "--for", "1h", "--reason", "deploying the fix")
    assert muted.exit_code == 0, muted.output
    (by_key,) = silences(state)
    assert (by_key.ends_at - by_key.starts_at, by_key.author, by_key.reason) == (
        3600,
        "cli:bob",
        "deploying the fix",
    )
    assert incident(state, CRITICAL).data["muted_by"]["name"] == by_key.id

    made = watchdog(
        state,
        "silence",
        "--match",
        "alertname=db-latency-burn",
        "--match",
        "slo=db-query-latency",
        "--for",
        "2h",
        "--reason",
        "load test",
    )
    assert made.exit_code == 0, made.output
    by_labels = next(s for s in silences(state) if s.id != by_key.id)
    assert made.stdout.startswith(f"silence {by_labels.id}: alertname=db-latency-burn slo=db-query-latency")
    assert dict(by_labels.matchers) == {"alertname": "db-latency-burn", "slo": "db-query-latency"}
    assert by_labels.ends_at - by_labels.starts_at == 7200
    assert incident(state, WARNING).data["muted_by"]["name"] == by_labels.id

    listed = watchdog(state, "silences")
    assert listed.exit_code == 0
    assert by_key.id in listed.stdout and by_labels.id in listed.stdout and "load test" in listed.stdout
    assert {s["id"] for s in json.loads(watchdog(state, "silences", "--json").stdout)} == {
        by_key.id,
        by_labels.id,
    }

    removed = watchdog(state, "unsilence", by_labels.id)
    assert removed.exit_code == 0
    assert incident(state, WARNING).data["muted_by"] is None, "paging resumes at once"
    again = watchdog(state, "unsilence", by_labels.id)
    assert again.exit_code == 1
    assert f"no silence '{by_labels.id}'" in again.stderr
    assert [s.id for s in silences(state)] == [by_key.id]


@pytest.mark.parametrize(
    "args",
    [
        ["silence", "--for", "1h"],  # neither a key nor --match
        ["silence", CRITICAL, "--match", "alertname=app-down", "--for", "1h"],  # both
        ["silence", CRITICAL],  # no --for
        ["silence", CRITICAL, "--for", "soon"],
        ["silence", CRITICAL, "--for", "31d"],
        ["silence", CRITICAL, "--for", "0s"],
        ["silence", "--match", "app-down", "--for", "1h", "--reason", "x"],  # not LABEL=VALUE
        ["silence", "--match", "alertname=app-down", "--for", "1h"],  # no reason
        ["list", "--state", "burning"],
        ["ack"],
    ],
)
def test_usage_errors_exit_2_and_change_nothing(state: Path, args: Sequence[str]) -> None:
    before = _read(state)
    result = watchdog(state, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr
    assert _read(state) == before


def test_a_bad_or_missing_store_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    result = watchdog(missing, "list")
    assert result.exit_code == 1
    assert f"no state store at {missing}" in result.stderr
    assert not missing.exists()
    bad = CliRunner().invoke(
        main, ["incidents", "list", "--config", str(REPO), "--store", "ftp://example.com/state"]
    )
    assert bad.exit_code == 2
    assert "unknown store scheme" in bad.stderr


def test_help_lists_every_subcommand_with_examples() -> None:
    shown = CliRunner().invoke(main, ["incidents", "--help"], terminal_width=100)
    assert shown.exit_code == 0
    for verb in ("list", "show", "ack", "resolve", "silence", "unsilence", "silences"):
        assert f"watchdog incidents {verb}" in shown.stdout, verb
    assert "incidents" in CliRunner().invoke(main, ["--help"]).stdout
