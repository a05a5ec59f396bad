"""Detection goal figures (issue 10): time to page per fault size, time to resolve, false pages, from
``watchdog simulate`` runs of this repository's example config, side by side with what the SRE Workbook's
multiwindow multi-burn-rate rules and Sloth's generated Prometheus rules do on the same scenarios.

    .venv/bin/python bench/detection.py                 # every row, 5 seeds, promtool side by side (~6 min)
    .venv/bin/python bench/detection.py --quick         # 1 seed, no 24 h row (~40 s)
    .venv/bin/python bench/detection.py --seeds 3 --json detection.json --no-promtool

Each row is a scenario (built here, the same shape as tests/scenarios/*.yaml) run through the real engine,
alert rules, incident manager and escalation (``watchdog.simulate``), once per seed (the seed draws which
results fail and the probes' phases). The fault is on the database path: ``content-db`` (the canary cohort,
``content-db-availability``, 99.9 %) probed every 2 s as in the measured daemon, with 6 h of healthy history
so that every page window is full (the Workbook's times assume full windows).

- **watchdog**: first page of any alert after the fault starts; when the last incident the fault opened
  resolves, after the fault ends; pages (fired + re-fired; re-fires are a page flapping); and the page's
  delay after the *first conclusive evidence*: the first result after which the data satisfy the firing rule
  (computed here from the results themselves: bad / total over each rule's exact windows, or the probe
  alert's streak), so "≤ 1 evaluation" reads as "≤ 5 s".
- **Workbook**: the multiwindow rules (page 14.4x / 1 h + 5 m, 6x / 6 h + 30 m; ticket 3x / 1 d + 2 h,
  1x / 3 d + 6 h) computed analytically for continuous traffic at the fault's error ratio over full windows,
  evaluated continuously: time to fire = window x burn rate x (1 - objective) / error ratio; the page ends
  when one of its windows falls back under the rate.
- **Sloth / promtool**: Prometheus recording and alerting rules in the shape Sloth generates
  (``slo:sli_error:ratio_rate{5m,30m,1h,2h,6h,1d,3d}``; page = (5m and 1h over 14.4x) or (30m and 6h over
  6x); ticket = (2h and 1d over 3x) or (6h and 3d over 1x)) for the same SLO, run by the real
  ``promtool test rules`` (Debian's prometheus package) over the same results the watchdog saw, as counters
  scraped every 10 s, rules evaluated every 10 s. Sloth itself (a Go binary) is not installable here; the rule
  text follows its generated output (``examples/_gen/getting-started.yml`` in slok/sloth).

Figures are medians over the seeds, with [min–max] when they differ.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from watchdog.config import WatchdogConfig, load_config  # noqa: E402
from watchdog.core.results import Outcome, ProbeResult  # noqa: E402
from watchdog.simulate import Run, Simulation  # noqa: E402
from watchdog.simulate.expect import span  # noqa: E402
from watchdog.simulate.scenario import Scenario  # noqa: E402

HOUR = 3600.0
PAGE_RULES = ((14.4, 3600.0, 300.0), (6.0, 21600.0, 1800.0))
TICKET_RULES = ((3.0, 86400.0, 7200.0), (1.0, 259200.0, 21600.0))
SLOTH_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
LATENCY_PAGE_RULES = ((10.0, 300.0, 60.0), *PAGE_RULES)
"""The example config's latency SLOs: a 10x / 5 m + 1 m page ahead of the Workbook's pair (slo/api.yaml)."""
PROM_STEP = 10.0
PAGING = ("fired", "refired")


@dataclass(frozen=True)
class Sli:
    """Which results an SLO counts, and which of them are bad."""

    name: str
    objective: float
    probe: str
    labels: dict[str, str]
    bad: Callable[[ProbeResult], bool]
    rules: tuple[tuple[float, float, float], ...] = PAGE_RULES

    @property
    def budget(self) -> float:
        return (100.0 - self.objective) / 100.0  # as Sloth computes it: 0.0009999999999999432

    def selects(self, r: ProbeResult) -> bool:
        return r.probe == self.probe and all(r.labels.get(k) == v for k, v in self.labels.items())


AVAILABILITY = Sli("content-db-availability", 99.9, "content-db", {}, lambda r: r.outcome is Outcome.FAILED)
DB_LATENCY = Sli(
    "db-query-latency",
    95.0,
    "ai-square-db",
    {"check": "connectivity"},
    lambda r: r.outcome is Outcome.FAILED or r.latency_s > 0.05,
    LATENCY_PAGE_RULES,
)


@dataclass
class Row:
    name: str
    scenario: dict[str, Any]
    sli: Sli
    start: float | None
    """Fault start (s from t+0); None: a healthy run, every page is false."""
    end: float | None
    error_ratio: float
    evidence: str = "slo"
    """How the first conclusive evidence is found: ``slo`` (the SLI's rules) or ``db-unreachable``."""


def _history(scenario: dict[str, Any], hours: float = 6.0) -> dict[str, Any]:
    return {"history": f"{hours:g}h", **scenario}


def rows(quick: bool) -> list[Row]:
    cdb = {"interval": "2s"}
    out = [
        Row(
            "fresh start, 1 failed probe at 150 s",
            {
                "duration": "90m",
                "probes": {"content-db": {**cdb, "errors": [{"blip": "150s", "failures": 1}]}},
            },
            AVAILABILITY,
            None,
            None,
            0.0,
        ),
        Row(
            "59 s outage",
            _history(
                {
                    "duration": "30m",
                    "probes": {
                        "content-db": {**cdb, "errors": [{"step": "100%", "from": "5m", "to": "5m59s"}]}
                    },
                }
            ),
            AVAILABILITY,
            300.0,
            359.0,
            1.0,
        ),
        Row(
            "100 % errors, 10 min",
            _history(
                {
                    "duration": "45m",
                    "probes": {
                        "content-db": {**cdb, "errors": [{"step": "100%", "from": "5m", "to": "15m"}]}
                    },
                }
            ),
            AVAILABILITY,
            300.0,
            900.0,
            1.0,
        ),
        Row(
            "DB down, 10 min (database, content-db, /api/health)",
            _history(
                {
                    "duration": "45m",
                    "probes": {
                        "ai-square-db": {
                            "errors": [{"step": "100%", "from": "5m", "to": "15m", "reason": "refused"}]
                        },
                        "content-db": {**cdb, "errors": [{"step": "100%", "from": "5m", "to": "15m"}]},
                        "api-health": {"errors": [{"step": "100%", "from": "5m", "to": "15m"}]},
                    },
                }
            ),
            AVAILABILITY,
            300.0,
            900.0,
            1.0,
            "db-unreachable",
        ),
        Row(
            "20 % errors, 15 min",
            _history(
                {
                    "duration": "45m",
                    "probes": {"content-db": {**cdb, "errors": [{"step": "20%", "from": "5m", "to": "20m"}]}},
                }
            ),
            AVAILABILITY,
            300.0,
            1200.0,
            0.2,
        ),
        Row(
            "5 % errors, 40 min",
            _history(
                {
                    "duration": "1h15m",
                    "probes": {"content-db": {**cdb, "errors": [{"step": "5%", "from": "5m", "to": "45m"}]}},
                }
            ),
            AVAILABILITY,
            300.0,
            2700.0,
            0.05,
        ),
        Row(
            "1 % errors, 5 h",
            _history(
                {
                    "duration": "5h45m",
                    "probes": {
                        "content-db": {**cdb, "errors": [{"step": "1%", "from": "5m", "to": "5h05m"}]}
                    },
                }
            ),
            AVAILABILITY,
            300.0,
            5 * HOUR + 300.0,
            0.01,
        ),
        Row(
            "+300 ms on the DB path, 1 h (db-query-latency, 95 %)",
            _history(
                {
                    "duration": "1h45m",
                    "probes": {
                        name: {
                            **({"labels": {"check": "connectivity"}} if name == "ai-square-db" else {}),
                            "latency": [{"step": "300ms", "from": "5m", "to": "1h05m"}],
                        }
                        for name in ("ai-square-db", "content-db", "api-health")
                    },
                }
            ),
            DB_LATENCY,
            300.0,
            3900.0,
            1.0,
        ),
    ]
    if not quick:
        restarts = [
            "1h37m",
            "3h",
            "5h13m",
            "7h45m",
            "9h02m",
            "11h30m",
            "13h59m",
            "16h20m",
            "19h11m",
            "22h05m",
        ]
        out.append(
            Row(
                "healthy, 0.05 % errors, 24 h, 10 restarts over an empty store",
                {
                    "duration": "24h",
                    "probes": {
                        name: {
                            **(cdb if name.startswith("content-") else {}),
                            "errors": [{"steady": "0.05%"}],
                        }
                        for name in (
                            "content-db",
                            "content-yaml",
                            "api-health",
                            "liveness",
                            "monitoring-health",
                        )
                    },
                    "restarts": [{"at": at, "keep_state": False} for at in restarts],
                },
                AVAILABILITY,
                None,
                None,
                0.0,
            )
        )
    return out


# -- the watchdog --------------------------------------------------------------------------------------------


@dataclass
class Measured:
    page: float | None = None
    resolve: float | None = None
    """After the fault's end; inf: still open at the end of the run."""
    pages: int = 0
    refires: int = 0
    false_pages: list[str] = field(default_factory=list)
    evidence_delay: float | None = None
    wall_s: float = 0.0
    alerts: list[str] = field(default_factory=list)


def measure_watchdog(run: Run, row: Row) -> Measured:
    m = Measured(wall_s=run.wall_s)
    paged = [e for e in run.events if e.paged and e.kind in PAGING]
    m.pages = len(paged)
    m.refires = sum(e.kind == "refired" for e in paged)
    if row.start is None or row.end is None:
        m.false_pages = [f"{e.alert} {e.kind} t+{span(e.at)}" for e in paged]
        return m
    m.false_pages = [f"{e.alert} before the fault" for e in paged if e.at < row.start]
    # An alert that fired muted (inhibited) and pages once its inhibitor resolves, after the fault's end,
    # pages for a fault that is over.
    muted = {e.key for e in run.events if e.kind == "fired" and not e.levels}
    m.false_pages += [
        f"{e.alert} paged {span(e.at - row.end)} after the fault ended (it had fired muted)"
        for e in paged
        if e.key in muted and e.at > row.end
    ]
    during = [e for e in paged if e.at >= row.start]
    if during:
        m.page = during[0].at - row.start
        m.alerts = sorted({e.alert for e in during})
    keys = {e.key for e in during}
    last_resolve = 0.0
    for key in keys:
        mine = [e for e in run.events if e.key == key and e.kind in ("fired", "refired", "resolved")]
        if mine and mine[-1].kind != "resolved":
            last_resolve = math.inf
            break
        last_resolve = max(last_resolve, mine[-1].at if mine else 0.0)
    if keys:
        m.resolve = last_resolve - row.end if last_resolve != math.inf else math.inf
    return m


def conclusive_evidence(results: Sequence[ProbeResult], row: Row, t0: float) -> float | None:
    """When the data first satisfy the firing rule (s from t+0): the first result at which bad / total over
    both windows of a page rule exceeds its rate (exact sliding windows, results by completion time), or,
    for db-unreachable, 4 failed connectivity checks in a row spanning 30 s (``for: 30s``,
    ``min_failures: 3``)."""
    assert row.start is not None
    if row.evidence == "db-unreachable":
        streak: list[float] = []
        for r in results:
            if r.probe != "ai-square-db" or r.labels.get("check") != "connectivity":
                continue
            if r.outcome is Outcome.FAILED:
                streak.append(r.started_at)
                if len(streak) >= 3 and streak[-1] - streak[0] >= 30.0 and r.started_at - t0 >= row.start:
                    return r.started_at + r.latency_s - t0
            else:
                streak = []
        return None
    sli = row.sli
    mine = sorted((r.started_at + r.latency_s, sli.bad(r)) for r in results if sli.selects(r))
    windows = sorted({w for _, long, short in sli.rules for w in (long, short)})
    queues: dict[float, deque[tuple[float, bool]]] = {w: deque() for w in windows}
    bad = dict.fromkeys(windows, 0)
    for t, is_bad in mine:
        for w in windows:
            q = queues[w]
            q.append((t, is_bad))
            bad[w] += is_bad
            while q and q[0][0] <= t - w:
                bad[w] -= q.popleft()[1]
        if t - t0 < row.start:
            continue
        for rate, long, short in sli.rules:
            limit = rate * sli.budget
            if bad[long] / len(queues[long]) > limit and bad[short] / len(queues[short]) > limit:
                return t - t0
    return None


# -- the Workbook, analytically ------------------------------------------------------------------------------


def workbook(row: Row) -> tuple[float | None, float | None, float | None]:
    """(time to page, page's end after the fault's end, time to ticket) for continuous traffic at the row's
    error ratio over full windows; None: never."""
    if row.start is None or row.end is None or row.error_ratio <= 0:
        return None, None, None
    e, d = row.error_ratio, row.end - row.start
    b = row.sli.budget
    rules = PAGE_RULES  # the Workbook's, whatever the config adds

    def frac(t: float, w: float) -> float:
        return e * max(0.0, min(t, d) - max(t - w, 0.0)) / w

    def active(t: float, which: Sequence[tuple[float, float, float]]) -> bool:
        return any(frac(t, long) > rate * b and frac(t, short) > rate * b for rate, long, short in which)

    def first(which: Sequence[tuple[float, float, float]]) -> float | None:
        times = [long * rate * b / e for rate, long, _ in which if e > rate * b and long * rate * b / e <= d]
        return min(times) if times else None

    page = first(rules)
    end = None
    if page is not None:
        t = d
        while active(t, rules):
            t += 1.0
        end = t - d
    return page, end, first(TICKET_RULES)


# -- Sloth's rules under promtool ----------------------------------------------------------------------------


def sloth_rules(sli: Sli) -> str:
    """Recording and alert rules in the shape Sloth generates for an events SLO."""
    sid = f"watchdog-{sli.name}"
    sel = f'slo="{sli.name}"'
    labels = f"sloth_id: {sid}\n      sloth_service: watchdog\n      sloth_slo: {sli.name}"
    rec = []
    for w in SLOTH_WINDOWS:
        rec.append(
            f"""  - record: slo:sli_error:ratio_rate{w}
    expr: |
      (sum(rate(simulated_events_total{{{sel},bad="true"}}[{w}])))
      /
      (sum(rate(simulated_events_total{{{sel}}}[{w}])))
    labels:
      {labels}
      sloth_window: {w}"""
        )
    budget = repr(sli.budget)
    ids = f'sloth_id="{sid}", sloth_service="watchdog", sloth_slo="{sli.name}"'

    def cond(short: str, long: str, rate: str) -> str:
        return (
            f"(slo:sli_error:ratio_rate{short}{{{ids}}} > ({rate} * {budget}))\n"
            f"          and ignoring (sloth_window)\n"
            f"          (slo:sli_error:ratio_rate{long}{{{ids}}} > ({rate} * {budget}))"
        )

    def alert(severity: str, a: tuple[str, str, str], b_: tuple[str, str, str]) -> str:
        return f"""  - alert: WatchdogSLO
    expr: |
      (
          {cond(*a)}
      )
      or ignoring (sloth_window)
      (
          {cond(*b_)}
      )
    labels:
      sloth_severity: {severity}"""

    alerts = [
        alert("page", ("5m", "1h", "14.4"), ("30m", "6h", "6")),
        alert("ticket", ("2h", "1d", "3"), ("6h", "3d", "1")),
    ]
    return (
        f"groups:\n- name: sloth-slo-sli-recordings-{sid}\n  rules:\n"
        + "\n".join(rec)
        + f"\n- name: sloth-slo-alerts-{sid}\n  rules:\n"
        + "\n".join(alerts)
        + "\n"
    )


_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def _prom_duration(text: str) -> float:
    return sum(int(n) * _UNIT[u] for n, u in _DURATION.findall(text))


@dataclass
class SlothRun:
    page_times: list[float]
    """Evaluation times (s from t+0) at which the page alert fired."""
    wall_s: float


def run_promtool(results: Sequence[ProbeResult], sli: Sli, t0: float, begin: float, end: float) -> SlothRun:
    """``promtool test rules`` over the SLI's results as two counters scraped every PROM_STEP from ``begin``
    (absolute) to ``end``; returns when the page alert was firing."""
    mine = sorted((r.started_at + r.latency_s, sli.bad(r)) for r in results if sli.selects(r))
    n = int((end - begin) // PROM_STEP) + 1
    bad_v, good_v = [0] * n, [0] * n
    i = 0
    bad = good = 0
    for k in range(n):
        at = begin + k * PROM_STEP
        while i < len(mine) and mine[i][0] <= at:
            if mine[i][1]:
                bad += 1
            else:
                good += 1
            i += 1
        bad_v[k], good_v[k] = bad, good
    offset = t0 - begin  # promtool's time 0 is ``begin``; the scenario's t+0 is at ``offset``
    first_eval = int(offset // PROM_STEP)
    tests = "\n".join(
        f"  - {{eval_time: {int(k * PROM_STEP)}s, alertname: WatchdogSLO, exp_alerts: []}}"
        for k in range(first_eval, n)
    )
    test = f"""rule_files: [rules.yml]
evaluation_interval: {int(PROM_STEP)}s
tests:
- interval: {int(PROM_STEP)}s
  input_series:
  - series: 'simulated_events_total{{slo="{sli.name}",bad="true"}}'
    values: '{" ".join(map(str, bad_v))}'
  - series: 'simulated_events_total{{slo="{sli.name}",bad="false"}}'
    values: '{" ".join(map(str, good_v))}'
  alert_rule_test:
{tests}
"""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "rules.yml").write_text(sloth_rules(sli))
        (Path(tmp) / "test.yml").write_text(test)
        wall = time.perf_counter()
        done = subprocess.run(
            ["promtool", "test", "rules", "test.yml"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        wall = time.perf_counter() - wall
    text = done.stdout + done.stderr
    if done.returncode != 0 and "alertname:" not in text:
        raise RuntimeError(f"promtool failed:\n{text[-3000:]}")
    firing: list[float] = []
    for block in re.split(r"(?=alertname: WatchdogSLO, time: )", text):
        m = re.match(r"alertname: WatchdogSLO, time: (\S+?),", block)
        if m and 'sloth_severity="page"' in block:
            firing.append(_prom_duration(m.group(1)) - offset)
    return SlothRun(sorted(firing), wall)


def measure_sloth(s: SlothRun, row: Row) -> Measured:
    m = Measured(wall_s=s.wall_s)
    times = s.page_times
    starts = [t for k, t in enumerate(times) if k == 0 or t - times[k - 1] > PROM_STEP + 1e-6]
    m.pages = len(starts)
    if row.start is None or row.end is None:
        m.false_pages = [f"page t+{span(t)}" for t in starts]
        return m
    m.false_pages = [f"page t+{span(t)} before the fault" for t in starts if t < row.start]
    during = [t for t in times if t >= row.start]
    if during:
        m.page = during[0] - row.start
        m.resolve = during[-1] + PROM_STEP - row.end
    m.refires = max(0, sum(1 for t in starts if t >= row.start) - 1)
    return m


# -- running -------------------------------------------------------------------------------------------------


@dataclass
class Results:
    watchdog: list[Measured] = field(default_factory=list)
    sloth: list[Measured] = field(default_factory=list)


async def run_row(
    row: Row, config: WatchdogConfig, seed: int, promtool: bool
) -> tuple[Measured, Measured | None]:
    scenario = Scenario.model_validate({"seed": seed, **row.scenario})
    captured: list[ProbeResult] = []
    sim = Simulation(scenario, config, on_record=captured.extend)
    run = await sim.run()
    m = measure_watchdog(run, row)
    if row.start is not None and m.page is not None:
        evidence = conclusive_evidence(captured, row, run.t0)
        if evidence is not None:
            m.evidence_delay = (m.page + row.start) - evidence
    sloth = None
    if promtool:
        begin = run.t0 - scenario.history
        s = run_promtool(captured, row.sli, run.t0, begin, run.t0 + scenario.duration)
        sloth = measure_sloth(s, row)
    return m, sloth


def _fmt(values: Sequence[float | None], unit: Callable[[float], str] = span) -> str:
    if not values:
        return "—"
    if any(v is None for v in values):
        some = [v for v in values if v is not None]
        return "never" if not some else f"{_fmt(some, unit)} ({len(values) - len(some)}/{len(values)} never)"
    vals = sorted(v for v in values if v is not None)
    if any(math.isinf(v) for v in vals):
        finite = [v for v in vals if not math.isinf(v)]
        open_ = len(vals) - len(finite)
        return f"open at the end ({open_}/{len(vals)})" + (f"; else {_fmt(finite, unit)}" if finite else "")
    med = statistics.median(vals)
    if vals[0] == vals[-1]:
        return unit(med)
    return f"{unit(med)} [{unit(vals[0])}–{unit(vals[-1])}]"


def _count(ms: Sequence[Measured]) -> str:
    """Pages per run (median [min–max]); how many runs re-fired a page (flapping) and paged falsely."""
    pages = sorted(m.pages for m in ms)
    text = (
        str(pages[0]) if pages[0] == pages[-1] else f"{statistics.median(pages):g} [{pages[0]}–{pages[-1]}]"
    )
    flapped = sum(m.refires > 0 for m in ms)
    false = sum(bool(m.false_pages) for m in ms)
    notes = []
    if flapped:
        notes.append(f"re-fired in {flapped}/{len(ms)} runs")
    if false:
        notes.append(f"false page in {false}/{len(ms)}")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _after(v: float) -> str:
    """A resolve time after the fault's end; negative: the page resolved while the fault went on."""
    return span(v) if v >= 0 else f"{span(-v)} before its end"


def _secs(v: float) -> str:
    return f"{v:+.0f} s"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    config = load_config(ROOT, environ={})
    promtool = args.promtool and shutil.which("promtool") is not None
    seeds = list(range(1, args.seeds + 1))
    out: dict[str, Any] = {"seeds": seeds, "rows": [], "promtool": promtool}
    for row in rows(args.quick):
        res = Results()
        for seed in seeds:
            m, s = await run_row(row, config, seed, promtool)
            res.watchdog.append(m)
            if s is not None:
                res.sloth.append(s)
            print(
                f"  {row.name} seed {seed}: watchdog page {m.page} resolve {m.resolve} pages {m.pages} "
                f"({m.wall_s:.2f} s)"
                + (
                    f"; sloth page {s.page} resolve {s.resolve} pages {s.pages} ({s.wall_s:.1f} s promtool)"
                    if s
                    else ""
                ),
                file=sys.stderr,
            )
        wb_page, wb_end, wb_ticket = workbook(row)
        out["rows"].append({"row": row, "res": res, "workbook": (wb_page, wb_end, wb_ticket)})
    return out


def table(data: dict[str, Any]) -> str:
    lines = [
        "| scenario | watchdog: page | after conclusive evidence | watchdog: resolved after the fault "
        "| watchdog: pages | Workbook rules: page / resolved | Sloth rules (promtool): page "
        "| Sloth: resolved | Sloth: pages |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for item in data["rows"]:
        row: Row = item["row"]
        res: Results = item["res"]
        wb_page, wb_end, wb_ticket = item["workbook"]
        wd = res.watchdog
        healthy = row.start is None
        page = "—" if healthy else _fmt([m.page for m in wd])
        delay = "—" if healthy else _fmt([m.evidence_delay for m in wd], _secs)
        resolve = "—" if healthy else _fmt([m.resolve for m in wd], _after)
        if healthy:
            wb = "no page (full windows)"
        elif wb_page is None:
            wb = "no page" + (f"; ticket after {span(wb_ticket)}" if wb_ticket is not None else "")
        else:
            wb = f"{span(wb_page)} / {span(wb_end or 0)}"
        if res.sloth:
            sp = "—" if healthy else _fmt([m.page for m in res.sloth])
            sr = "—" if healthy else _fmt([m.resolve for m in res.sloth], _after)
            sc = _count(res.sloth)
        else:
            sp = sr = sc = "not run"
        lines.append(
            f"| {row.name} | {page} | {delay} | {resolve} | {_count(wd)} | {wb} | {sp} | {sr} | {sc} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 seed, no 24 h row")
    parser.add_argument("--no-promtool", dest="promtool", action="store_false")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()
    if args.quick:
        args.seeds = 1
    logging.getLogger("watchdog").addHandler(logging.NullHandler())  # the tables say what it would log
    wall = time.perf_counter()
    data = asyncio.run(main_async(args))
    print(
        f"# detection, {len(data['seeds'])} seed(s), {platform.python_version()}, "
        f"{time.perf_counter() - wall:.0f} s" + ("" if data["promtool"] else ", promtool not run")
    )
    print(table(data))
    day = [m.wall_s for item in data["rows"] if "24 h" in item["row"].name for m in item["res"].watchdog]
    if day:
        print(
            "\na simulated day (24 h, 5 s evaluations, ~190,000 results): "
            + _fmt(day, lambda v: f"{v:.1f} s")
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "scenario": item["row"].name,
                        "workbook": item["workbook"],
                        "watchdog": [vars(m) for m in item["res"].watchdog],
                        "sloth": [vars(m) for m in item["res"].sloth],
                    }
                    for item in data["rows"]
                ],
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
