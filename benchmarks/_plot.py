"""``latest.png``: one small panel per workload (each system's median over the baseline's) and one
panel of round trips, so the whole run reads at a glance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._harness import WorkloadResult, format_measure
from ._report import RunInfo

__all__ = ["write_plot"]

# The same system has the same colour in every panel.
_COLOURS = {
    "batchq": "#1f77b4",
    "asynq": "#ff7f0e",
    "asynq-noassert": "#ffbb78",
    "aiodataloader": "#2ca02c",
    "asyncio": "#2ca02c",
    "hand-batched": "#9467bd",
    "naive": "#d62728",
}
_SPARE = ["#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8"]


def _colour(system: str, assigned: dict[str, str]) -> str:
    if system in _COLOURS:
        return _COLOURS[system]
    if system not in assigned:
        assigned[system] = _SPARE[len(assigned) % len(_SPARE)]
    return assigned[system]


def write_plot(info: RunInfo, results: Sequence[WorkloadResult], path: Path) -> None:
    """Draw the run to ``path`` (PNG, Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in results if r.ok]
    # Panels in run order; a series (e.g. the depths) becomes one two-column line chart.
    panels: list[tuple[int, list[WorkloadResult]]] = []
    series_panels: dict[str, list[WorkloadResult]] = {}
    for r in done:
        if r.workload.series is None:
            panels.append((1, [r]))
        elif r.workload.series[0] in series_panels:
            series_panels[r.workload.series[0]].append(r)
        else:
            series_panels[r.workload.series[0]] = [r]
            panels.append((2, series_panels[r.workload.series[0]]))
    ncols = 4
    placed: list[tuple[int, int, int, list[WorkloadResult]]] = []  # row, col, width, results
    row = col = 0
    pending = list(panels)
    while pending:
        # The first panel that still fits in this row, so a narrow one fills a gap.
        fits = next((p for p in pending if col + p[0] <= ncols), None)
        if fits is None:
            row, col = row + 1, 0
            continue
        pending.remove(fits)
        placed.append((row, col, fits[0], fits[1]))
        col += fits[0]
    nrows = row + 1 if placed else 1
    trip_results = [
        r
        for r in done
        if all(r.systems[s].trips is not None for s in r.workload.systems)
        and len({r.systems[s].trips for s in r.workload.systems}) > 1
    ]
    trip_rows = sum(len(r.workload.systems) for r in trip_results)
    trip_height = 0.9 + 0.28 * trip_rows if trip_results else 0.0
    panel_height = 2.6
    fig = plt.figure(figsize=(18, nrows * panel_height + trip_height + 1.2), dpi=110)
    heights = [panel_height] * nrows + ([trip_height] if trip_results else [])
    grid = fig.add_gridspec(len(heights), ncols, height_ratios=heights, hspace=0.9, wspace=0.55)
    spare: dict[str, str] = {}
    for row, col, width, members in placed:
        ax = fig.add_subplot(grid[row, col : col + width])
        if width == 1:
            _workload_panel(ax, members[0], spare)
        else:
            _series_panel(ax, members, spare)
    if trip_results:
        ax = fig.add_subplot(grid[nrows, :])
        _trips_panel(ax, trip_results, spare)
    dirty = " (dirty)" if info.dirty else ""
    fig.suptitle(
        "batchq benchmarks: bars are each system's time over the baseline's (median of the "
        "per-cycle ratios; shorter is better; the dashed line is the baseline)\n"
        f"{info.date}, commit {info.commit}{dirty}, {info.python}, {info.cpus} CPUs, "
        f"{info.mode} run",
        fontsize=12,
    )
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def _ratio_text(ratio: float) -> str:
    return f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"


def _workload_panel(ax: Any, r: WorkloadResult, spare: dict[str, str]) -> None:
    w = r.workload
    systems = list(w.systems)
    ratios = [r.ratio(s) for s in systems]
    colours = [_colour(s, spare) for s in systems]
    ys = list(range(len(systems)))[::-1]
    bars = ax.barh(ys, ratios, color=colours)
    base = systems.index(w.baseline)
    bars[base].set_hatch("//")
    bars[base].set_edgecolor("black")
    ax.axvline(1.0, color="black", linestyle="--", linewidth=0.8)
    ax.set_yticks(ys)
    ax.set_yticklabels(systems, fontsize=8)
    spread = max(ratios) / min(ratios) if min(ratios) > 0 else 1.0
    if spread > 30:
        ax.set_xscale("log")
        ax.set_xlim(min(ratios) / 2, max(ratios) * 8)
    else:
        ax.set_xlim(0, max(ratios) * 1.6)
    for y, ratio, s in zip(ys, ratios, systems, strict=True):
        per = format_measure(r.per_unit(s), w.measure)
        ax.text(ratio, y, f" {_ratio_text(ratio)}  {per}/{w.unit}", va="center", fontsize=7)
    what = "bytes" if w.measure == "bytes" else "time"
    ax.set_title(f"{w.name}\n{what} vs {w.baseline}", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)


def _series_panel(ax: Any, members: Sequence[WorkloadResult], spare: dict[str, str]) -> None:
    """Per-unit medians against the series' x, one line per system, log-log."""
    members = sorted(members, key=lambda r: r.workload.series[1] if r.workload.series else 0)
    first = members[0].workload
    systems = [s for s in first.systems if all(s in r.systems for r in members)]
    xs = [r.workload.series[1] if r.workload.series else 0 for r in members]
    for s in systems:
        ys = [r.per_unit(s) for r in members]
        ax.plot(xs, ys, marker="o", color=_colour(s, spare), label=s)
        for x, y in ((xs[0], ys[0]), (xs[-1], ys[-1])):
            ax.annotate(
                format_measure(y, first.measure),
                (x, y),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(lambda v, _pos: format_measure(v, first.measure))
    ax.yaxis.set_minor_formatter(lambda v, _pos: "")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:g}" for x in xs], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel(f"{first.measure} per {first.unit}", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")
    series = first.series[0] if first.series else first.name
    ax.set_title(f"{series}: {first.measure} per {first.unit} (flat is good)", fontsize=9)


def _trips_panel(ax: Any, results: Sequence[WorkloadResult], spare: dict[str, str]) -> None:
    labels: list[str] = []
    values: list[int] = []
    colours: list[str] = []
    for r in results:
        for s in r.workload.systems:
            labels.append(f"{r.workload.name}: {s}")
            values.append(r.systems[s].trips or 0)
            colours.append(_colour(s, spare))
    ys = list(range(len(labels)))[::-1]
    ax.barh(ys, [max(v, 0.8) for v in values], color=colours)
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlim(0.7, max(values) * 4)
    for y, v in zip(ys, values, strict=True):
        ax.text(max(v, 0.8), y, f" {v}", va="center", fontsize=8)
    ax.set_title(
        "round trips to the data source per repetition (workloads where the systems differ)",
        fontsize=10,
    )
