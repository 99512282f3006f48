"""The benchmark harness: a registry of workloads, an interleaved runner, and the reports.

Why it is shaped this way. Timings on a shared 2-core machine drift by tens of percent within a
minute, so every workload runs its compared systems interleaved in one process (A B C A B C ...,
after one untimed warm-up cycle), collects garbage before each timing, and repeats until a time
budget is spent. Systems are compared only as ratios to a baseline measured in the same run: the
median over cycles of each cycle's ratio, so drift between cycles divides out. Absolute times are
printed for orientation, never compared across runs.

Adding workloads (the plug-in point). ``python -m benchmarks`` imports every module
``benchmarks/bench_*.py``; a module whose import fails (say, a dependency that does not exist yet)
is skipped with a message naming the error. A module registers its workloads at import::

    from benchmarks._harness import BenchEnv, Outcome, Workload, ratio_target, register

    def _build(env: BenchEnv) -> dict[str, Callable[[], Outcome]]:
        data = make_data()                    # setup: once per workload, before the warm-up
        def plain() -> Outcome:               # one repetition of one system
            return Outcome(answer=render_plain(data), round_trips=data.trips)
        def batchq_() -> Outcome: ...
        return {"plain": plain, "batchq": batchq_}   # exactly the names in `systems`

    register(Workload(
        name="page-local",                    # lowercase words joined by '-'
        description="one page: 300 keys over 3 levels on the embedded LocalClient",
        systems=("plain", "batchq"),          # run order; the baseline is one of them
        baseline="plain",
        build=_build,
        teardown=None,                        # optional: called once after the last repetition
        units=300, unit="key",                # per-unit time = median / units
        targets=(ratio_target("batchq", "plain", at_most=0.5),),
        needs_memcached=False,                # True: build() may call env.memcached(n)
    ))

Rules a workload follows:

- Every system does the same work. Each callable returns an :class:`Outcome` whose ``answer``
  must be equal across systems in the warm-up cycle (else the workload fails with both answers).
- ``round_trips`` is the number of requests sent to the data source in that repetition, or None
  where it means nothing.
- ``needs_memcached`` workloads run only when memcached is available (a binary is installed;
  ``BENCH_MEMCACHED=1 make bench`` installs one first). Their ``build`` gets real servers from
  ``env.memcached(count)``: a list of ``(host, port)`` of servers started for this suite (reused by
  later workloads, stopped when the suite ends). ``env.quick`` says a quick run was asked for.
- ``measure="bytes"`` workloads measure memory: each callable returns ``Outcome(measured=...)``
  (bytes) and the harness records that instead of the elapsed time.
- Cross-workload figures (such as the flatness of round cost over depth) are registered with
  :func:`register_summary`.
"""

from __future__ import annotations

import contextlib
import gc
import math
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TextIO

if TYPE_CHECKING:
    from batchq.testing import MemcachedServer

__all__ = [
    "BenchEnv",
    "BenchmarkError",
    "Outcome",
    "Progress",
    "Registry",
    "ResultMismatchError",
    "Summary",
    "SummaryLine",
    "SystemResult",
    "Target",
    "TargetResult",
    "Workload",
    "WorkloadResult",
    "REGISTRY",
    "format_measure",
    "per_unit_target",
    "raised_recursion_limit",
    "ratio_target",
    "register",
    "register_summary",
    "round_trip_target",
    "run_suite",
    "run_workload",
]

Measure = Literal["time", "bytes"]
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class BenchmarkError(Exception):
    """A workload is declared or behaves wrongly (a bug in the benchmark, not in batchq)."""


class ResultMismatchError(BenchmarkError, AssertionError):
    """Two systems of one workload answered differently: they do not do the same work."""


@dataclass(frozen=True)
class Outcome:
    """What one repetition of one system returns."""

    answer: object = None
    round_trips: int | None = None
    # For measure="bytes" workloads: the measured quantity, recorded instead of elapsed time.
    measured: float | None = None


RepFn = Callable[[], Outcome]


@dataclass(frozen=True)
class Target:
    """A goal stated by an issue, checked on the medians of one run.

    ``kind``: "ratio" (``system``'s median <= at_most x ``against``'s median), "per_unit"
    (``system``'s median per unit <= at_most, in the workload's measure) or "round_trips"
    (``system``'s round trips <= at_most x ``against``'s).
    """

    kind: Literal["ratio", "per_unit", "round_trips"]
    system: str
    at_most: float
    against: str | None = None
    label: str = ""


def ratio_target(system: str, against: str, *, at_most: float, label: str = "") -> Target:
    """``system`` takes at most ``at_most`` times ``against``'s median."""
    return Target("ratio", system, at_most, against, label)


def per_unit_target(system: str, *, at_most: float, label: str = "") -> Target:
    """``system``'s median per unit is at most ``at_most`` (seconds or bytes)."""
    return Target("per_unit", system, at_most, None, label)


def round_trip_target(
    system: str, against: str, *, at_most: float = 1.0, label: str = ""
) -> Target:
    """``system`` sends at most ``at_most`` times as many requests as ``against``."""
    return Target("round_trips", system, at_most, against, label)


@dataclass(frozen=True)
class Workload:
    """One comparison: the systems, how to build them, how to normalise, what to aim for."""

    name: str
    description: str
    systems: tuple[str, ...]
    baseline: str
    build: Callable[[BenchEnv], Mapping[str, RepFn]]
    teardown: Callable[[], None] | None = None
    units: int = 1
    unit: str = "run"
    measure: Measure = "time"
    targets: tuple[Target, ...] = ()
    needs_memcached: bool = False
    # Repetition policy: stop after max_reps, or once budget_s is spent and min_reps are done.
    budget_s: float = 5.0
    min_reps: int = 5
    max_reps: int = 60
    warmup: bool = True
    # (series name, x): workloads of one series are plotted together as one line chart of the
    # per-unit measure against x (e.g. round cost against depth).
    series: tuple[str, float] | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            msg = (
                f"workload name {self.name!r} must be lowercase letters and digits joined by "
                "'-' (e.g. 'fanout-10000'): it is used on the command line and in file names"
            )
            raise BenchmarkError(msg)
        if len(set(self.systems)) != len(self.systems) or not self.systems:
            msg = f"workload {self.name!r}: systems {self.systems!r} must be distinct and non-empty"
            raise BenchmarkError(msg)
        if self.baseline not in self.systems:
            msg = (
                f"workload {self.name!r}: baseline {self.baseline!r} is not one of its systems "
                f"{self.systems!r}; name the baseline among the systems"
            )
            raise BenchmarkError(msg)
        if self.units < 1 or self.min_reps < 1 or self.max_reps < self.min_reps:
            msg = (
                f"workload {self.name!r}: need units >= 1 and 1 <= min_reps <= max_reps, got "
                f"units={self.units!r}, min_reps={self.min_reps!r}, max_reps={self.max_reps!r}"
            )
            raise BenchmarkError(msg)
        for t in self.targets:
            named = [t.system] + ([t.against] if t.against is not None else [])
            unknown = [s for s in named if s not in self.systems]
            if unknown:
                msg = (
                    f"workload {self.name!r}: target {t!r} names {unknown[0]!r}, which is not one "
                    f"of its systems {self.systems!r}"
                )
                raise BenchmarkError(msg)


@dataclass(frozen=True)
class SummaryLine:
    """One cross-workload figure, e.g. the flatness of round cost over depth."""

    label: str
    value: float
    shown: str
    target: str = ""
    passed: bool | None = None


@dataclass(frozen=True)
class Summary:
    """A figure computed from several workloads' results (missing inputs: no lines)."""

    name: str
    compute: Callable[[Mapping[str, WorkloadResult]], list[SummaryLine]]


class Registry:
    """Workloads and summaries by name, in registration order."""

    def __init__(self) -> None:
        self.workloads: dict[str, Workload] = {}
        self.summaries: dict[str, Summary] = {}

    def register(self, workload: Workload) -> Workload:
        if workload.name in self.workloads:
            msg = (
                f"a workload named {workload.name!r} is already registered "
                f"({self.workloads[workload.name].description!r}); pick another name"
            )
            raise BenchmarkError(msg)
        self.workloads[workload.name] = workload
        return workload

    def register_summary(self, summary: Summary) -> Summary:
        if summary.name in self.summaries:
            msg = f"a summary named {summary.name!r} is already registered; pick another name"
            raise BenchmarkError(msg)
        self.summaries[summary.name] = summary
        return summary

    def select(self, patterns: Sequence[str]) -> list[Workload]:
        """Workloads matching any pattern: an exact name, a prefix before '-', or a glob."""
        if not patterns:
            return list(self.workloads.values())
        import fnmatch

        chosen: list[Workload] = []
        for pattern in patterns:
            hits = [
                w
                for w in self.workloads.values()
                if w.name == pattern
                or w.name.startswith(pattern + "-")
                or fnmatch.fnmatchcase(w.name, pattern)
            ]
            if not hits:
                known = ", ".join(self.workloads) or "(none registered)"
                msg = f"--only {pattern!r} matches no workload; known workloads: {known}"
                raise BenchmarkError(msg)
            chosen.extend(w for w in hits if w not in chosen)
        return chosen


REGISTRY = Registry()
register = REGISTRY.register
register_summary = REGISTRY.register_summary


# -- the environment workloads build against -----------------------------------------------------


class _Server(Protocol):
    @property
    def address(self) -> tuple[str, int]: ...

    def stop(self) -> None: ...


class BenchEnv:
    """What a workload's ``build`` may use: the run mode and, when enabled, memcached servers."""

    def __init__(
        self,
        *,
        quick: bool = False,
        memcached_binary: str | None = None,
        start_server: Callable[[str], _Server] | None = None,
    ) -> None:
        self.quick = quick
        self.memcached_binary = memcached_binary
        self._start_server = start_server
        self._servers: list[_Server] = []

    @property
    def has_memcached(self) -> bool:
        return self.memcached_binary is not None

    def memcached(self, count: int = 1) -> list[tuple[str, int]]:
        """Addresses of ``count`` memcached servers of this suite, started on first use."""
        binary = self.memcached_binary
        if binary is None:
            msg = (
                "this run has no memcached: install it (BENCH_MEMCACHED=1 make bench does), or "
                "set BENCH_MEMCACHED=1 to require it; only needs_memcached workloads may ask"
            )
            raise BenchmarkError(msg)
        start = self._start_server if self._start_server is not None else _start_memcached
        while len(self._servers) < count:
            self._servers.append(start(binary))
        return [s.address for s in self._servers[:count]]

    def close(self) -> None:
        """Stop every server this suite started."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.stop()


def _start_memcached(binary: str) -> MemcachedServer:
    from batchq.testing import MemcachedServer

    return MemcachedServer(binary=binary).start()


# -- progress -----------------------------------------------------------------------------------


class Progress:
    """Progress on stderr.

    On a terminal, one line rewritten in place names the workload, system and repetition. In a
    log (CI, a pipe, a file) that would be hundreds of lines, so each workload gets exactly one
    line when it ends: its systems, how it went, and an estimate of the time the suite has left.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self._open = False
        self._clock = clock
        self._started = clock()
        # Budgets (seconds) of the suite's workloads, to estimate the time left.
        self._budgets: list[float] = []
        self._ran_budget = 0.0  # budgets of the workloads that ran (not skipped) so far

    def _emit(self, text: str, *, transient: bool) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("" if transient else "\n"))
            self._open = transient
        elif not transient:
            self.stream.write(text + "\n")
        self.stream.flush()

    def suite_started(self, workloads: Sequence[Workload], budget_scale: float = 1.0) -> None:
        self._started = self._clock()
        self._budgets = [_expected_seconds(w, budget_scale) for w in workloads]
        self._ran_budget = 0.0

    def time_left(self, done: int) -> float | None:
        """Seconds the suite has left after ``done`` workloads, or None before any estimate.

        The time spent so far, scaled by the budgets still to come over the budgets of the
        workloads that ran (workloads declare their budgets; heavy ones overrun theirs alike).
        """
        if self._ran_budget <= 0 or done > len(self._budgets):
            return None
        elapsed = self._clock() - self._started
        return elapsed * sum(self._budgets[done:]) / self._ran_budget

    def workload_started(self, index: int, total: int, workload: Workload) -> None:
        if self.tty:
            self._emit(
                f"[{index}/{total}] {workload.name}: {workload.description}", transient=False
            )

    def repetition(
        self, index: int, total: int, workload: Workload, system: str, rep: int, warmup: bool
    ) -> None:
        what = "warm-up" if warmup else f"rep {rep}"
        self._emit(f"[{index}/{total}] {workload.name}: {system}, {what}", transient=True)

    def cycle_done(self, index: int, total: int, workload: Workload, rep: int) -> None:
        """A cycle of every system ended (only the terminal's live line shows it)."""

    def workload_done(self, index: int, total: int, result: WorkloadResult) -> None:
        w = result.workload
        if result.error is not None:
            status = f"FAILED: {result.error}"
        elif result.skipped is not None:
            status = f"skipped: {result.skipped}"
        else:
            status = f"{result.reps} reps in {result.seconds:.1f} s"
        if result.skipped is None and index <= len(self._budgets):
            self._ran_budget += self._budgets[index - 1]
        line = f"[{index}/{total}] {w.name}: {status}"
        if not self.tty:
            line = f"[{index}/{total}] {w.name} ({', '.join(w.systems)}): {status}"
        left = self.time_left(index)
        if left is not None and index < total:
            line += f"; about {_duration(left)} left"
        self._emit(line, transient=False)

    def note(self, text: str) -> None:
        self._emit(text, transient=False)


def _expected_seconds(w: Workload, budget_scale: float) -> float:
    """A workload's share of the suite's time: its budget, or a small share when it has none."""
    return max(w.budget_s * budget_scale, 0.1)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    return f"{seconds // 60} min {seconds % 60:02d} s"


# -- results ------------------------------------------------------------------------------------


@dataclass
class SystemResult:
    """Every timed sample of one system in one workload."""

    system: str
    samples: list[float] = field(default_factory=list)
    round_trips: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def trips(self) -> int | None:
        """The median round-trip count, or None when the workload reports none."""
        if not self.round_trips:
            return None
        return int(statistics.median_low(self.round_trips))


@dataclass(frozen=True)
class TargetResult:
    target: Target
    value: float
    passed: bool
    text: str
    shown: str


@dataclass
class WorkloadResult:
    """One workload's outcome: per-system samples, or why it was skipped or failed."""

    workload: Workload
    systems: dict[str, SystemResult] = field(default_factory=dict)
    reps: int = 0
    seconds: float = 0.0
    skipped: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is None and self.error is None and self.reps > 0

    def ratio(self, system: str) -> float:
        """``system`` against the baseline: see :meth:`paired_ratio`."""
        return self.paired_ratio(system, self.workload.baseline)

    def paired_ratio(self, system: str, against: str) -> float:
        """The median, over cycles, of ``system``'s sample divided by ``against``'s.

        The systems of one cycle run back to back, so a change in machine load between cycles
        (another process, the CPU clock) divides out; a ratio of medians would not cancel it.
        """
        mine = self.systems[system].samples
        theirs = self.systems[against].samples
        n = min(len(mine), len(theirs))
        if n == 0:
            return self.systems[system].median / self.systems[against].median
        return statistics.median(mine[i] / theirs[i] for i in range(n))

    def per_unit(self, system: str) -> float:
        return self.systems[system].median / self.workload.units

    def targets(self) -> list[TargetResult]:
        if not self.ok:
            return []
        return [self._check(t) for t in self.workload.targets]

    def _check(self, t: Target) -> TargetResult:
        w = self.workload
        if t.kind == "ratio":
            assert t.against is not None
            value = self.paired_ratio(t.system, t.against)
            text = t.label or f"{t.system} <= {t.at_most:g}x {t.against}"
            shown = f"{value:.3g}x"
        elif t.kind == "per_unit":
            value = self.per_unit(t.system)
            limit = format_measure(t.at_most, w.measure)
            text = t.label or f"{t.system} <= {limit} per {w.unit}"
            shown = format_measure(value, w.measure)
        else:
            assert t.against is not None
            mine, theirs = self.systems[t.system].trips, self.systems[t.against].trips
            if mine is None or theirs is None:
                msg = (
                    f"workload {w.name!r}: round-trip target {t!r} needs both systems to report "
                    "round_trips in their Outcome"
                )
                raise BenchmarkError(msg)
            value = mine / theirs if theirs else math.inf
            text = t.label or f"{t.system} round trips <= {t.at_most:g}x {t.against}"
            shown = f"{mine} vs {theirs}"
        return TargetResult(t, value, value <= t.at_most, text, shown)


# -- running ------------------------------------------------------------------------------------


def _check_outcome(workload: Workload, system: str, out: object) -> Outcome:
    if not isinstance(out, Outcome):
        msg = (
            f"workload {workload.name!r}, system {system!r} returned {out!r} of type "
            f"{type(out).__name__}; a repetition must return benchmarks._harness.Outcome"
        )
        raise BenchmarkError(msg)
    if workload.measure == "bytes" and out.measured is None:
        msg = (
            f"workload {workload.name!r} measures bytes, but system {system!r} returned "
            f"{out!r} without measured=...; return Outcome(measured=<bytes>)"
        )
        raise BenchmarkError(msg)
    return out


def _short(value: object, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_workload(
    workload: Workload,
    env: BenchEnv,
    *,
    progress: Progress | None = None,
    index: int = 1,
    total: int = 1,
    clock: Callable[[], float] = time.perf_counter,
    budget_scale: float = 1.0,
) -> WorkloadResult:
    """Build, warm up, then time the systems interleaved until the budget is spent."""
    progress = progress if progress is not None else Progress(enabled=False)
    result = WorkloadResult(workload)
    if workload.needs_memcached and not env.has_memcached:
        result.skipped = (
            "needs memcached; install it (BENCH_MEMCACHED=1 make bench installs it first)"
        )
        return result
    started = time.perf_counter()
    fns: Mapping[str, RepFn] | None = None
    try:
        fns = workload.build(env)
        if set(fns) != set(workload.systems):
            msg = (
                f"workload {workload.name!r}: build() returned systems {sorted(fns)!r}, "
                f"expected exactly {sorted(workload.systems)!r}"
            )
            raise BenchmarkError(msg)
        order = [(name, fns[name]) for name in workload.systems]
        result.systems = {name: SystemResult(name) for name in workload.systems}
        answers: dict[str, object] = {}
        if workload.warmup:
            for name, fn in order:
                progress.repetition(index, total, workload, name, 0, warmup=True)
                answers[name] = _check_outcome(workload, name, fn()).answer
            _compare_answers(workload, answers)
        budget = workload.budget_s * budget_scale
        max_reps = max(workload.min_reps, round(workload.max_reps * min(budget_scale, 1.0)))
        loop_start = clock()
        rep = 0
        while rep < max_reps and (rep < workload.min_reps or clock() - loop_start < budget):
            rep += 1
            for name, fn in order:
                progress.repetition(index, total, workload, name, rep, warmup=False)
                gc.collect()
                t0 = clock()
                out = fn()
                elapsed = clock() - t0
                out = _check_outcome(workload, name, out)
                sr = result.systems[name]
                sr.samples.append(out.measured if workload.measure == "bytes" else elapsed)  # type: ignore[arg-type]
                if out.round_trips is not None:
                    sr.round_trips.append(out.round_trips)
                if not workload.warmup and rep == 1:
                    answers[name] = out.answer
            if not workload.warmup and rep == 1:
                _compare_answers(workload, answers)
            result.reps = rep
            progress.cycle_done(index, total, workload, rep)
    except Exception as e:
        result.error = f"{type(e).__name__}: {e}"
    finally:
        if fns is not None and workload.teardown is not None:
            try:
                workload.teardown()
            except Exception as e:
                if result.error is None:
                    result.error = f"teardown failed: {type(e).__name__}: {e}"
        result.seconds = time.perf_counter() - started
    return result


def _compare_answers(workload: Workload, answers: Mapping[str, object]) -> None:
    expected = answers[workload.baseline]
    for name, answer in answers.items():
        if answer != expected:
            msg = (
                f"workload {workload.name!r}: system {name!r} answered {_short(answer)} but the "
                f"baseline {workload.baseline!r} answered {_short(expected)}; every system must "
                "do the same work"
            )
            raise ResultMismatchError(msg)


def run_suite(
    workloads: Sequence[Workload],
    env: BenchEnv,
    *,
    progress: Progress | None = None,
    budget_scale: float = 1.0,
) -> list[WorkloadResult]:
    """Run the workloads one after another (each one interleaves its own systems)."""
    results = []
    total = len(workloads)
    if progress is not None:
        progress.suite_started(workloads, budget_scale)
    for i, workload in enumerate(workloads, 1):
        if progress is not None:
            progress.workload_started(i, total, workload)
        res = run_workload(
            workload, env, progress=progress, index=i, total=total, budget_scale=budget_scale
        )
        if progress is not None:
            progress.workload_done(i, total, res)
        results.append(res)
    return results


@contextlib.contextmanager
def raised_recursion_limit(limit: int) -> Iterator[None]:
    """Temporarily allow deeper Python recursion (for peers that recurse per level)."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


# -- formatting ---------------------------------------------------------------------------------


def format_measure(value: float, measure: Measure) -> str:
    """3 significant digits with a unit: 12.3 ms, 840 B, 1.51 kB."""
    if measure == "bytes":
        if abs(value) < 1000:
            return f"{value:.0f} B"
        if abs(value) < 1e6:
            return f"{value / 1e3:.3g} kB"
        return f"{value / 1e6:.3g} MB"
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
        if abs(value) >= scale or unit == "ns":
            return f"{value / scale:.3g} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover
