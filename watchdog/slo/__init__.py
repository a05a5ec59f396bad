"""SLO engine: windows, burn rates, error budgets and multiwindow multi-burn-rate alerts from the store's
per-minute aggregates.

    engine = SloEngine(config.slos, store, clock, firing=open_incidents)
    evaluation = await engine.evaluate()        # every few seconds
    evaluation.statuses                         # per SLO: SLI, budget, burn rates, alert state, forecast
    evaluation.signals                          # AlertSignal transitions for the alerting layer

Decisions (details in the modules named):

- Windows (``windows``): event SLIs use exactly ``[now - length, now]``: the current minute counts with what
  it has so far, the oldest minute pro rata. Time-slice SLIs (uptime, metric threshold) count a minute once it
  is over. Calendar months start at local midnight in an IANA zone and follow DST.
- Coverage (``burn``): a window is read as a share of the budget, so one the data covers only in part is
  not read as a full one. With data for the source beginning ``c`` seconds before the window's end
  (``c < length``; from the first minute with data, or from engine start when the data began in that minute:
  *data*, not engine start, so a restart over a full store changes nothing), the burn rate counts the
  window's total as ``total * length / max(c, 60 s)`` (the uncovered part had the same traffic and no
  errors). One failure among 75 results 150 s after a fresh start is 0.56x over 1 h, not 13.3x over every
  window; a total outage still fires the 14.4x / 1 h page after 52 s, the Workbook's time for a full window.
  Time-slice SLIs count covered minutes the same way. Budgets (the SLO window) are not normalised.
- Alerts (``burn``, ``engine``): a rule fires when both its windows exceed the rate *and* so does its
  severity's shortest short window (5 m for both page rules), each window holding ``min_events`` events to
  count (a shortest window that does not count is replaced by the rule's own short one). A firing rule
  resolves once that condition has been false for its ``resolve_after`` (default: a tenth of that shortest
  window: 30 s for both pages) and the fault is over (``engine._fault_is_over``): the good events since the
  last bad one are conclusive at the rate the incident showed, or the rule's short window is clean. So a
  page resolves 5.5 min after a hard fault or short burst stops, not when the 30-minute window empties
  (33 min); a sustained 1 % burn does not flap; and stale errors in the long windows cannot re-fire a
  resolved rule. Signals are per SLO and severity (page, ticket) plus ``no_data``: firing when the first
  rule of the severity fires, resolved when the last one has resolved. A resolve states the incident's
  cost: the bad events from the leading rule's short window at firing until the resolve, as a share of the
  budget.
- No data (``burn``): ``ignore`` (burn 0, nothing fires), ``alert`` (a ``no_data`` signal of
  ``no_data_severity`` once ``no_data_after`` passed without data, also counted from engine start), ``bad``
  (minutes without data beyond ``no_data_after`` are bad minutes, or that many bad events as an average
  minute of the window had).
- Budgets (``budget``): remaining = 1 - bad / allowed; negative when overspent, reported (and exported)
  unclamped; never NaN or infinite. The exhaustion forecast extrapolates the 1 h and 6 h burn rates.
- Cost (``series``, ``ingest``): cumulative per-minute counters per SLI source; the span is read once, then
  each tick re-reads the last 3 minutes. Independent of the number of probe results (bench/RESULTS-slo.md).
"""

from watchdog.slo.budget import Budget, budget, exhaustion_at
from watchdog.slo.burn import RuleState, WindowStats, step_rule, window_stats
from watchdog.slo.engine import AggregateReader, SloEngine
from watchdog.slo.model import AlertSignal, BudgetHistory, Evaluation, RuleStatus, SloStatus
from watchdog.slo.windows import Period, calendar_month_bounds, slo_period

__all__ = [
    "AggregateReader",
    "AlertSignal",
    "Budget",
    "BudgetHistory",
    "Evaluation",
    "Period",
    "RuleState",
    "RuleStatus",
    "SloEngine",
    "SloStatus",
    "WindowStats",
    "budget",
    "calendar_month_bounds",
    "exhaustion_at",
    "slo_period",
    "step_rule",
    "window_stats",
]
