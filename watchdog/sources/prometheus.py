"""PromQL instant queries over the Prometheus HTTP API (``GET /api/v1/query``)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from watchdog.core.redact import redact_url
from watchdog.sources.base import MetricSourceError, Sample

# node_exporter series, busiest instance wins when several answer.
NODE_CPU_PERCENT = '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[2m])))'
NODE_MEMORY_PERCENT = "100 * (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)"

class PrometheusMetricSource:
    """``url`` is the server's base URL (``http://127.0.0.1:9090``, with any path prefix)."""

    name = "prometheus"

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(headers=dict(headers or {}))

    def __repr__(self) -> str:
        return f"PrometheusMetricSource({redact_url(self.url)!r})"

    async def query(self, query: str, *, timeout_s: float = 5.0) -> Sequence[Sample]:
        where = redact_url(self.url)
        if self._client.is_closed:
            raise MetricSourceError(f"Prometheus source for {where} is closed")
        try:
            # httpx's timeout bounds each read, not the answer: a server trickling bytes would never trip it.
            async with asyncio.timeout(timeout_s):
                response = await self._client.get(
                    f"{self.url}/api/v1/query",
                    params={"query": query, "timeout": f"{max(timeout_s, 0.001):g}s"},
                    timeout=timeout_s,
                )
        except (httpx.TimeoutException, TimeoutError):
            raise MetricSourceError(f"Prometheus at {where} did not answer within {timeout_s:g}s") from None
        except Exception as exc:  # HTTPError, InvalidURL, an invalid port: only the type, never the URL
            raise MetricSourceError(f"Prometheus at {where} unreachable: {type(exc).__name__}") from None
        try:
            body: Any = response.json()
        except ValueError:
            raise MetricSourceError(
                f"Prometheus at {where} answered HTTP {response.status_code} without JSON"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error", "") if isinstance(body, dict) else ""
            kind = body.get("errorType", "") if isinstance(body, dict) else ""
            raise MetricSourceError(
                f"Prometheus rejected the query (HTTP {response.status_code} {kind}): {detail}".strip()
            )
        return _parse_data(body.get("data"))

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _number(pair: Any) -> tuple[float, float]:
    if not isinstance(pair, list) or len(pair) != 2:
        raise MetricSourceError(f"unexpected sample {pair!r} in Prometheus answer")
    ts, raw = pair
    try:
        return float(ts), float(raw)
    except (TypeError, ValueError):
        raise MetricSourceError(f"unexpected sample {pair!r} in Prometheus answer") from None


def _series(item: Any) -> tuple[dict[str, str], Any]:
    """(labels, item) of one series of a vector or matrix answer."""
    if not isinstance(item, dict) or not isinstance(item.get("metric") or {}, dict):
        raise MetricSourceError(f"unexpected series {item!r:.200} in Prometheus answer")
    return {str(k): str(v) for k, v in (item.get("metric") or {}).items()}, item


def _parse_data(data: Any) -> list[Sample]:
    if not isinstance(data, dict):
        raise MetricSourceError("Prometheus answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    samples: list[Sample] = []
    if kind == "vector" and isinstance(result, list):
        for raw in result:
            labels, item = _series(raw)
            ts, value = _number(item.get("value"))
            if math.isnan(value):
                continue
            samples.append(Sample(value, labels, ts))
    elif kind == "scalar":
        ts, value = _number(result)
        if not math.isnan(value):
            samples.append(Sample(value, {}, ts))
    elif kind == "matrix" and isinstance(result, list):
        for raw in result:
            labels, item = _series(raw)
            values = item.get("values") or []
            if not isinstance(values, list):
                raise MetricSourceError(f"unexpected values {values!r:.200} in Prometheus answer")
            if values:
                ts, value = _number(values[-1])
                if not math.isnan(value):
                    samples.append(Sample(value, labels, ts))
    else:
        raise MetricSourceError(f"unsupported Prometheus result type {kind!r}")
    return samples
