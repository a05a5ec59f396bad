"""Load and validate a config directory; every problem is reported as ``file:line: field: message``.

YAML is composed into nodes first so that each value keeps the line it came from; pydantic error
locations are then mapped back onto those lines.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from watchdog.config.alerts import Alert, EscalationPolicy, ProbeAlert, SloAlert
from watchdog.config.probes import ProbeConfig
from watchdog.config.settings import Settings
from watchdog.config.slo import LatencySli, SloConfig

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
    runbooks: dict[str, Path] = field(default_factory=dict)
    origin: dict[str, Located] = field(default_factory=dict)
    """Where each probe/slo/alert was defined (key ``probe:name``, ``slo:name``, ``alert:name``)."""

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
        self, rel: str, data: Any, lines: dict[Path_, int], problems: list[ConfigProblem] | None = None
    ) -> None:
        self.rel = rel
        self.data = data
        self.lines = lines
        self.problems = problems or []

    def line_for(self, loc: Sequence[str | int]) -> tuple[int, str]:
        """Deepest line known for a pydantic error location, and a dotted field name.

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
        dotted = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in shown)
        return line, dotted.replace(".[", "[")


class _EnvError(Exception):
    def __init__(self, line: int, message: str) -> None:
        self.line = line
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
            env_errors.append(exc)
            return value
    return value


_SCALAR_LOADER = yaml.SafeLoader("")


def _scalar(node: yaml.ScalarNode) -> Any:
    return _SCALAR_LOADER.construct_object(node, deep=True)


def _parse(path: Path, rel: str, environ: dict[str, str] | os._Environ[str]) -> _Document:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(rel, 0, "", f"cannot read: {exc}")]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
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
    return _Document(rel, data, lines, [ConfigProblem(rel, e.line, "", str(e)) for e in env_errors])


def _problems_from(doc: _Document, exc: ValidationError, prefix: Path_ = ()) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors():
        line, dotted = doc.line_for((*prefix, *err["loc"]))
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


def _validate_items(
    doc: _Document, adapters: dict[str, TypeAdapter[Any]]
) -> tuple[dict[str, list[tuple[int, Any]]], list[ConfigProblem]]:
    """Validate each list item on its own, so one bad entry does not hide problems in the others
    (duplicate names, broken references) and every problem shows up in one run."""
    problems = list(doc.problems)
    valid: dict[str, list[tuple[int, Any]]] = {key: [] for key in adapters}
    if doc.data == {}:
        return valid, problems
    if not isinstance(doc.data, dict):
        return valid, [ConfigProblem(doc.rel, doc.lines.get((), 1), "", "the file must be a YAML mapping")]
    for key, value in doc.data.items():
        if key not in adapters:
            expected = ", ".join(sorted(adapters))
            problems.append(
                ConfigProblem(
                    doc.rel, doc.lines.get((key,), 0), str(key), f"unknown field (expected {expected})"
                )
            )
            continue
        if value is None:
            continue
        if not isinstance(value, list):
            problems.append(ConfigProblem(doc.rel, doc.lines.get((key,), 0), str(key), "must be a list"))
            continue
        for i, item in enumerate(value):
            try:
                valid[key].append((i, adapters[key].validate_python(item)))
            except ValidationError as exc:
                problems.extend(_problems_from(doc, exc, (key, i)))
    return valid, problems


_PROBE_ADAPTER: TypeAdapter[Any] = TypeAdapter(ProbeConfig)
_SLO_ADAPTER: TypeAdapter[Any] = TypeAdapter(SloConfig)
_ALERT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Alert)
_ESCALATION_ADAPTER: TypeAdapter[Any] = TypeAdapter(EscalationPolicy)


def _yaml_files(folder: Path) -> Iterator[Path]:
    if folder.is_dir():
        yield from sorted(p for p in folder.iterdir() if p.suffix in {".yaml", ".yml"} and p.is_file())


def load_config(root: str | Path, environ: dict[str, str] | os._Environ[str] | None = None) -> WatchdogConfig:
    """Load ``root``; raise ConfigError listing every problem found (nothing is half-loaded)."""
    root_path = Path(root)
    env = os.environ if environ is None else environ
    if not root_path.is_dir():
        raise ConfigError([ConfigProblem(str(root_path), 0, "", "config directory does not exist")])
    problems: list[ConfigProblem] = []
    docs: list[_Document] = []

    def parse(path: Path) -> _Document | None:
        rel = str(path.relative_to(root_path)) if path.is_relative_to(root_path) else str(path)
        try:
            doc = _parse(path, rel, env)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None
        docs.append(doc)
        return doc

    settings = Settings()
    settings_path = next(
        (root_path / n for n in ("watchdog.yaml", "watchdog.yml") if (root_path / n).is_file()), None
    )
    if settings_path is not None and (doc := parse(settings_path)) is not None:
        model, found = _validate(doc, Settings)
        problems.extend(found)
        if isinstance(model, Settings):
            settings = model

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

    for path in _yaml_files(root_path / "probes"):
        if (doc := parse(path)) is None:
            continue
        items, found = _validate_items(doc, {"probes": _PROBE_ADAPTER})
        problems.extend(found)
        for i, probe in items["probes"]:
            if register("probe", probe.name, doc, ("probes", i)):
                config.probes.append(probe)

    for path in _yaml_files(root_path / "slo"):
        if (doc := parse(path)) is None:
            continue
        items, found = _validate_items(doc, {"slos": _SLO_ADAPTER})
        problems.extend(found)
        for i, slo in items["slos"]:
            if register("slo", slo.name, doc, ("slos", i)):
                config.slos.append(slo)
                probe_ref = slo.sli.probe
                if f"probe:{probe_ref}" not in seen:
                    line = doc.lines.get(("slos", i, "sli", "probe"), 0)
                    problems.append(
                        ConfigProblem(doc.rel, line, f"slos[{i}].sli.probe", f"no probe named {probe_ref!r}")
                    )

    alert_docs: list[tuple[_Document, int, SloAlert | ProbeAlert]] = []
    for path in _yaml_files(root_path / "alerts"):
        if (doc := parse(path)) is None:
            continue
        items, found = _validate_items(doc, {"alerts": _ALERT_ADAPTER, "escalation": _ESCALATION_ADAPTER})
        problems.extend(found)
        for i, alert in items["alerts"]:
            if register("alert", alert.name, doc, ("alerts", i)):
                config.alerts.append(alert)
                alert_docs.append((doc, i, alert))
        for i, policy in items["escalation"]:
            if register("escalation", policy.name, doc, ("escalation", i)):
                config.escalation.append(policy)

    runbook_dir = root_path / "runbooks"
    for doc, i, alert in alert_docs:
        if isinstance(alert, SloAlert) and f"slo:{alert.slo}" not in seen:
            line = doc.lines.get(("alerts", i, "slo"), 0)
            problems.append(ConfigProblem(doc.rel, line, f"alerts[{i}].slo", f"no SLO named {alert.slo!r}"))
        if isinstance(alert, ProbeAlert) and f"probe:{alert.probe}" not in seen:
            line = doc.lines.get(("alerts", i, "probe"), 0)
            problems.append(
                ConfigProblem(doc.rel, line, f"alerts[{i}].probe", f"no probe named {alert.probe!r}")
            )
        if f"escalation:{alert.escalation}" not in seen:
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
