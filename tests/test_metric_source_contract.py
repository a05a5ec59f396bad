"""The MetricSource contract, one suite for every kind: FakeMetricSource, ProcMetricSource (this host's /proc)
and PrometheusMetricSource pointed at a loopback server speaking the Prometheus HTTP API (no real Prometheus
here; tests/test_pg_metric_sources.py runs one with node_exporter).

* ``query`` returns Samples: finite float values, str→str labels, an optional float timestamp;
* a query the source does not understand, or a source that cannot answer, raises ``MetricSourceError`` (never
  another exception type) with a reason; a slow source is cut at ``timeout_s``;
* ``aclose`` is idempotent, and a query after it answers or raises ``MetricSourceError``.

Then each kind's own promises; for Prometheus: HTTP 500/429, errors in the JSON, malformed answers, hanging
and trickling servers all become ``MetricSourceError`` whose message never shows credentials from the URL.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from loopback import closed_port, hanging_server, serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from watchdog.sources import (
    NODE_MEMORY_PERCENT,
    FakeMetricSource,
    MetricSource,
    MetricSourceError,
    ProcMetricSource,
    PrometheusMetricSource,
    Sample,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

TIMEOUT_S = 0.5
SECRET = "s3cr3t-pa55"
TS = 1_767_225_600.0

# -- a loopback server speaking the Prometheus HTTP API ------------------------------------------------------
#
# GET <base>/api/v1/query?query=…&timeout=…; <base> may carry a mode as its first path segment
# (http://127.0.0.1:PORT/<mode>) making the server misbehave in one way.

UP = "up"
"""Two series with labels."""
MEMORY = NODE_MEMORY_PERCENT
"""One series, the number the host check reads."""
NO_DATA = 'node_memory_DoesNotExist_bytes{job="node"}'
BAD_QUERY = "rate(node_cpu_seconds_total["


def _vector(*series: tuple[Mapping[str, str], str]) -> dict[str, Any]:
    result = [{"metric": dict(m), "value": [TS, v]} for m, v in series]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"status": "error", "errorType": kind, "error": message}


def _answer(query: str) -> Response:
    if query == UP:
        return JSONResponse(
            _vector(
                ({"__name__": "up", "job": "node", "instance": "db-1:9100"}, "1"),
                ({"__name__": "up", "job": "node", "instance": "db-2:9100"}, "0"),
            )
        )
    if query == MEMORY:
        return JSONResponse(_vector(({"instance": "db-1:9100"}, "42.5")))
    if query == "scalar(42)":
        return JSONResponse({"status": "success", "data": {"resultType": "scalar", "result": [TS, "42"]}})
    if query == "up[1m]":
        values = [[TS - 30, "0"], [TS, "1"]]
        result = [{"metric": {"instance": "db-1:9100"}, "values": values}]
        return JSONResponse({"status": "success", "data": {"resultType": "matrix", "result": result}})
    if query == "nan_series":
        body = _vector(({"instance": "a"}, "NaN"), ({"instance": "b"}, "7"))
        return JSONResponse(body)
    if query == "nan_matrix":
        result = [{"metric": {"instance": "a"}, "values": [[TS, "NaN"]]}]
        return JSONResponse({"status": "success", "data": {"resultType": "matrix", "result": result}})
    if query == NO_DATA:
        return JSONResponse(_vector())
    # What Prometheus answers for a query it cannot parse.
    return JSONResponse(_error("bad_data", f'invalid parameter "query": 1:1: parse error: {query!r}'), 400)


MALFORMED: dict[str, Any] = {
    "result-not-objects": {"status": "success", "data": {"resultType": "vector", "result": [1, 2]}},
    "metric-not-object": {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": "up", "value": [TS, "1"]}]},
    },
    "value-not-a-number": {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [TS, "lots"]}]},
    },
    "values-not-a-list": {
        "status": "success",
        "data": {"resultType": "matrix", "result": [{"metric": {}, "values": {"a": 1}}]},
    },
    "no-data": {"status": "success"},
    "string-result": {"status": "success", "data": {"resultType": "string", "result": [TS, "x"]}},
    "not-an-object": ["status", "success"],
}


@dataclass
class PromServer:
    url: str
    requests: list[Mapping[str, str]] = field(default_factory=list)


def prometheus_app(seen: list[Mapping[str, str]]) -> Starlette:
    async def query(request: Request) -> Response:
        params = request.query_params
        seen.append({**params, "authorization": request.headers.get("authorization", "")})
        mode = request.path_params.get("mode", "")
        if mode == "auth":
            expected = "Basic " + base64.b64encode(f"watchdog:{SECRET}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return PlainTextResponse("Unauthorized\n", 401)
        elif mode == "http500":
            return PlainTextResponse("Internal Server Error\n", 500)
        elif mode == "http500json":
            return JSONResponse(_error("internal", "tsdb: out of memory"), 500)
        elif mode == "http429":
            return PlainTextResponse("Too Many Requests\n", 429, headers={"Retry-After": "30"})
        elif mode == "status-error":
            # Prometheus 422: the query parsed but failed to execute.
            return JSONResponse(_error("execution", "query processing would load too many samples"), 422)
        elif mode == "status-error-200":
            return JSONResponse(_error("internal", "proxy says no"), 200)
        elif mode == "html":
            return Response("<html><body>login</body></html>", 200, media_type="text/html")
        elif mode in MALFORMED:
            return Response(json.dumps(MALFORMED[mode]), 200, media_type="application/json")
        elif mode == "trickle":

            async def drip() -> AsyncIterator[bytes]:
                for _ in range(40):  # a byte every 0.1 s: no single read ever waits TIMEOUT_S
                    yield b" "
                    await asyncio.sleep(0.1)
                yield json.dumps(_vector()).encode()

            return StreamingResponse(drip(), media_type="application/json")
        return _answer(params.get("query", ""))

    return Starlette(
        routes=[
            Route("/api/v1/query", query, methods=["GET", "POST"]),
            Route("/{mode}/api/v1/query", query, methods=["GET", "POST"]),
        ]
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prom() -> AsyncIterator[PromServer]:
    seen: list[Mapping[str, str]] = []
    async with serve_asgi(prometheus_app(seen)) as url:
        yield PromServer(url, seen)


def with_credentials(url: str, password: str = SECRET) -> str:
    return url.replace("http://", f"http://watchdog:{password}@", 1)


# -- the contract --------------------------------------------------------------------------------------------


@dataclass
class Subject:
    source: MetricSource
    queries: list[str]
    """Queries that answer with at least one sample."""
    invalid: str
    """A query this source does not understand."""
    broken: MetricSource
    """A source of the same kind that cannot answer at all."""
    broken_query: str


def host_memory_percent() -> float:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        info[key] = float(rest.split()[0])
    return 100.0 * (1 - info["MemAvailable"] / info["MemTotal"])


def make_subject(kind: str, prom_url: str, tmp_path: Path) -> Subject:
    if kind == "fake":
        labelled = [Sample(1.0, {"instance": "db-1:9100"}), Sample(0.0, {"instance": "db-2:9100"}, TS)]
        return Subject(
            FakeMetricSource({"cpu_percent": 42.0, "memory_percent": host_memory_percent(), "up": labelled}),
            ["cpu_percent", "memory_percent", "up"],
            "no such query(",
            FakeMetricSource({"memory_percent": MetricSourceError("fake source unreachable")}),
            "memory_percent",
        )
    if kind == "proc":
        return Subject(
            ProcMetricSource(first_window_s=0.02),
            ["cpu_percent", "memory_percent", "load1"],
            "cpu_seconds{mode=",
            ProcMetricSource(tmp_path / "no-proc-here"),
            "memory_percent",
        )
    assert kind == "prometheus"
    return Subject(
        PrometheusMetricSource(prom_url),
        [UP, MEMORY, "scalar(42)", "up[1m]"],
        BAD_QUERY,
        PrometheusMetricSource(f"http://127.0.0.1:{closed_port()}"),
        MEMORY,
    )


KINDS = ["fake", "proc", "prometheus"]


@pytest_asyncio.fixture(params=KINDS, loop_scope="module")
async def subject(request: pytest.FixtureRequest, prom: PromServer, tmp_path: Path) -> AsyncIterator[Subject]:
    s = make_subject(request.param, prom.url, tmp_path)
    try:
        yield s
    finally:
        await s.source.aclose()
        await s.broken.aclose()


def check_samples(samples: Sequence[Sample]) -> None:
    assert samples, "this query has data"
    for sample in samples:
        assert isinstance(sample, Sample)
        assert type(sample.value) is float and math.isfinite(sample.value)
        assert isinstance(sample.labels, Mapping)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in sample.labels.items())
        assert sample.timestamp is None or (type(sample.timestamp) is float and sample.timestamp > 0)


async def test_satisfies_the_protocol(subject: Subject) -> None:
    assert isinstance(subject.source, MetricSource)
    assert isinstance(subject.source.name, str) and subject.source.name
    assert subject.source.name == subject.broken.name


async def test_queries_return_finite_samples_with_labels(subject: Subject) -> None:
    for query in subject.queries:
        check_samples(await subject.source.query(query, timeout_s=5))


async def test_concurrent_queries(subject: Subject) -> None:
    answers = await asyncio.gather(*(subject.source.query(q, timeout_s=5) for q in subject.queries * 3))
    for samples in answers:
        check_samples(samples)


async def test_a_query_it_does_not_understand_raises_metric_source_error(subject: Subject) -> None:
    with pytest.raises(MetricSourceError) as info:
        await subject.source.query(subject.invalid, timeout_s=5)
    assert str(info.value).strip()
    check_samples(await subject.source.query(subject.queries[0], timeout_s=5))  # still usable afterwards


async def test_a_source_that_cannot_answer_raises_metric_source_error(subject: Subject) -> None:
    started = time.monotonic()
    with pytest.raises(MetricSourceError) as info:
        await subject.broken.query(subject.broken_query, timeout_s=TIMEOUT_S)
    assert time.monotonic() - started < TIMEOUT_S + 1
    assert str(info.value).strip()


async def test_aclose_is_idempotent_and_query_after_it_raises_only_metric_source_error(
    subject: Subject,
) -> None:
    await subject.source.query(subject.queries[0], timeout_s=5)
    await subject.source.aclose()
    await subject.source.aclose()
    try:
        samples = await subject.source.query(subject.queries[0], timeout_s=5)
    except MetricSourceError as exc:
        assert str(exc).strip()
    else:
        check_samples(samples)
    await subject.broken.aclose()
    await subject.broken.aclose()


# Where "no data" and "too slow" are meaningful: /proc always has the numbers it knows, and never blocks.


@pytest.mark.parametrize("kind", ["fake", "prometheus"])
async def test_no_data_is_an_empty_result_not_an_error(kind: str, prom: PromServer) -> None:
    source: MetricSource
    if kind == "fake":
        source, query = FakeMetricSource({"nothing": []}), "nothing"
    else:
        source, query = PrometheusMetricSource(prom.url), NO_DATA
    try:
        assert list(await source.query(query, timeout_s=5)) == []
    finally:
        await source.aclose()


@pytest.mark.parametrize("kind", ["fake", "prometheus"])
async def test_a_hanging_source_raises_within_its_timeout(kind: str) -> None:
    async with hanging_server() as url:
        source: MetricSource
        if kind == "fake":
            source = FakeMetricSource({"memory_percent": 1.0}, delay_s=60)
        else:
            source = PrometheusMetricSource(with_credentials(url))
        started = time.monotonic()
        try:
            with pytest.raises(MetricSourceError) as info:
                await source.query("memory_percent", timeout_s=TIMEOUT_S)
        finally:
            await source.aclose()
    assert time.monotonic() - started < TIMEOUT_S + 1
    assert f"within {TIMEOUT_S:g}s" in str(info.value)
    assert SECRET not in str(info.value)


# -- FakeMetricSource ----------------------------------------------------------------------------------------


async def test_fake_scripted_failure_is_raised_and_queries_are_recorded() -> None:
    boom = MetricSourceError("monitoring API quota exceeded")
    fake = FakeMetricSource({"cpu_percent": 10.0})
    assert await fake.query("cpu_percent") == [Sample(10.0)]
    fake.set("cpu_percent", boom)
    with pytest.raises(MetricSourceError) as info:
        await fake.query("cpu_percent")
    assert info.value is boom
    with pytest.raises(MetricSourceError, match="does not know query 'disk'"):
        await fake.query("disk")
    assert fake.queries == ["cpu_percent", "cpu_percent", "disk"]
    await fake.aclose()
    assert fake.closed


async def test_fake_slow_answer_within_the_timeout_succeeds() -> None:
    fake = FakeMetricSource({"cpu_percent": 5.0}, delay_s=0.02)
    assert await fake.query("cpu_percent", timeout_s=1) == [Sample(5.0)]


# -- ProcMetricSource ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "query"),
    [
        ({"stat": "cpu  a b c d\n"}, "cpu_percent"),
        ({"stat": "cpu 1 2\n"}, "cpu_percent"),
        ({"stat": "intr 1 2 3\n"}, "cpu_percent"),
        ({"meminfo": "MemTotal: lots kB\nMemAvailable: 1 kB\n"}, "memory_percent"),
        ({"meminfo": "MemFree: 1 kB\n"}, "memory_percent"),
        ({"loadavg": ""}, "load1"),
        ({"loadavg": "high 0.2 0.1 1/100 42\n"}, "load1"),
    ],
)
async def test_proc_unexpected_file_contents_raise_metric_source_error(
    files: dict[str, str], query: str, tmp_path: Path
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    source = ProcMetricSource(tmp_path, first_window_s=0.01)
    with pytest.raises(MetricSourceError) as info:
        await source.query(query, timeout_s=TIMEOUT_S)
    assert str(tmp_path) in str(info.value)
    await source.aclose()


async def test_proc_reads_a_given_root(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n")
    (tmp_path / "loadavg").write_text("0.75 0.50 0.25 1/123 4567\n")
    source = ProcMetricSource(tmp_path)
    assert [s.value for s in await source.query("memory_percent")] == [75.0]
    assert [s.value for s in await source.query(" load1 ")] == [0.75]


# -- PrometheusMetricSource ----------------------------------------------------------------------------------


async def test_prometheus_parses_vector_scalar_and_matrix(prom: PromServer) -> None:
    source = PrometheusMetricSource(prom.url + "/")
    try:
        up = await source.query(UP, timeout_s=5)
        assert [(s.value, dict(s.labels), s.timestamp) for s in up] == [
            (1.0, {"__name__": "up", "job": "node", "instance": "db-1:9100"}, TS),
            (0.0, {"__name__": "up", "job": "node", "instance": "db-2:9100"}, TS),
        ]
        assert await source.query("scalar(42)", timeout_s=5) == [Sample(42.0, {}, TS)]
        # A range vector: the last value of each series.
        assert await source.query("up[1m]", timeout_s=5) == [Sample(1.0, {"instance": "db-1:9100"}, TS)]
        # NaN is "no number": dropped, in vectors and in matrices alike.
        assert await source.query("nan_series", timeout_s=5) == [Sample(7.0, {"instance": "b"}, TS)]
        assert await source.query("nan_matrix", timeout_s=5) == []
    finally:
        await source.aclose()


async def test_prometheus_sends_the_query_and_the_server_side_timeout(prom: PromServer) -> None:
    source = PrometheusMetricSource(prom.url)
    try:
        await source.query(MEMORY, timeout_s=2.5)
    finally:
        await source.aclose()
    request = prom.requests[-1]
    assert request["query"] == MEMORY
    assert request["timeout"] == "2.5s"


async def test_prometheus_credentials_in_the_url_are_used_and_never_shown(prom: PromServer) -> None:
    source = PrometheusMetricSource(with_credentials(prom.url + "/auth"))
    try:
        check_samples(await source.query(MEMORY, timeout_s=5))
        assert prom.requests[-1]["authorization"].startswith("Basic ")
        assert SECRET not in repr(source)
    finally:
        await source.aclose()

    wrong = PrometheusMetricSource(with_credentials(prom.url + "/auth", password="wr0ng-pa55"))
    try:
        with pytest.raises(MetricSourceError) as info:
            await wrong.query(MEMORY, timeout_s=5)
    finally:
        await wrong.aclose()
    assert "401" in str(info.value)
    assert "wr0ng-pa55" not in str(info.value) and "wr0ng-pa55" not in repr(wrong)


FAILURES = {
    "http500": "HTTP 500",
    "http500json": "tsdb: out of memory",
    "http429": "HTTP 429",
    "status-error": "too many samples",
    "status-error-200": "proxy says no",
    "html": "without JSON",
    **{mode: "Prometheus" for mode in MALFORMED},
}


@pytest.mark.parametrize("mode", list(FAILURES))
async def test_prometheus_failures_raise_metric_source_error_without_credentials(
    mode: str, prom: PromServer
) -> None:
    source = PrometheusMetricSource(with_credentials(f"{prom.url}/{mode}"))
    try:
        with pytest.raises(MetricSourceError) as info:
            await source.query(MEMORY, timeout_s=5)
    finally:
        await source.aclose()
    message = str(info.value)
    assert FAILURES[mode] in message
    assert SECRET not in message
    assert SECRET not in repr(source)


async def test_prometheus_rejected_query_says_why(prom: PromServer) -> None:
    source = PrometheusMetricSource(with_credentials(prom.url))
    try:
        with pytest.raises(MetricSourceError) as info:
            await source.query(BAD_QUERY, timeout_s=5)
    finally:
        await source.aclose()
    assert "HTTP 400 bad_data" in str(info.value) and "parse error" in str(info.value)
    assert SECRET not in str(info.value)


async def test_prometheus_trickling_server_is_cut_at_the_timeout(prom: PromServer) -> None:
    source = PrometheusMetricSource(with_credentials(prom.url + "/trickle"))
    started = time.monotonic()
    try:
        with pytest.raises(MetricSourceError) as info:
            await source.query(MEMORY, timeout_s=TIMEOUT_S)
    finally:
        await source.aclose()
    assert time.monotonic() - started < TIMEOUT_S + 1
    assert f"did not answer within {TIMEOUT_S:g}s" in str(info.value)
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        f"http://watchdog:{SECRET}@127.0.0.1:{closed_port()}",  # refused
        f"http://watchdog:{SECRET}@127.0.0.1:99999",  # no such port
        f"http://watchdog:{SECRET}@[::1",  # not a URL httpx can parse
        f"ftp://watchdog:{SECRET}@127.0.0.1:21",  # not HTTP
    ],
)
async def test_prometheus_unreachable_raises_metric_source_error_without_credentials(url: str) -> None:
    source = PrometheusMetricSource(url)
    started = time.monotonic()
    try:
        with pytest.raises(MetricSourceError) as info:
            await source.query(MEMORY, timeout_s=TIMEOUT_S)
    finally:
        await source.aclose()
    assert time.monotonic() - started < TIMEOUT_S + 1
    assert "unreachable" in str(info.value)
    assert SECRET not in str(info.value)


async def test_prometheus_with_a_caller_owned_client(prom: PromServer) -> None:

    async with httpx.AsyncClient() as client:
        source = PrometheusMetricSource(prom.url, client=client)
        check_samples(await source.query(MEMORY, timeout_s=5))
        await source.aclose()
        await source.aclose()
        assert not client.is_closed  # not the source's to close
        check_samples(await source.query(MEMORY, timeout_s=5))
    with pytest.raises(MetricSourceError, match="closed"):
        await source.query(MEMORY, timeout_s=5)
