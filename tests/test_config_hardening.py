"""Config hardening (issue 8): bounded YAML, configs that watch nothing, one message per mistake, listen
addresses checked before anything starts."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from loopback import closed_port

from watchdog.cli.main import main
from watchdog.config import ConfigError, load_config
from watchdog.config.loader import MAX_ALIAS_VALUES, MAX_DEPTH, MAX_FILE_BYTES, MAX_PROBES, MAX_TOTAL_BYTES
from watchdog.config.probes import HttpProbeConfig
from watchdog.config.types import parse_listen_address

REPO = Path(__file__).resolve().parent.parent


def _problems(root: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(root, environ=environ or {})
    return [str(p) for p in info.value.problems]


def _one_probe(root: Path, name: str = "only") -> Path:
    (root / "probes").mkdir(parents=True, exist_ok=True)
    (root / "probes" / "p.yaml").write_text(
        f"probes:\n  - name: {name}\n    kind: http\n    url: http://127.0.0.1:{closed_port()}/\n"
    )
    return root


def _limit_memory() -> None:
    # A guard, not a measurement: without the fix this file needs gigabytes; fail instead of swapping.
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def _watchdog(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watchdog.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limit_memory,
    )


# -- 4. bounded YAML ------------------------------------------------------------------------------------

BILLION_LAUGHS = """\
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_alias_bomb_is_refused_at_the_alias_with_exit_2(tmp_path: Path) -> None:
    root = _one_probe(tmp_path / "cfg")
    (root / "probes" / "bomb.yaml").write_text(BILLION_LAUGHS)
    out = _watchdog("validate", "--config", str(root))
    assert out.returncode == 2, out.stderr[-2000:]
    # a..d add 8289 values through aliases; the first *d on line 5 goes past 10000.
    assert out.stderr.startswith(
        f"probes/bomb.yaml:5: invalid YAML: aliases expand to more than {MAX_ALIAS_VALUES} values"
    ), out.stderr
    assert "Traceback" not in out.stderr


def test_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    root = _one_probe(tmp_path / "cfg")
    (root / "probes" / "loop.yaml").write_text("probes:\n  - &p\n    name: x\n    again: *p\n")
    assert _problems(root) == [
        "probes/loop.yaml:4: invalid YAML: alias *p refers to a value that contains it"
    ]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 500, 100_000])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path, depth: int) -> None:
    root = _one_probe(tmp_path / "cfg")
    (root / "slo").mkdir()
    (root / "slo" / "deep.yaml").write_text("slos: " + "[" * depth + "]" * depth + "\n")
    problems = _problems(root)
    if depth <= 500:
        assert problems == [
            f"slo/deep.yaml:1: invalid YAML: nested more than {MAX_DEPTH} levels deep (the limit)"
        ]
    else:  # libyaml has a nesting limit of its own (1000), met first
        assert len(problems) == 1 and problems[0].startswith("slo/deep.yaml:1: invalid YAML:"), problems


def test_ordinary_aliases_still_work(tmp_path: Path) -> None:
    root = tmp_path / "cfg"
    (root / "probes").mkdir(parents=True)
    first = (
        "  - name: p0\n    kind: http\n    url: http://127.0.0.1:9/\n    expect: &ok {status: [200, 204]}\n"
    )
    rest = "".join(
        f"  - name: p{i}\n    kind: http\n    url: http://127.0.0.1:9/\n    expect: *ok\n"
        for i in range(1, 200)
    )
    (root / "probes" / "many.yaml").write_text("probes:\n" + first + rest)
    config = load_config(root, environ={})
    assert len(config.probes) == 200
    assert all(isinstance(p, HttpProbeConfig) and p.expect.status == [200, 204] for p in config.probes)


def _probe_lines(count: int, start: int = 0) -> str:
    return "".join(
        f"  - {{name: p{i}, kind: http, url: 'http://127.0.0.1:9/{i}'}}\n"
        for i in range(start, start + count)
    )


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    root = _one_probe(tmp_path / "cfg")
    big = root / "probes" / "big.yaml"
    big.write_text("probes:\n" + _probe_lines(MAX_FILE_BYTES // 40))
    assert big.stat().st_size > MAX_FILE_BYTES
    problems = _problems(root)
    assert len(problems) == 1, problems
    assert problems[0].startswith("probes/big.yaml: file is 1."), problems
    assert "the limits are 1.0 MiB per file, 2.0 MiB and 1000 files per config, 5000 probes" in problems[0]


def test_a_config_over_the_total_size_is_refused(tmp_path: Path) -> None:
    root = _one_probe(tmp_path / "cfg")
    comment = "# " + "x" * 1000 + "\n"
    for n in range(5):
        (root / "probes" / f"pad{n}.yaml").write_text(comment * (MAX_TOTAL_BYTES // 5 // len(comment) + 10))
    problems = _problems(root)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{root}: 6 YAML files, 2.0 MiB in all; the limits are"), problems


def test_more_probes_than_the_limit_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cfg"
    (root / "probes").mkdir(parents=True)
    half = MAX_PROBES // 2
    (root / "probes" / "a.yaml").write_text("probes:\n" + _probe_lines(half))
    (root / "probes" / "b.yaml").write_text("probes:\n" + _probe_lines(MAX_PROBES - half + 1, start=half))
    problems = _problems(root)
    index = MAX_PROBES - half
    assert problems == [
        f"probes/b.yaml:{index + 2}: probes[{index}]: more than {MAX_PROBES} probes; the limits are 1.0 MiB "
        f"per file, 2.0 MiB and 1000 files per config, {MAX_PROBES} probes"
    ]


# -- 5. a config that watches nothing -------------------------------------------------------------------


def test_empty_directory_is_an_error_naming_what_was_looked_for(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["validate", "--config", str(tmp_path)])
    assert out.exit_code == 2, out.output
    assert (
        f"{tmp_path}: no probes: looked for probes/*.yaml and probes/*.yml in this folder and there is no "
        "probes/ folder (--config names the folder holding probes/, slo/, alerts/, runbooks/ and "
        "watchdog.yaml); set allow_no_probes: true in watchdog.yaml to run without probes"
    ) in out.output


@pytest.mark.parametrize(
    ("files", "found"),
    [
        ({}, "there is no such file"),
        ({"empty.yaml": "", "none.yml": "probes: []\n"}, "the 2 file(s) there define no probe"),
        (
            {"off.yaml": "probes:\n  - {name: a, kind: http, url: 'http://127.0.0.1:9/', enabled: false}\n"},
            "the 1 probe(s) there all have enabled: false",
        ),
    ],
)
def test_probes_folder_without_an_enabled_probe(tmp_path: Path, files: dict[str, str], found: str) -> None:
    (tmp_path / "probes").mkdir()
    for name, text in files.items():
        (tmp_path / "probes" / name).write_text(text)
    problems = _problems(tmp_path)
    assert len(problems) == 1, problems
    assert f"and {found} (--config names" in problems[0]


def test_allow_no_probes_is_explicit(tmp_path: Path) -> None:
    (tmp_path / "watchdog.yaml").write_text("allow_no_probes: true\n")
    out = CliRunner().invoke(main, ["validate", "--config", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("ok: 0 probes")


def test_config_path_that_is_missing_or_a_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = CliRunner().invoke(main, ["validate", "--config", str(tmp_path / "nope")])
    assert missing.exit_code == 2
    assert f"Invalid value for '--config': Directory '{tmp_path / 'nope'}' does not exist." in missing.output
    (tmp_path / "file.yaml").write_text("probes: []\n")
    a_file = CliRunner().invoke(main, ["validate", "--config", str(tmp_path / "file.yaml")])
    assert a_file.exit_code == 2
    assert f"Invalid value for '--config': Directory '{tmp_path / 'file.yaml'}' is a file." in a_file.output


def test_daemon_refuses_to_start_on_an_empty_config(tmp_path: Path) -> None:
    out = _watchdog(
        "run",
        "--config",
        str(tmp_path),
        "--listen",
        "127.0.0.1:0",
        "--state",
        str(tmp_path / "s.db"),
        timeout=30,
    )
    assert out.returncode == 2, out.stderr
    assert "no probes: looked for probes/*.yaml" in out.stderr
    assert not (tmp_path / "s.db").exists(), "nothing started"


# -- 6. one mistake, one message ------------------------------------------------------------------------


SMALL_CONFIG = {
    "probes/api.yaml": """\
        probes:
          - name: health
            kind: http
            url: http://127.0.0.1:9/health
            expect:
              status: [200]
          - name: content
            kind: http
            url: http://127.0.0.1:9/content
        """,
    "slo/api.yaml": """\
        slos:
          - name: health-availability
            objective: 99.9
            sli: {kind: availability, probe: health}
          - name: content-latency
            objective: 95
            sli: {kind: latency, probe: content, threshold: 200ms}
        """,
    "alerts/api.yaml": """\
        alerts:
          - {name: health-burn, kind: slo, slo: health-availability}
          - {name: content-burn, kind: slo, slo: content-latency}
          - {name: health-down, kind: probe, probe: health}
        escalation:
          - name: default
            levels: [{level: L1, who: on call, notify: [{type: log}]}]
        """,
}


def _small_config(tmp_path: Path, edit: tuple[str, str, str] | None = None) -> Path:
    """Two probes, two SLOs and three alerts that refer to them; ``edit`` = (file, old, new) plants a
    mistake."""
    root = tmp_path / "cfg"
    for rel, text in SMALL_CONFIG.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(text)
        if edit and edit[0] == rel:
            assert edit[1] in text
            text = text.replace(edit[1], edit[2], 1)
        (root / rel).write_text(text)
    (root / "runbooks").mkdir()
    for alert in ("health-burn", "content-burn", "health-down"):
        (root / "runbooks" / f"{alert}.md").write_text(f"# {alert}\n")
    return root


def test_the_small_config_is_valid(tmp_path: Path) -> None:
    config = load_config(_small_config(tmp_path), environ={})
    assert (len(config.probes), len(config.slos), len(config.alerts)) == (2, 2, 3)


def test_a_tab_in_a_probe_file_is_one_message(tmp_path: Path) -> None:
    root = _small_config(tmp_path, ("probes/api.yaml", "    kind: http\n", "\tkind: http\n"))
    problems = _problems(root)
    # The wording is the YAML parser's (libyaml: "found a tab character that violates indentation").
    assert len(problems) == 1 and problems[0].startswith("probes/api.yaml:3: invalid YAML:"), problems


def test_a_typo_in_a_probe_is_one_message(tmp_path: Path) -> None:
    root = _small_config(tmp_path, ("probes/api.yaml", "    expect:", "    expct:"))
    assert _problems(root) == ["probes/api.yaml:5: probes[0].expct: unknown field"]


def test_a_typo_in_the_top_level_key_is_one_message(tmp_path: Path) -> None:
    root = _small_config(tmp_path, ("slo/api.yaml", "slos:", "slo:"))
    assert _problems(root) == ["slo/api.yaml:1: slo: unknown field (expected slos)"]


def test_an_invalid_slo_is_one_message(tmp_path: Path) -> None:
    root = _small_config(tmp_path, ("slo/api.yaml", "objective: 99.9", "objective: 120"))
    problems = _problems(root)
    assert len(problems) == 1, problems
    assert problems[0].startswith("slo/api.yaml:3: slos[0].objective:"), problems


def test_references_are_still_checked_when_every_file_loads(tmp_path: Path) -> None:
    root = _small_config(tmp_path, ("slo/api.yaml", "probe: content,", "probe: contnet,"))
    assert _problems(root) == ["slo/api.yaml:7: slos[1].sli.probe: no probe named 'contnet'"]


def test_unset_variable_names_its_field_once(tmp_path: Path) -> None:
    root = tmp_path / "cfg"
    (root / "probes").mkdir(parents=True)
    (root / "probes" / "api.yaml").write_text(
        textwrap.dedent(
            """\
            probes:
              - name: api
                kind: http
                url: ${TARGET_BASE_URL}/api/health
                timeout: ${PROBE_TIMEOUT}
            """
        )
    )
    assert _problems(root) == [
        "probes/api.yaml:4: probes[0].url: environment variable TARGET_BASE_URL is not set "
        "(use ${TARGET_BASE_URL:-default} for a default)",
        "probes/api.yaml:5: probes[0].timeout: environment variable PROBE_TIMEOUT is not set "
        "(use ${PROBE_TIMEOUT:-default} for a default)",
    ]


# -- 7. listen addresses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        (":9108", ("", 9108)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9108", ("::1", 9108)),
        ("[::]:80", ("::", 80)),
    ],
)
def test_listen_addresses_that_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus", "'bogus' has no port"),
        ("127.0.0.1:99999", "port 99999 is out of range"),
        ("127.0.0.1:" + "9" * 5000, "is out of range"),
        ("127.0.0.1:", "port '' is not a number"),
        ("127.0.0.1:http", "port 'http' is not a number"),
        ("127.0.0.1:9108\n", "is not a number"),
        ("::1:9108", "an IPv6 address needs brackets, e.g. [::1]:9108"),
        ("[::1:9108", "is not an IPv6 address in brackets"),
        ("[not-v6]:9108", "is not an IPv6 address in brackets"),
        ("127.0.0.300:80", "'127.0.0.300' is not an IPv4 address"),
        ("my host:80", "'my host' is not an IP address or host name"),
    ],
)
def test_listen_addresses_that_do_not(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"expected HOST:PORT|needs brackets") as info:
        parse_listen_address(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("bogus", "'bogus' has no port; expected HOST:PORT or [IPv6]:PORT with a port from 0 to 65535"),
        (
            "127.0.0.1:99999",
            "'127.0.0.1:99999': port 99999 is out of range; expected HOST:PORT or [IPv6]:PORT",
        ),
    ],
)
def test_run_refuses_a_bad_listen_before_starting_anything(tmp_path: Path, listen: str, message: str) -> None:
    root = _one_probe(tmp_path / "cfg")
    out = _watchdog(
        "run", "--config", str(root), "--listen", listen, "--state", str(tmp_path / "s.db"), timeout=30
    )
    assert out.returncode == 2, out.stderr
    assert f"Error: Invalid value for '--listen': {message}" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "s.db").exists(), "nothing started"


def test_listen_in_watchdog_yaml_is_checked(tmp_path: Path) -> None:
    root = _one_probe(tmp_path / "cfg")
    (root / "watchdog.yaml").write_text("state: x.db\nlisten: 127.0.0.1:99999\n")
    assert _problems(root) == [
        "watchdog.yaml:2: listen: '127.0.0.1:99999': port 99999 is out of range; expected HOST:PORT or "
        "[IPv6]:PORT with a port from 0 to 65535, e.g. 127.0.0.1:9108 or [::1]:9108"
    ]


# -- the shipped configs --------------------------------------------------------------------------------


def test_shipped_configs_validate_with_and_without_target_base_url() -> None:
    for environ in ({}, {"TARGET_BASE_URL": "https://svc.example"}):
        assert len(load_config(REPO, environ=environ).probes) == 8
        assert load_config(REPO / "watchdog" / "demo_config", environ=environ).probes
