"""An in-memory MetricSource for tests: values are set by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from watchdog.sources.base import MetricSourceError, Sample

FakeAnswer = float | Sequence[Sample] | Exception


class FakeMetricSource:
    """Answers each query from ``answers``: a number (one sample), samples, or an exception to raise.

    Unknown queries raise ``MetricSourceError`` like a real source would for an invalid query. ``delay_s``
    simulates a slow source (the timeout applies to it as to a real one).
    """

    name = "fake"

    def __init__(self, answers: Mapping[str, FakeAnswer] | None = None, *, delay_s: float = 0.0) -> None:
        self.answers: dict[str, FakeAnswer] = dict(answers or {})
        self.delay_s = delay_s
        self.queries: list[str] = []
        self.closed = False

    def set(self, query: str, answer: FakeAnswer) -> None:
        self.answers[query] = answer

    async def query(self, query: str, *, timeout_s: float = 5.0) -> Sequence[Sample]:
        self.queries.append(query)
        if self.delay_s:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.sleep(self.delay_s)
            except TimeoutError:
                raise MetricSourceError(f"fake source did not answer within {timeout_s:g}s") from None
        if query not in self.answers:
            raise MetricSourceError(f"fake source does not know query {query!r}")
        answer = self.answers[query]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, int | float):
            return [Sample(float(answer))]
        return list(answer)

    async def aclose(self) -> None:
        self.closed = True
