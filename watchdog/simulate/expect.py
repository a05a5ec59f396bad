"""A scenario's expectations held against what happened, each with a diff a person can act on.

- ``page``: the alert's first page (an incident opening that calls someone, or a re-fire in its thread) at
  or after ``of`` comes by ``of + within``.
- ``resolved``: the alert's incident resolves in [of, of + within].
- ``escalated``: the alert's page reaches ``level`` in [of, of + within].
- ``firing``: the alert's incident is open over all of [from, to] (a resolve in between is a flap); a
  restart over an empty store forgets open incidents.
- ``no_page``: the alert (``any``: any alert but those in ``except``) does not fire and page anyone in
  [from, to]; reminders and escalations of an incident that fired earlier are not new pages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from watchdog.simulate.runner import Event
from watchdog.simulate.scenario import (
    ANY,
    EscalatedCheck,
    Expectation,
    FiringCheck,
    NoPageCheck,
    PageCheck,
    ResolvedCheck,
)


def clock(seconds: float) -> str:
    """``t+mm:ss`` from the scenario's start (minutes go past 59: ``t+90:00`` is an hour and a half)."""
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    whole = round(seconds)
    if abs(seconds - whole) < 1e-6:
        return f"t{sign}{whole // 60:02d}:{whole % 60:02d}"
    m, s = divmod(seconds, 60)
    return f"t{sign}{int(m):02d}:{s:04.1f}"


def span(seconds: float) -> str:
    """``55s``, ``6m31s``, ``2h05m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        m, s = divmod(seconds, 60)
        return f"{m}m{s:02d}s" if s else f"{m}m"
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m"


@dataclass(frozen=True, slots=True)
class Verdict:
    expectation: Expectation
    held: bool
    expected: str
    happened: str
    at: float | None = None
    """When the awaited event happened (from t+0), if it did."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.expectation.kind,
            "expectation": self.expectation.check.model_dump(by_alias=True),
            "held": self.held,
            "expected": self.expected,
            "happened": self.happened,
            "at": self.at,
        }


def _named(event: Event, alert: str) -> bool:
    return alert == ANY or event.alert == alert


def _alert(name: str) -> str:
    return "an alert" if name == ANY else name


def _who(event: Event) -> str:
    return ", ".join(event.levels) if event.levels else "nobody"


def _history(events: Sequence[Event], alert: str, limit: int = 6) -> str:
    """What the alert did, for a diff: ``fired t+10:52 (L1, L3), resolved t+16:58``."""
    seen = [e for e in events if e.kind != "restart" and _named(e, alert)]
    if not seen:
        return f"{alert} never fired" if alert != ANY else "no alert fired"
    parts = []
    for e in seen[:limit]:
        who = f" ({_who(e)})" if e.kind in ("fired", "escalated", "refired", "repeat", "reopened") else ""
        muted = f" muted by {e.muted_by}" if e.muted_by and not e.levels else ""
        name = f"{e.alert} " if alert == ANY else ""
        parts.append(f"{name}{e.kind} {clock(e.at)}{who}{muted}")
    more = f", … {len(seen) - limit} more" if len(seen) > limit else ""
    return ", ".join(parts) + more


def _page(check: PageCheck, events: Sequence[Event], exp: Expectation) -> Verdict:
    lo, hi = check.of, check.of + check.within
    expected = (
        f"{_alert(check.alert)} pages between {clock(lo)} and {clock(hi)} (within {span(check.within)})"
    )
    pages = [e for e in events if e.paged and e.kind in ("fired", "refired") and _named(e, check.alert)]
    hit = next((e for e in pages if e.at >= lo - 1e-9), None)
    if hit is not None and hit.at <= hi + 1e-9:
        return Verdict(
            exp,
            True,
            expected,
            f"{hit.alert} paged at {clock(hit.at)} ({span(hit.at - lo)} after {clock(lo)}) to {_who(hit)}",
            hit.at,
        )
    if hit is not None:
        happened = (
            f"first page at or after {clock(lo)} came at {clock(hit.at)}, {span(hit.at - lo)} after it "
            f"({span(hit.at - hi)} late)"
        )
    else:
        happened = f"no page at or after {clock(lo)}"
    return Verdict(
        exp, False, expected, f"{happened}; {_history(events, check.alert)}", hit.at if hit else None
    )


def _resolved(check: ResolvedCheck, events: Sequence[Event], exp: Expectation) -> Verdict:
    lo, hi = check.of, check.of + check.within
    expected = (
        f"{_alert(check.alert)} resolves between {clock(lo)} and {clock(hi)} (within {span(check.within)})"
    )
    found = [e for e in events if e.kind == "resolved" and _named(e, check.alert)]
    hit = next((e for e in found if e.at >= lo - 1e-9), None)
    if hit is not None and hit.at <= hi + 1e-9:
        return Verdict(
            exp,
            True,
            expected,
            f"{hit.alert} resolved at {clock(hit.at)} ({span(hit.at - lo)} after {clock(lo)})",
            hit.at,
        )
    if hit is not None:
        happened = (
            f"resolved at {clock(hit.at)}, {span(hit.at - lo)} after {clock(lo)} ({span(hit.at - hi)} late)"
        )
    else:
        happened = f"not resolved at or after {clock(lo)}"
    return Verdict(
        exp, False, expected, f"{happened}; {_history(events, check.alert)}", hit.at if hit else None
    )


def _escalated(check: EscalatedCheck, events: Sequence[Event], exp: Expectation) -> Verdict:
    lo, hi = check.of, check.of + check.within
    expected = f"{_alert(check.alert)} reaches {check.level} between {clock(lo)} and {clock(hi)}"
    found = [
        e
        for e in events
        if e.kind in ("fired", "escalated") and check.level in e.levels and _named(e, check.alert)
    ]
    hit = next((e for e in found if e.at >= lo - 1e-9), None)
    if hit is not None and hit.at <= hi + 1e-9:
        return Verdict(
            exp,
            True,
            expected,
            f"{check.level} paged at {clock(hit.at)} ({span(hit.at - lo)} after {clock(lo)})",
            hit.at,
        )
    happened = (
        f"{check.level} paged at {clock(hit.at)} ({span(hit.at - hi)} late)"
        if hit is not None
        else f"{check.level} never paged at or after {clock(lo)}"
    )
    return Verdict(
        exp, False, expected, f"{happened}; {_history(events, check.alert)}", hit.at if hit else None
    )


def _no_page(check: NoPageCheck, events: Sequence[Event], exp: Expectation, end: float) -> Verdict:
    lo = check.from_
    hi = end if check.to is None else check.to
    but = f" (except {', '.join(check.except_)})" if check.except_ else ""
    who = "any alert" if check.alert == ANY else check.alert
    expected = f"no page for {who}{but} between {clock(lo)} and {clock(hi)}"
    pages = [
        e
        for e in events
        if e.paged
        and e.kind in ("fired", "refired")
        and _named(e, check.alert)
        and e.alert not in check.except_
        and lo - 1e-9 <= e.at <= hi + 1e-9
    ]
    if not pages:
        muted = [
            e
            for e in events
            if e.kind == "fired"
            and not e.levels
            and _named(e, check.alert)
            and lo - 1e-9 <= e.at <= hi + 1e-9
        ]
        note = f" ({len(muted)} alert(s) fired muted, paging nobody)" if muted else ""
        return Verdict(exp, True, expected, f"no page{note}")
    shown = "; ".join(f"{clock(e.at)} {e.alert} {e.kind} ({_who(e)})" for e in pages[:8])
    more = f"; … {len(pages) - 8} more" if len(pages) > 8 else ""
    return Verdict(exp, False, expected, f"{len(pages)} page(s): {shown}{more}", pages[0].at)


def open_spans(events: Sequence[Event], alert: str) -> list[tuple[float, float]]:
    """When the alert's incidents were open: [fired, resolved) spans (resolved: inf when still open)."""
    spans: list[tuple[float, float]] = []
    opened: dict[str, float] = {}
    for e in events:
        if e.kind == "restart":
            if e.fresh_store:
                for since in opened.values():
                    spans.append((since, e.at))
                opened.clear()
            continue
        if e.alert != alert:
            continue
        if e.kind in ("fired", "refired") and e.key not in opened:
            opened[e.key] = e.at
        elif e.kind == "resolved" and e.key in opened:
            spans.append((opened.pop(e.key), e.at))
    spans.extend((since, float("inf")) for since in opened.values())
    return sorted(spans)


def _firing(check: FiringCheck, events: Sequence[Event], exp: Expectation) -> Verdict:
    lo, hi = check.from_, check.to
    expected = f"{check.alert} stays firing from {clock(lo)} to {clock(hi)}"
    spans = open_spans(events, check.alert)
    if any(a <= lo + 1e-9 and b >= hi - 1e-9 for a, b in spans):
        return Verdict(exp, True, expected, "open throughout")
    inside = [(a, b) for a, b in spans if b > lo and a < hi]
    if not inside:
        happened = f"not firing between {clock(lo)} and {clock(hi)}"
    else:
        shown = ", ".join(f"{clock(a)}–{clock(b) if b != float('inf') else 'end'}" for a, b in inside)
        happened = f"open only {shown}"
    first_gap = next((b for a, b in inside if b < hi), None)
    return Verdict(exp, False, expected, f"{happened}; {_history(events, check.alert)}", first_gap)


def check(expectations: Sequence[Expectation], events: Sequence[Event], end: float) -> list[Verdict]:
    """Each expectation against the run's events (``end``: the scenario's duration)."""
    out: list[Verdict] = []
    for exp in expectations:
        c = exp.check
        if isinstance(c, PageCheck):
            out.append(_page(c, events, exp))
        elif isinstance(c, ResolvedCheck):
            out.append(_resolved(c, events, exp))
        elif isinstance(c, EscalatedCheck):
            out.append(_escalated(c, events, exp))
        elif isinstance(c, FiringCheck):
            out.append(_firing(c, events, exp))
        else:
            assert isinstance(c, NoPageCheck)
            out.append(_no_page(c, events, exp, end))
    return out
