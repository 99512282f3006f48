"""``python -m benchmarks [--quick] [--only NAME] [--memcached]``: run the suite and report it.

Each run writes its tables and figures to a directory of its own under ``benchmarks/results/``
(ignored by git, so a run never changes a tracked file) and prints where. The reference results
the README quotes live in ``benchmarks/reference/``; ``--replot`` redraws figures from a results
table without running anything.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ._harness import (
    REGISTRY,
    BenchEnv,
    BenchmarkError,
    Progress,
    Registry,
    SummaryLine,
    WorkloadResult,
    run_suite,
)

_PACKAGE_DIR = Path(__file__).resolve().parent
# Untracked (see .gitignore): every run gets results/<UTC time>-<mode>/.
RESULTS_DIR = _PACKAGE_DIR / "results"
_QUICK_SCALE = 0.25
# The order of the report: the scheduler set first (what a newcomer wants to see), then the
# rest; modules not named here follow in alphabetical order.
_MODULE_ORDER = (
    "bench_scheduler",
    "bench_depth",
    "bench_memory",
    "bench_latency",
    "bench_memcache",
)


def _module_rank(name: str) -> tuple[int, str]:
    return (_MODULE_ORDER.index(name) if name in _MODULE_ORDER else len(_MODULE_ORDER), name)


def discover(package: str = "benchmarks", path: Sequence[str] | None = None) -> list[str]:
    """Import every ``bench_*`` module of ``package``; return why each failing one was skipped."""
    search = list(path) if path is not None else [str(_PACKAGE_DIR)]
    skipped = []
    for info in sorted(pkgutil.iter_modules(search), key=lambda m: _module_rank(m.name)):
        if not info.name.startswith("bench_"):
            continue
        try:
            importlib.import_module(f"{package}.{info.name}")
        except Exception as e:
            skipped.append(f"{package}/{info.name}.py ({type(e).__name__}: {e})")
    return skipped


def compute_summaries(registry: Registry, results: Sequence[WorkloadResult]) -> list[SummaryLine]:
    """Every registered summary over the workloads that ran; a failing one becomes a line."""
    by_name: Mapping[str, WorkloadResult] = {r.workload.name: r for r in results if r.ok}
    lines: list[SummaryLine] = []
    for summary in registry.summaries.values():
        try:
            lines.extend(summary.compute(by_name))
        except Exception as e:
            lines.append(
                SummaryLine(f"{summary.name} (failed)", float("nan"), f"{type(e).__name__}: {e}")
            )
    return lines


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run batchq's benchmarks: each workload compares its systems interleaved in "
        "one process and reports ratios to a baseline measured in the same run.",
    )
    p.add_argument(
        "--quick", action="store_true", help="a quarter of the time budget (numbers are noisier)"
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this workload (a name, a family such as 'depth', or a glob); repeatable",
    )
    mc = p.add_mutually_exclusive_group()
    mc.add_argument(
        "--memcached",
        action="store_true",
        help="require a real memcached and run on it too (same as BENCH_MEMCACHED=1)",
    )
    mc.add_argument(
        "--no-memcached",
        action="store_true",
        help="skip the real-memcached workloads (same as BENCH_MEMCACHED=0)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write results.md, results.json, headline.png and detail.png (default: a "
        f"new directory under {RESULTS_DIR.relative_to(_PACKAGE_DIR.parent)}/, which git ignores)",
    )
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument(
        "--replot",
        type=Path,
        metavar="RESULTS_MD",
        default=None,
        help="run nothing: redraw headline.png and detail.png from a results table written by "
        "an earlier run, into --out (default: the table's directory)",
    )
    return p


def _memcached_binary(force: bool, refuse: bool) -> tuple[str | None, str]:
    """The memcached binary to use (None: no real-server workloads) and how to describe it."""
    from batchq.testing import find_memcached

    flag = os.environ.get("BENCH_MEMCACHED", "")
    if refuse or flag == "0":
        return None, "off (--no-memcached or BENCH_MEMCACHED=0)"
    if force or flag == "1":
        binary = find_memcached()
        if binary is None:
            msg = (
                "BENCH_MEMCACHED=1 / --memcached asked for a real memcached, but none is "
                "installed; install it ('BENCH_MEMCACHED=1 make bench' runs "
                "scripts/ensure-memcached.sh first, or 'apt-get install memcached'), or run "
                "without BENCH_MEMCACHED"
            )
            raise BenchmarkError(msg)
        return binary, binary
    binary = find_memcached()
    if binary is None:
        return None, "not installed (BENCH_MEMCACHED=1 make bench installs it first)"
    return binary, binary


def run_directory(date: str, mode: str, root: Path = RESULTS_DIR) -> Path:
    """A new directory for one run's files: ``<root>/<UTC date and time>-<mode>``."""
    stamp = re.sub(r"[^0-9]", "", date)[:12]  # "2026-11-30 07:05 UTC" -> "202611300705"
    kind = mode.split(" ")[0]
    base = f"{stamp[:8]}-{stamp[8:]}-{kind}"
    path = root / base
    n = 1
    while path.exists():
        n += 1
        path = root / f"{base}-{n}"
    return path


def caption(facts: Mapping[str, str]) -> str:
    """One line naming the run a figure shows: date, commit, machine, Python, mode."""
    machine = facts.get("Machine", "")
    cpus = machine.split("; ", 1)[1] if "; " in machine else machine
    return ", ".join(
        x
        for x in (
            facts.get("Date", ""),
            f"commit {facts['Commit']}" if "Commit" in facts else "",
            cpus,
            facts.get("Python", ""),
            f"{facts['Mode'].split(';')[0]} run" if "Mode" in facts else "",
        )
        if x
    )


def replot(table: Path, out_dir: Path | None) -> int:
    """Redraw the figures of an earlier run from its results table."""
    from ._plot import figures_from_markdown, write_plots

    if not table.is_file():
        print(
            f"error: --replot {str(table)!r}: no such file (a results.md of a run)", file=sys.stderr
        )
        return 2
    for message in discover():
        print(f"skipping {message}; its targets will not be drawn", file=sys.stderr)
    facts, figures = figures_from_markdown(table.read_text(), REGISTRY.workloads)
    if not figures:
        print(f"error: {str(table)!r} has no workload tables", file=sys.stderr)
        return 2
    out = out_dir if out_dir is not None else table.parent
    paths = write_plots(caption(facts), figures, out)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.replot is not None:
        return replot(args.replot, args.out)
    started = time.perf_counter()
    skipped_modules = discover()
    for message in skipped_modules:
        print(f"skipping {message}; its workloads will not run", file=sys.stderr)
    try:
        workloads = REGISTRY.select(args.only)
    except BenchmarkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.list:
        for w in REGISTRY.workloads.values():
            extra = " [needs memcached]" if w.needs_memcached else ""
            print(f"{w.name:28} {w.description}{extra}")
        return 0
    binary: str | None = None
    memcached_text = "not needed by the selected workloads"
    if any(w.needs_memcached for w in workloads):
        try:
            binary, memcached_text = _memcached_binary(args.memcached, args.no_memcached)
        except BenchmarkError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    from ._report import collect_info, render_markdown, render_terminal, to_json

    mode = "quick" if args.quick else "full"
    if args.only:
        mode += " (only " + ", ".join(args.only) + ")"
    info = collect_info(_PACKAGE_DIR.parent, mode=mode, memcached=memcached_text)
    info.skipped_modules = skipped_modules
    env = BenchEnv(quick=args.quick, memcached_binary=binary)
    progress = Progress()
    progress.note(
        f"batchq benchmarks: {_count(len(workloads), 'workload')}, {mode} run, "
        f"memcached: {memcached_text}"
    )
    try:
        results = run_suite(
            workloads, env, progress=progress, budget_scale=_QUICK_SCALE if args.quick else 1.0
        )
    finally:
        env.close()
    summaries = compute_summaries(REGISTRY, results)
    info.load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    info.seconds = time.perf_counter() - started
    print(render_terminal(results, summaries))
    from ._plot import figures_from_results, write_plots

    out_dir: Path = args.out if args.out is not None else run_directory(info.date, mode)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(render_markdown(info, results, summaries))
    (out_dir / "results.json").write_text(to_json(info, results, summaries))
    facts = {
        "Date": info.date,
        "Commit": info.commit + (" (dirty)" if info.dirty else ""),
        "Machine": f"{info.platform}; {info.cpus} CPUs ({info.cpu})",
        "Python": info.python,
        "Mode": info.mode,
    }
    figures = write_plots(caption(facts), figures_from_results(results), out_dir)
    names = ", ".join(["results.md", "results.json", *(f.name for f in figures)])
    print(f"wrote {names} to {_shown(out_dir)}/ (not tracked by git)")
    print(f"suite took {info.seconds:.0f} s")
    failed = [r.workload.name for r in results if r.error is not None]
    if failed:
        print(f"failed workloads: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
