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
- Alerts (``burn``, ``engine``): a rule fires when both its windows exceed the rate (each window must hold
  ``min_events`` events to count); a firing rule resolves once its short window has been back under the rate
  for ``resolve_after`` (default: a tenth of the short window, 30 s for the 5-minute page), so the 14.4x page
  resolves ~5.5 minutes after errors stop and a burn that dips under the rate for a few seconds does not flap.
  Signals are per SLO and severity (page, ticket) plus ``no_data``: firing when the first rule of the
  severity fires, resolved when the last one has resolved.
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
