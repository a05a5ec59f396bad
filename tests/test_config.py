"""Config loading: shipped configs validate; every kind of bad input is reported as file:line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from watchdog.cli.demo import demo_config_dir
from watchdog.cli.main import main
from watchdog.config import ConfigError, load_config
from watchdog.config.loader import expand_env
from watchdog.config.postgres import PostgresProbeConfig
from watchdog.config.probes import HttpProbeConfig, JourneyProbeConfig

REPO = Path(__file__).resolve().parent.parent


def _copy_example(tmp_path: Path) -> Path:
    root = tmp_path / "cfg"
    root.mkdir()
    for name in ("probes", "slo", "alerts", "runbooks"):
        shutil.copytree(REPO / name, root / name)
    shutil.copy(REPO / "watchdog.yaml", root / "watchdog.yaml")
    return root


def _problems(root: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(root, environ=environ or {})
    return [str(p) for p in info.value.problems]


def test_shipped_example_config_is_valid() -> None:
    config = load_config(REPO, environ={"TARGET_BASE_URL": "https://ai-square.example"})
    names = {p.name for p in config.probes}
    assert {
        "api-health",
        "monitoring-health",
        "learner-journey-db",
        "learner-journey-yaml",
        "content-db",
        "content-yaml",
        "ai-square-db",
    } <= names
    health = config.probe("api-health")
    assert isinstance(health, HttpProbeConfig)
    assert health.url == "https://ai-square.example/api/health"
    assert health.degraded_when.latency_over == pytest.approx(0.2)
    journey = config.probe("learner-journey-db")
    assert isinstance(journey, JourneyProbeConfig)
    assert [s.name for s in journey.steps][:2] == ["login", "auth-check"]
    assert set(config.runbooks) == {a.name for a in config.alerts}
    assert [lv.level for lv in config.escalation[0].levels] == ["L1", "L2", "L3"]
    assert config.escalation[0].levels[0].ack_within == 1800
    assert config.escalation[0].levels[1].ack_within == 7200
    db = config.probe("ai-square-db")
    assert isinstance(db, PostgresProbeConfig)
    assert db.connections.app_instances == 10 and db.connections.pool_max == 20


def test_demo_config_is_valid() -> None:
    config = load_config(demo_config_dir(), environ={"TARGET_BASE_URL": "http://127.0.0.1:1"})
    assert config.settings.defaults.interval == 2.0
    assert {p.name for p in config.probes} >= {
        "api-health",
        "content-db",
        "content-yaml",
        "content-db-latency",
        "learner-journey-db",
        "learner-journey-yaml",
    }


def test_every_problem_is_reported_with_file_and_line(tmp_path: Path) -> None:
    root = _copy_example(tmp_path)
    (root / "probes" / "broken.yaml").write_text(
        textwrap.dedent(
            """\
            probes:
              - name: typo
                kind: http
                url: http://x/
                expct: {status: [200]}
              - name: badtype
                kind: http
                url: http://x/
                timeout: soon
              - name: nokind
                url: http://x/
              - name: env
                kind: http
                url: ${NOT_SET_ANYWHERE}/x
              - name: weird
                kind: smtp
            """
        )
    )
    (root / "alerts" / "more.yaml").write_text(
        textwrap.dedent(
            """\
            alerts:
              - name: ghost
                kind: slo
                slo: no-such-slo
              - name: orphan
                kind: probe
                probe: no-such-probe
            """
        )
    )
    problems = _problems(root)
    text = "\n".join(problems)
    assert "probes/broken.yaml:5: probes[0].expct: unknown field" in text
    assert "probes/broken.yaml:9: probes[1].timeout: 'soon' is not a duration" in text
    assert "probes/broken.yaml:10: probes[2]: missing field 'kind'" in text
    assert "probes/broken.yaml:14: probes[3].url: environment variable NOT_SET_ANYWHERE is not set" in text
    assert "probes/broken.yaml:15: probes[4]: unknown kind 'smtp'" in text
    assert "alerts/more.yaml:4: alerts[0].slo: no SLO named 'no-such-slo'" in text
    assert "alerts/more.yaml:7: alerts[1].probe: no probe named 'no-such-probe'" in text
    assert "alerts/more.yaml:2: alerts[0].name: missing runbook runbooks/ghost.md" in text
    assert "alerts/more.yaml:5: alerts[1].name: missing runbook runbooks/orphan.md" in text


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    root = _copy_example(tmp_path)
    (root / "slo" / "bad.yaml").write_text("slos:\n  - name: x\n    objective: [99.9\n")
    problems = _problems(root)
    assert any(p.startswith("slo/bad.yaml:4: invalid YAML") for p in problems), problems


def test_duplicate_names_and_keys(tmp_path: Path) -> None:
    root = _copy_example(tmp_path)
    (root / "probes" / "dup.yaml").write_text(
        "probes:\n  - name: api-health\n    kind: http\n    url: http://x/\n"
        "  - name: twice\n    kind: http\n    kind: http\n    url: http://x/\n"
    )
    problems = _problems(root)
    assert any(
        p.startswith("probes/dup.yaml:2: name: probe 'api-health' is already defined at probes/api.yaml:")
        for p in problems
    ), problems
    assert "probes/dup.yaml:7: duplicate key 'kind'" in problems


def test_slo_referencing_unknown_probe_and_bad_values(tmp_path: Path) -> None:
    root = _copy_example(tmp_path)
    (root / "slo" / "x.yaml").write_text(
        "slos:\n  - name: x\n    objective: 120\n    sli: {kind: availability, probe: api-health}\n"
        "  - name: y\n    objective: 99\n    sli: {kind: availability, probe: nobody}\n"
    )
    problems = _problems(root)
    assert any(p.startswith("slo/x.yaml:3: slos[0].objective:") for p in problems), problems
    assert "slo/x.yaml:7: slos[1].sli.probe: no probe named 'nobody'" in problems


def test_assertion_models_reject_bad_regex_and_status(tmp_path: Path) -> None:
    root = _copy_example(tmp_path)
    (root / "probes" / "x.yaml").write_text(
        "probes:\n  - name: x\n    kind: http\n    url: http://x/\n    expect:\n      status: [200, 9xx]\n"
        "      body_regex: '(['\n      json:\n        - {path: 'a[', equals: 1}\n"
    )
    text = "\n".join(_problems(root))
    assert "probes/x.yaml:6: probes[0].expect.status: '9xx' is neither a status code" in text
    assert "probes/x.yaml:7: probes[0].expect.body_regex: invalid regular expression" in text
    assert "probes/x.yaml:9: probes[0].expect.json[0].path: not a JMESPath expression" in text


def test_env_expansion() -> None:
    env = {"A": "1", "EMPTY": ""}
    assert expand_env("x${A}y", env) == "x1y"
    assert expand_env("${MISSING:-d}", env) == "d"
    assert expand_env("${EMPTY:-d}", env) == "d"
    assert expand_env("$${A}", env) == "${A}"
    assert expand_env("p@ss:w/rd${A}", env) == "p@ss:w/rd1"


def test_missing_directory_is_a_problem(tmp_path: Path) -> None:
    assert _problems(tmp_path / "nope") == [f"{tmp_path / 'nope'}: config directory does not exist"]


def test_cli_validate_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", "--config", str(REPO)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("ok: 8 probes, 8 SLOs, 12 alerts")
    root = _copy_example(tmp_path)
    (root / "probes" / "api.yaml").write_text("probes:\n  - name: x\n    kind: http\n")
    bad = runner.invoke(main, ["validate", "--config", str(root)])
    assert bad.exit_code == 2
    assert "probes/api.yaml:2: probes[0].url: Field required" in bad.output


def test_console_script_help_runs_without_name_clash() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "watchdog.cli.main", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("run", "check", "validate", "demo"):
        assert command in out.stdout
