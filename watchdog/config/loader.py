"""Load and validate a config directory; every problem is reported as ``file:line: field: message``.

YAML is composed into nodes first so that each value keeps the line it came from; pydantic error
locations are then mapped back onto those lines.

A config is input from whoever can write the folder, so loading it is bounded: file sizes, file count,
alias expansion (a few hundred bytes of nested anchors expand to billions of values), nesting depth and the
number of probes all have limits, and going past one is a problem like any other, found in well under a
second.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from yaml.composer import ComposerError

from watchdog.config.alerts import (
    Alert,
    EscalationPolicy,
    InhibitRule,
    Intake,
    MaintenanceWindow,
    ProbeAlert,
    SloAlert,
)
from watchdog.config.probes import CloudRunTrafficProbeConfig, ProbeConfig
from watchdog.config.rollouts import Rollout
from watchdog.config.secrets import SecretResolver, resolve_in
from watchdog.config.settings import Settings
from watchdog.config.slo import LatencySli, SloConfig
from watchdog.core.redact import scrub

MAX_FILE_BYTES = 1 << 20
"""Per YAML file. The example config is about 2 KB per file; 1 MiB holds thousands of probes."""
MAX_TOTAL_BYTES = 2 << 20
"""All YAML files of a config together: loading this much takes seconds (YAML parsing dominates)."""
MAX_FILES = 1000
"""YAML files in watchdog.yaml, probes/, slo/ and alerts/ together."""
MAX_PROBES = 5000
"""Probes in a config: ten times what one daemon is sized for (500 probes every 10 s)."""
MAX_ALIAS_VALUES = 10_000
"""Values that ``*alias`` references may add to one file when expanded. Sharing a block between probes
stays far below it; a "billion laughs" file goes past it within a few lines."""
MAX_DEPTH = 64
"""Nesting levels in one file; a real config needs fewer than ten, and the walk over it is recursive."""

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class Located:
    file: str
    line: int


@dataclass
class WatchdogConfig:
    root: Path
    settings: Settings
    probes: list[ProbeConfig] = field(default_factory=list)
    slos: list[SloConfig] = field(default_factory=list)
    alerts: list[SloAlert | ProbeAlert] = field(default_factory=list)
    escalation: list[EscalationPolicy] = field(default_factory=list)
    inhibit: list[InhibitRule] = field(default_factory=list)
    maintenance: list[MaintenanceWindow] = field(default_factory=list)
    intake: list[Intake] = field(default_factory=list)
    rollouts: list[Rollout] = field(default_factory=list)
    runbooks: dict[str, Path] = field(default_factory=dict)
    origin: dict[str, Located] = field(default_factory=dict)
    """Where each probe/slo/alert was defined (key ``probe:name``, ``slo:name``, ``alert:name``)."""
    secret_values: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)
    """The values of the config's ``sm://`` references (``watchdog.config.secrets``): masked in ``repr``."""

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr)
        return scrub(f"{type(self).__name__}({shown})", set(self.secret_values))

    def probe(self, name: str) -> ProbeConfig:
        for probe in self.probes:
            if probe.name == name:
                return probe
        raise KeyError(name)

    def enabled_probes(self) -> list[ProbeConfig]:
        return [p for p in self.probes if p.enabled]

    def latency_thresholds(self) -> tuple[float, ...]:
        """Every latency threshold the config names (latency SLIs, probe expectations): the store and
        /metrics add them as histogram bucket edges, so "ratio under the threshold" is exact."""
        found = {t for p in self.probes for t in p.latency_thresholds()}
        found.update(s.sli.threshold for s in self.slos if isinstance(s.sli, LatencySli))
        return tuple(sorted(found))


class _Document:
    """One parsed YAML file: plain data plus the line of every node path."""

    def __init__(
        self,
        rel: str,
        data: Any,
        lines: dict[Path_, int],
        problems: list[ConfigProblem] | None = None,
        env_fields: set[Path_] | None = None,
    ) -> None:
        self.rel = rel
        self.data = data
        self.lines = lines
        self.problems = problems or []
        self.env_fields = env_fields or set()
        """Paths of values with an unset ``${VAR}``: already reported, so their validation errors are not."""

    def line_for(self, loc: Sequence[str | int]) -> tuple[int, str]:
        """Deepest line known for a pydantic error location, and a dotted field name."""
        _, line, dotted = self.locate(loc)
        return line, dotted

    def locate(self, loc: Sequence[str | int]) -> tuple[Path_, int, str]:
        """The data path a pydantic error location points at, its deepest known line and a dotted name.

        pydantic adds union tags (``http``) and model names to ``loc`` that are not in the data; they are
        skipped by walking the data alongside.
        """
        path: list[str | int] = []
        shown: list[str | int] = []
        node = self.data
        for index, part in enumerate(loc):
            key: str | int | None = None
            if (isinstance(node, dict) and part in node) or (
                isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
            ):
                key = part
            elif (
                isinstance(node, dict) and isinstance(part, str) and part.endswith("_") and part[:-1] in node
            ):
                key = part[:-1]  # aliased fields such as json_ / for_
            if key is not None:
                path.append(key)
                shown.append(key)
                node = node[key]
            elif index == len(loc) - 1 and isinstance(part, str) and "[" not in part:
                shown.append(part.rstrip("_"))  # a missing field: name it, report at its parent
        # A missing key is reported at its parent; an extra key at the key itself (it is in the data).
        line = 0
        probe = tuple(path)
        while True:
            if probe in self.lines:
                line = self.lines[probe]
                break
            if not probe:
                break
            probe = probe[:-1]
        return tuple(path), line, _dotted(shown)


def _dotted(path: Sequence[str | int]) -> str:
    """``("probes", 0, "url")`` → ``probes[0].url``."""
    dotted = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path)
    return dotted.replace(".[", "[")


class _EnvError(Exception):
    def __init__(self, line: int, message: str, path: Path_ | None = None) -> None:
        self.line = line
        self.path = path
        super().__init__(message)


def expand_env(value: str, environ: dict[str, str] | os._Environ[str], line: int = 0) -> str:
    """``${VAR}`` and ``${VAR:-default}``; ``$$`` is a literal dollar. Unset without default is an error."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in environ and environ[name] != "":
            return environ[name]
        if default is not None:
            return default
        raise _EnvError(
            line, f"environment variable {name} is not set (use ${{{name}:-default}} for a default)"
        )

    return _ENV_REF.sub(substitute, value)


def _construct(
    node: yaml.Node,
    path: Path_,
    lines: dict[Path_, int],
    environ: dict[str, str] | os._Environ[str],
    env_errors: list[_EnvError],
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _EnvError(key_node.start_mark.line + 1, "mapping keys must be plain scalars")
            loaded = _scalar(key_node)
            key = loaded if isinstance(loaded, str | int) and not isinstance(loaded, bool) else key_node.value
            if key in result:
                # Report and keep the first value, so the rest of the file is still checked.
                env_errors.append(_EnvError(key_node.start_mark.line + 1, f"duplicate key {key!r}"))
                continue
            result[key] = _construct(value_node, (*path, key), lines, environ, env_errors)
            # Point at the key's line, which is where a reader looks for the field.
            lines[(*path, key)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, i), lines, environ, env_errors) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    value = _scalar(node)
    if isinstance(value, str):
        try:
            return expand_env(value, environ, node.start_mark.line + 1)
        except _EnvError as exc:
            # Keep going so one run reports every problem; the file is rejected anyway.
            env_errors.append(_EnvError(exc.line, str(exc), path))
            return value
    return value


_SCALAR_LOADER = yaml.SafeLoader("")


def _scalar(node: yaml.ScalarNode) -> Any:
    return _SCALAR_LOADER.construct_object(node, deep=True)


class _BoundedComposer(yaml.composer.Composer):
    """PyYAML's composer with limits, checked while composing (before anything is expanded).

    Composing keeps an alias as a second reference to its anchor's node, which is cheap; it is the walk
    that turns nodes into values (``_construct``) that expands every reference, so nested anchors of a few
    hundred bytes become billions of values there. Each node's expanded size is known once it is composed,
    so every alias adds the size of what it will expand to, and going past MAX_ALIAS_VALUES stops at the
    alias. An alias inside its own anchor (a cycle) and nesting past MAX_DEPTH would make the recursive walk
    fail: they are refused too.
    """

    _expanded_size: dict[int, int]  # id(node) → values it stands for, aliases expanded
    _alias_values: int
    _depth: int

    def _start_bounds(self) -> None:
        self._expanded_size = {}
        self._alias_values = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[attr-defined]  # from the parser class
        if isinstance(event, yaml.AliasEvent):
            self._count_alias(event)
            return super().compose_node(parent, index)
        if self._depth >= MAX_DEPTH:
            raise ComposerError(
                None, None, f"nested more than {MAX_DEPTH} levels deep (the limit)", _mark(event)
            )
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        sizes = self._expanded_size
        if isinstance(node, yaml.SequenceNode):
            sizes[id(node)] = 1 + sum(sizes[id(item)] for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            sizes[id(node)] = 1 + sum(sizes[id(key)] + sizes[id(value)] for key, value in node.value)
        elif node is not None:
            sizes[id(node)] = 1
        return node

    def _count_alias(self, event: yaml.AliasEvent) -> None:
        target = self.anchors.get(event.anchor)
        if target is None:
            return  # an undefined alias: the composer reports it
        size = self._expanded_size.get(id(target))
        if size is None:  # the anchor's node is still being composed: the alias is inside it
            raise ComposerError(
                None, None, f"alias *{event.anchor} refers to a value that contains it", _mark(event)
            )
        self._alias_values += size
        if self._alias_values > MAX_ALIAS_VALUES:
            raise ComposerError(
                None,
                None,
                f"aliases expand to more than {MAX_ALIAS_VALUES} values, the limit per file "
                "(write the values out instead of repeating *aliases)",
                _mark(event),
            )


def _mark(event: yaml.Event) -> yaml.error.Mark | None:
    # libyaml's marks are another type with the same fields; the error takes PyYAML's.
    mark = event.start_mark
    return None if mark is None else yaml.error.Mark(mark.name, mark.index, mark.line, mark.column, None, 0)


class _PythonLoader(_BoundedComposer, yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._start_bounds()


class _ComposingLoader(Protocol):
    def get_single_node(self) -> yaml.Node | None: ...
    def dispose(self) -> None: ...


_new_loader: Callable[[str], _ComposingLoader] = _PythonLoader

if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _LibyamlLoader(_BoundedComposer, CParser, yaml.resolver.Resolver):
        """libyaml's scanner and parser under the same composer: parsing is most of the time a config
        takes to load, and the C parser is about ten times faster than the pure-Python one."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._start_bounds()

    _new_loader = _LibyamlLoader


def _compose(text: str) -> yaml.Node | None:
    loader = _new_loader(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _size(count: int) -> str:
    return f"{count / (1 << 20):.1f} MiB" if count >= 1 << 20 else f"{count / 1024:.0f} KiB"


_LIMITS = (
    f"the limits are {_size(MAX_FILE_BYTES)} per file, {_size(MAX_TOTAL_BYTES)} and {MAX_FILES} files "
    f"per config, {MAX_PROBES} probes"
)


def _parse(path: Path, rel: str, environ: dict[str, str] | os._Environ[str]) -> _Document:
    try:
        with path.open("rb") as stream:
            # Read at most one byte past the limit: the size seen before may have changed since.
            raw = stream.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            too_big = f"file is larger than {_size(MAX_FILE_BYTES)}; {_LIMITS}"
            raise ConfigError([ConfigProblem(rel, 0, "", too_big)])
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(rel, 0, "", f"cannot read: {exc}")]) from exc
    try:
        node = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        raise ConfigError([ConfigProblem(rel, line, "", f"invalid YAML: {exc.problem or exc}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(rel, 0, "", f"invalid YAML: {exc}")]) from exc
    lines: dict[Path_, int] = {}
    if node is None:
        return _Document(rel, {}, lines)
    env_errors: list[_EnvError] = []
    try:
        data = _construct(node, (), lines, environ, env_errors)
    except _EnvError as exc:
        raise ConfigError([ConfigProblem(rel, exc.line, "", str(exc))]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(rel, 0, "", f"invalid YAML: {exc}")]) from exc
    problems = [ConfigProblem(rel, e.line, _dotted(e.path or ()), str(e)) for e in env_errors]
    env_fields = {e.path for e in env_errors if e.path is not None}
    return _Document(rel, data, lines, problems, env_fields)


def _problems_from(doc: _Document, exc: ValidationError, prefix: Path_ = ()) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors():
        path, line, dotted = doc.locate((*prefix, *err["loc"]))
        if path in doc.env_fields:
            continue  # the unset variable is the problem, already reported for this field
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif err["type"] == "union_tag_invalid":
            ctx = err.get("ctx") or {}
            message = f"unknown kind {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        elif err["type"] == "union_tag_not_found":
            message = "missing field 'kind'"
        problems.append(ConfigProblem(doc.rel, line, dotted, message))
    return problems


def _validate(doc: _Document, model: type[BaseModel]) -> tuple[BaseModel | None, list[ConfigProblem]]:
    if not isinstance(doc.data, dict):
        return None, [ConfigProblem(doc.rel, doc.lines.get((), 1), "", "the file must be a YAML mapping")]
    problems = list(doc.problems)
    try:
        validated = model.model_validate(doc.data)
    except ValidationError as exc:
        return None, problems + _problems_from(doc, exc)
    return (None if problems else validated), problems


CANARY_ALERTS = ("canary-rolled-back", "canary-rollback-failed", "canary-held")
"""The guard's own alerts: a config with rollouts needs their runbooks."""
CLOUD_RUN_ALERTS = ("cloud-run-rolled-back", "cloud-run-rollback-failed")
"""The Cloud Run traffic rollback's alerts (``watchdog.canary.cloud_run``): a rollout with ``cloud_run`` needs
their runbooks."""

_KIND = {
    "probes": "probe",
    "slos": "slo",
    "alerts": "alert",
    "escalation": "escalation",
    "inhibit": "inhibit",
    "maintenance": "maintenance",
    "intake": "intake",
    "rollouts": "rollout",
}
"""Top-level list key → the kind its entries register as (``probe:<name>``)."""


@dataclass
class _Items:
    valid: dict[str, list[tuple[int, Any]]]
    problems: list[ConfigProblem]
    invalid_names: set[str] = field(default_factory=set)
    """``kind:name`` of entries that failed validation but whose name could be read: references to them
    are not reported as well (the entry's own problem is the one to fix)."""
    complete: bool = True
    """False when some entries could not be read at all, so the names they define are unknown."""


def _validate_items(doc: _Document, adapters: dict[str, TypeAdapter[Any]]) -> _Items:
    """Validate each list item on its own, so one bad entry does not hide problems in the others
    (duplicate names, broken references) and every problem shows up in one run."""
    items = _Items({key: [] for key in adapters}, list(doc.problems))
    if doc.data == {}:
        return items
    if not isinstance(doc.data, dict):
        items.problems.append(
            ConfigProblem(doc.rel, doc.lines.get((), 1), "", "the file must be a YAML mapping")
        )
        items.complete = False
        return items
    for key, value in doc.data.items():
        if key not in adapters:
            expected = ", ".join(sorted(adapters))
            items.problems.append(
                ConfigProblem(
                    doc.rel, doc.lines.get((key,), 0), str(key), f"unknown field (expected {expected})"
                )
            )
            items.complete = False
            continue
        if value is None:
            continue
        if not isinstance(value, list):
            line = doc.lines.get((key,), 0)
            items.problems.append(ConfigProblem(doc.rel, line, str(key), "must be a list"))
            items.complete = False
            continue
        for i, item in enumerate(value):
            try:
                items.valid[key].append((i, adapters[key].validate_python(item)))
            except ValidationError as exc:
                items.problems.extend(_problems_from(doc, exc, (key, i)))
                name = item.get("name") if isinstance(item, dict) else None
                if isinstance(name, str):
                    items.invalid_names.add(f"{_KIND[key]}:{name}")
                else:
                    items.complete = False
    return items


_PROBE_ADAPTER: TypeAdapter[Any] = TypeAdapter(ProbeConfig)
_SLO_ADAPTER: TypeAdapter[Any] = TypeAdapter(SloConfig)
_ALERT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Alert)
_ESCALATION_ADAPTER: TypeAdapter[Any] = TypeAdapter(EscalationPolicy)
_ALERTS_FILE_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "alerts": _ALERT_ADAPTER,
    "escalation": _ESCALATION_ADAPTER,
    "inhibit": TypeAdapter(InhibitRule),
    "maintenance": TypeAdapter(MaintenanceWindow),
    "intake": TypeAdapter(Intake),
    "rollouts": TypeAdapter(Rollout),
}


def _yaml_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())


def _size_problems(root: Path, files: Sequence[Path]) -> list[ConfigProblem]:
    """Files over the size limits, found from their sizes before any is read."""
    problems: list[ConfigProblem] = []
    total = 0
    for path in files:
        try:
            size = path.stat().st_size
        except OSError:
            continue  # reported when it is read
        total += size
        if size > MAX_FILE_BYTES:
            rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
            problems.append(ConfigProblem(rel, 0, "", f"file is {_size(size)}; {_LIMITS}"))
    if len(files) > MAX_FILES or total > MAX_TOTAL_BYTES:
        problems.append(
            ConfigProblem(str(root), 0, "", f"{len(files)} YAML files, {_size(total)} in all; {_LIMITS}")
        )
    return problems


def _no_probes(root: Path, files: Sequence[Path], defined: Sequence[ProbeConfig]) -> ConfigProblem:
    """Why a config watches nothing, saying where probes were looked for."""
    folder = root / "probes"
    if defined:
        found = f"the {len(defined)} probe(s) there all have enabled: false"
    elif files:
        found = f"the {len(files)} file(s) there define no probe"
    elif folder.is_dir():
        found = "there is no such file"
    else:
        found = "there is no probes/ folder"
    return ConfigProblem(
        str(root.resolve()),
        0,
        "",
        f"no probes: looked for probes/*.yaml and probes/*.yml in this folder and {found} "
        "(--config names the folder holding probes/, slo/, alerts/, runbooks/ and watchdog.yaml); "
        "set allow_no_probes: true in watchdog.yaml to run without probes",
    )


def load_config(root: str | Path, environ: dict[str, str] | os._Environ[str] | None = None) -> WatchdogConfig:
    """Load ``root``; raise ConfigError listing every problem found (nothing is half-loaded).

    A problem is reported once: a reference to a probe, SLO or escalation policy is not reported as
    missing when the file that may define it did not load or the entry itself is invalid.

    ``sm://`` values are resolved from Secret Manager here, at every load (``watchdog.config.secrets``); their
    values are masked in the problems reported and in the config's ``repr``.
    """
    secrets = SecretResolver()
    try:
        config = _load_config(root, environ, secrets)
    except ConfigError as exc:
        masked = {v for v in secrets.values if v}
        raise ConfigError(
            [dataclasses.replace(p, message=scrub(p.message, masked)) for p in exc.problems]
        ) from None
    finally:
        secrets.close()
    config.secret_values = secrets.values
    return config


def _load_config(
    root: str | Path, environ: dict[str, str] | os._Environ[str] | None, secrets: SecretResolver
) -> WatchdogConfig:
    root_path = Path(root)
    env = os.environ if environ is None else environ
    if not root_path.is_dir():
        raise ConfigError([ConfigProblem(str(root_path), 0, "", "config directory does not exist")])
    settings_path = next(
        (root_path / n for n in ("watchdog.yaml", "watchdog.yml") if (root_path / n).is_file()), None
    )
    folders = {name: _yaml_files(root_path / name) for name in ("probes", "slo", "alerts")}
    every_file = [*([settings_path] if settings_path else []), *(p for f in folders.values() for p in f)]
    if oversized := _size_problems(root_path, every_file):
        raise ConfigError(oversized)

    problems: list[ConfigProblem] = []
    invalid_names: set[str] = set()
    # Kinds whose full set of names is unknown (a file did not load): references to them are not checked.
    unknown_kinds: set[str] = set()

    def parse(path: Path, kinds: Sequence[str]) -> _Document | None:
        rel = str(path.relative_to(root_path)) if path.is_relative_to(root_path) else str(path)
        try:
            doc = _parse(path, rel, env)
        except ConfigError as exc:
            problems.extend(exc.problems)
            unknown_kinds.update(kinds)
            return None
        # sm:// references, after ${VAR} expansion; watchdog.yaml's google_cloud says where they resolve.
        for where, message in resolve_in(doc.data, secrets, doc.env_fields, path == settings_path):
            doc.problems.append(ConfigProblem(rel, doc.lines.get(where, 0), _dotted(where), message))
            doc.env_fields.add(where)  # reported: its validation error would only repeat it
        return doc

    def absorb(items: _Items, kinds: Sequence[str]) -> None:
        problems.extend(items.problems)
        invalid_names.update(items.invalid_names)
        if not items.complete:
            unknown_kinds.update(kinds)

    settings = Settings()
    settings_loaded = True
    if settings_path is not None:
        settings_loaded = False
        if (doc := parse(settings_path, ())) is not None:
            model, found = _validate(doc, Settings)
            problems.extend(found)
            if isinstance(model, Settings):
                settings, settings_loaded = model, True

    config = WatchdogConfig(root=root_path, settings=settings)
    seen: dict[str, Located] = {}

    def register(kind: str, name: str, doc: _Document, path: Path_) -> bool:
        key = f"{kind}:{name}"
        here = Located(doc.rel, doc.lines.get(path, 0))
        if key in seen:
            first = seen[key]
            problems.append(
                ConfigProblem(
                    here.file,
                    here.line,
                    "name",
                    f"{kind} {name!r} is already defined at {first.file}:{first.line}",
                )
            )
            return False
        seen[key] = here
        return True

    def missing(kind: str, name: str) -> bool:
        key = f"{kind}:{name}"
        return key not in seen and key not in invalid_names and kind not in unknown_kinds

    before_probes = len(problems)
    probe_entries = 0
    for path in folders["probes"]:
        if (doc := parse(path, ("probe",))) is None:
            continue
        entries = doc.data.get("probes") if isinstance(doc.data, dict) else None
        if isinstance(entries, list) and probe_entries + len(entries) > MAX_PROBES:
            # Checked before validating: validation is what takes time at this size.
            index = MAX_PROBES - probe_entries
            problems.append(
                ConfigProblem(
                    doc.rel,
                    doc.lines.get(("probes", index), 0),
                    f"probes[{index}]",
                    f"more than {MAX_PROBES} probes; {_LIMITS}",
                )
            )
            unknown_kinds.add("probe")
            break
        probe_entries += len(entries) if isinstance(entries, list) else 0
        items = _validate_items(doc, {"probes": _PROBE_ADAPTER})
        absorb(items, ("probe",))
        for i, probe in items.valid["probes"]:
            if register("probe", probe.name, doc, ("probes", i)):
                config.probes.append(probe)
                if isinstance(probe, CloudRunTrafficProbeConfig) and settings_loaded:
                    gcp = settings.google_cloud
                    if gcp is None or not (probe.service or gcp.cloud_run_service):
                        problems.append(
                            ConfigProblem(
                                doc.rel,
                                doc.lines.get(("probes", i), 0),
                                f"probes[{i}].service",
                                "a cloud_run_traffic probe needs google_cloud (project) in watchdog.yaml "
                                "and a Cloud Run service: set service here or "
                                "google_cloud.cloud_run_service",
                            )
                        )
    if (
        len(problems) == before_probes
        and settings_loaded
        and not settings.allow_no_probes
        and not config.enabled_probes()
    ):
        problems.append(_no_probes(root_path, folders["probes"], config.probes))
        unknown_kinds.add("probe")  # references to probes are the same mistake

    for path in folders["slo"]:
        if (doc := parse(path, ("slo",))) is None:
            continue
        items = _validate_items(doc, {"slos": _SLO_ADAPTER})
        absorb(items, ("slo",))
        for i, slo in items.valid["slos"]:
            if register("slo", slo.name, doc, ("slos", i)):
                config.slos.append(slo)
                probe_ref = slo.sli.probe
                if missing("probe", probe_ref):
                    line = doc.lines.get(("slos", i, "sli", "probe"), 0)
                    problems.append(
                        ConfigProblem(doc.rel, line, f"slos[{i}].sli.probe", f"no probe named {probe_ref!r}")
                    )

    alert_docs: list[tuple[_Document, int, SloAlert | ProbeAlert]] = []
    # (file, list key, index, field, kind, name): references checked once every alerts file is read.
    references: list[tuple[_Document, str, int, str, str, str]] = []
    alert_kinds = ("alert", "escalation", "inhibit", "maintenance", "intake", "rollout")
    for path in folders["alerts"]:
        if (doc := parse(path, alert_kinds)) is None:
            continue
        items = _validate_items(doc, _ALERTS_FILE_ADAPTERS)
        absorb(items, alert_kinds)
        for i, alert in items.valid["alerts"]:
            if register("alert", alert.name, doc, ("alerts", i)):
                config.alerts.append(alert)
                alert_docs.append((doc, i, alert))
        for i, policy in items.valid["escalation"]:
            if register("escalation", policy.name, doc, ("escalation", i)):
                config.escalation.append(policy)
        for i, rule in items.valid["inhibit"]:
            if register("inhibit", rule.name, doc, ("inhibit", i)):
                config.inhibit.append(rule)
                references.append((doc, "inhibit", i, "source", "alert", rule.source))
                references.extend((doc, "inhibit", i, "targets", "alert", t) for t in rule.targets)
        for i, window in items.valid["maintenance"]:
            if register("maintenance", window.name, doc, ("maintenance", i)):
                config.maintenance.append(window)
                if window.announce is not None:
                    references.append((doc, "maintenance", i, "announce", "escalation", window.announce))
        for i, intake in items.valid["intake"]:
            if register("intake", intake.name, doc, ("intake", i)):
                config.intake.append(intake)
                references.append((doc, "intake", i, "escalation", "escalation", intake.escalation))
        for i, rollout in items.valid["rollouts"]:
            if register("rollout", rollout.name, doc, ("rollouts", i)):
                config.rollouts.append(rollout)
                references.append((doc, "rollouts", i, "escalation", "escalation", rollout.escalation))
                for role, cohort in (("canary", rollout.canary), ("baseline", rollout.baseline)):
                    if cohort is not None and cohort.probe is not None:  # a prometheus cohort names none
                        references.append((doc, "rollouts", i, role, "probe", cohort.probe))
                if rollout.promote is not None:
                    references.extend(
                        (doc, "rollouts", i, "promote", "slo", name) for name in rollout.promote.slos or ()
                    )
                for alert in CANARY_ALERTS + (CLOUD_RUN_ALERTS if rollout.cloud_run else ()):
                    if not (root_path / "runbooks" / f"{alert}.md").is_file():
                        line = doc.lines.get(("rollouts", i, "name"), 0)
                        problems.append(
                            ConfigProblem(
                                doc.rel, line, f"rollouts[{i}].name", f"missing runbook runbooks/{alert}.md"
                            )
                        )
                gcp = settings.google_cloud
                for role, cohort in (("canary", rollout.canary), ("baseline", rollout.baseline)):
                    run = cohort.cloud_run if cohort is not None else None
                    if run is not None and not (run.service or (gcp and gcp.cloud_run_service)):
                        problems.append(
                            ConfigProblem(
                                doc.rel,
                                doc.lines.get(("rollouts", i, role), 0),
                                f"rollouts[{i}].{role}.cloud_run.service",
                                "no Cloud Run service: set it here or google_cloud.cloud_run_service "
                                "in watchdog.yaml",
                            )
                        )
                if rollout.cloud_run and not (rollout.cloud_run.service or (gcp and gcp.cloud_run_service)):
                    problems.append(
                        ConfigProblem(
                            doc.rel,
                            doc.lines.get(("rollouts", i, "cloud_run"), 0),
                            f"rollouts[{i}].cloud_run.service",
                            "no Cloud Run service: set it here or google_cloud.cloud_run_service "
                            "in watchdog.yaml",
                        )
                    )
    for kind_name in ("alertmanager", "cloud_monitoring"):
        if sum(1 for t in config.intake if t.kind == kind_name) > 1:
            doc_i = next(d for d in references if d[1] == "intake")
            problems.append(
                ConfigProblem(doc_i[0].rel, 0, "intake", f"more than one {kind_name} intake; keep one")
            )
    for doc, key, i, field_name, kind_name, ref in references:
        if missing(kind_name, ref):
            line = doc.lines.get((key, i, field_name), doc.lines.get((key, i), 0))
            problems.append(
                ConfigProblem(doc.rel, line, f"{key}[{i}].{field_name}", f"no {kind_name} named {ref!r}")
            )

    runbook_dir = root_path / "runbooks"
    for doc, i, alert in alert_docs:
        if isinstance(alert, SloAlert) and missing("slo", alert.slo):
            line = doc.lines.get(("alerts", i, "slo"), 0)
            problems.append(ConfigProblem(doc.rel, line, f"alerts[{i}].slo", f"no SLO named {alert.slo!r}"))
        if isinstance(alert, ProbeAlert) and missing("probe", alert.probe):
            line = doc.lines.get(("alerts", i, "probe"), 0)
            problems.append(
                ConfigProblem(doc.rel, line, f"alerts[{i}].probe", f"no probe named {alert.probe!r}")
            )
        if missing("escalation", alert.escalation):
            line = doc.lines.get(("alerts", i, "escalation"), doc.lines.get(("alerts", i), 0))
            problems.append(
                ConfigProblem(
                    doc.rel,
                    line,
                    f"alerts[{i}].escalation",
                    f"no escalation policy named {alert.escalation!r}",
                )
            )
        runbook = runbook_dir / f"{alert.name}.md"
        if runbook.is_file():
            config.runbooks[alert.name] = runbook
        else:
            line = doc.lines.get(("alerts", i, "name"), 0)
            problems.append(
                ConfigProblem(doc.rel, line, f"alerts[{i}].name", f"missing runbook runbooks/{alert.name}.md")
            )

    config.origin = dict(seen)
    if problems:
        raise ConfigError(problems)
    return config
