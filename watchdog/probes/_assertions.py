"""Checking a response against ``Expectations`` and ``DegradedWhen``.

Everything that can be compiled (regexes, JMESPath expressions, status sets, the wording of reasons) is
compiled once per probe instance by :func:`compile_checks`; evaluating a response is then a handful of
comparisons. Reasons are written for whoever gets paged: ``status 503 not in [200]``,
``json status = "unhealthy", expected one of ["healthy", "degraded"]``, ``latency 340 ms over 200 ms``.

Regexes (body, headers, json values) use ``re.search``: anchor with ``^``/``$`` for a full match.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jmespath
import jmespath.exceptions
import jmespath.parser

from watchdog.config.probes import DegradedWhen, Expectations, JsonAssertion, StatusSpec
from watchdog.core.durations import human_duration
from watchdog.probes._client import one_line


class _NotJson:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Final = _NotJson()
"""Stands for a body that does not parse as JSON (``None`` is a JSON ``null``)."""

_MISSING: Final = object()


def parse_json(text: str) -> Any:
    """The parsed body, or :data:`NOT_JSON`."""
    try:
        return json.loads(text)
    except ValueError:
        return NOT_JSON


def show(value: Any, limit: int = 80) -> str:
    """A JSON-ish rendering of a value for a reason: ``"healthy"``, ``true``, ``42``, ``["a", "b"]``."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except ValueError:
        text = repr(value)
    return one_line(text, limit)


def _same(a: Any, b: Any) -> bool:
    """Equality that does not confuse ``true`` with ``1`` (Python's ``True == 1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class JsonPath:
    """A compiled JMESPath expression; plain dotted field paths (``checks.database.status``), the common
    case, skip the JMESPath interpreter (same result: a missing key or a non-object gives ``None``).
    A runtime type error (``length(null)``) gives ``None`` too, so it reads as "missing" in a reason."""

    __slots__ = ("_expression", "_fields", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._expression: jmespath.parser.ParsedResult = jmespath.compile(source)
        self._fields = _field_chain(self._expression.parsed)

    def search(self, data: Any) -> Any:
        fields = self._fields
        if fields is None:
            try:
                return self._expression.search(data)
            except jmespath.exceptions.JMESPathError:
                return None  # e.g. length(null) on a body without that field: reported as missing
        for field in fields:
            if not isinstance(data, dict):
                return None
            data = data.get(field)
        return data


def _field_chain(node: Mapping[str, Any]) -> tuple[str, ...] | None:
    if node.get("type") == "field":
        return (str(node["value"]),)
    if node.get("type") == "subexpression":
        chain: tuple[str, ...] = ()
        for child in node.get("children", ()):
            part = _field_chain(child)
            if part is None:
                return None
            chain += part
        return chain
    return None


@dataclass(frozen=True, slots=True)
class StatusSet:
    codes: frozenset[int]
    classes: frozenset[int]
    """Hundreds digit of ``"2xx"``-style specs."""
    text: str
    """``[200, 503]`` / ``[2xx]``: how the spec reads in a reason."""

    @classmethod
    def of(cls, specs: Sequence[StatusSpec]) -> StatusSet:
        codes = frozenset(s for s in specs if isinstance(s, int))
        classes = frozenset(int(s[0]) for s in specs if isinstance(s, str))
        return cls(codes, classes, "[" + ", ".join(str(s) for s in specs) + "]")

    def __contains__(self, status: object) -> bool:
        return isinstance(status, int) and (status in self.codes or status // 100 in self.classes)

    def __bool__(self) -> bool:
        return bool(self.codes or self.classes)


@dataclass(frozen=True, slots=True)
class JsonCheck:
    """One compiled :class:`JsonAssertion`."""

    path: str
    expression: JsonPath
    equals: Any
    not_equals: Any
    one_of: tuple[Any, ...] | None
    regex: re.Pattern[str] | None
    min: float | None
    max: float | None
    exists: bool | None
    condition: str
    """What the assertion asks, for reasons: ``equals "degraded"``, ``≥ 1``, ``exists``."""

    @classmethod
    def of(cls, assertion: JsonAssertion) -> JsonCheck:
        given = assertion.model_fields_set
        equals = assertion.equals if "equals" in given else _MISSING
        not_equals = assertion.not_equals if "not_equals" in given else _MISSING
        one_of = tuple(assertion.one_of) if assertion.one_of is not None else None
        regex = re.compile(assertion.regex) if assertion.regex is not None else None
        parts: list[str] = []
        if equals is not _MISSING:
            parts.append(f"equals {show(equals)}")
        if not_equals is not _MISSING:
            parts.append(f"not equal to {show(not_equals)}")
        if one_of is not None:
            parts.append(f"one of {show(list(one_of))}")
        if regex is not None:
            parts.append(f"matches /{regex.pattern}/")
        if assertion.min is not None:
            parts.append(f"≥ {assertion.min:g}")
        if assertion.max is not None:
            parts.append(f"≤ {assertion.max:g}")
        if assertion.exists is not None:
            parts.append("exists" if assertion.exists else "is absent")
        return cls(
            path=assertion.path,
            expression=JsonPath(assertion.path),
            equals=equals,
            not_equals=not_equals,
            one_of=one_of,
            regex=regex,
            min=assertion.min,
            max=assertion.max,
            exists=assertion.exists,
            condition=" and ".join(parts) or "exists",
        )

    def failure(self, data: Any) -> str | None:
        """Why the assertion does not hold on ``data`` (parsed JSON), or ``None`` when it holds."""
        return self._check(self.expression.search(data), explain=True)

    def holds(self, value: Any) -> bool:
        """Whether the assertion holds for an already extracted ``value`` (no reason is formatted)."""
        return self._check(value, explain=False) is None

    def _check(self, value: Any, *, explain: bool) -> str | None:
        # Without ``explain`` a failure returns "" (not None), sparing the formatting: degraded_when
        # assertions usually do not hold, and that is the hot path.
        name = f"json {self.path}" if explain else ""
        if self.exists is False:
            if value is None:
                return None
            return f"{name} = {show(value)}, expected it to be absent" if explain else ""
        if value is None:
            # JMESPath cannot tell a missing key from null; null only passes an explicit `equals: null`.
            if (
                self.equals is None
                or (self.not_equals is not _MISSING and self.not_equals is not None)
                or (self.one_of is not None and None in self.one_of)
            ):
                return None
            if not explain:
                return ""
            return f"{name} is missing" + (
                "" if self.condition == "exists" else f", expected {self._expected()}"
            )
        if self.equals is not _MISSING and not _same(value, self.equals):
            return f"{name} = {show(value)}, expected {show(self.equals)}" if explain else ""
        if self.not_equals is not _MISSING and _same(value, self.not_equals):
            return f"{name} = {show(value)}, expected anything else" if explain else ""
        if self.one_of is not None and not any(_same(value, option) for option in self.one_of):
            return f"{name} = {show(value)}, expected one of {show(list(self.one_of))}" if explain else ""
        if self.regex is not None:
            if isinstance(value, dict | list):
                return (
                    f"{name} = {show(value)}, expected a string matching /{self.regex.pattern}/"
                    if explain
                    else ""
                )
            text = value if isinstance(value, str) else show(value)
            if not self.regex.search(text):
                return f"{name} = {show(value)}, expected to match /{self.regex.pattern}/" if explain else ""
        if self.min is not None or self.max is not None:
            if not _is_number(value):
                return f"{name} = {show(value)}, expected a number" if explain else ""
            if self.min is not None and value < self.min:
                return f"{name} = {show(value)}, expected ≥ {self.min:g}" if explain else ""
            if self.max is not None and value > self.max:
                return f"{name} = {show(value)}, expected ≤ {self.max:g}" if explain else ""
        return None

    def _expected(self) -> str:
        if self.equals is not _MISSING:
            return show(self.equals)
        if self.one_of is not None:
            return f"one of {show(list(self.one_of))}"
        return self.condition


@dataclass(frozen=True, slots=True)
class Checks:
    """Compiled ``Expectations`` + ``DegradedWhen`` of one request."""

    status: StatusSet
    body_regex: re.Pattern[str] | None
    json: tuple[JsonCheck, ...]
    headers: tuple[tuple[str, re.Pattern[str]], ...]
    max_latency_s: float | None
    degraded_latency_s: float | None
    degraded_json: tuple[JsonCheck, ...]
    degraded_status: StatusSet

    @property
    def needs_json(self) -> bool:
        return bool(self.json or self.degraded_json)

    @property
    def needs_text(self) -> bool:
        return self.needs_json or self.body_regex is not None


def compile_checks(expect: Expectations, degraded_when: DegradedWhen) -> Checks:
    return Checks(
        status=StatusSet.of(expect.status),
        body_regex=re.compile(expect.body_regex) if expect.body_regex is not None else None,
        json=tuple(JsonCheck.of(a) for a in expect.json_),
        headers=tuple((name, re.compile(pattern)) for name, pattern in expect.headers.items()),
        max_latency_s=expect.max_latency,
        degraded_latency_s=degraded_when.latency_over,
        degraded_json=tuple(JsonCheck.of(a) for a in degraded_when.json_),
        degraded_status=StatusSet.of(degraded_when.status),
    )


def failures(
    checks: Checks,
    status: int,
    headers: Mapping[str, str],
    text: str | None,
    data: Any,
    latency_s: float,
) -> list[str]:
    """Why the response fails ``Expectations`` (empty: it passes).

    ``text`` is the decoded body (``None`` when not needed), ``data`` its parsed JSON or :data:`NOT_JSON`.
    An unexpected status makes the body checks moot: the reason then quotes the start of the body instead,
    which is usually the error message the on-call engineer wants.
    """
    reasons: list[str] = []
    if status not in checks.status:
        reason = f"status {status} not in {checks.status.text}"
        if text:
            reason += f": {one_line(text, 300)}"
        return [reason]
    if checks.max_latency_s is not None and latency_s > checks.max_latency_s:
        reasons.append(f"latency {human_duration(latency_s)} over {human_duration(checks.max_latency_s)}")
    for name, pattern in checks.headers:
        value = headers.get(name)
        if value is None:
            reasons.append(f"header {name} missing")
        elif not pattern.search(value):
            reasons.append(f"header {name} = {show(value)}, expected to match /{pattern.pattern}/")
    if checks.body_regex is not None and not checks.body_regex.search(text or ""):
        reasons.append(f"body does not match /{checks.body_regex.pattern}/")
    if checks.json:
        if data is NOT_JSON:
            reasons.append("body is not JSON" + (f": {one_line(text, 80)}" if text else " (empty)"))
        else:
            for check in checks.json:
                failure = check.failure(data)
                if failure is not None:
                    reasons.append(failure)
    return reasons


def degraded(checks: Checks, status: int, data: Any, latency_s: float) -> list[str]:
    """Why an otherwise passing response counts as degraded (empty: it does not)."""
    reasons: list[str] = []
    if checks.degraded_status and status in checks.degraded_status:
        reasons.append(f"status {status} (degraded when in {checks.degraded_status.text})")
    if checks.degraded_latency_s is not None and latency_s > checks.degraded_latency_s:
        over = human_duration(checks.degraded_latency_s)
        reasons.append(f"latency {human_duration(latency_s)} over {over}")
    if data is not NOT_JSON:
        for check in checks.degraded_json:
            value = check.expression.search(data)
            if check.holds(value):
                reasons.append(f"json {check.path} = {show(value)}")
    return reasons
