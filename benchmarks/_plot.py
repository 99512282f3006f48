"""The run's two figures.

- ``headline.png``: what a reader of the README wants in ten seconds. One row per system, grouped
  by workload: each system's time (or memory) over its workload's baseline, on a log axis so a
  17x bar cannot squash 1.38x against 2.27x; whiskers from the fastest to the slowest
  repetition; the targets as red marks; the ratio printed with three significant digits.
- ``detail.png``: every workload and system in the same form, the round cost against depth, and
  the round trips, with labelled axes and units.

The figures are drawn from :class:`WorkloadFigures`, which a finished run gives
(:func:`figures_from_results`) and so does a results table written earlier
(:func:`figures_from_markdown`): reference figures can be redrawn without rerunning the suite.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._harness import Measure, Workload, WorkloadResult, format_measure

__all__ = [
    "HEADLINE",
    "SystemFigures",
    "WorkloadFigures",
    "figures_from_markdown",
    "figures_from_results",
    "ratio_text",
    "write_plots",
]

# The headline: per workload, the systems shown and a short title (the rest: detail figure).
# A workload missing from a run is left out (memcache-page-local stands in for the real-memcached
# page when no memcached ran).
HEADLINE: dict[str, tuple[str, tuple[str, ...]]] = {
    "get-and-set-3000": (
        "3,000 tasks, no batching (asynq's get_and_set)",
        ("batchq", "asyncio"),
    ),
    "fanout-10000": ("10,000 tasks blocked on one batch", ("batchq", "aiodataloader")),
    "chain-1000": ("1,000 rounds in a chain", ("batchq", "aiodataloader")),
    "memory-pending-tasks": ("memory per pending task", ("batchq",)),
    "memcache-page-memcached": (
        "memcached page (depth 4, 3,000 keys, loopback server)",
        ("batchq", "batchq-new-cache", "asynq", "aiodataloader", "naive"),
    ),
    "memcache-page-local": (
        "memcached page on the in-process LocalClient",
        ("batchq", "batchq-new-cache", "asynq", "aiodataloader", "naive"),
    ),
    "memcache-cluster-4": (
        "one round over 4 servers (1-4 ms each)",
        ("batchq", "hashclient-sequential"),
    ),
}

# Distinct colours, the same for a system in every figure.
_COLOURS = {
    "batchq": "#1f5fbf",
    "batchq-new-cache": "#5d9be8",
    "batchq-helpers": "#9cc3f2",
    "asynq": "#e8710a",
    "asynq-noassert": "#f5b06b",
    "aiodataloader": "#2a9d3f",
    "asyncio": "#8e44ad",
    "hand-batched": "#555555",
    "naive": "#c0392b",
    "slowest-alone": "#555555",
    "hashclient-sequential": "#8d6e63",
}
_SPARE = ["#17a2b8", "#d81b60", "#6d4c41", "#7cb342", "#5e35b1", "#f9a825"]
_TARGET = "#d62728"


@dataclass(frozen=True)
class SystemFigures:
    system: str
    ratio: float  # median over cycles of the per-cycle ratio to the baseline
    low: float  # the fastest repetition over the baseline's median
    high: float  # the slowest repetition over the baseline's median
    per_unit: float  # median per unit, in the workload's measure
    trips: int | None


@dataclass(frozen=True)
class TargetLine:
    system: str
    at_most: float
    label: str


@dataclass(frozen=True)
class WorkloadFigures:
    name: str
    description: str
    baseline: str
    measure: Measure
    unit: str
    systems: tuple[SystemFigures, ...]
    targets: tuple[TargetLine, ...] = ()  # ratio targets against the baseline
    unit_targets: tuple[TargetLine, ...] = ()  # per-unit targets (seconds or bytes per unit)
    series: tuple[str, float] | None = None

    def system(self, name: str) -> SystemFigures:
        for s in self.systems:
            if s.system == name:
                return s
        raise KeyError(name)


def _targets(w: Workload) -> tuple[tuple[TargetLine, ...], tuple[TargetLine, ...]]:
    ratio = tuple(
        TargetLine(t.system, t.at_most, t.label)
        for t in w.targets
        if t.kind == "ratio" and t.against == w.baseline
    )
    unit = tuple(
        TargetLine(t.system, t.at_most, t.label) for t in w.targets if t.kind == "per_unit"
    )
    return ratio, unit


def figures_from_results(results: Sequence[WorkloadResult]) -> list[WorkloadFigures]:
    """The figures of the workloads of a run that finished."""
    out = []
    for r in results:
        if not r.ok:
            continue
        w = r.workload
        base = r.systems[w.baseline].median
        systems = tuple(
            SystemFigures(
                s,
                r.ratio(s),
                r.systems[s].min / base,
                r.systems[s].max / base,
                r.per_unit(s),
                r.systems[s].trips,
            )
            for s in w.systems
        )
        ratio, unit = _targets(w)
        out.append(
            WorkloadFigures(
                w.name, w.description, w.baseline, w.measure, w.unit, systems, ratio, unit, w.series
            )
        )
    return out


# -- reading a results table back ----------------------------------------------------------------

_SCALES = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9, "B": 1.0, "kB": 1e3, "MB": 1e6}


def _measure_value(text: str) -> float:
    m = re.fullmatch(r"([0-9.e+-]+) (s|ms|µs|ns|B|kB|MB)", text.strip())
    if m is None:
        msg = f"cannot read {text!r} as a measurement such as '12.3 ms' or '484 B'"
        raise ValueError(msg)
    return float(m.group(1)) * _SCALES[m.group(2)]


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in line.strip().strip("|").split(" | ")]


def figures_from_markdown(
    text: str, workloads: Mapping[str, Workload] | None = None
) -> tuple[dict[str, str], list[WorkloadFigures]]:
    """The run's facts (its ``- Date: ...`` lines) and figures, from a ``results.md``.

    The table has each system's median, min, max, ratio and per-unit value. Targets and series
    come from the registered workloads of the same name, when ``workloads`` has them.
    """
    workloads = workloads or {}
    facts: dict[str, str] = {}
    figures: list[WorkloadFigures] = []
    lines = text.splitlines()
    for line in lines:
        m = re.match(r"^- ([A-Z][\w ()/]*): (.*)$", line)
        if m is not None and m.group(1) not in facts:
            facts[m.group(1)] = m.group(2)
    sections = [i for i, line in enumerate(lines) if line.startswith("## ")]
    for k, start in enumerate(sections):
        name = lines[start][3:].strip()
        end = sections[k + 1] if k + 1 < len(sections) else len(lines)
        body = lines[start + 1 : end]
        table = [line for line in body if line.startswith("| ")]
        if not table or not table[0].startswith("| system |"):
            continue  # the targets and summaries sections
        header = _cells(table[0])
        measure: Measure = "bytes" if header[1] == "median bytes" else "time"
        unit = header[5].removeprefix("per ")
        description = next((line for line in body if line.strip()), "")
        rows = [_cells(line) for line in table[1:]]  # the |---| line is not in `table`
        baseline = next(r[0] for r in rows if r[0].endswith(" (baseline)"))
        baseline = baseline.removesuffix(" (baseline)")
        base_median = next(
            _measure_value(r[1]) for r in rows if r[0].removesuffix(" (baseline)") == baseline
        )
        systems = []
        for r in rows:
            trips = r[6].split(" ")[0]
            systems.append(
                SystemFigures(
                    r[0].removesuffix(" (baseline)"),
                    float(r[4].removesuffix("x")),
                    _measure_value(r[2]) / base_median,
                    _measure_value(r[3]) / base_median,
                    _measure_value(r[5]),
                    None if trips == "-" else int(trips),
                )
            )
        w = workloads.get(name)
        ratio, unit_targets = _targets(w) if w is not None else ((), ())
        figures.append(
            WorkloadFigures(
                name,
                description,
                baseline,
                measure,
                unit,
                tuple(systems),
                ratio,
                unit_targets,
                w.series if w is not None else None,
            )
        )
    return facts, figures


# -- drawing --------------------------------------------------------------------------------------


def ratio_text(ratio: float) -> str:
    """Three significant digits, never rounded onto a target: 1.47x, 0.358x, 18.3x, 102x."""
    if ratio >= 1000:
        return f"{ratio:,.0f}x"
    return f"{ratio:#.3g}".rstrip(".") + "x"  # keeps the zeros: 1.00x, 2.50x


def _colour(system: str, assigned: dict[str, str]) -> str:
    if system in _COLOURS:
        return _COLOURS[system]
    if system.startswith("batchq"):
        return _COLOURS["batchq-new-cache"]
    if system not in assigned:
        assigned[system] = _SPARE[len(assigned) % len(_SPARE)]
    return assigned[system]


_NICE = (1.0, 2.0, 5.0)


def _nice_below(value: float) -> float:
    """The largest 1, 2 or 5 times a power of ten that is at most ``value``."""
    exp = math.floor(math.log10(value))
    return max(m * 10.0**e for e in (exp - 1, exp) for m in _NICE if m * 10.0**e <= value)


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for exp in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in _NICE:
            v = m * 10.0**exp
            if lo <= v <= hi:
                ticks.append(v)
    if len(ticks) > 9:  # keep the powers of ten (and 1x) on wide ranges
        ticks = [v for v in ticks if math.isclose(math.log10(v) % 1, 0, abs_tol=1e-9)]
    return ticks


def _group_axis(
    ax: Any,
    fig: WorkloadFigures,
    systems: Sequence[str],
    title: str,
    spare: dict[str, str],
    *,
    fontsize: float,
    per_unit: bool = False,
    xlabel: bool = True,
) -> None:
    """One workload: a dot per system at its ratio, whiskers for the spread, targets, labels.

    ``per_unit``: also print each system's median per unit (µs per task, bytes per task).
    """
    rows = [fig.system(s) for s in systems]
    ys = list(range(len(rows)))[::-1]
    targets = [t for t in fig.targets if t.system in systems]
    values = [1.0, *(r.low for r in rows), *(r.high for r in rows), *(t.at_most for t in targets)]
    lo, hi = _nice_below(min(values) / 1.25), max(values) * 1.5
    # Room on the right for the printed ratios.
    hi_axis = hi * (hi / lo) ** 0.28
    ax.set_xscale("log")
    ax.set_xlim(lo, hi_axis)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1.0, zorder=1)
    ax.annotate(
        f"{fig.baseline} = 1x",
        (1.0, -0.7),
        xytext=(3, 2),
        textcoords="offset points",
        ha="left",
        va="bottom",
        fontsize=fontsize - 2.5,
        color="#555555",
    )
    for y, r in zip(ys, rows, strict=True):
        colour = _colour(r.system, spare)
        left = max(r.ratio - r.low, 0.0)
        right = max(r.high - r.ratio, 0.0)
        ax.errorbar(
            [r.ratio],
            [y],
            xerr=[[left], [right]],
            fmt="o",
            color=colour,
            markersize=8,
            elinewidth=2,
            capsize=4,
            zorder=3,
        )
        label = ratio_text(r.ratio)
        unit_targets = [t for t in fig.unit_targets if t.system == r.system]
        per = format_measure(r.per_unit, fig.measure)
        if unit_targets:
            limit = format_measure(unit_targets[0].at_most, fig.measure)
            label += f"  ({per} per {fig.unit}; target ≤ {limit})"
        elif per_unit:
            label += f"  ({per} per {fig.unit})"
        ax.annotate(
            label,
            (max(r.high, r.ratio), y),
            xytext=(8, 0),
            textcoords="offset points",
            va="center",
            fontsize=fontsize,
            fontweight="bold" if r.system == "batchq" else "normal",
        )
    for t in targets:
        y = ys[systems.index(t.system)]
        ax.plot(
            [t.at_most, t.at_most], [y - 0.42, y + 0.42], color=_TARGET, linewidth=2.5, zorder=2
        )
        ax.annotate(
            f"target ≤ {t.at_most:g}x",
            (t.at_most, y + 0.42),
            xytext=(0, 1),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=fontsize - 2,
            color=_TARGET,
        )
    ax.set_yticks(ys)
    ax.set_yticklabels([r.system for r in rows], fontsize=fontsize)
    for label, r in zip(ax.get_yticklabels(), rows, strict=True):
        label.set_color(_colour(r.system, spare))
        if r.system == "batchq":
            label.set_fontweight("bold")
    ticks = _log_ticks(lo, hi_axis)
    ax.xaxis.set_major_locator(_fixed(ticks))
    ax.xaxis.set_minor_locator(_fixed([]))
    ax.set_xticklabels([f"{v:g}x" for v in ticks], fontsize=fontsize - 1)
    ax.grid(axis="x", color="#dddddd", linewidth=0.8, zorder=0)
    ax.set_axisbelow(True)
    what = "memory" if fig.measure == "bytes" else "time"
    if xlabel:
        ax.set_xlabel(
            f"{what} relative to {fig.baseline} (log scale)", fontsize=fontsize - 1.5, labelpad=2
        )
    ax.set_title(
        f"{title}: {what} vs {fig.baseline}", loc="left", fontsize=fontsize + 1, fontweight="bold"
    )
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _fixed(ticks: Sequence[float]) -> Any:
    from matplotlib.ticker import FixedLocator

    return FixedLocator(list(ticks))


def _headline_groups(
    figures: Sequence[WorkloadFigures],
) -> list[tuple[WorkloadFigures, list[str], str]]:
    by_name = {f.name: f for f in figures}
    groups = []
    for name, (title, systems) in HEADLINE.items():
        if name == "memcache-page-local" and "memcache-page-memcached" in by_name:
            continue
        f = by_name.get(name)
        if f is None:
            continue
        present = [s.system for s in f.systems]
        shown = [s for s in systems if s in present]
        if shown:
            groups.append((f, shown, title))
    return groups


def _stacked(
    groups: Sequence[tuple[WorkloadFigures, list[str], str]],
    spare: dict[str, str],
    *,
    width: float,
    fontsize: float,
    extra_rows: Sequence[float] = (),
    bottom: float = 0.6,
    detail: bool = False,
) -> tuple[Any, list[Any]]:
    import matplotlib.pyplot as plt

    heights = [0.55 + 0.36 * len(systems) for _, systems, _ in groups] + list(extra_rows)
    # Room for the tick labels (and in the detail figure each axis' label) and the next title.
    gaps = (0.95 if detail else 0.75) * (len(heights) - 1)
    total = sum(heights) + gaps + 0.9 + bottom  # 0.9 in above for the titles; the note below
    fig = plt.figure(figsize=(width, total), dpi=100)
    grid = fig.add_gridspec(
        len(heights),
        1,
        height_ratios=heights,
        hspace=gaps / len(heights) / (sum(heights) / len(heights)),
        top=1 - 0.9 / total,
        bottom=bottom / total,
    )
    axes = [fig.add_subplot(grid[i, 0]) for i in range(len(heights))]
    for ax, (f, systems, title) in zip(axes, groups, strict=False):
        _group_axis(ax, f, systems, title, spare, fontsize=fontsize, per_unit=detail, xlabel=detail)
    return fig, axes


_HOW_TO_READ = (
    "Dot: median over repetitions of the system's time (memory) divided by the baseline's in the "
    "same cycle; whiskers: its fastest and slowest repetition over the baseline's median. "
    "Dashed line: the baseline (1x). Log scale; lower is better."
)


def write_plots(caption: str, figures: Sequence[WorkloadFigures], out_dir: Path) -> list[Path]:
    """Draw ``headline.png`` and ``detail.png`` into ``out_dir``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    spare: dict[str, str] = {}

    # A run of other workloads (say --only depth) shows all of them in its headline.
    groups = _headline_groups(figures) or [
        (f, [s.system for s in f.systems if s.system != f.baseline], f.name)
        for f in figures
        if f.series is None
    ]
    if groups:
        fig, _ = _stacked(groups, spare, width=9.0, fontsize=11, bottom=0.8)
        fig.suptitle(
            "batchq against asynq, aiodataloader and hand-batched code",
            fontsize=14,
            fontweight="bold",
            y=1 - 0.1 / fig.get_figheight(),
        )
        fig.text(
            0.5,
            1 - 0.42 / fig.get_figheight(),
            caption,
            ha="center",
            va="top",
            fontsize=9,
            color="#444444",
        )
        fig.text(
            0.01, 0.1 / fig.get_figheight(), _HOW_TO_READ, fontsize=8.5, color="#444444", wrap=True
        )
        path = out_dir / "headline.png"
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    written.append(_write_detail(caption, figures, out_dir / "detail.png", spare))
    return written


def _write_detail(
    caption: str, figures: Sequence[WorkloadFigures], path: Path, spare: dict[str, str]
) -> Path:
    import matplotlib.pyplot as plt

    series: dict[str, list[WorkloadFigures]] = {}
    groups = []
    for f in figures:
        if f.series is not None:
            series.setdefault(f.series[0], []).append(f)
        else:
            groups.append((f, [s.system for s in f.systems if s.system != f.baseline], f.name))
    trips = [
        f
        for f in figures
        if all(s.trips is not None for s in f.systems) and len({s.trips for s in f.systems}) > 1
    ]
    trip_rows = sum(len(f.systems) for f in trips)
    extra = [3.2] * len(series) + ([0.5 + 0.3 * trip_rows] if trips else [])
    fig, axes = _stacked(
        groups, spare, width=10.0, fontsize=10, extra_rows=extra, bottom=1.1, detail=True
    )
    rest = axes[len(groups) :]
    for ax, members in zip(rest, series.values(), strict=False):
        _series_axis(ax, members, spare)
    if trips:
        _trips_axis(rest[-1], trips, spare)
    height = fig.get_figheight()
    fig.suptitle(
        "batchq benchmarks: every workload", fontsize=14, fontweight="bold", y=1 - 0.1 / height
    )
    fig.text(0.5, 1 - 0.42 / height, caption, ha="center", va="top", fontsize=9, color="#444444")
    fig.text(0.01, 0.001, _HOW_TO_READ, fontsize=8.5, color="#444444", wrap=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _series_axis(ax: Any, members: Sequence[WorkloadFigures], spare: dict[str, str]) -> None:
    """Per-unit medians against the series' x, one line per system, log-log."""
    members = sorted(members, key=lambda f: f.series[1] if f.series else 0.0)
    first = members[0]
    names = [
        s.system
        for s in first.systems
        if all(s.system in {x.system for x in m.systems} for m in members)
    ]
    xs = [m.series[1] if m.series else 0.0 for m in members]
    for name in names:
        ys = [m.system(name).per_unit for m in members]
        ax.plot(xs, ys, marker="o", color=_colour(name, spare), label=name, linewidth=2)
        for x, y in ((xs[0], ys[0]), (xs[-1], ys[-1])):
            ax.annotate(
                format_measure(y, first.measure),
                (x, y),
                textcoords="offset points",
                xytext=(0, 7),
                ha="center",
                fontsize=9,
            )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(lambda v, _pos: format_measure(v, first.measure))
    ax.yaxis.set_minor_formatter(lambda v, _pos: "")
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:g}" for x in xs], fontsize=9)
    ax.tick_params(axis="y", labelsize=9)
    ax.set_xlabel(f"depth ({first.unit}s per run, log scale)", fontsize=10)
    what = "time" if first.measure == "time" else "bytes"
    ax.set_ylabel(f"{what} per {first.unit} (log scale)", fontsize=10)
    ax.legend(fontsize=9, loc="upper left")
    ax.grid(color="#dddddd", linewidth=0.8)
    title = first.series[0] if first.series else first.name
    ax.set_title(
        f"{title}: a flat line means a round costs the same at any depth",
        loc="left",
        fontsize=11,
        fontweight="bold",
    )


def _trips_axis(ax: Any, figures: Sequence[WorkloadFigures], spare: dict[str, str]) -> None:
    labels: list[str] = []
    values: list[int] = []
    colours: list[str] = []
    for f in figures:
        for s in f.systems:
            labels.append(f"{f.name}: {s.system}")
            values.append(s.trips or 0)
            colours.append(_colour(s.system, spare))
    ys = list(range(len(labels)))[::-1]
    ax.scatter([max(v, 1) for v in values], ys, color=colours, s=40, zorder=3)
    ax.set_xscale("log")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_xlim(0.7, max(values) * 6)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    for y, v in zip(ys, values, strict=True):
        ax.annotate(
            f"{v:,}",
            (max(v, 1), y),
            xytext=(7, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:,.0f}")
    ax.set_xlabel("requests to the data source per repetition (log scale)", fontsize=10)
    ax.grid(axis="x", color="#dddddd", linewidth=0.8)
    ax.set_title(
        "round trips, where the systems differ (fewer is better)",
        loc="left",
        fontsize=11,
        fontweight="bold",
    )
