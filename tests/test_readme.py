"""README says what the code does: the settings defaults, every environment variable the example config
reads (and what an unset DATABASE_URL does), and that --help, the package description and README claim
nothing as planned: every feature they name works."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from click.testing import CliRunner

from watchdog.cli.main import main
from watchdog.config import load_config
from watchdog.config.postgres import PostgresProbeConfig
from watchdog.config.settings import ProbeDefaults, Settings
from watchdog.core.clock import SystemClock
from watchdog.core.results import Outcome
from watchdog.probes.postgres import PostgresProbe

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXAMPLE_CONFIG = ("watchdog.yaml", "probes", "slo", "alerts")


def table_after(heading: str) -> list[list[str]]:
    """The first Markdown table after the line ``heading``: its body rows, cells stripped."""
    lines = README.splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return [row for row in rows[1:] if not set("".join(row)) <= set("-: ")]  # no header, no rule


def test_settings_table_states_the_model_defaults_and_the_shipped_values() -> None:
    rows = {row[0]: row for row in table_after("### `watchdog.yaml`")}
    defaults = Settings()
    shipped = yaml.safe_load((ROOT / "watchdog.yaml").read_text())
    for key, default in (("state", defaults.state), ("listen", defaults.listen)):
        assert rows[f"`{key}`"][1].startswith(f"`{default}`"), rows[f"`{key}`"]
        assert rows[f"`{key}`"][2].startswith(f"`{shipped[key]}`"), rows[f"`{key}`"]


def _variables_the_example_config_reads() -> set[str]:
    names: set[str] = set()
    for part in EXAMPLE_CONFIG:
        path = ROOT / part
        for file in [path] if path.is_file() else sorted(path.rglob("*.yaml")):
            names |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", file.read_text()))
    # variables the database probe reads by name rather than through ${…}
    for probe in load_config(ROOT, environ={}).probes:
        if isinstance(probe, PostgresProbeConfig):
            if probe.dsn_env:
                names.add(probe.dsn_env)
            names.add(f"{probe.env_prefix}PASSWORD")
    return names


def test_every_environment_variable_of_the_example_config_is_listed() -> None:
    listed = {
        name
        for row in table_after("### Environment variables the example config reads")
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row[0])
    }
    assert listed == _variables_the_example_config_reads()


async def test_the_example_config_without_database_url_does_what_readme_says() -> None:
    config = load_config(ROOT, environ={})  # README: valid with none of the variables set
    (db,) = [p for p in config.probes if isinstance(p, PostgresProbeConfig)]
    assert db.dsn_env == "DATABASE_URL"
    probe = PostgresProbe(db, defaults=ProbeDefaults(), clock=SystemClock(), env={})
    try:
        results = await probe.run()
    finally:
        await probe.aclose()
    reason = "connection settings: environment variable DATABASE_URL (the DSN) is not set"
    assert f"reason `{reason}`" in README
    assert {r.labels["check"] for r in results} >= {"connectivity"}
    assert all(r.outcome is Outcome.FAILED and r.reason == reason for r in results)


def test_help_and_package_description_keep_planned_features_apart() -> None:
    help_text = CliRunner().invoke(main, ["--help"], terminal_width=100).output
    summary = help_text.split("\n\n")[1]  # after "Usage: …": the docstring's first line
    description = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["description"]
    # Nothing is planned any more: neither --help, the description nor README's feature list claims a
    # planned feature (Google Cloud's last one, Cloud Run canary cohorts, works).
    features = README.partition("## Two commands on a fresh machine")[0]
    assert features.startswith("# sre-watchdog") and "## What works today" in features
    for text in (help_text, description, features):
        assert not re.search(r"\bplanned\b", text, re.I), text
    # The Google Cloud parts each promises work today: Cloud Run canary cohorts are among them.
    flat = " ".join(help_text.split())
    assert "a canary cohort can be a Cloud Run revision's real traffic" in flat
    assert "Cloud Run canary cohorts per revision" in description
    assert "cohorts from Cloud Run" not in summary, "the summary names only the basics"
    assert re.search(r"L1 -> L2 -> L3", flat), "escalation works today"
    assert "flips the YAML/DB flag back to YAML by itself" in flat, "the canary guard works today"
    assert "pages go to Slack" in flat
    assert "to the log" in flat
    assert "python -m watchdog.demo" in help_text
