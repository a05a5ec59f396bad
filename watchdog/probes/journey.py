"""The ``journey`` probe kind: ordered HTTP steps sharing a cookie jar and variables.

* ``{{var}}`` is replaced in url, headers, params, body and JSON string values, from ``variables``, earlier
  captures and the step's ``for_each`` values. Templates are parsed once, at construction.
* ``for_each`` expands a step into one request per combination of values (the product of its keys); each
  is its own result labelled ``step=<name>`` plus the for_each keys (``lang=zhTW``) plus the probe labels.
  All expansions of a step run, sequentially (they are siblings: one failing language does not hide the
  state of the others); if any failed, the journey stops after that step.
* A failed step stops the journey. Later steps are **not** run and produce **no** result (a made-up
  "skipped" failure would burn their SLOs for a fault they never saw); the failing step's reason names the
  journey and the steps it stopped.
* Each run gets a fresh cookie jar; the HTTP client (and its connections) is reused across runs.
* The whole journey is bounded by ``timeout_s``; the step in flight at the deadline fails with a timeout.
* Credentials: a step's ``basic_auth``, else userinfo in its rendered URL (``base_url`` included), is sent
  as an ``Authorization`` header unless the step sets that header itself; targets show ``***@`` and
  reasons are scrubbed of the password (see :mod:`watchdog.probes._client`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx

from watchdog.config.probes import Capture, JourneyProbeConfig, JourneyStep
from watchdog.config.settings import ProbeDefaults
from watchdog.core.clock import Clock
from watchdog.core.redact import redact_url, scrub
from watchdog.core.results import Observation, Outcome, ProbeResult
from watchdog.probes._assertions import NOT_JSON, JsonPath, compile_checks
from watchdog.probes._client import (
    BasicCredentials,
    MissingPassword,
    credentials_from_env,
    describe_error,
    make_client,
    take_credentials,
    with_authorization,
)
from watchdog.probes.http import encode_body, evaluate, exchange, keepalive_for, outcome_of, probe_timing

_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")


class UndefinedVariable(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class CaptureMissing(Exception):
    """A step's capture found nothing to capture: the step fails with this reason."""


@dataclass(frozen=True, slots=True)
class Template:
    """A string with ``{{var}}`` placeholders, split once into literal parts and variable names."""

    parts: tuple[str, ...]
    """Even indexes are literals, odd indexes variable names."""

    @classmethod
    def parse(cls, text: str) -> Template:
        return cls(tuple(_VARIABLE.split(text)))

    @property
    def constant(self) -> bool:
        return len(self.parts) == 1

    def render(self, variables: Mapping[str, str]) -> str:
        if len(self.parts) == 1:
            return self.parts[0]
        out: list[str] = []
        for index, part in enumerate(self.parts):
            if index % 2 == 0:
                out.append(part)
            else:
                try:
                    out.append(variables[part])
                except KeyError:
                    raise UndefinedVariable(part) from None
        return "".join(out)


def _parse_json_templates(value: Any) -> Any:
    if isinstance(value, str):
        template = Template.parse(value)
        return value if template.constant else template
    if isinstance(value, dict):
        return {k: _parse_json_templates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_parse_json_templates(v) for v in value]
    return value


def _render_json(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, Template):
        return value.render(variables)
    if isinstance(value, dict):
        return {k: _render_json(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, variables) for v in value]
    return value


def _has_templates(value: Any) -> bool:
    if isinstance(value, Template):
        return True
    if isinstance(value, dict):
        return any(_has_templates(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_templates(v) for v in value)
    return False


def _join(base_url: str, url: str) -> str:
    """Absolute URLs stay; relative ones are appended to ``base_url`` (like httpx's ``base_url``)."""
    if "://" in url:
        return url
    if not base_url:
        raise ValueError(f"relative URL {url!r} but the journey has no base_url")
    return base_url.rstrip("/") + "/" + url.lstrip("/")


@dataclass(frozen=True, slots=True)
class _Capture:
    variable: str
    json_path: JsonPath | None
    spec: Capture
    regex: re.Pattern[str] | None

    @classmethod
    def of(cls, variable: str, spec: Capture) -> _Capture:
        return cls(
            variable=variable,
            json_path=JsonPath(spec.json_) if spec.json_ is not None else None,
            spec=spec,
            regex=re.compile(spec.regex) if spec.regex is not None else None,
        )

    def take(self, response: httpx.Response, cookies: httpx.Cookies, text: str | None, data: Any) -> str:
        spec = self.spec
        where = f"capture {self.variable}:"
        if self.json_path is not None:
            if data is NOT_JSON:
                raise CaptureMissing(f"{where} body is not JSON")
            value = self.json_path.search(data)
            if value is None:
                raise CaptureMissing(f"{where} json {spec.json_} not found")
            return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if spec.header is not None:
            header: str | None = response.headers.get(spec.header)
            if header is None:
                raise CaptureMissing(f"{where} header {spec.header} missing")
            return header
        if spec.cookie is not None:
            found = [c.value for c in cookies.jar if c.name == spec.cookie and c.value is not None]
            if not found:
                raise CaptureMissing(f"{where} cookie {spec.cookie} not set")
            return found[-1]
        assert self.regex is not None
        match = self.regex.search(text or "")
        if match is None:
            raise CaptureMissing(f"{where} body does not match /{self.regex.pattern}/")
        return match.group(1) if self.regex.groups else match.group(0)


class _Step:
    """A :class:`JourneyStep`, compiled: templates parsed, checks and captures compiled, labels built."""

    def __init__(self, step: JourneyStep, base_url: str, labels: Mapping[str, str]) -> None:
        self.name = step.name
        self.method = step.method
        self.follow_redirects = step.follow_redirects
        self.url = Template.parse(step.url)
        self.base_url = base_url
        headers = dict(step.headers)
        self.json_body = _parse_json_templates(step.json_body)
        if self.json_body is not None:
            encode_body(None, {}, headers)  # sets Content-Type: application/json unless given
        self.body = Template.parse(step.body) if step.body is not None else None
        templated = _has_templates(self.json_body) or (self.body is not None and not self.body.constant)
        self.static_content = None if templated else encode_body(step.body, step.json_body, {})
        self.headers = tuple((name, Template.parse(value)) for name, value in headers.items())
        self.params = tuple((name, Template.parse(value)) for name, value in step.params.items())
        self.checks = compile_checks(step.expect, step.degraded_when)
        self.captures = tuple(_Capture.of(name, spec) for name, spec in step.capture.items())
        self.want_text = any(c.spec.regex is not None or c.spec.json_ is not None for c in self.captures)
        self.want_json = any(c.spec.json_ is not None for c in self.captures)
        keys = list(step.for_each)
        self.expansions: tuple[tuple[Mapping[str, str], Mapping[str, str]], ...] = tuple(
            (
                MappingProxyType(dict(zip(keys, values, strict=True))),
                MappingProxyType({**labels, "step": step.name, **dict(zip(keys, values, strict=True))}),
            )
            for values in itertools.product(*(step.for_each[k] for k in keys))
        )
        self.static_target = (
            redact_url(_join(base_url, step.url)) if self.url.constant else redact_url(base_url or step.url)
        )
        self.credentials: BasicCredentials | None = None
        self.missing_password = ""
        if step.basic_auth is not None:
            try:
                self.credentials = credentials_from_env(step.basic_auth)
            except MissingPassword as exc:
                self.missing_password = str(exc)

    def build(
        self, client: httpx.AsyncClient, variables: Mapping[str, str]
    ) -> tuple[httpx.Request, str, BasicCredentials | None]:
        """(the request, its target for results, the credentials it carries)."""
        if self.missing_password:
            raise MissingPassword(self.missing_password)
        written = httpx.URL(_join(self.base_url, self.url.render(variables)))
        url, from_url = take_credentials(written)
        content: bytes | None
        if self.static_content is not None or (self.json_body is None and self.body is None):
            content = self.static_content
        elif self.json_body is not None:
            content = encode_body(None, _render_json(self.json_body, variables), {})
        else:
            assert self.body is not None
            content = self.body.render(variables).encode()
        headers = {k: v.render(variables) for k, v in self.headers}
        sent = with_authorization(headers, self.credentials or from_url)
        request = client.build_request(
            self.method,
            url,
            params={k: v.render(variables) for k, v in self.params} or None,
            headers=headers or None,
            content=content,
        )
        # The target is the URL as written (``***@`` when it carries credentials), with the params.
        shown = request.url.copy_with(userinfo=written.userinfo) if from_url else request.url
        return request, redact_url(str(shown)), sent


class JourneyProbe:
    """Ordered HTTP steps; one result per step run (see the module docstring for the rules).

    ``client``: inject one to share it (the caller then closes it); by default the probe owns a client.
    """

    kind = "journey"

    def __init__(
        self,
        config: JourneyProbeConfig,
        *,
        defaults: ProbeDefaults,
        clock: Clock,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.config = config
        self.name: str = config.name
        self.interval_s, self.timeout_s = probe_timing(config.interval, config.timeout, defaults)
        self._clock = clock
        self._steps = tuple(_Step(step, config.base_url, config.labels) for step in config.steps)
        self._owns_client = client is None
        self._client = client or make_client(
            self.timeout_s, keepalive_s=keepalive_for(self.interval_s), max_connections=4
        )
        self._closed = False

    async def run(self) -> list[ProbeResult]:
        results: list[ProbeResult] = []
        variables: dict[str, str] = dict(self.config.variables)
        cookies = httpx.Cookies()
        # The step in flight, so a journey-level timeout can be reported against it.
        in_flight: tuple[_Step, Mapping[str, str], float, float] | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                for index, step in enumerate(self._steps):
                    failed_here: list[int] = []
                    for values, labels in step.expansions:
                        in_flight = (step, labels, self._clock.now(), self._clock.monotonic())
                        result, captured = await self._run_step(step, values, labels, variables, cookies)
                        in_flight = None
                        if result.outcome is Outcome.FAILED:
                            failed_here.append(len(results))
                        else:
                            variables.update(captured)
                        results.append(result)
                    if failed_here:
                        suffix = self._stopped(index)
                        if suffix:
                            for i in failed_here:
                                results[i] = _with_reason(results[i], results[i].reason + suffix)
                        break
        except TimeoutError:
            if in_flight is not None:
                step, labels, started_at, started = in_flight
                index = self._steps.index(step)
                results.append(
                    ProbeResult(
                        probe=self.name,
                        kind=self.kind,
                        target=step.static_target,
                        outcome=Outcome.FAILED,
                        latency_s=self._clock.monotonic() - started,
                        started_at=started_at,
                        reason=f"timeout after {self.timeout_s:g} s (whole journey)" + self._stopped(index),
                        labels=labels,
                    )
                )
        return results

    def _stopped(self, index: int) -> str:
        later = [s.name for s in self._steps[index + 1 :]]
        if not later:
            return ""
        return (
            f" [journey {self.name} stopped at step {self._steps[index].name}; not run: {', '.join(later)}]"
        )

    async def _run_step(
        self,
        step: _Step,
        values: Mapping[str, str],
        labels: Mapping[str, str],
        variables: Mapping[str, str],
        cookies: httpx.Cookies,
    ) -> tuple[ProbeResult, dict[str, str]]:
        started_at = self._clock.now()
        started = self._clock.monotonic()
        target = step.static_target
        observations: tuple[Observation, ...] = ()
        captured: dict[str, str] = {}
        scope = {**variables, **values} if values else variables
        sent: BasicCredentials | None = None
        try:
            request, target, sent = step.build(self._client, scope)
            done = await exchange(
                self._client,
                request,
                clock=self._clock,
                started=started,
                follow_redirects=step.follow_redirects,
                cookies=cookies,
            )
            latency_s = done.latency_s
            observations = (Observation("http_status_code", float(done.response.status_code)),)
            failed, slow, text, data = evaluate(
                step.checks, done, want_text=step.want_text, want_json=step.want_json
            )
            if not failed:
                for capture in step.captures:
                    try:
                        captured[capture.variable] = capture.take(done.response, cookies, text, data)
                    except CaptureMissing as missing:
                        failed.append(str(missing))
            outcome, reason = outcome_of(failed, slow)
        except UndefinedVariable as undefined:
            outcome, reason = Outcome.FAILED, f"undefined variable {{{{{undefined.name}}}}}"
            latency_s = 0.0
        except MissingPassword as missing:  # raised before anything is sent
            outcome, reason, latency_s = Outcome.FAILED, str(missing), 0.0
        except Exception as exc:  # CancelledError is not an Exception: cancellation propagates
            outcome, reason = Outcome.FAILED, describe_error(exc, self.timeout_s)
            latency_s = self._clock.monotonic() - started
        if sent is not None:
            reason = scrub(reason, set(sent.secrets()))
        result = ProbeResult(
            probe=self.name,
            kind=self.kind,
            target=target,
            outcome=outcome,
            latency_s=latency_s,
            started_at=started_at,
            reason=reason,
            labels=labels,
            observations=observations,
        )
        return result, captured

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()


def _with_reason(result: ProbeResult, reason: str) -> ProbeResult:
    return dataclasses.replace(result, reason=reason)
