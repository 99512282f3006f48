"""``python -m benchmarks [--quick] [--only NAME] [--memcached]``: run the suite and report it."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
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
_DEFAULT_OUT = _PACKAGE_DIR / "results"
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
        help=f"where to write latest.md/.png/.json (default for a full run: {_DEFAULT_OUT}; "
        "a --quick or --only run writes files only when --out is given)",
    )
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    partial = bool(args.quick or args.only)
    out_dir: Path | None = args.out if args.out is not None else (None if partial else _DEFAULT_OUT)

    from ._report import collect_info, render_markdown, render_terminal, to_json

    mode = "quick" if args.quick else "full"
    if args.only:
        mode += " (only " + ", ".join(args.only) + ")"
    info = collect_info(_PACKAGE_DIR.parent, mode=mode, memcached=memcached_text)
    info.skipped_modules = skipped_modules
    env = BenchEnv(quick=args.quick, memcached_binary=binary)
    progress = Progress()
    progress.note(
        f"batchq benchmarks: {len(workloads)} workloads, {mode} run, memcached: {memcached_text}"
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
    if out_dir is not None:
        from ._plot import write_plot

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "latest.md").write_text(render_markdown(info, results, summaries))
        (out_dir / "latest.json").write_text(to_json(info, results, summaries))
        write_plot(info, results, out_dir / "latest.png")
        print(f"wrote {out_dir / 'latest.md'}, latest.png and latest.json")
    else:
        print("partial run: no files written (pass --out DIR to keep them)")
    print(f"suite took {info.seconds:.0f} s")
    failed = [r.workload.name for r in results if r.error is not None]
    if failed:
        print(f"failed workloads: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
