"""batchq.debug: async stacks, instruments, the trace recorder, strict mode, async-chain notes."""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import pytest

import batchq
from batchq import Loader, asynq, debug
from batchq._core._format import note_async_chain

# -- format_async_stack ----------------------------------------------------------------------------


def test_format_async_stack_shows_the_waiting_callers_outermost_first() -> None:
    stacks: list[str] = []

    @asynq()
    def inner(k: int) -> Generator[Any, Any, int]:
        stacks.append(debug.format_async_stack())
        return k
        yield

    @asynq()
    def middle(k: int, *, label: str) -> Generator[Any, Any, int]:
        return (yield inner.asynq(k * 2))

    @asynq()
    def outer(k: int) -> Generator[Any, Any, int]:
        return (yield middle.asynq(k + 1, label="m"))

    assert outer(1) == 4
    lines = stacks[0].splitlines()
    assert lines[0] == "batchq async stack (outermost first):"
    assert "outer(1)" in lines[1]
    assert "middle(2, label='m')" in lines[2]
    assert "inner(4)" in lines[3]
    # Indented by depth, and each line says where its generator is.
    assert lines[2].startswith("    ")
    assert lines[3].startswith("      ")
    assert all(f"{Path(__file__).name}:" in line for line in lines[1:])


def test_format_async_stack_counts_other_waiters_and_takes_a_task() -> None:
    stacks: list[str] = []
    shared_holder: dict[str, batchq.AsyncTask[int]] = {}
    one_round: Loader[int, int] = Loader(lambda keys: list(keys))

    @asynq()
    def shared() -> Generator[Any, Any, int]:
        yield one_round.load.asynq(0)  # a round: both callers start waiting meanwhile
        stacks.append(debug.format_async_stack(shared_holder["task"]))
        return 1

    @asynq()
    def caller(name: str) -> Generator[Any, Any, int]:
        return (yield shared_holder["task"])

    @asynq()
    def root() -> Generator[Any, Any, list[int]]:
        shared_holder["task"] = shared.asynq()
        return (yield [caller.asynq("a"), caller.asynq("b")])

    assert root() == [1, 1]
    assert "[+1 more waiting]" in stacks[0]
    assert "root()" in stacks[0]


def test_format_async_stack_outside_a_task_and_with_bad_input() -> None:
    assert "no batchq task is running" in debug.format_async_stack()
    with pytest.raises(TypeError, match="got 'x' of type str"):
        debug.format_async_stack("x")  # type: ignore[arg-type]


# -- instruments -----------------------------------------------------------------------------------


class Recording(debug.Instrument):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def run_started(self, scheduler: batchq.Scheduler) -> None:
        self.events.append(("run_started",))

    def run_finished(self, scheduler: batchq.Scheduler, stats: batchq.RunStats) -> None:
        self.events.append(("run_finished", stats))

    def round_started(self, scheduler: batchq.Scheduler, round_index: int) -> None:
        self.events.append(("round_started",))

    def round_finished(self, scheduler: batchq.Scheduler, round_index: int) -> None:
        self.events.append(("round_finished",))

    def batch_flushed(
        self, batch: batchq.BatchBase, items: Sequence[batchq.BatchItemBase[Any]], seconds: float
    ) -> None:
        assert seconds >= 0
        self.events.append(("batch_flushed", batch.name(), sorted(i.key for i in items)))  # type: ignore[attr-defined]


class TaskRecording(Recording):
    def task_started(self, task: batchq.AsyncTask[Any]) -> None:
        self.events.append(("task_started", task.call_str()))

    def task_finished(self, task: batchq.AsyncTask[Any]) -> None:
        self.events.append(("task_finished", task.call_str()))


def model() -> batchq.AsyncFunction[[int], int]:
    loader: Loader[int, int] = Loader(lambda keys: [k + 1 for k in keys], name="plus_one")

    @asynq()
    def child(k: int) -> Generator[Any, Any, int]:
        return (yield loader.load.asynq(k))

    @asynq()
    def root(n: int) -> Generator[Any, Any, int]:
        values = yield [child.asynq(k) for k in range(n)]
        return sum(values)

    return root


def test_instruments_are_told_about_runs_rounds_and_flushes() -> None:
    rec = Recording()
    root = model()
    with debug.instrument(rec):
        assert root(3) == 6
    assert [e[0] for e in rec.events] == [
        "run_started",
        "round_started",
        "batch_flushed",
        "round_finished",
        "run_finished",
    ]
    assert rec.events[2][1:] == ("plus_one", [0, 1, 2])
    assert rec.events[-1][1] == batchq.RunStats(rounds=1, batches=1, items=3, tasks=4)
    root(2)  # uninstalled once the block ends
    assert len(rec.events) == 5


def test_task_hooks_only_when_overridden() -> None:
    rec = TaskRecording()
    with debug.instrument(rec):
        model()(2)
    started = [e[1] for e in rec.events if e[0] == "task_started"]
    finished = [e[1] for e in rec.events if e[0] == "task_finished"]
    assert len(started) == len(finished) == 3
    assert started[0].endswith("root(2)")
    # A recorder without tasks=True does not override the per-task hooks: they cost nothing.
    plain = debug.TraceRecorder()
    assert type(plain).task_started is debug.Instrument.task_started
    assert type(plain).task_finished is debug.Instrument.task_finished
    assert type(debug.TraceRecorder(tasks=True)).task_started is not debug.Instrument.task_started


def test_instrument_refuses_non_instruments() -> None:
    with pytest.raises(TypeError, match="got 'recorder' of type str"):
        debug.instrument("recorder")  # type: ignore[arg-type]


# -- the trace recorder ----------------------------------------------------------------------------


def test_trace_recorder_writes_chrome_trace_json_with_a_row_per_source(tmp_path: Path) -> None:
    users: Loader[int, dict[str, int]] = Loader(
        lambda keys: [{"id": k, "team": k % 2} for k in keys], name="users"
    )
    teams: Loader[int, str] = Loader(lambda keys: [f"team-{k}" for k in keys], name="teams")
    broken: Loader[int, int] = Loader(lambda keys: 1 / 0, name="broken")  # type: ignore[arg-type,return-value]

    @asynq()
    def profile(uid: int) -> Generator[Any, Any, str]:
        user = yield users.load.asynq(uid)
        return (yield teams.load.asynq(user["team"]))

    @asynq()
    def page() -> Generator[Any, Any, list[str]]:
        try:
            yield broken.load.asynq(0)
        except ZeroDivisionError:
            pass
        return (yield [profile.asynq(u) for u in range(5)])

    rec = debug.TraceRecorder(tasks=True)
    with debug.instrument(rec):
        assert page() == ["team-0", "team-1", "team-0", "team-1", "team-0"]
    path = tmp_path / "trace.json"
    rec.write(path)
    with path.open() as f:
        trace = json.load(f)

    events = trace["traceEvents"]
    rows = [e for e in events if e["ph"] == "M" and e["name"] == "thread_name"]
    names = {e["tid"]: e["args"]["name"] for e in rows}
    tid_of = {name: tid for tid, name in names.items()}
    assert set(tid_of) == {"scheduler", "users", "teams", "broken"}
    assert len(set(tid_of.values())) == 4  # one row per source

    flushes = [e for e in events if e["ph"] == "X" and e["cat"] == "flush"]
    by_source = {names[e["tid"]]: e for e in flushes}
    assert len(flushes) == 3
    assert by_source["users"]["args"]["keys"] == 5
    assert by_source["teams"]["args"]["keys"] == 2  # two distinct teams
    assert by_source["broken"]["args"]["keys"] == 1
    assert "ZeroDivisionError" in by_source["broken"]["args"]["error"]
    assert by_source["teams"]["args"]["round"] > by_source["users"]["args"]["round"]
    for e in flushes:
        assert e["name"] == names[e["tid"]]
        assert e["dur"] >= 0
        assert e["ts"] >= 0

    rounds = [e for e in events if e["ph"] == "X" and e["cat"] == "round"]
    runs = [e for e in events if e["ph"] == "X" and e["cat"] == "run"]
    assert {e["tid"] for e in rounds + runs} == {tid_of["scheduler"]}
    assert len(runs) == 1
    assert runs[0]["args"]["rounds"] == len(rounds) == 3
    # Each flush lies inside its round's slice.
    round_of = {e["args"]["round"]: e for e in rounds}
    for e in flushes:
        r = round_of[e["args"]["round"]]
        assert r["ts"] <= e["ts"]
        assert e["ts"] + e["dur"] <= r["ts"] + r["dur"] + 1

    begins = [e for e in events if e["ph"] == "b"]
    ends = [e for e in events if e["ph"] == "e"]
    assert len(begins) == len(ends) == 1 + 5  # page and the five profiles
    assert {e["id"] for e in begins} == {e["id"] for e in ends}
    assert any(e["name"].endswith("profile(3)") for e in begins)


# -- strict mode -----------------------------------------------------------------------------------


def splitting_model() -> batchq.AsyncFunction[[int], int]:
    loader: Loader[int, int] = Loader(lambda keys: list(keys))

    @asynq()
    def splits(k: int) -> Generator[Any, Any, int]:
        first = loader.load(k)  # a synchronous call inside a running task
        return first + (yield loader.load.asynq(k + 1))

    return splits


def test_nested_sync_calls_are_counted_and_strict_mode_raises_naming_the_call() -> None:
    splits = splitting_model()
    assert splits(1) == 3
    stats = batchq.get_scheduler().last_run
    assert stats is not None
    assert stats.nested_runs == 1
    with debug.strict(), pytest.raises(batchq.SyncCallInAsyncError) as info:
        splits(1)
    assert "splits(1)" in str(info.value)
    assert splits(1) == 3  # strict mode ended with the block


def test_set_strict_and_reset_strict() -> None:
    splits = splitting_model()
    token = debug.set_strict(True)
    try:
        with pytest.raises(batchq.SyncCallInAsyncError):
            splits(2)
    finally:
        debug.reset_strict(token)
    assert splits(2) == 5
    with pytest.raises(TypeError, match="got 'yes' of type str"):
        debug.set_strict("yes")  # type: ignore[arg-type]


def test_nested_run_hook_names_the_caller() -> None:
    seen: list[str | None] = []

    class Nested(debug.Instrument):
        def nested_run(
            self, scheduler: batchq.Scheduler, caller: batchq.AsyncTask[Any] | None
        ) -> None:
            seen.append(caller.call_str() if caller is not None else None)

    with debug.instrument(Nested()):
        splitting_model()(3)
    assert len(seen) == 1
    assert seen[0] is not None
    assert seen[0].endswith("splits(3)")


# -- the async call chain note ---------------------------------------------------------------------


def chain_note(error: BaseException) -> str:
    notes = [n for n in getattr(error, "__notes__", []) if n.startswith("batchq async call chain")]
    assert len(notes) == 1, notes
    return notes[0]


def three_deep(catch_and_reraise: bool = False) -> batchq.AsyncFunction[[int], int]:
    @asynq()
    def inner(c: int) -> Generator[Any, Any, int]:
        yield batchq.none_future
        raise ValueError(f"bad {c}")

    @asynq()
    def middle(b: int, *rest: int, **opts: str) -> Generator[Any, Any, int]:
        try:
            return (yield inner.asynq(b + 1))
        except ValueError:
            if catch_and_reraise:
                raise
            raise

    @asynq()
    def outer(a: int) -> Generator[Any, Any, int]:
        return (yield middle.asynq(a + 1, 7, mode="x"))

    return outer


@pytest.mark.parametrize("catch_and_reraise", [False, True])
def test_the_note_lists_the_async_calls_with_arguments(catch_and_reraise: bool) -> None:
    with pytest.raises(ValueError, match="bad 3") as info:
        three_deep(catch_and_reraise)(1)
    lines = chain_note(info.value).splitlines()
    assert lines[0] == "batchq async call chain (outermost first):"
    assert lines[1].strip().endswith("outer(a=1)")
    assert lines[2].strip().endswith("middle(b=2, 7, mode='x')")
    assert lines[3].strip().endswith("inner(c=3)")
    assert len(lines) == 4  # no scheduler frames
    assert lines[1].startswith("  ")
    assert lines[3].startswith("      ")


def test_the_note_is_added_once_even_when_raised_again() -> None:
    outer = three_deep()
    with pytest.raises(ValueError) as info:
        outer(1)
    error = info.value
    note_async_chain(error)
    with pytest.raises(ValueError):
        raise error
    note_async_chain(error)
    chain_note(error)  # still exactly one


def test_a_new_error_raised_from_a_caught_one_notes_its_own_chain() -> None:
    @asynq()
    def inner() -> Generator[Any, Any, int]:
        yield batchq.none_future
        raise KeyError("k")

    @asynq()
    def translate(x: int) -> Generator[Any, Any, int]:
        try:
            return (yield inner.asynq())
        except KeyError as e:
            raise LookupError("translated") from e

    @asynq()
    def top(y: int) -> Generator[Any, Any, int]:
        return (yield translate.asynq(y))

    with pytest.raises(LookupError) as info:
        top(5)
    note = chain_note(info.value)
    assert "top(y=5)" in note
    assert "translate(x=5)" in note
    assert "inner" not in note.split("\n", 1)[1]
    assert isinstance(info.value.__cause__, KeyError)


def test_a_nested_sync_call_ends_with_one_note_for_the_whole_chain() -> None:
    @asynq()
    def leaf(c: int) -> Generator[Any, Any, int]:
        yield batchq.none_future
        raise ValueError(c)

    @asynq()
    def sync_caller(b: int) -> Generator[Any, Any, int]:
        yield batchq.none_future
        return leaf(b + 1)  # nested run: its run_sync notes a shorter chain first

    @asynq()
    def top(a: int) -> Generator[Any, Any, int]:
        return (yield sync_caller.asynq(a + 1))

    with pytest.raises(ValueError) as info:
        top(1)
    note = chain_note(info.value)
    assert note.index("top(a=1)") < note.index("sync_caller(b=2)") < note.index("leaf(c=3)")


def test_a_very_deep_chain_is_shortened() -> None:
    @asynq()
    def deep(n: int) -> Generator[Any, Any, int]:
        if n == 0:
            raise RuntimeError("bottom")
        return (yield deep.asynq(n - 1))

    with pytest.raises(RuntimeError) as info:
        deep(300)
    lines = chain_note(info.value).splitlines()
    assert lines[1].strip().endswith(".deep(n=300)")
    assert lines[-1].strip().endswith(".deep(n=0)")
    assert any("more async calls" in line for line in lines)
    assert len(lines) < 30


def test_no_note_for_a_single_call_or_without_add_note() -> None:
    @asynq()
    def alone() -> Generator[Any, Any, int]:
        raise ValueError("x")
        yield

    with pytest.raises(ValueError) as info:
        alone()
    assert not getattr(info.value, "__notes__", [])

    class NoNotes(Exception):
        add_note = None  # what Python 3.10 exceptions look like to note_async_chain

    @asynq()
    def raises_no_notes() -> Generator[Any, Any, int]:
        yield batchq.none_future
        raise NoNotes("old python")

    @asynq()
    def wraps() -> Generator[Any, Any, int]:
        return (yield raises_no_notes.asynq())

    with pytest.raises(NoNotes, match="old python") as info2:
        wraps()
    assert not hasattr(info2.value, "__notes__")


def test_debug_module_exports() -> None:
    names = debug.__all__
    assert len(names) == len(set(names))
    assert all(hasattr(debug, n) for n in names)
    assert debug.Instrument is batchq.Instrument


def test_async_stack_follows_a_synchronous_call_into_the_enclosing_run() -> None:
    seen: list[str] = []

    @batchq.asynq()
    def innermost(z: int) -> Generator[Any, Any, None]:
        seen.append(batchq.debug.format_async_stack())
        yield None

    @batchq.asynq()
    def outer(x: int) -> Generator[Any, Any, None]:
        yield None
        innermost(x + 1)  # a nested run

    outer(1)
    stack = seen[0]
    assert stack.index("outer(1)") < stack.index("innermost(2)")
    assert "called synchronously" in stack


def test_strict_error_names_the_call_site_file_and_line() -> None:
    @batchq.asynq()
    def inner() -> Generator[Any, Any, None]:
        yield None

    @batchq.asynq()
    def outer() -> Generator[Any, Any, None]:
        yield None
        inner()

    with batchq.debug.strict(), pytest.raises(batchq.SyncCallInAsyncError) as info:
        outer()
    assert f"{__file__}:" in str(info.value)


def test_trace_numbers_rounds_within_their_own_run() -> None:
    # The outer run's only round used to be labelled "round 3": the scheduler's counter includes
    # the rounds of the nested runs that a synchronous call inside the task started.
    users = batchq.Loader(lambda ids: {i: i * 10 for i in ids}, name="users")

    @batchq.asynq()
    def inner(uid: int) -> Generator[Any, Any, int]:
        return (yield users.load.asynq(uid))

    @batchq.asynq()
    def outer() -> Generator[Any, Any, int]:
        first = inner(1) + inner(2)  # two nested runs of one round each
        second = yield users.load.asynq(3)
        return first + second

    rec = debug.TraceRecorder()
    with debug.instrument(rec):
        assert outer() == 60
    events = rec.events()
    rounds = [e for e in events if e["ph"] == "X" and e["cat"] == "round"]
    assert [e["name"] for e in rounds] == ["round 1", "round 1", "round 1"]
    flushes = [e for e in events if e["ph"] == "X" and e["cat"] == "flush"]
    assert [e["args"]["round"] for e in flushes] == [1, 1, 1]
    runs = [e for e in events if e["ph"] == "X" and e["cat"] == "run"]
    assert [e["args"]["rounds"] for e in runs] == [1, 1, 3]  # the outer run's stats add up


def test_trace_numbers_successive_rounds_of_one_run() -> None:
    users = batchq.Loader(lambda ids: {i: i for i in ids}, name="users")

    @batchq.asynq()
    def chain(n: int) -> Generator[Any, Any, int]:
        total = 0
        for i in range(n):
            total += yield users.load.asynq(i)
        return total

    rec = debug.TraceRecorder()
    with debug.instrument(rec):
        chain(3)
        chain(2)
    rounds = [e["name"] for e in rec.events() if e["ph"] == "X" and e["cat"] == "round"]
    assert rounds == ["round 1", "round 2", "round 3", "round 1", "round 2"]


def test_dir_shows_only_public_names() -> None:
    public = [name for name in dir(debug) if not name.startswith("_")]
    assert public == sorted(debug.__all__)
    assert "Any" not in dir(debug)
    assert "__doc__" in dir(debug)
