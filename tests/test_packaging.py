"""The container image's steps, performed on the host (no Docker engine or base image is needed here).

Like the Dockerfile: copy pyproject.toml, README.md and watchdog/ aside, build the wheel, install it
somewhere that is not the source tree, and run it as an unprivileged user (uid 65534) on the shipped config:
``watchdog validate``, then ``watchdog run`` until the image's HEALTHCHECK script says healthy on the port
``WATCHDOG_LISTEN`` names, then SIGTERM. Third-party packages are copied from this venv, only the
distributions the wheel declares (and theirs), so a missing dependency shows here as it would in the image.
Nothing touches the network: the wheel is built with --no-build-isolation (``make install`` puts
pyproject's build requirements into .venv) and installed with --no-index --no-deps.

Also: the build context the .dockerignore leaves (everything the Dockerfile copies, nothing else), the
health check on its own, and ``scripts/deps.sh`` (``make deps``), which ``make test`` runs first.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.parser import Parser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import Distribution, PackageNotFoundError, distribution
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
CONFIG_PARTS = ("watchdog.yaml", "probes", "slo", "alerts", "runbooks")
BUILD_PARTS = ("pyproject.toml", "README.md", "watchdog")
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")

# What the console script `watchdog` does (entry point from the installed wheel's metadata), after saying
# on stderr where `watchdog` was imported from.
RUN_ENTRY_POINT = """\
import sys
import watchdog
from importlib.metadata import entry_points
print("WATCHDOG_FILE=" + watchdog.__file__, file=sys.stderr, flush=True)
(ep,) = entry_points(group="console_scripts", name="watchdog")
sys.argv[0] = "watchdog"
sys.exit(ep.load()())
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def unprivileged(cmd: Sequence[str]) -> list[str]:
    """``cmd`` as uid/gid 65534 with no supplementary groups when we are root; as ourselves otherwise."""
    if os.geteuid() != 0:
        return list(cmd)
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd]
    runuser = shutil.which("runuser")
    assert runuser is not None, "setpriv or runuser (util-linux) is needed to drop root"
    return [runuser, "-u", "nobody", "--", *cmd]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_readable(base: Path) -> None:
    """Directories 0755 and files 0644 from ``base`` down, whatever the umask was."""
    base.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(base):
        for d in dirnames:
            (Path(dirpath) / d).chmod(0o755)
        for f in filenames:
            path = Path(dirpath) / f
            if not path.is_symlink():
                path.chmod(0o644)


def interpreter_for_unprivileged_user() -> str:
    """This Python's version (compiled extensions in the copied dependencies are built for it), runnable by
    uid 65534: this venv's interpreter often lives under /root (mode 0700), so try the system's too."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, os.path.realpath(sys.executable)]
    candidates += [f"{d}/python{version}" for d in ("/usr/local/bin", "/usr/bin")]
    tried = []
    for candidate in dict.fromkeys(candidates):
        if not os.path.exists(candidate):
            continue
        done = subprocess.run(
            unprivileged([candidate, "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"]),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
        tried.append(f"{candidate}: {(done.stderr or done.stdout).strip()[:200]}")
    pytest.fail(
        f"no Python {version} interpreter that uid {NOBODY} may run (tried: {'; '.join(tried) or 'none'}); "
        f"install python{version} from the distribution"
    )


def runtime_distributions(requires_dist: Sequence[str]) -> list[Distribution]:
    """The installed distributions behind the wheel's ``Requires-Dist`` (no extras), transitively."""
    found: dict[str, Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[Requirement, str]] = [(Requirement(r), "") for r in requires_dist]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            pytest.fail(f"{req} (a runtime dependency) is not installed in this venv: make install")
        found[canonicalize_name(dist.metadata["Name"])] = dist
        for child in dist.requires or []:
            todo.extend((Requirement(child), e) for e in ("", *sorted(req.extras)))
    return list(found.values())


def copy_distribution(dist: Distribution, target: Path) -> int:
    files = dist.files
    assert files is not None, f"{dist.metadata['Name']} has no RECORD; cannot copy it"
    copied = 0
    for f in files:
        if ".." in f.parts:  # console scripts and data outside site-packages
            continue
        src = Path(str(dist.locate_file(f)))
        if src.is_file():
            dst = target / Path(*f.parts)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            copied += 1
    return copied


@dataclass(frozen=True)
class Installed:
    base: Path
    wheel: Path
    site: Path
    """Where the wheel was installed (pip install --target): the only place ``watchdog`` may come from."""
    deps: Path
    config: Path
    state: Path
    python: str
    healthcheck: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "PYTHONPATH": f"{self.site}{os.pathsep}{self.deps}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": str(self.base),
            "LC_ALL": "C.UTF-8",
            **extra,
        }

    def watchdog(self, *args: str) -> list[str]:
        """The ``watchdog`` console script, from the installed wheel, as the unprivileged user."""
        return unprivileged([self.python, "-S", "-c", RUN_ENTRY_POINT, *args])


def _pip(*args: str | Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    hint = "\n(make install puts pyproject's [build-system] requires into .venv)" if "wheel" in args else ""
    assert done.returncode == 0, f"pip {' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}{hint}"


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    base = Path(tempfile.mkdtemp(prefix="watchdog-packaging-"))
    try:
        src, dist, site, deps = base / "src", base / "dist", base / "site", base / "deps"
        src.mkdir()
        for part in BUILD_PARTS:  # the Dockerfile's build stage copies exactly these
            if (ROOT / part).is_dir():
                shutil.copytree(ROOT / part, src / part, ignore=JUNK)
            else:
                shutil.copy2(ROOT / part, src / part)
        _pip("wheel", "--no-deps", "--no-build-isolation", "--check-build-dependencies", "--no-cache-dir",
             "--wheel-dir", dist, src)  # fmt: skip
        (wheel,) = dist.glob("sre_watchdog-*.whl")
        _pip("install", "--no-deps", "--no-cache-dir", "--target", site, wheel)
        with zipfile.ZipFile(wheel) as zf:
            (metadata_name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
            metadata = Parser().parsestr(zf.read(metadata_name).decode())
        deps.mkdir()
        for d in runtime_distributions(metadata.get_all("Requires-Dist") or []):
            copy_distribution(d, deps)
        config = base / "config"
        config.mkdir()
        for part in CONFIG_PARTS:  # the runtime stage's COPY … /etc/watchdog/
            if (ROOT / part).is_dir():
                shutil.copytree(ROOT / part, config / part, ignore=JUNK)
            else:
                shutil.copy2(ROOT / part, config / part)
        healthcheck = base / "healthcheck.py"
        shutil.copy2(ROOT / "scripts" / "healthcheck.py", healthcheck)
        state = base / "state"
        state.mkdir()
        make_readable(base)
        if os.geteuid() == 0:
            os.chown(state, NOBODY, NOBODY)
        yield Installed(
            base, wheel, site, deps, config, state, interpreter_for_unprivileged_user(), healthcheck
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _source_files(directory: Path) -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    }


@pytest.mark.slow
def test_wheel_carries_every_module_and_the_package_data(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as zf:
        names = set(zf.namelist())
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    expected = _source_files(ROOT / "watchdog")
    # every module (a directory without __init__.py would be silently left out), py.typed, the reference
    # service's content and the demo's config with its runbooks
    assert expected - names == set(), "missing from the wheel"
    assert {"watchdog/py.typed", "watchdog/demo_config/watchdog.yaml"} <= names
    assert any(n.startswith("watchdog/demo/content/") for n in names)
    assert any(n.startswith("watchdog/demo_config/runbooks/") for n in names)
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"watchdog"}, "only the package ships"
    assert re.search(r"^watchdog = watchdog\.cli\.main:main$", entry_points, re.MULTILINE)


@pytest.mark.slow
def test_dockerfile_dependency_layer_lists_what_the_wheel_requires(installed: Installed) -> None:
    """The image installs ``scripts/requirements.py``'s list, then the wheel with --no-deps: the list must be
    the wheel's own unconditional requirements."""
    requirements = load_script("requirements").requirements(ROOT / "pyproject.toml")
    with zipfile.ZipFile(installed.wheel) as zf:
        (metadata_name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(zf.read(metadata_name).decode())
    wheel_requires = [Requirement(r) for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert sorted(str(Requirement(r)) for r in requirements) == sorted(str(r) for r in wheel_requires)
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "requirements.py"), str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert done.stdout.splitlines() == requirements


@pytest.mark.slow
def test_installed_wheel_validates_the_shipped_config_as_an_unprivileged_user(installed: Installed) -> None:
    done = subprocess.run(
        installed.watchdog("validate", "--config", str(installed.config)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=installed.env(),
        cwd=installed.base,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (imported_from,) = re.findall(r"^WATCHDOG_FILE=(.*)$", done.stderr, re.MULTILINE)
    assert Path(imported_from).resolve().is_relative_to(installed.site.resolve()), imported_from
    assert not Path(imported_from).resolve().is_relative_to(ROOT)
    assert re.match(r"ok: [1-9]\d* probes, [1-9]\d* SLOs, [1-9]\d* alerts", done.stdout), done.stdout

    # the demo's config ships inside the package and is valid as installed
    demo_config = installed.site / "watchdog" / "demo_config"
    demo = subprocess.run(
        installed.watchdog("validate", "--config", str(demo_config)),
        capture_output=True, text=True, timeout=120, check=False, env=installed.env(), cwd=installed.base,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stdout.startswith("ok: "), demo.stdout
    if os.geteuid() == 0:
        whoami = subprocess.run(
            unprivileged([installed.python, "-S", "-c", "import os; print(os.getuid(), os.getgroups())"]),
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert whoami.stdout == f"{NOBODY} []\n"


def _healthcheck(installed: Installed, listen: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        unprivileged([installed.python, "-S", str(installed.healthcheck)]),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=installed.env(WATCHDOG_LISTEN=listen),
    )


@pytest.mark.slow
def test_installed_daemon_becomes_healthy_on_the_port_watchdog_listen_names(installed: Installed) -> None:
    """The image's CMD (``watchdog run --config /etc/watchdog``) with its ENV, and its HEALTHCHECK."""
    port = free_port()
    log_path = installed.base / f"daemon-{port}.log"
    env = installed.env(
        WATCHDOG_LISTEN=f"127.0.0.1:{port}", WATCHDOG_STATE=str(installed.state / f"state-{port}.db")
    )
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            installed.watchdog("run", "--config", str(installed.config)),
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=installed.state,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        check = _healthcheck(installed, f"0.0.0.0:{port}")  # the image's wildcard listen, checked on loopback
        while check.returncode != 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.25)
            check = _healthcheck(installed, f"0.0.0.0:{port}")
        assert check.returncode == 0, f"{check.stdout}{check.stderr}\n{log_path.read_text()[-3000:]}"
        assert check.stdout.strip() == f"http://127.0.0.1:{port}/healthz: HTTP 200"
        # a port nothing listens on is unhealthy, with the reason on one line
        other = _healthcheck(installed, f"0.0.0.0:{free_port()}")
        assert other.returncode == 1 and len(other.stdout.splitlines()) == 1, other.stdout + other.stderr
        (state_db,) = installed.state.glob(f"state-{port}.db")
        if os.geteuid() == 0:
            assert state_db.stat().st_uid == NOBODY
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
    assert code == 0, log_path.read_text()[-3000:]
    assert f"WATCHDOG_FILE={installed.site}" in log_path.read_text()


# --- the health check on its own -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("0.0.0.0:9108", "http://127.0.0.1:9108/healthz"),
        (":8080", "http://127.0.0.1:8080/healthz"),
        ("127.0.0.1:9200", "http://127.0.0.1:9200/healthz"),
        ("[::]:9108", "http://[::1]:9108/healthz"),
        ("[::1]:9300", "http://[::1]:9300/healthz"),
        ("watchdog.internal:9108", "http://watchdog.internal:9108/healthz"),
    ],
)
def test_healthcheck_url_follows_watchdog_listen(listen: str, url: str) -> None:
    assert load_script("healthcheck").healthz_url(listen) == url


@pytest.mark.parametrize("listen", ["9108", "0.0.0.0:", "0.0.0.0:http", "0.0.0.0:70000"])
def test_healthcheck_refuses_a_listen_that_is_not_host_port(listen: str) -> None:
    healthy, message = load_script("healthcheck").check(listen)
    assert not healthy
    assert "is not HOST:PORT" in message


class _Status503(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the status code, not http.server's access log on stderr."""


def test_healthcheck_is_unhealthy_unless_healthz_says_200() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status503)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        healthy, message = load_script("healthcheck").check(f"0.0.0.0:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert not healthy
    assert message == f"http://127.0.0.1:{server.server_address[1]}/healthz: HTTP 503"


# --- the build context ------------------------------------------------------------------------------------


def _dockerignore_rules() -> list[tuple[bool, re.Pattern[str], str]]:
    """(negated, regex, pattern) per line, with Docker's glob: ``*``/``?``/``[…]`` stay within one path
    segment, ``**`` spans segments; a pattern also matches everything under a directory it matches."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
                end = pattern.index("]", i + 2)
                body = pattern[i + 1 : end]
                regex += "[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]"
                i = end + 1
            else:
                c = pattern[i]
                regex += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
                i += 1
        rules.append((negated, re.compile(regex), pattern))
    return rules


def build_context() -> dict[str, int]:
    """What ``docker build .`` would send: path → size, per .dockerignore (the last matching rule wins)."""
    rules = _dockerignore_rules()
    negations = [p for negated, _, p in rules if negated]

    def excluded(rel: str) -> bool:
        prefixes = ["/".join(rel.split("/")[: i + 1]) for i in range(rel.count("/") + 1)]
        result = False
        for negated, regex, _ in rules:
            if any(regex.fullmatch(p) for p in prefixes):
                result = not negated
        return result

    context: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        here = Path(dirpath).relative_to(ROOT).as_posix()
        prefix = "" if here == "." else here + "/"
        # like Docker, skip an excluded directory unless an exception could re-include something inside
        dirnames[:] = [
            d
            for d in dirnames
            if not excluded(prefix + d) or any(n.startswith(prefix + d + "/") or "*" in n for n in negations)
        ]
        for f in filenames:
            rel = prefix + f
            path = Path(dirpath) / f
            if not excluded(rel) and path.is_file():
                context[rel] = path.stat().st_size
    return context


def _dockerfile_copy_sources() -> list[str]:
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0] != "COPY" or any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_build_context_is_what_the_dockerfile_copies_and_nothing_else() -> None:
    context = build_context()
    sources = _dockerfile_copy_sources()
    assert {"pyproject.toml", "watchdog", "scripts/healthcheck.py", "probes"} <= set(sources)
    for src in sources:
        path = ROOT / src
        wanted = _source_files(path) if path.is_dir() else {src}
        assert wanted, src
        assert wanted - set(context) == set(), f"the Dockerfile copies {src} but .dockerignore leaves out"
    tops = {rel.split("/", 1)[0] for rel in context}
    assert tops <= {s.split("/", 1)[0] for s in sources}, f"in the context but never copied: {tops}"
    generated = [rel for rel in context if "__pycache__" in rel or rel.endswith((".pyc", ".db"))]
    assert generated == []
    size = sum(context.values())
    assert size < 4 * 1024 * 1024, f"build context {size / 1e6:.1f} MB"


# --- make deps --------------------------------------------------------------------------------------------

HIDDEN = ("promtool", "prometheus", "prometheus-node-exporter")


@contextlib.contextmanager
def path_without(hidden: Sequence[str]) -> Iterator[Path]:
    """A readable directory of symlinks to every command on the usual PATH except ``hidden``."""
    base = Path(tempfile.mkdtemp(prefix="watchdog-deps-"))
    try:
        bin_dir = base / "bin"
        bin_dir.mkdir()
        for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
            if not os.path.isdir(d):
                continue
            for entry in os.scandir(d):
                link = bin_dir / entry.name
                if entry.name not in hidden and not link.exists() and not link.is_symlink():
                    link.symlink_to(entry.path)
        shutil.copy2(ROOT / "scripts" / "deps.sh", base / "deps.sh")
        make_readable(base)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _deps(script: Path, path: str, *args: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = ["/bin/bash", str(script), *args]
    return subprocess.run(
        unprivileged(cmd) if as_nobody else cmd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=script.parent,
        env={"PATH": path, "VENV": str(Path(sys.executable).parent.parent), "HOME": str(script.parent)},
    )


def test_make_deps_is_satisfied_here() -> None:
    """``make test`` ran ``make deps`` first: the check alone now passes, silently (PostgreSQL included)."""
    done = _deps(ROOT / "scripts" / "deps.sh", os.environ.get("PATH", ""), "--check")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_make_deps_names_the_one_command_when_it_may_not_install() -> None:
    with path_without(HIDDEN) as base:
        path = str(base / "bin")
        check = _deps(base / "deps.sh", path, "--check")
        assert check.returncode == 1, check.stdout + check.stderr
        assert check.stdout == ""
        (line,) = check.stderr.splitlines()
        assert line.startswith("make deps: missing system packages for the tests; run: "), line
        assert line.endswith("apt-get install -y --no-install-recommends prometheus prometheus-node-exporter")
        if os.geteuid() == 0:
            # as an ordinary user without sudo it must not try to install: one line, with sudo
            nobody = _deps(base / "deps.sh", path, as_nobody=True)
            assert nobody.returncode == 1, nobody.stdout + nobody.stderr
            (line,) = nobody.stderr.splitlines()
            command = "sudo apt-get update && sudo apt-get install -y --no-install-recommends prometheus "
            assert f"run: {command}" in line
            assert line.endswith("(then make test again)")
