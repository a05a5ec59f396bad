"""``watchdog flag status|rollback|promote|hold|release`` end to end: a config with a rollout on a flagd
file, a SQLite state store, the CLI as a user runs it. Every flip is read back from the file, lands in the
audit trail that ``status`` prints, and leaves the guard in the state the help promises."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from watchdog.canary.guard import HELD_ALERT, ROLLBACK_FAILED_ALERT, ROLLED_BACK_ALERT
from watchdog.cli.main import main
from watchdog.flags.flagd_file import write_initial

ESCALATION = (
    "escalation:\n  - name: default\n    levels:\n"
    "      - {level: L1, who: dev team, notify: [{type: log}], ack_within: 30m}\n"
)


def _config(tmp_path: Path, flag_path: Path) -> Path:
    root = tmp_path / "config"
    for folder in ("probes", "alerts", "runbooks"):
        (root / folder).mkdir(parents=True)
    (root / "probes" / "p.yaml").write_text(
        "probes:\n  - {name: content-db, kind: http, url: 'http://127.0.0.1:9/', labels: {cohort: db}}\n"
    )
    (root / "alerts" / "a.yaml").write_text(
        ESCALATION + "rollouts:\n  - name: content-db\n"
        f"    flag: {{backend: flagd_file, path: '{flag_path}'}}\n"
        "    canary: {probe: content-db, match: {cohort: db}}\n"
    )
    for alert in (ROLLED_BACK_ALERT, ROLLBACK_FAILED_ALERT, HELD_ALERT):
        (root / "runbooks" / f"{alert}.md").write_text(f"# {alert}\n")
    (root / "watchdog.yaml").write_text(f"state: {tmp_path / 'state.db'}\n")
    return root


def test_flag_commands_flip_verify_audit_and_hold(tmp_path: Path) -> None:
    flag_path = tmp_path / "flags.json"
    write_initial(flag_path, 5.0, updated_by="release-engineer", reason="canary start")
    root = _config(tmp_path, flag_path)
    cli = CliRunner()

    def flag(*args: str) -> tuple[int, str]:
        result = cli.invoke(main, ["flag", *args, "--config", str(root)])
        return result.exit_code, result.output

    code, out = flag("status")
    assert code == 0, out
    assert "rollout content-db  flag flagd-file" in out and ": 5 % database" in out
    assert "guard: watching" in out and "audit trail" not in out

    code, out = flag("rollback", "--as", "ana", "--reason", "DB latency")
    assert code == 0 and "rollback to 0.0 % by cli:ana, verified" in out, out
    code, out = flag("status", "--json")
    status = json.loads(out)
    assert (status["db_percent"], status["updated_by"], status["guard_state"]) == (0.0, "cli:ana", "held")
    assert [(a["action"], a["from_percent"], a["to_percent"], a["actor"]) for a in status["audit"]] == [
        ("rollback", 5.0, 0.0, "cli:ana")
    ]
    code, out = flag("status")
    assert "audit trail:" in out and "rollback  5.0 → 0.0 %  by cli:ana: DB latency" in out, out

    code, out = flag("release", "--as", "ana")
    assert code == 0, out
    assert json.loads(flag("status", "--json")[1])["guard_state"] == "watching"

    code, out = flag("promote", "--to", "25", "--as", "ben", "--reason", "healthy for a day")
    assert code == 0 and "promote to 25.0 % by cli:ben, verified" in out, out
    status = json.loads(flag("status", "--json")[1])
    assert status["db_percent"] == 25.0 and status["guard_state"] == "watching"
    assert [a["action"] for a in status["audit"]] == ["rollback", "release", "promote"]

    code, out = flag("hold", "--as", "ben", "--reason", "investigating")
    assert code == 0, out
    status = json.loads(flag("status", "--json")[1])
    assert status["guard_state"] == "held" and "investigating" in status["guard"]["reason"]
    assert status["db_percent"] == 25.0, "a hold changes no traffic"


def test_flag_commands_fail_clearly(tmp_path: Path) -> None:
    flag_path = tmp_path / "flags.json"
    write_initial(flag_path, 5.0)
    root = _config(tmp_path, flag_path)
    cli = CliRunner()
    missing = cli.invoke(main, ["flag", "rollback", "--config", str(root)])
    assert missing.exit_code == 2 and "--reason" in missing.output
    unknown = cli.invoke(main, ["flag", "status", "--config", str(root), "--rollout", "nope"])
    assert unknown.exit_code == 2 and "no rollout named 'nope' (have content-db)" in unknown.output
    flag_path.write_text("{not json")
    broken = cli.invoke(main, ["flag", "status", "--config", str(root)])
    assert broken.exit_code == 1 and "error: flag backend:" in broken.output, broken.output
