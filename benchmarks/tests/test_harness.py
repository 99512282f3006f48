"""The harness: declaration checks, interleaving, stopping, statistics, targets, reports."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from benchmarks import __main__ as cli
from benchmarks._harness import (
    BenchEnv,
    BenchmarkError,
    Outcome,
    Progress,
    Registry,
    SummaryLine,
    Workload,
    WorkloadResult,
    format_measure,
    per_unit_target,
    ratio_target,
    round_trip_target,
    run_suite,
    run_workload,
)
from benchmarks._plot import figures_from_results, write_plots
from benchmarks._report import RunInfo, render_markdown, render_terminal, to_json

Systems = Mapping[str, Callable[[], Outcome]]


class FakeTime:
    """A clock that moves only when a fake system 'works'."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def clock(self) -> float:
        return self.now

    def system(self, name: str, seconds: float, answer: object = 42, trips: int | None = None):
        def run() -> Outcome:
            self.calls.append(name)
            self.now += seconds
            return Outcome(answer=answer, round_trips=trips)

        return run


def workload(build: Callable[[BenchEnv], Systems], **kw: object) -> Workload:
    fields: dict[str, object] = {
        "name": "w",
        "description": "test workload",
        "systems": ("base", "fast"),
        "baseline": "base",
        "build": build,
        "budget_s": 0.0,
        "min_reps": 3,
        "max_reps": 3,
    }
    fields.update(kw)
    return Workload(**fields)  # type: ignore[arg-type]


# -- declaring ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Bad Name"}, "'Bad Name'"),
        ({"baseline": "nope"}, "baseline 'nope' is not one of its systems"),
        ({"systems": ("a", "a"), "baseline": "a"}, "must be distinct"),
        ({"units": 0}, "units=0"),
        ({"min_reps": 5, "max_reps": 2}, "max_reps=2"),
        ({"targets": (ratio_target("ghost", "base", at_most=1),)}, "'ghost'"),
    ],
)
def test_bad_declarations_are_refused_with_the_value(changes: dict[str, object], message: str):
    with pytest.raises(BenchmarkError, match=message):
        workload(lambda env: {}, **changes)


def test_registry_refuses_duplicates_and_selects_by_name_family_or_glob():
    reg = Registry()
    for name in ("depth-125", "depth-4000", "fanout-10000"):
        reg.register(workload(lambda env: {}, name=name))
    with pytest.raises(BenchmarkError, match="'fanout-10000' is already registered"):
        reg.register(workload(lambda env: {}, name="fanout-10000"))
    assert [w.name for w in reg.select(["depth"])] == ["depth-125", "depth-4000"]
    assert [w.name for w in reg.select(["*-10000", "depth-125"])] == ["fanout-10000", "depth-125"]
    assert len(reg.select([])) == 3
    with pytest.raises(BenchmarkError, match="'chain' matches no workload; known workloads: depth"):
        reg.select(["chain"])


# -- running --------------------------------------------------------------------------------------


def test_systems_run_interleaved_after_one_warm_up_cycle():
    t = FakeTime()
    build = lambda env: {  # noqa: E731
        "base": t.system("base", 1.0),
        "fast": t.system("fast", 0.5),
        "third": t.system("third", 2.0),
    }
    w = workload(build, systems=("base", "fast", "third"), min_reps=4, max_reps=4)
    result = run_workload(w, BenchEnv(), clock=t.clock)
    assert t.calls == ["base", "fast", "third"] * 5  # warm-up + 4 timed cycles
    assert result.reps == 4
    assert [len(s.samples) for s in result.systems.values()] == [4, 4, 4]


def test_medians_and_ratios_come_from_the_timed_samples():
    t = FakeTime()
    durations = iter([9.0, 1.0, 3.0, 2.0, 5.0])  # warm-up is untimed, so 9.0 must not count

    def base() -> Outcome:
        t.now += next(durations)
        return Outcome(answer=1)

    w = workload(
        lambda env: {"base": base, "fast": t.system("fast", 0.5, answer=1)}, max_reps=4, min_reps=4
    )
    result = run_workload(w, BenchEnv(), clock=t.clock)
    base_samples = [1.0, 3.0, 2.0, 5.0]
    assert result.systems["base"].samples == base_samples
    assert result.systems["base"].median == 2.5
    assert (result.systems["base"].min, result.systems["base"].max) == (1.0, 5.0)
    # The ratio pairs each cycle's samples: the median of 0.5/1, 0.5/3, 0.5/2, 0.5/5.
    assert result.ratio("fast") == pytest.approx((0.5 / 3 + 0.5 / 2) / 2)
    assert result.per_unit("base") == 2.5


def test_paired_ratios_cancel_a_load_change_inside_a_cycle():
    t = FakeTime()
    # Calls in order: warm-up (base, fast), then 5 cycles. The machine gets 4x slower from the
    # fast system of cycle 3 on: base samples 1,1,1,4,4 and fast 0.5,0.5,2,2,2.
    factors = iter([1, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4])

    def timed(seconds: float) -> Callable[[], Outcome]:
        def run() -> Outcome:
            t.now += seconds * next(factors)
            return Outcome(answer=1)

        return run

    w = workload(lambda env: {"base": timed(1.0), "fast": timed(0.5)}, max_reps=5, min_reps=5)
    result = run_workload(w, BenchEnv(), clock=t.clock)
    assert result.systems["fast"].median / result.systems["base"].median == pytest.approx(2.0)
    assert result.ratio("fast") == pytest.approx(0.5)  # paired per cycle: the true ratio


def test_repetitions_stop_when_the_budget_is_spent_after_min_reps():
    t = FakeTime()
    w = workload(
        lambda env: {"base": t.system("base", 1.0), "fast": t.system("fast", 1.0)},
        budget_s=9.0,
        min_reps=2,
        max_reps=100,
    )
    result = run_workload(w, BenchEnv(), clock=t.clock)
    # 2 s per cycle: the check before the 6th cycle sees 10 s spent, over the 9 s budget.
    assert result.reps == 5
    quick = run_workload(w, BenchEnv(), clock=t.clock, budget_scale=0.25)
    assert quick.reps == 2  # 2.25 s budget, but min_reps=2 still run


def test_different_answers_fail_the_workload_and_show_both():
    t = FakeTime()
    w = workload(
        lambda env: {"base": t.system("base", 1, answer=[1, 2]), "fast": t.system("fast", 1)}
    )
    result = run_workload(w, BenchEnv(), clock=t.clock)
    assert result.error is not None
    assert "ResultMismatchError" in result.error
    assert "'fast' answered 42" in result.error
    assert "answered [1, 2]" in result.error
    assert not result.ok


def test_answers_are_compared_on_the_first_timed_rep_without_warm_up():
    t = FakeTime()
    w = workload(
        lambda env: {"base": t.system("base", 1, answer=1), "fast": t.system("fast", 1, answer=2)},
        warmup=False,
    )
    result = run_workload(w, BenchEnv(), clock=t.clock)
    assert result.error is not None
    assert "ResultMismatchError" in result.error
    assert t.calls == ["base", "fast"]


def test_build_must_return_exactly_the_declared_systems():
    result = run_workload(workload(lambda env: {"base": lambda: Outcome()}), BenchEnv())
    assert result.error is not None
    assert "returned systems ['base'], expected exactly ['base', 'fast']" in result.error


def test_a_repetition_must_return_an_outcome():
    result = run_workload(
        workload(lambda env: {"base": lambda: 3, "fast": lambda: Outcome()}),  # type: ignore[dict-item,return-value]
        BenchEnv(),
    )
    assert result.error is not None
    assert "returned 3 of type int" in result.error
    assert "Outcome" in result.error


def test_teardown_runs_even_when_a_system_fails():
    torn: list[bool] = []

    def boom() -> Outcome:
        raise ValueError("broken system")

    w = workload(
        lambda env: {"base": boom, "fast": lambda: Outcome()}, teardown=lambda: torn.append(True)
    )
    result = run_workload(w, BenchEnv())
    assert torn == [True]
    assert result.error == "ValueError: broken system"


def test_bytes_workloads_record_the_measured_value_not_the_time():
    t = FakeTime()

    def sized(n: float) -> Callable[[], Outcome]:
        return lambda: Outcome(answer=0, measured=n)

    w = workload(
        lambda env: {"base": sized(3000.0), "fast": sized(1000.0)}, measure="bytes", units=10
    )
    result = run_workload(w, BenchEnv(), clock=t.clock)
    assert result.systems["fast"].samples == [1000.0] * 3
    assert result.per_unit("fast") == 100.0
    missing = workload(
        lambda env: {"base": lambda: Outcome(), "fast": lambda: Outcome()}, measure="bytes"
    )
    assert "without measured=" in (run_workload(missing, BenchEnv()).error or "")


def test_memcached_workloads_are_skipped_without_a_server_and_get_servers_with_one():
    seen: list[list[tuple[str, int]]] = []

    def build(env: BenchEnv) -> Systems:
        seen.append(env.memcached(2))
        return {"base": lambda: Outcome(), "fast": lambda: Outcome()}

    w = workload(build, needs_memcached=True)
    skipped = run_workload(w, BenchEnv())
    assert skipped.skipped is not None
    assert "BENCH_MEMCACHED=1" in skipped.skipped
    assert seen == []

    started: list[FakeServer] = []

    class FakeServer:
        def __init__(self, binary: str) -> None:
            self.binary = binary
            self.address = ("127.0.0.1", 11000 + len(started))
            self.stopped = False
            started.append(self)

        def stop(self) -> None:
            self.stopped = True

    env = BenchEnv(memcached_binary="/bin/memcached", start_server=FakeServer)
    run_suite([w, dataclasses.replace(w, name="again")], env)
    # Servers are shared by later workloads, and stopped once at the end.
    assert seen == [[("127.0.0.1", 11000), ("127.0.0.1", 11001)]] * 2
    assert len(started) == 2
    assert not any(s.stopped for s in started)
    env.close()
    assert all(s.stopped for s in started)
    with pytest.raises(BenchmarkError, match="no memcached"):
        BenchEnv().memcached()


def test_targets_pass_or_miss_on_the_medians():
    t = FakeTime()
    w = workload(
        lambda env: {
            "base": t.system("base", 4.0, trips=3),
            "fast": t.system("fast", 1.0, trips=6),
        },
        units=2,
        targets=(
            ratio_target("fast", "base", at_most=0.5),
            ratio_target("fast", "base", at_most=0.2),
            per_unit_target("fast", at_most=0.5),
            round_trip_target("fast", "base"),
        ),
    )
    checked = run_workload(w, BenchEnv(), clock=t.clock).targets()
    assert [c.passed for c in checked] == [True, False, True, False]
    assert checked[0].value == pytest.approx(0.25)
    assert checked[3].shown == "6 vs 3"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_in_a_log_is_one_line_per_workload_with_systems_and_time_left():
    t = FakeTime()
    out = io.StringIO()  # not a terminal: as in CI or `make bench > log`
    first = workload(lambda env: {"base": t.system("base", 1), "fast": t.system("fast", 1)})
    second = workload(
        lambda env: {"base": t.system("base", 1), "fast": t.system("fast", 1)},
        name="second",
        max_reps=20,
        min_reps=20,
    )
    needs_server = workload(lambda env: {}, name="third", needs_memcached=True)
    # Budgets weigh the estimate. The fake systems take 1 s each: `w` spends 8 s (a warm-up
    # cycle and 3 reps of 2 systems) for a budget of 1 s, and 3 s of budget remain.
    first = dataclasses.replace(first, budget_s=1.0)
    second = dataclasses.replace(second, budget_s=2.0)
    needs_server = dataclasses.replace(needs_server, budget_s=1.0)
    run_suite([first, second, needs_server], BenchEnv(), progress=Progress(out, clock=t.clock))
    lines = out.getvalue().splitlines()
    assert lines == [
        "[1/3] w (base, fast): 3 reps in " + lines[0].split(" reps in ")[1],
        "[2/3] second (base, fast): 20 reps in " + lines[1].split(" reps in ")[1],
        (
            "[3/3] third (base, fast): skipped: needs memcached; install it "
            "(BENCH_MEMCACHED=1 make bench installs it first)"
        ),
    ]
    assert lines[0].endswith("; about 24 s left")  # 8 s x 3 s / 1 s
    assert lines[1].endswith("; about 17 s left")  # (8 + 42) s x 1 s / 3 s
    assert "rep " not in out.getvalue()


def test_progress_on_a_terminal_rewrites_one_live_line():
    t = FakeTime()
    out = _Terminal()
    w = workload(lambda env: {"base": t.system("base", 1), "fast": t.system("fast", 1)}, max_reps=3)
    run_suite([w], BenchEnv(), progress=Progress(out, clock=t.clock))
    text = out.getvalue()
    assert "[1/1] w: test workload\n" in text
    assert "\r\x1b[2K[1/1] w: fast, rep 3" in text
    assert text.endswith("[1/1] w: 3 reps in " + text.rsplit(" reps in ", 1)[1])
    assert text.count("\n") == 2  # the start and the end; the repetitions overwrite each other


def test_format_measure_picks_a_readable_unit():
    assert format_measure(0.0123, "time") == "12.3 ms"
    assert format_measure(4.56e-6, "time") == "4.56 µs"
    assert format_measure(2.5, "time") == "2.5 s"
    assert format_measure(492.3, "bytes") == "492 B"
    assert format_measure(1512.0, "bytes") == "1.51 kB"


# -- reporting ------------------------------------------------------------------------------------


def _finished_result() -> WorkloadResult:
    t = FakeTime()
    w = workload(
        lambda env: {
            "base": t.system("base", 0.02, trips=300),
            "fast": t.system("fast", 0.005, trips=3),
        },
        name="page-demo",
        units=300,
        unit="key",
        targets=(ratio_target("fast", "base", at_most=0.1),),
    )
    return run_workload(w, BenchEnv(), clock=t.clock)


def _info() -> RunInfo:
    return RunInfo(
        date="2024-01-01 00:00 UTC",
        commit="abc1234",
        dirty=True,
        platform="Linux-test",
        cpu="Test CPU",
        cpus=2,
        python="CPython 3.11.0",
        versions={"batchq": "0.1.0"},
        mode="full",
        memcached="off",
        load_start=(0.5, 0.4, 0.3),
        load_end=(1.5, 1.0, 0.5),
        seconds=12.0,
        skipped_modules=["benchmarks/bench_x.py (ImportError: nope)"],
    )


def test_markdown_has_the_facts_the_rows_and_the_verdicts(tmp_path: Path):
    result = _finished_result()
    skipped = WorkloadResult(
        dataclasses.replace(result.workload, name="other"), skipped="needs memcached"
    )
    summary = SummaryLine("flatness", 1.2, "1.20", target="<= 1.5", passed=True)
    md = render_markdown(_info(), [result, skipped], [summary])
    assert "abc1234 (uncommitted changes" in md
    assert "2 CPUs (Test CPU)" in md
    assert "CPython 3.11.0" in md
    assert "Not run: benchmarks/bench_x.py (ImportError: nope)" in md
    assert "| fast | 5 ms | 5 ms | 5 ms | 0.25x | 16.7 µs | 3 |" in md
    assert "| page-demo | fast <= 0.1x base | 0.25x | **MISS** |" in md
    assert "skipped: needs memcached" in md
    assert "| flatness | 1.20 | <= 1.5 |" in md
    terminal = render_terminal([result], [summary])
    assert "target fast <= 0.1x base: 0.25x MISS" in terminal
    data = json.loads(to_json(_info(), [result], [summary]))
    assert data["workloads"][0]["systems"]["fast"]["ratio"] == pytest.approx(0.25)
    assert data["workloads"][0]["systems"]["base"]["round_trips"] == 300


def test_the_plot_is_a_png(tmp_path: Path):
    paths = write_plots("a caption", figures_from_results([_finished_result()]), tmp_path)
    assert [p.name for p in paths] == ["headline.png", "detail.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the command line ----------------------------------------------------------------------------


def test_discover_skips_a_module_whose_import_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pkg = tmp_path / "fakebench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bench_ok.py").write_text("LOADED = True\n")
    (pkg / "bench_broken.py").write_text("import batchq.memcache._does_not_exist\n")
    (pkg / "helper.py").write_text("raise RuntimeError('not a bench module: never imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    skipped = cli.discover("fakebench", [str(pkg)])
    assert len(skipped) == 1
    assert skipped[0].startswith("fakebench/bench_broken.py (ModuleNotFoundError:")
    assert sys.modules["fakebench.bench_ok"].LOADED is True
    assert "fakebench.helper" not in sys.modules


def test_cli_lists_every_registered_workload(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["--list"]) == 0
    listed = capsys.readouterr().out
    for name in (
        "get-and-set-3000",
        "fanout-10000",
        "chain-1000",
        "depth-4000",
        "memory-pending-tasks",
        "latency-page-1ms",
    ):
        assert name in listed


def test_cli_refuses_an_unknown_workload(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["--only", "no-such-thing"]) == 2
    assert "'no-such-thing' matches no workload" in capsys.readouterr().err


def test_summaries_that_fail_become_a_line():
    reg = Registry()
    from benchmarks._harness import Summary

    def broken(results: Mapping[str, WorkloadResult]) -> list[SummaryLine]:
        raise KeyError("depth-125")

    reg.register_summary(Summary("flat", broken))
    lines = cli.compute_summaries(reg, [])
    assert lines[0].label == "flat (failed)"
    assert "KeyError" in lines[0].shown


def test_module_docstring_documents_the_registry_api():
    from benchmarks import _harness

    doc = textwrap.dedent(_harness.__doc__ or "")
    for needed in (
        "bench_*.py",
        "register(Workload(",
        "needs_memcached",
        "env.memcached(count)",
        "Outcome(",
        "register_summary",
    ):
        assert needed in doc


def test_a_series_is_drawn_as_one_panel(tmp_path: Path):
    t = FakeTime()
    results = []
    for depth in (10, 20, 40):
        w = workload(
            lambda env, d=depth: {"base": t.system("base", d), "fast": t.system("fast", 1.0)},
            name=f"depth-{depth}",
            units=depth,
            series=("cost vs depth", depth),
        )
        results.append(run_workload(w, BenchEnv(), clock=t.clock))
    figures = figures_from_results([*results, _finished_result()])
    assert [f.series for f in figures] == [("cost vs depth", d) for d in (10, 20, 40)] + [None]
    (_, detail) = write_plots("a caption", figures, tmp_path)
    assert detail.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
