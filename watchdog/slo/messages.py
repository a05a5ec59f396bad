"""The words of SLO signals and statuses: what a page, a resolve or a report says. Kept apart from the math
so the wording can change (and be tested) without touching evaluation.

Words are for people: a budget past exhaustion reads "exhausted (burned 90x the budget)", never "-8900 %
left"; the exact numbers stay in the JSON report and on /metrics.
"""

from __future__ import annotations

from typing import Literal

from watchdog.config.slo import TIME_SLICE_KINDS
from watchdog.core.durations import format_duration, human_duration
from watchdog.slo.model import RuleStatus, SloStatus

SloState = Literal["ok", "burning", "exhausted", "no data"]


def burn_rate(x: float) -> str:
    """``14.4x``; three significant figures at most."""
    return f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def budget_state(remaining: float) -> str:
    """``12.3 % left``, or past exhaustion ``exhausted (burned 90.9x the budget)``."""
    if remaining > 0:
        return f"{remaining * 100:.1f} % left"
    return f"exhausted (burned {burn_rate(1.0 - remaining)} the budget)"


def budget_left(remaining: float, window_label: str) -> str:
    """The budget clause of a page or resolve summary."""
    if remaining > 0:
        return f"{remaining:.1%} of the {window_label} budget left"
    return f"{window_label} budget exhausted (burned {burn_rate(1.0 - remaining)} the budget)"


def burn_firing(
    slo: str,
    severity: str,
    long_rate: float,
    long_label: str,
    short_rate: float,
    short_label: str,
    threshold: float,
    left: str,
) -> str:
    return (
        f"{slo}: error budget burning {burn_rate(long_rate)} over {long_label}"
        f" and {burn_rate(short_rate)} over {short_label}"
        f" ({severity} above {burn_rate(threshold)}); {left}"
    )


def incident_cost(share: float, bad: float, window_label: str, time_slices: bool) -> str:
    """What an incident cost: ``the incident spent 4.1 % of the 30d budget (83 bad results)``."""
    unit = "minutes" if time_slices else "results"
    if unit == "results" and _count(bad) == "1":
        unit = "result"
    elif unit == "minutes" and _count(bad) == "1":
        unit = "minute"
    what = f"({_count(bad)} bad {unit})"
    if share < 1.0:
        return f"the incident spent {share * 100:.1f} % of the {window_label} budget {what}"
    # Past the whole budget (a young window allows little): "2.3x the budget", as ``budget_state`` words it.
    return f"the incident spent {burn_rate(share)} the {window_label} budget {what}"


def burn_resolved(slo: str, severity: str, left: str, cost: str | None = None) -> str:
    """``api: burn rate back under the page thresholds; the incident spent ...; 95.9% of ... left``."""
    spent = "" if cost is None else f"; {cost}"
    return f"{slo}: burn rate back under the {severity} thresholds{spent}; {left}"


def no_data_firing(slo: str, probe: str, silent_for_s: float | None) -> str:
    since = "ever" if silent_for_s is None else human_duration(silent_for_s)
    return f"{slo}: no data from probe {probe} for {since} (no_data: alert)"


def no_data_resolved(slo: str, probe: str) -> str:
    return f"{slo}: data from probe {probe} is back"


# -- statuses -------------------------------------------------------------------------------------------


def _over(rule: RuleStatus) -> bool:
    """The rule's fire condition as the engine decides it: its windows (both, and the resolve window) count
    and exceed the rate."""
    return (
        rule.long_counts
        and rule.short_counts
        and rule.resolve_counts
        and rule.long_burn_rate > rule.burn_rate
        and rule.short_burn_rate > rule.burn_rate
        and rule.resolve_burn_rate > rule.burn_rate
    )


def slo_state(status: SloStatus) -> SloState:
    """One word for an SLO, consistent wherever it is shown (alerts are reported beside it):

    - ``no data``: nothing in the SLO window, or the probe has gone silent (and nothing worse is true),
    - ``exhausted``: the window's budget is spent, whether or not an alert fires right now,
    - ``burning``: on course to exhaust the budget this period, or a rule's windows are over its rate,
    - ``ok``: none of these.
    """
    if status.sli is None:
        return "no data"
    if status.budget.exhausted:
        return "exhausted"
    if status.exhaustion_at is not None or any(_over(r) for r in status.rules):
        return "burning"
    if status.no_data:
        return "no data"
    return "ok"


def _count(x: float) -> str:
    """Window counts are pro rata at the oldest minute: ``9`` or ``8.6``."""
    return f"{x:.0f}" if abs(x - round(x)) < 0.05 else f"{x:.1f}"


def _unit(status: SloStatus) -> str:
    return "minutes" if status.kind in TIME_SLICE_KINDS else "results"


def budget_words(status: SloStatus) -> str:
    """The budget in words, with what it is made of when exhausted (a young window allows very little:
    30 results at 99.9 % allow 0.03 bad ones, so 9 are 300 times the budget)."""
    b = status.budget
    words = f"{status.window} budget {budget_state(b.remaining)}"
    if not b.exhausted:
        return words
    return (
        f"{words}: {_count(b.spent)} bad {_unit(status)} in the window,"
        f" where {status.objective * 100:g} % allows {b.allowed:.3g}"
    )


def explain_rule(status: SloStatus, rule: RuleStatus) -> str:
    """What a rule sees and, when it fires, what resolves it, from the engine's own status.

    A firing rule resolves once its fire condition has been false for ``rule.resolve_after`` (the engine's
    hysteresis) and the errors are over: the condition needs the rule's resolve window (the severity's
    shortest short window) over the rate, and the quiet since the last bad event must be conclusive at the
    rate the incident showed (``rule.quiet_needed``), so with no new errors a rule resolves at the latest
    ``quiet_needed`` plus ``resolve_after`` from now.
    """
    resolve_after_s = rule.resolve_after
    unit = _unit(status)
    rate = burn_rate(rule.burn_rate)
    if not rule.firing:
        return (
            f"{rule.rule}: quiet ({rule.long_window} at {burn_rate(rule.long_burn_rate)},"
            f" {rule.short_window} at {burn_rate(rule.short_burn_rate)}; fires above {rate} over both)"
        )
    if rule.clear_since is None and rule.resolve_counts and rule.resolve_burn_rate <= rule.burn_rate:
        # The window is back under the rate; the quiet is not yet long enough to be sure.
        rate_seen = "" if rule.fault_rate is None else f" at the {rule.fault_rate:.2%} the incident failed"
        text = (
            f"{rule.rule}: its {rule.resolve_window} window is back under {rate}"
            f" ({burn_rate(rule.resolve_burn_rate)}); it resolves once the quiet since the last bad one is"
            f" long enough to be sure the errors stopped{rate_seen}"
        )
        return text + _latest(status, rule)
    if rule.clear_since is None:
        gate = status.windows.get(rule.resolve_window)
        contents = "errors" if gate is None else f"{_count(gate.bad)} bad of {_count(gate.total)} {unit}"
        hold = f" for {format_duration(resolve_after_s)}"
        text = (
            f"{rule.rule}: its {rule.resolve_window} window still holds {contents}"
            f" (burn {burn_rate(rule.resolve_burn_rate)}, over {rate}); it resolves once that window has"
            f" stayed under {rate}{hold}"
        )
        return text + _latest(status, rule)
    # Clearing: the condition is false (a window under the rate, or too quiet to count) since clear_since.
    if not rule.resolve_counts:
        why = f"its {rule.resolve_window} window has too few {unit} to count"
    elif rule.resolve_burn_rate <= rule.burn_rate:
        why = f"its {rule.resolve_window} window is back under {rate} ({burn_rate(rule.resolve_burn_rate)})"
    elif not rule.short_counts:
        why = f"its {rule.short_window} window has too few {unit} to count"
    elif rule.short_burn_rate <= rule.burn_rate:
        why = f"its {rule.short_window} window is back under {rate} ({burn_rate(rule.short_burn_rate)})"
    elif not rule.long_counts:
        why = f"its {rule.long_window} window has too few {unit} to count"
    else:
        why = f"its {rule.long_window} window is back under {rate} ({burn_rate(rule.long_burn_rate)})"
    bound = _resolve_bound(status, rule)
    if bound is None:
        return f"{rule.rule}: resolving, {why}; it resolves once that has held long enough"
    return (
        f"{rule.rule}: resolving, {why}; it resolves in {human_duration(bound)} if that holds"
        f" ({format_duration(resolve_after_s)} in a row)"
    )


def _latest(status: SloStatus, rule: RuleStatus) -> str:
    bound = _resolve_bound(status, rule)
    return "" if bound is None else f", at the latest {human_duration(bound)} from now if no new errors come"


def _resolve_bound(status: SloStatus, rule: RuleStatus) -> float | None:
    """Seconds until a firing rule resolves at the latest, if no new errors come (None: unknown)."""
    if rule.clear_since is not None:
        return max(0.0, rule.resolve_after - (status.evaluated_at - rule.clear_since))
    if rule.quiet_needed is not None:
        return rule.quiet_needed + rule.resolve_after
    gate = status.windows.get(rule.resolve_window)
    return None if gate is None else gate.seconds + rule.resolve_after


def explain_severity(status: SloStatus, severity: str) -> list[str]:
    """Why an SLO's page (or ticket) still fires: a headline, then one line per firing rule; [] when it does
    not fire."""
    if severity not in status.firing:
        return []
    rules = [r for r in status.rules if r.severity == severity and r.firing]
    if not rules:
        return [f"{severity} still firing"]
    seeing = [r.rule for r in rules if r.clear_since is None]
    if seeing:
        verb = "sees" if len(seeing) == 1 else "see"
        head = f"{severity} still firing: {', '.join(seeing)} still {verb} the errors"
    else:
        head = f"{severity} still firing, resolving: its rules are back under their rates"
    if len(rules) > 1:
        head += "; it resolves when the last of its rules does"
    bounds = [_resolve_bound(status, r) for r in rules]
    known = [b for b in bounds if b is not None]
    if known and len(known) == len(bounds):
        head += f", at the latest {human_duration(max(known))} from now if no new errors come"
    return [head, *(explain_rule(status, r) for r in rules)]


def explain_state(status: SloStatus) -> str:
    """The SLO's state word (``slo_state``) and why, with its budget: one line."""
    state = slo_state(status)
    if state == "no data" and status.sli is None:
        return f"no data: no {_unit(status)} in the {status.window} window yet"
    if state == "no data":
        silent = status.evaluated_at - (status.last_data_at or status.window_start)
        return f"no data: nothing new for {human_duration(silent)}; {budget_words(status)}"
    if state == "exhausted":
        return budget_words(status)  # "30d budget exhausted (burned ...)": the word is in it
    if state == "burning":
        over = [r.rule for r in status.rules if _over(r)]
        rates = "its rate" if len(over) == 1 else "their rates"
        because = f"{', '.join(over)} over {rates}" if over else "spending faster than the budget allows"
        return f"burning: {because}; {budget_words(status)}"
    return f"ok: {budget_words(status)}"


NO_DATA_FIRING = "no-data alert firing: the probe has been silent for longer than no_data_after"


def explain(status: SloStatus) -> list[str]:
    """An SLO in plain words: its state and why, then why each of its alerts still fires."""
    lines = [explain_state(status)]
    for severity in ("page", "ticket"):
        lines.extend(explain_severity(status, severity))
    if "no_data" in status.firing:
        lines.append(NO_DATA_FIRING)
    return lines
