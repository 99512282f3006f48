"""Where a run's results go: the terminal table, ``results.md`` and ``results.json``.

Every report leads with the machine, Python, commit and load, because a ratio means little without
them, and states that absolute times belong to this run only.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ._harness import SummaryLine, WorkloadResult, format_measure

__all__ = ["RunInfo", "collect_info", "render_markdown", "render_terminal", "to_json"]

_PEERS = ("batchq", "asynq", "aiodataloader", "qcore", "pymemcache", "matplotlib")


@dataclass
class RunInfo:
    """The facts a reader needs to weigh the numbers."""

    date: str
    commit: str
    dirty: bool
    platform: str
    cpu: str
    cpus: int | None
    python: str
    versions: dict[str, str]
    mode: str
    memcached: str
    load_start: tuple[float, float, float] | None
    load_end: tuple[float, float, float] | None = None
    seconds: float = 0.0
    skipped_modules: list[str] = field(default_factory=list)

    @property
    def commit_text(self) -> str:
        return self.commit + (
            " (uncommitted changes in batchq/ or benchmarks/)" if self.dirty else ""
        )


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - not on Linux
        return None


def collect_info(root: Path, *, mode: str, memcached: str) -> RunInfo:
    """Machine, Python, package versions, commit (+ dirty flag) and load average now."""
    commit = _git(root, "rev-parse", "--short", "HEAD") or "unknown"
    # Only changes that can move the numbers count as dirty: not docs, and not results.
    status = _git(
        root,
        "status",
        "--porcelain",
        "--",
        "batchq",
        "benchmarks",
        ":!benchmarks/results",
        ":!benchmarks/reference",
    )
    versions = {}
    for name in _PEERS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return RunInfo(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        commit=commit,
        dirty=bool(status),
        platform=platform.platform(),
        cpu=_cpu_model(),
        cpus=os.cpu_count(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        versions=versions,
        mode=mode,
        memcached=memcached,
        load_start=_load(),
    )


def _load_text(load: tuple[float, float, float] | None) -> str:
    return "n/a" if load is None else " / ".join(f"{x:.2f}" for x in load)


def _trips_text(result: WorkloadResult, system: str) -> str:
    sr = result.systems[system]
    if not sr.round_trips:
        return "-"
    lo, hi = min(sr.round_trips), max(sr.round_trips)
    return str(lo) if lo == hi else f"{sr.trips} ({lo}-{hi})"


def _rows(result: WorkloadResult) -> list[list[str]]:
    w = result.workload
    rows = []
    for name in w.systems:
        sr = result.systems[name]
        rows.append(
            [
                name + (" (baseline)" if name == w.baseline else ""),
                format_measure(sr.median, w.measure),
                format_measure(sr.min, w.measure),
                format_measure(sr.max, w.measure),
                f"{result.ratio(name):.3g}x",
                format_measure(result.per_unit(name), w.measure),
                _trips_text(result, name),
            ]
        )
    return rows


def _headers(result: WorkloadResult) -> list[str]:
    w = result.workload
    what = "median" if w.measure == "time" else "median bytes"
    return [
        "system",
        what,
        "min",
        "max",
        f"ratio vs {w.baseline}",
        f"per {w.unit}",
        "round trips",
    ]


def _status(result: WorkloadResult) -> str | None:
    if result.error is not None:
        return f"FAILED: {result.error}"
    if result.skipped is not None:
        return f"skipped: {result.skipped}"
    if not result.ok:
        return "no repetitions"
    return None


def render_terminal(results: Sequence[WorkloadResult], summaries: Sequence[SummaryLine]) -> str:
    """Plain-text tables, one per workload, then targets and summaries."""
    out: list[str] = []
    for r in results:
        w = r.workload
        out.append("")
        status = _status(r)
        if status is not None:
            out.append(f"{w.name}: {status}")
            continue
        out.append(
            f"{w.name}: {w.description} ({w.units} {w.unit}s, {r.reps} reps, baseline {w.baseline})"
        )
        table = [_headers(r), *_rows(r)]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            cells = [row[0].ljust(widths[0])]
            cells += [c.rjust(n) for c, n in zip(row[1:], widths[1:], strict=True)]
            out.append("  " + "  ".join(cells))
        out.extend(
            f"  target {t.text}: {t.shown} {'PASS' if t.passed else 'MISS'}" for t in r.targets()
        )
    if summaries:
        out.append("")
        for s in summaries:
            verdict = "" if s.passed is None else (" PASS" if s.passed else " MISS")
            target = f" (target {s.target})" if s.target else ""
            out.append(f"{s.label}: {s.shown}{target}{verdict}")
    return "\n".join(out) + "\n"


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in headers) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
    lines.extend("| " + " | ".join(esc(c) for c in row) + " |" for row in rows)
    return lines


def render_markdown(
    info: RunInfo, results: Sequence[WorkloadResult], summaries: Sequence[SummaryLine]
) -> str:
    """``results.md``: the run's facts, the targets, and a table per workload."""
    lines = [
        "# batchq benchmarks: results of one run",
        "",
        (
            "Written by `python -m benchmarks` (`make bench`); see docs/benchmarks.md for what "
            "each workload means. Each workload runs its systems interleaved in one process; "
            "compare the ratios. Absolute times belong to this run on this machine only."
        ),
        "",
        f"- Date: {info.date}",
        f"- Commit: {info.commit_text}",
        f"- Machine: {info.platform}; {info.cpus} CPUs ({info.cpu})",
        f"- Python: {info.python}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in info.versions.items()),
        f"- Mode: {info.mode}; memcached: {info.memcached}",
        (
            f"- Load average (1/5/15 min) at start: {_load_text(info.load_start)}; "
            f"at end: {_load_text(info.load_end)} (above the CPU count means other processes "
            "competed for the CPU)"
        ),
        f"- Wall time of the suite: {info.seconds:.0f} s",
    ]
    lines.extend(f"- Not run: {skipped}" for skipped in info.skipped_modules)
    target_rows = [
        [r.workload.name, t.text, t.shown, "PASS" if t.passed else "**MISS**"]
        for r in results
        for t in r.targets()
    ]
    target_rows += [
        ["(summary)", f"{s.label}: {s.target}", s.shown, "PASS" if s.passed else "**MISS**"]
        for s in summaries
        if s.passed is not None
    ]
    if target_rows:
        lines += ["", "## Targets", ""]
        lines += _md_table(["workload", "target", "measured", "result"], target_rows)
    if summaries:
        lines += ["", "## Across workloads", ""]
        lines += _md_table(
            ["figure", "value", "target"], [[s.label, s.shown, s.target or "-"] for s in summaries]
        )
    for r in results:
        w = r.workload
        lines += ["", f"## {w.name}", "", w.description, ""]
        status = _status(r)
        if status is not None:
            lines.append(status)
            continue
        lines.append(
            f"{w.units} {w.unit}s per repetition; {r.reps} "
            + ("repetition" if r.reps == 1 else "repetitions")
            + " per system"
            + (" after one warm-up" if w.warmup else "")
            + f"; baseline: {w.baseline}."
        )
        lines.append("")
        lines += _md_table(_headers(r), _rows(r))
    return "\n".join(lines) + "\n"


def to_json(
    info: RunInfo, results: Sequence[WorkloadResult], summaries: Sequence[SummaryLine]
) -> str:
    """Everything, samples included, for later analysis (not committed)."""
    data: dict[str, object] = {
        "info": {**info.__dict__, "commit_text": info.commit_text},
        "workloads": [_workload_json(r) for r in results],
        "summaries": [s.__dict__ for s in summaries],
    }
    return json.dumps(data, indent=1, ensure_ascii=False)


def _workload_json(r: WorkloadResult) -> Mapping[str, object]:
    w = r.workload
    base: dict[str, object] = {
        "name": w.name,
        "description": w.description,
        "baseline": w.baseline,
        "units": w.units,
        "unit": w.unit,
        "measure": w.measure,
        "reps": r.reps,
        "seconds": r.seconds,
        "skipped": r.skipped,
        "error": r.error,
    }
    if r.ok:
        base["systems"] = {
            name: {
                "median": sr.median,
                "min": sr.min,
                "max": sr.max,
                "ratio": r.ratio(name),
                "per_unit": r.per_unit(name),
                "round_trips": sr.trips,
                "samples": sr.samples,
            }
            for name, sr in r.systems.items()
        }
        base["targets"] = [
            {"target": t.text, "value": t.value, "passed": t.passed} for t in r.targets()
        ]
    return base
