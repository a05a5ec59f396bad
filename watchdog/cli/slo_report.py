"""Rendering for ``watchdog slo report``: a rich table, JSON, and the budget burn-down plot."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from watchdog.slo.messages import budget_state, slo_state
from watchdog.slo.model import BudgetHistory, Evaluation, SloStatus
from watchdog.slo.windows import utc_iso

_BURN_WINDOWS = ("5m", "1h", "6h", "3d")
STATE_STYLES: dict[str, str] = {"ok": "green", "burning": "yellow", "exhausted": "bold red", "no data": "dim"}
_LEGEND = (
    "state: ok, burning (spending faster than the budget allows), exhausted (budget spent, alert or not),"
    " no data\n"
    "burn: error ratio / allowed error ratio per window (1 = on budget; ? = too few events to count)"
)


def _pct(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "—"
    return f"{x * 100:.{digits}f} %".replace(f".{'0' * digits} %", " %") if digits else f"{x * 100:.0f} %"


def _objective(x: float) -> str:
    return f"{x * 100:g} %"


def _when(t: float | None, now: float) -> str:
    """When the budget runs out at the current burn: ``in 3.2 h``, ``already`` (spent), ``—`` (not)."""
    if t is None:
        return "—"
    delta = t - now
    if delta <= 0:
        return "already"
    if delta < 3600:
        return f"in {delta / 60:.0f} min"
    if delta < 2 * 86400:
        return f"in {delta / 3600:.1f} h"
    return f"in {delta / 86400:.1f} d"


def _burn(status: SloStatus, labelled: bool = False) -> Text:
    text = Text()
    for label in _BURN_WINDOWS:
        w = status.windows.get(label)
        if text:
            text.append("  " if labelled else " ")
        if labelled:
            text.append(f"{label} ", style="dim")
        if w is None:
            text.append("—", style="dim")
            continue
        value = f"{w.burn_rate:.1f}" if w.burn_rate < 100 else f"{w.burn_rate:.0f}"
        style = ""
        if not w.counts:
            style = "dim"
        elif w.burn_rate >= 6:
            style = "bold red"
        elif w.burn_rate > 1:
            style = "yellow"
        text.append(value + ("" if w.counts else "?"), style=style)
    return text


def _window(status: SloStatus) -> str:
    return status.window.replace("calendar month", "month")


def _state(s: SloStatus) -> Text:
    """The SLO's one word (``messages.slo_state``): the same word in the table, the lines and the plot."""
    word = slo_state(s)
    return Text(word, style=STATE_STYLES[word])


def _alerts(s: SloStatus) -> Text:
    """Alerts firing now (PAGE, TICKET, NO_DATA); a dash when none. The state word says how the SLO is."""
    alerts = Text()
    for name in s.firing:
        if alerts:
            alerts.append(" ")
        alerts.append(name.upper(), style="bold red" if name == "page" else "yellow")
    if not alerts:
        alerts.append("—", style="dim")
    return alerts


def _left(s: SloStatus) -> Text:
    """``33.3 % left``, ``80.0 % left, runs out in 3.2 h`` or ``exhausted (burned 25.0x the budget)``."""
    left = s.budget.remaining
    style = "bold red" if left <= 0 else "yellow" if left < 0.25 else "green"
    text = Text(budget_state(left), style=style)
    if s.exhaustion_at is not None and not s.budget.exhausted:
        text.append(f", runs out {_when(s.exhaustion_at, s.evaluated_at)}", style="yellow")
    return text


TABLE_MIN_WIDTH = 150
"""Narrower terminals get a few lines per SLO: the table's words ("exhausted (burned 25.0x the budget)")
need about this much room."""


def render(evaluation: Evaluation, width: int) -> RenderableType:
    """The table on wide terminals, a few lines per SLO on narrower ones."""
    return status_table(evaluation) if width >= TABLE_MIN_WIDTH else status_lines(evaluation)


def status_lines(evaluation: Evaluation) -> Group:
    parts: list[RenderableType] = [Text(f"SLOs at {utc_iso(evaluation.at)}", style="italic")]
    for s in evaluation.statuses:
        head = Text()
        head.append(s.name, style="bold")
        head.append(f"  {_objective(s.objective)} over {_window(s)}  ")
        head.append_text(_state(s))
        if s.firing:
            head.append("  ")
            head.append_text(_alerts(s))
        body = Text("  SLI ")
        body.append(_pct(s.sli))
        body.append("  budget ")
        body.append_text(_left(s))
        body.append(f"  spent 24h {s.budget_spent_24h * 100:.1f} %")
        burn = Text("  burn ")
        burn.append_text(_burn(s, labelled=True))
        parts.extend([Text(""), head, body, burn])
    parts.append(Text(""))
    parts.append(Text(_LEGEND, style="dim"))
    return Group(*parts)


def status_table(evaluation: Evaluation) -> Table:
    table = Table(title=f"SLOs at {utc_iso(evaluation.at)}", title_justify="left", pad_edge=False)
    table.add_column("SLO", style="bold", overflow="fold", min_width=12)
    table.add_column("target", justify="right")
    table.add_column("state", no_wrap=True)
    table.add_column("SLI", justify="right", no_wrap=True)
    table.add_column("budget", justify="right", no_wrap=True)
    table.add_column("24h", justify="right", no_wrap=True)
    table.add_column("burn " + "/".join(_BURN_WINDOWS), no_wrap=True)
    table.add_column("alerts")
    for s in evaluation.statuses:
        table.add_row(
            s.name,
            f"{_objective(s.objective)} {_window(s)}",
            _state(s),
            _pct(s.sli),
            _left(s),
            f"{s.budget_spent_24h * 100:.1f} %",
            _burn(s),
            _alerts(s),
        )
    table.caption = _LEGEND
    table.caption_justify = "left"
    return table


def report_json(evaluation: Evaluation, histories: Sequence[BudgetHistory]) -> dict[str, Any]:
    by_name = {h.name: h for h in histories}
    slos = []
    for s in evaluation.statuses:
        item = s.to_dict()
        h = by_name.get(s.name)
        if h is not None:
            item["spent_per_day"] = [
                {"day": utc_iso(d), "start": d, "spent": v}
                for d, v in zip(h.day_starts, h.spent_per_day, strict=True)
            ]
        slos.append(item)
    return {"evaluated_at": evaluation.at, "slos": slos}


class PlotUnavailable(RuntimeError):
    """--plot was asked for but matplotlib is not installed (the ``plot`` extra)."""


def plot_budgets(
    histories: Sequence[BudgetHistory], statuses: Sequence[SloStatus], path: Path, *, dpi: int = 110
) -> None:
    """One panel per SLO: the budget remaining over the window (line), what an even burn would leave
    (dashed), the objective (budget 0 %), and the budget spent per day (bars, right axis)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.dates as mdates
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'sre-watchdog[plot]' (or pip install matplotlib)"
        ) from exc

    by_name = {s.name: s for s in statuses}
    n = max(1, len(histories))
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.7 * n), squeeze=False, constrained_layout=True)

    def dt(t: float) -> datetime:
        return datetime.fromtimestamp(t, UTC)

    floor = -100.0  # overspent budgets are drawn down to -100 % and labelled with their true value
    for index, (ax, h) in enumerate(zip(axes[:, 0], histories, strict=False)):
        s = by_name.get(h.name)
        xs = [dt(t) for t in h.times]
        true_ys = [r * 100 for r in h.remaining]
        ys = [max(floor, y) for y in true_ys]
        end_x = dt(h.period_end)
        color = "#2b7bba"
        if s is not None and s.budget.remaining <= 0:
            color = "#c0392b"
        elif s is not None and s.budget.remaining < 0.25:
            color = "#d68910"
        if any(v > 0 for v in h.spent_per_day):
            bars = ax.twinx()
            bounds = [*h.day_starts, h.end]
            widths = [(bounds[i + 1] - bounds[i]) / 86400.0 for i in range(len(h.day_starts))]
            bars.bar(
                [dt(d) for d in h.day_starts], [v * 100 for v in h.spent_per_day], width=widths, align="edge",
                color="#7f8c8d", alpha=0.25, label="spent per day (right axis)",
            )
            bars.set_ylim(0, max(h.spent_per_day) * 100 * 2.5)
            bars.set_ylabel("spent / day (%)", color="#7f8c8d", fontsize=8)
            bars.tick_params(axis="y", labelsize=7, colors="#7f8c8d")
            ax.set_zorder(bars.get_zorder() + 1)
            ax.patch.set_visible(False)
        ax.plot([dt(h.start), end_x], [100, 0], linestyle="--", color="#999999", linewidth=1,
                label="even burn (budget lasts the window)")
        ax.axhline(0, color="#c0392b", linewidth=1.2, label="objective: budget exhausted below 0 %")
        if xs:
            ax.fill_between(xs, ys, 100, color="#c0392b", alpha=0.10, linewidth=0, label="budget spent")
            ax.plot(xs, ys, color=color, linewidth=2, label="budget remaining")
            label = budget_state(h.remaining[-1]) + (" (off scale)" if true_ys[-1] < floor else "")
            ax.annotate(label, (xs[-1], ys[-1]), textcoords="offset points", xytext=(-6, 6), ha="right",
                        fontsize=9, color=color, fontweight="bold")
        ax.set_ylim(floor - 8 if min(ys, default=0.0) < 0 else -8, 108)
        ax.set_xlim(dt(h.start), end_x)
        ax.set_ylabel("budget left (%)")
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))  # type: ignore[no-untyped-call]
        ax.grid(True, alpha=0.25)
        title = f"{h.name} — objective {h.objective * 100:g} % over {h.window}"
        if s is not None:
            sli = "no data" if s.sli is None else f"SLI {s.sli * 100:.3f} %"
            state = " ".join([slo_state(s), *(f.upper() for f in s.firing)])
            title += f"  ·  {sli}  ·  budget {budget_state(s.budget.remaining)}  ·  {state}"
            if s.exhaustion_at is not None and s.exhaustion_at > s.evaluated_at:
                title += f"  ·  exhausted by {dt(s.exhaustion_at):%m-%d %H:%M}Z"
        ax.set_title(title, loc="left", fontsize=10)
        if index == 0:
            handles, labels = ax.get_legend_handles_labels()
            for other in fig.axes:
                if other is not ax and other.get_shared_x_axes().joined(other, ax):
                    more = other.get_legend_handles_labels()
                    handles, labels = handles + more[0], labels + more[1]
            ax.legend(handles, labels, loc="lower left", fontsize=7, framealpha=0.85, ncol=3)
    if not histories:
        axes[0, 0].text(0.5, 0.5, "no SLOs configured", ha="center", va="center")
        axes[0, 0].set_axis_off()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
