"""What an SLI counts per minute, and which store series it reads.

A *source* is one SLI definition (kind, probe, labels, parameters); SLOs that measure the same thing with a
different objective or window share it. For every minute a source yields ``(good, total, events)``
(computed in bulk by ``ingest.py``):

- availability / error_rate: good = results - failures (- degraded unless ``degraded_is_good``), total =
  results.
- latency: good = results at or under the threshold (with ``count_failures_as_bad``: and not failed,
  ``min(fast, not failed)`` per series and minute), total = results.
- uptime: one slice: good when the minute's good-result ratio >= ``minute_good_ratio``.
- metric_threshold: one slice: good when the minute's max/min/avg/last observation is < below / > above.
- counted_ratio: total = the minute's sum of the ``total`` observations, good = total - the sum of the
  ``bad`` ones (events = total).

``events`` is the number of results (observations) behind the minute, for the low-traffic guard; a minute
with no events has no data. A series is read by a source when it is of the source's probe (and observation
name) and its labels include every label the SLI selects.
"""

from __future__ import annotations

from watchdog.config.slo import Sli


def source_key(sli: Sli) -> str:
    """Identity of the measurement: equal keys give equal per-minute values."""
    return sli.model_dump_json()
