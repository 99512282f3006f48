"""Adversarial checks of KeyedBatch's absorption: every scenario must give the same result with
the absorption on and off (``no_absorb`` turns it off by making the reference count check fail).
"""

from __future__ import annotations

import collections
import collections.abc
import contextlib
import gc
import re
import sys
import traceback
import types
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

import batchq
import batchq.debug
import batchq.testing
from batchq import AsyncContext, Loader, asynq
from batchq._core import _loop
from batchq._core._batch import KeyedBatch
from batchq._core._task import ABSORBED, AsyncTask, blocked_on


@contextlib.contextmanager
def absorption_off() -> Iterator[None]:
    """No task is absorbed: ``_drive``'s ``held`` default can never equal a reference count."""
    drive = _loop.Scheduler._drive
    defaults = drive.__defaults__
    assert defaults is not None
    names = drive.__code__.co_varnames[: drive.__code__.co_argcount]
    index = list(names[-len(defaults) :]).index("held")
    patched = list(defaults)
    patched[index] = -12345
    drive.__defaults__ = tuple(patched)
    try:
        yield
    finally:
        drive.__defaults__ = defaults


@pytest.fixture(params=["absorb", "no_absorb"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test so marked runs twice: with the absorption, and with it off."""
    if request.param == "absorb":
        yield request.param
    else:
        with absorption_off():
            yield request.param


def both_ways(scenario: Callable[[], Any], *, absorbs: bool = True) -> Any:
    """What ``scenario()`` returns (or raises, as its type and message), which must be the same
    with the absorption on and off; returns it. With ``absorbs``, some fetch of the run with the
    absorption on must have settled a task held in its key's place (the scenario tests it)."""

    def outcome() -> Any:
        try:
            return ("returned", scenario())
        except BaseException as e:
            return ("raised", type(e), str(e))

    # Evidence of absorptions: tasks settled in their keys' places, and tasks given items back.
    evidence = 0
    settle = Loader._settle_chunk
    restore = KeyedBatch._restore

    def counting_settle(self: Any, result: Any, keys: Any, items: list[Any]) -> None:
        nonlocal evidence
        evidence += sum(1 for i in items if isinstance(i, AsyncTask))
        settle(self, result, keys, items)

    def counting_restore(self: Any, key: Any, task: Any) -> Any:
        nonlocal evidence
        evidence += 1
        return restore(self, key, task)

    Loader._settle_chunk = counting_settle  # type: ignore[method-assign]
    KeyedBatch._restore = counting_restore
    try:
        on = outcome()
    finally:
        Loader._settle_chunk = settle  # type: ignore[method-assign]
        KeyedBatch._restore = restore
    with absorption_off():
        off = outcome()
    assert on == off
    if absorbs:
        assert evidence > 0, "the scenario absorbed no task: it tests nothing here"
    return on


def absorbed_now() -> int:
    """How many tasks are held by their keyed batch in their item's place right now."""
    return sum(1 for o in gc.get_objects() if isinstance(o, AsyncTask) and o._npending == ABSORBED)


def values(keys: list[Any]) -> list[str]:
    return [f"v{k}" for k in keys]


def logged_loader() -> tuple[Loader[int, str], list[list[int]]]:
    """A loader of ``values``, and the log of the keys of each of its fetches."""
    calls: list[list[int]] = []

    def fetch(keys: list[int]) -> list[str]:
        calls.append(list(keys))
        return values(keys)

    return Loader(fetch), calls


@asynq()
def child(loader: Loader[Any, Any], key: Any) -> Generator[Any, Any, Any]:
    return (yield loader.load.asynq(key))


# -- contexts ---------------------------------------------------------------------------------


class FailsOnSecondResume(AsyncContext):
    """A context whose second resume raises: the one when its task is switched back in after
    its first wait."""

    def __init__(self) -> None:
        self.resumes = 0

    def resume(self) -> None:
        self.resumes += 1
        if self.resumes == 2:
            raise ValueError("cannot resume")

    def pause(self) -> None:
        pass


def test_a_context_failing_to_resume_a_delivered_task_fails_it_at_its_yield(mode: str) -> None:
    """The task of key 2 is absorbed; the flush delivers its value; when the scheduler switches
    to its frame, its context fails to resume. The task must get that error at its yield."""
    loader = Loader(values)
    states: list[int] = []

    @asynq()
    def fragile(key: int) -> Generator[Any, Any, Any]:
        try:
            with FailsOnSecondResume():
                got = yield loader.load.asynq(key)
        except ValueError as e:
            return f"caught: {e}"
        return f"no error, got {got!r}"

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        t = fragile.asynq(2)
        result = yield [child.asynq(loader, 1), t, probe.asynq(t)]
        return result

    @asynq()
    def probe(t: AsyncTask[Any]) -> Generator[Any, Any, None]:
        states.append(t._npending)
        return None
        yield

    assert root() == ["v1", "caught: cannot resume", None]
    assert states == ([ABSORBED] if mode == "absorb" else [0])


def test_a_context_failing_to_resume_a_task_delivered_an_error_fails_it_with_that_context_error(
    mode: str,
) -> None:
    """As above, with an error delivered for the key: the context's error wins, as it does on
    any switch (the generator gets one error thrown, not a TypeError from throwing a future)."""

    def fetch(keys: list[int]) -> list[Any]:
        return [LookupError(f"no {k}") if k == 2 else f"v{k}" for k in keys]

    loader = Loader(fetch)

    @asynq()
    def fragile(key: int) -> Generator[Any, Any, Any]:
        try:
            with FailsOnSecondResume():
                got = yield loader.load.asynq(key)
        except Exception as e:
            return f"caught {type(e).__name__}: {e}"
        return f"no error, got {got!r}"

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [child.asynq(loader, 1), fragile.asynq(2)])

    assert root() == ["v1", "caught ValueError: cannot resume"]


# -- interrupts -------------------------------------------------------------------------------


def test_an_interrupt_after_a_delivery_closes_the_run_whatever_the_value_holds(mode: str) -> None:
    """Loader ``a`` flushes first and delivers to the absorbed task of key 2 a value that is a
    list containing itself; then loader ``b``'s fetch is interrupted. The abort walks what every
    task waits on: a delivered value is not something it waits on."""
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    a: Loader[int, Any] = Loader(lambda keys: [cyclic for _ in keys], name="a")

    def interrupted(keys: list[int]) -> list[int]:
        raise KeyboardInterrupt

    b = Loader(interrupted, name="b")
    closed: list[int] = []

    @asynq()
    def waiter(key: int) -> Generator[Any, Any, Any]:
        try:
            return (yield a.load.asynq(key))
        finally:
            closed.append(key)

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [waiter.asynq(1), waiter.asynq(2), child.asynq(b, 3)])

    with pytest.raises(KeyboardInterrupt):
        root()
    assert sorted(closed) == [1, 2]


def test_an_interrupt_after_a_delivery_does_not_close_tasks_found_in_the_value(mode: str) -> None:
    """The delivered value holds a task that belongs to nobody in the run (a loader of lazily
    computed values): the abort must not close it."""

    @asynq()
    def lazy(k: int) -> Generator[Any, Any, int]:
        return k * 10
        yield

    made: list[AsyncTask[Any]] = []

    def fetch(keys: list[int]) -> list[Any]:
        out = [[lazy.asynq(k)] for k in keys]
        made.extend(t for [t] in out)
        return out

    a = Loader(fetch, name="a")

    def interrupted(keys: list[int]) -> list[int]:
        raise KeyboardInterrupt

    b = Loader(interrupted, name="b")

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [child.asynq(a, 1), child.asynq(a, 2), child.asynq(b, 3)])

    with pytest.raises(KeyboardInterrupt):
        root()
    # The tasks made by the fetch never started: they are still runnable, later, by whoever
    # gets them.
    computed = [t.is_computed() for t in made]
    got = []
    for t in made:
        try:
            got.append(t.value())
        except batchq.AsyncTaskCancelledError as e:
            got.append(type(e))
    assert computed == [False, False]
    assert got == [10, 20]


def test_a_flush_that_flushes_its_own_batch_again_wakes_each_task_once() -> None:
    """A fetch that flushes its own batch again (``item.batch.flush()``, asynq style, on an item
    of the round being fetched): the inner flush wakes the waiters, items and absorbed tasks
    alike; the outer one must not push the absorbed tasks a second time (each would run twice,
    the second time at a later yield, before what it waits on there is computed)."""

    def scenario() -> Any:
        log: list[Any] = []
        holder: dict[str, Any] = {}

        def fetch(keys: list[int]) -> list[str]:
            log.append(list(keys))
            if len(log) == 1:
                holder["item"].batch.flush()
            return [f"v{k}" for k in keys]

        loader = Loader(fetch)

        @asynq()
        def twice(k: int) -> Generator[Any, Any, Any]:
            first = yield loader.load.asynq(k)
            return first, (yield loader.load.asynq(k + 100))

        @asynq()
        def first() -> Generator[Any, Any, Any]:
            item = loader.load.asynq(1)
            holder["item"] = item
            return (yield item)

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [first.asynq(), twice.asynq(2), twice.asynq(3)])

        return root(), sorted(map(sorted, log))

    assert both_ways(scenario) == (
        "returned",
        (["v1", ("v2", "v102"), ("v3", "v103")], [[1, 2, 3], [1, 2, 3], [102, 103]]),
    )


# -- asyncio ----------------------------------------------------------------------------------


@pytest.mark.parametrize("turns", range(8))
def test_cancelling_an_asyncio_caller_at_any_point_of_a_round(mode: str, turns: int) -> None:
    """Two callers share rounds; one is cancelled after ``turns`` turns of the loop: before its
    tasks are absorbed, while they are, once their values are delivered, or after. The other
    caller gets its values, and every closed task ran its ``finally``."""
    import asyncio

    from aio_support import run

    closed: list[int] = []
    tasks: dict[int, list[AsyncTask[Any]]] = {}
    calls: list[list[int]] = []

    def fetch(keys: list[int]) -> list[int]:
        calls.append(list(keys))
        return [k * 10 for k in keys]

    loader = Loader(fetch)

    @asynq()
    def get(k: int) -> Generator[Any, Any, int]:
        try:
            return (yield loader.load.asynq(k))  # type: ignore[no-any-return]
        finally:
            closed.append(k)

    @asynq()
    def fan(base: int) -> Generator[Any, Any, int]:
        ts = [get.asynq(k) for k in range(base, base + 4)]
        tasks[base] = ts
        return sum((yield ts))

    async def main() -> Any:
        kept = asyncio.ensure_future(fan.asyncio(10))
        doomed = asyncio.ensure_future(fan.asyncio(0))
        for _ in range(turns):
            await asyncio.sleep(0)
        doomed.cancel()
        try:
            result: Any = await doomed
        except asyncio.CancelledError:
            result = "cancelled"
        return result, await kept

    doomed_result, kept_result = run(main)
    assert kept_result == 460
    if doomed_result == "cancelled":
        assert all(t.is_computed() for t in tasks.get(0, []))
    else:
        assert doomed_result == 60
    assert sorted(closed) == sorted([10, 11, 12, 13, *(k for k in range(4) if 0 in tasks)])


# -- nested and synchronous calls ---------------------------------------------------------------


def test_a_synchronous_load_inside_a_task_flushes_the_round_with_its_absorbed_tasks() -> None:
    """``loader.load(k)`` inside a task requests ``k`` in the running round's batch and flushes it
    in a nested run: the absorbed tasks of that batch are pushed back to the outer scheduler."""

    def scenario() -> Any:
        loader, calls = logged_loader()

        @asynq()
        def sync_inside() -> Generator[Any, Any, Any]:
            yield None  # once the others wait
            return loader.load(3)

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [child.asynq(loader, 1), child.asynq(loader, 2), sync_inside.asynq()])

        return root(), calls

    assert both_ways(scenario) == ("returned", (["v1", "v2", "v3"], [[1, 2, 3]]))


def test_a_nested_run_that_yields_the_outer_rounds_items() -> None:
    """Items of the outer round's batch yielded by tasks of a nested run (handed over in a list,
    so that nothing else holds them): the nested scheduler absorbs its task into the outer batch
    and must wake it in the nested run."""

    def scenario() -> Any:
        loader, calls = logged_loader()

        @asynq()
        def pop_one(box: list[Any]) -> Generator[Any, Any, Any]:
            return (yield box.pop())

        @asynq()
        def inner(box: list[Any]) -> Generator[Any, Any, Any]:
            return (yield [pop_one.asynq(box), pop_one.asynq(box)])

        @asynq()
        def outer() -> Generator[Any, Any, Any]:
            box = [loader.load.asynq(1), loader.load.asynq(2), loader.load.asynq(3)]
            keep = box.pop(0)
            got = inner(box)  # synchronous: a nested run
            return got, (yield keep)

        return outer(), calls

    assert both_ways(scenario) == ("returned", ((["v3", "v2"], "v1"), [[1, 2, 3]]))


def test_value_of_an_absorbed_task_called_synchronously_is_diagnosed_the_same() -> None:
    """``t.value()`` inside a task, on a task started elsewhere and absorbed: the nested run
    cannot complete it; the diagnosis (and what ``t`` then gets) must not depend on the
    absorption."""

    def scenario() -> Any:
        loader = Loader(values)
        started: list[AsyncTask[Any]] = []

        @asynq()
        def sync_value() -> Generator[Any, Any, Any]:
            yield None
            try:
                return started[0].value()
            except Exception as e:
                return type(e).__name__

        @asynq()
        def guarded(key: int) -> Generator[Any, Any, Any]:
            try:
                return (yield loader.load.asynq(key))
            except Exception as e:
                return type(e).__name__

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            t = guarded.asynq(2)
            started.append(t)
            return (yield [child.asynq(loader, 1), t, sync_value.asynq()])

        return root()

    both_ways(scenario)


# -- keys -------------------------------------------------------------------------------------


class OddKey:
    """Equal to every OddKey of the same group, whatever its name."""

    def __init__(self, group: int, name: str) -> None:
        self.group = group
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OddKey) and other.group == self.group

    def __hash__(self) -> int:
        return hash(self.group)

    def __repr__(self) -> str:
        return f"OddKey({self.group}, {self.name})"


NAN = float("nan")


@pytest.mark.parametrize(
    "keys",
    [
        [0, 1, 1.0, True, 2, 2.0],
        [0, NAN, NAN, float("nan")],
        [OddKey(0, "a"), OddKey(1, "b"), OddKey(1, "c"), OddKey(2, "d"), OddKey(2, "e")],
        [(1, 2), (1, 2), frozenset({1}), "s", b"s", None],
        [0, *range(1, 40), *range(39, 0, -1)],
    ],
    ids=["numbers", "nan", "custom eq", "mixed", "repeats"],
)
def test_equal_keys_of_every_kind_are_fetched_once(keys: list[Any]) -> None:
    def scenario() -> Any:
        calls: list[list[str]] = []

        def fetch(ks: list[Any]) -> list[str]:
            calls.append([repr(k) for k in ks])
            return [f"v{k!r}" for k in ks]

        loader = Loader(fetch)

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [child.asynq(loader, k) for k in keys])

        return root(), calls

    both_ways(scenario)


# -- what a fetch returns, and a fetch that looks around ----------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        lambda keys: collections.deque(f"v{k}" for k in keys),
        lambda keys: tuple(f"v{k}" for k in keys),
        lambda keys: types.MappingProxyType({k: f"v{k}" for k in keys}),
        lambda keys: collections.OrderedDict((k, f"v{k}") for k in reversed(keys)),
        lambda keys: [f"v{k}" for k in keys] + ["extra"],
        lambda keys: [],
        lambda keys: [ValueError(k) if k % 3 == 0 else f"v{k}" for k in keys],
        lambda keys: {k: KeyboardInterrupt() if k == 4 else f"v{k}" for k in keys},
        lambda keys: {k: f"v{k}" for k in keys if k != 5},
        lambda keys: RaisingMapping(keys),
        lambda keys: iter([f"v{k}" for k in keys]),
        lambda keys: "not a sequence",
        lambda keys: None,
    ],
    ids=[
        "deque",
        "tuple",
        "mapping proxy",
        "ordered dict",
        "too many",
        "too few",
        "error values",
        "interrupt as a value",
        "missing key",
        "mapping raising midway",
        "iterator",
        "str",
        "None",
    ],
)
@pytest.mark.parametrize("max_batch_size", [None, 3])
def test_every_fetch_result_reaches_every_task_alike(result: Any, max_batch_size: Any) -> None:
    def scenario() -> Any:
        loader: Loader[int, Any] = Loader(result, max_batch_size=max_batch_size)

        @asynq()
        def guarded(key: int) -> Generator[Any, Any, Any]:
            try:
                return (yield loader.load.asynq(key))
            except BaseException as e:
                return (type(e).__name__, re.sub("0x[0-9a-f]+", "0x?", str(e)))

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [guarded.asynq(k) for k in range(8)])

        return root()

    both_ways(scenario)


class RaisingMapping(collections.abc.Mapping[int, str]):
    """Answers the first keys, then fails."""

    def __init__(self, keys: list[int]) -> None:
        self.keys_ = keys

    def __getitem__(self, key: int) -> str:
        if key >= 4:
            raise ConnectionResetError(f"lost at {key}")
        return f"v{key}"

    def __iter__(self) -> Iterator[int]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


@pytest.mark.parametrize("look", ["repr", "blocked_on", "is_blocked", "request again", "load"])
@pytest.mark.parametrize("max_batch_size", [None, 2])
@pytest.mark.parametrize("fail_second_chunk", [False, True])
def test_a_fetch_that_looks_at_the_waiting_tasks(
    look: str, max_batch_size: Any, fail_second_chunk: bool
) -> None:
    """The fetch (a logging hook, say) looks at the tasks waiting on the round while it runs:
    its repr, what it is blocked on... That may give absorbed keys their items back in the
    middle of the flush; every task must still get its own key's value."""

    def scenario() -> Any:
        tasks: list[AsyncTask[Any]] = []
        seen: list[Any] = []
        calls: list[list[int]] = []
        loader: Loader[int, str]

        def fetch(keys: list[int]) -> list[str]:
            calls.append(list(keys))
            if len(calls) == 2 and fail_second_chunk:
                raise ConnectionError("second chunk")
            for t in tasks:
                if look == "repr":
                    seen.append(repr(t).split(" ")[-1])
                elif look == "blocked_on":
                    seen.append(len(blocked_on(t)))
                elif look == "is_blocked":
                    seen.append(t.is_blocked())
            if look == "request again" and len(calls) == 1:
                seen.append(repr(loader.request(keys[0])))
            elif look == "load" and len(calls) == 1:
                seen.append(loader.load(keys[-1]))
            return [f"v{k}" for k in keys]

        loader = Loader(fetch, max_batch_size=max_batch_size)

        @asynq()
        def guarded(key: int) -> Generator[Any, Any, Any]:
            try:
                return (yield loader.load.asynq(key))
            except ConnectionError as e:
                return str(e)

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            tasks.extend(guarded.asynq(k) for k in range(5))
            return (yield tasks)

        return root(), seen, calls

    outcome = both_ways(scenario)
    assert outcome[0] == "returned"
    got, seen, _ = outcome[1]
    # Each task got its own key's value, or the failure of the fetch that had its key.
    assert all(g in (f"v{k}", "second chunk") for k, g in enumerate(got))
    if not fail_second_chunk:
        assert got == [f"v{k}" for k in range(5)]
    assert seen or (look == "load" and fail_second_chunk)  # (the nested fetch failed)


# -- errors: tracebacks and context -------------------------------------------------------------


def test_an_error_delivered_to_an_absorbed_task_has_the_same_traceback_and_context() -> None:
    def scenario() -> Any:
        def fetch(keys: list[int]) -> list[Any]:
            try:
                raise OSError("disk")
            except OSError:
                return [LookupError(f"no {k}") if k else f"v{k}" for k in keys]

        loader = Loader(fetch)
        raised = ConnectionError("whole fetch")

        def failing(keys: list[int]) -> list[Any]:
            raise raised

        broken = Loader(failing)

        @asynq()
        def inner(ld: Loader[int, Any], key: int) -> Generator[Any, Any, Any]:
            try:
                raise ValueError("handled in the task")
            except ValueError:
                return (yield ld.load.asynq(key))

        @asynq()
        def outer(ld: Loader[int, Any], key: int) -> Generator[Any, Any, Any]:
            try:
                return (yield inner.asynq(ld, key))
            except Exception as e:
                frames = [f.name for f in traceback.extract_tb(e.__traceback__)]
                ctx = e.__context__
                return (
                    type(e).__name__,
                    frames,
                    type(ctx).__name__ if ctx is not None else None,
                    e.__cause__,
                    e.__suppress_context__,
                )

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (
                yield [outer.asynq(loader, k) for k in range(3)]
                + [outer.asynq(broken, k) for k in range(3)]
            )

        return root()

    both_ways(scenario)


# -- instruments, strict mode, statistics, memory -----------------------------------------------


@pytest.mark.parametrize("setting", ["count_rounds", "trace tasks", "strict"])
def test_instruments_and_strict_mode_see_the_same_run(setting: str) -> None:
    def scenario() -> Any:
        loader = Loader(values, name="users", max_batch_size=4)

        @asynq()
        def deep(key: int) -> Generator[Any, Any, Any]:
            a = yield loader.load.asynq(key)
            b = yield loader.load.asynq(key + 100)
            many = yield loader.load_many.asynq([key, key + 1, key + 100])
            return a, b, many

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [deep.asynq(k) for k in range(10)])

        if setting == "count_rounds":
            with batchq.testing.count_rounds() as rounds:
                got = root()
            return got, rounds.rounds, rounds.stats
        if setting == "trace tasks":
            recorder = batchq.debug.TraceRecorder(tasks=True)
            with batchq.debug.instrument(recorder):
                got = root()
            names = sorted(e["name"] for e in recorder.events() if e.get("ph") == "X")
            return got, names
        with batchq.debug.strict():
            got = root()
        return got, batchq.get_scheduler().last_run

    both_ways(scenario)


def test_a_runs_absorbed_tasks_and_items_are_freed_without_the_collector() -> None:
    from batchq._loader import LoaderBatch, LoaderItem

    loader = Loader(values)

    @asynq()
    def two(i: int) -> Generator[Any, Any, str]:
        first: str = yield loader.load.asynq(i)
        second: str = yield loader.load.asynq(i + 1000)
        return first + second

    @asynq()
    def parent() -> Generator[Any, Any, list[str]]:
        got: list[str] = yield [two.asynq(i) for i in range(50)]
        return got

    @asynq()
    def interrupted() -> Generator[Any, Any, Any]:
        yield [two.asynq(i) for i in range(50)] + [boom.asynq()]

    @asynq()
    def boom() -> Generator[Any, Any, None]:
        yield None
        raise KeyboardInterrupt

    gc.collect()
    gc.disable()
    try:
        assert parent()[3] == "v3v1003"
        left = [o for o in gc.get_objects() if type(o) in (LoaderItem, LoaderBatch, AsyncTask)]
        with pytest.raises(KeyboardInterrupt):
            interrupted()
        left_after_abort = [
            o for o in gc.get_objects() if type(o) in (LoaderItem, LoaderBatch, AsyncTask)
        ]
    finally:
        gc.enable()
    assert left == []
    with absorption_off():
        gc.collect()
        gc.disable()
        try:
            with pytest.raises(KeyboardInterrupt):
                interrupted()
            left_without = [
                o for o in gc.get_objects() if type(o) in (LoaderItem, LoaderBatch, AsyncTask)
            ]
        finally:
            gc.enable()
    # An abort may leave cycles (it does without the absorption too): no more with it.
    assert len(left_after_abort) <= len(left_without)


# -- None, the commonest value ------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["list", "mapping", "one at a time"])
def test_a_task_delivered_none_goes_on_waiting_normally(mode: str, shape: str) -> None:
    """A loader answers None for a missing row; the absorbed task that gets it then waits on a
    task, a list and another key: each wait must resume it (a delivered None must not leave the
    task marked as delivered, which the next wake-up would count down instead of resuming it)."""

    def fetch(keys: list[int]) -> Any:
        if shape == "mapping":
            return dict.fromkeys(keys)
        if shape == "one at a time":
            return collections.deque(None for _ in keys)
        return [None for _ in keys]

    loader: Loader[int, Any] = Loader(fetch)

    @asynq()
    def plain(k: int) -> Generator[Any, Any, int]:
        return k
        yield

    @asynq()
    def after_none(k: int) -> Generator[Any, Any, Any]:
        missing = yield loader.load.asynq(k)
        a = yield plain.asynq(k)
        b = yield [plain.asynq(k + 1), plain.asynq(k + 2)]
        c = yield loader.load.asynq(k + 100)
        d = yield plain.asynq(k + 3)
        return missing, a, b, c, d

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [after_none.asynq(k) for k in range(4)])

    assert root() == [(None, k, [k + 1, k + 2], None, k + 3) for k in range(4)]


def test_a_none_delivered_before_the_fetch_fails_midway_stays_none() -> None:
    """A mapping that answers None for the first keys, then raises: the keys settled before the
    failure keep their None (as items do), the others get the error."""

    class NoneThenFail(collections.abc.Mapping[int, Any]):
        def __init__(self, keys: list[int]) -> None:
            self.keys_ = keys

        def __getitem__(self, key: int) -> Any:
            if key >= 3:
                raise ConnectionResetError(f"lost at {key}")
            return None

        def __iter__(self) -> Iterator[int]:
            return iter(self.keys_)

        def __len__(self) -> int:
            return len(self.keys_)

    def scenario() -> Any:
        loader: Loader[int, Any] = Loader(NoneThenFail)

        @asynq()
        def guarded(key: int) -> Generator[Any, Any, Any]:
            try:
                return (yield loader.load.asynq(key))
            except ConnectionResetError as e:
                return str(e)

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [guarded.asynq(k) for k in range(6)])

        return root()

    assert both_ways(scenario) == (
        "returned",
        [None, None, None, "lost at 3", "lost at 3", "lost at 3"],
    )


# -- interrupted and cancelled batches -----------------------------------------------------------


@pytest.mark.parametrize("where", ["first chunk", "second chunk"])
def test_an_interrupt_in_a_chunk_closes_delivered_and_absorbed_tasks_alike(where: str) -> None:
    """``max_batch_size=2``: the first chunk delivers its keys, the second one's fetch is
    interrupted; every task is closed and the batch cancelled, as without the absorption."""

    def scenario() -> Any:
        closed: list[int] = []
        calls: list[list[int]] = []

        def fetch(keys: list[int]) -> list[str]:
            calls.append(list(keys))
            if len(calls) == (1 if where == "first chunk" else 2):
                raise KeyboardInterrupt
            return values(keys)

        loader = Loader(fetch, max_batch_size=2)

        @asynq()
        def waiter(key: int) -> Generator[Any, Any, Any]:
            try:
                return (yield loader.load.asynq(key))
            finally:
                closed.append(key)

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [waiter.asynq(k) for k in range(5)])

        try:
            root()
        except KeyboardInterrupt:
            pass
        # Nothing left pending: a later run of the same loader in this thread starts clean.
        again = root()
        return sorted(closed), calls, again

    assert both_ways(scenario)[1][2] == [f"v{k}" for k in range(5)]


def test_a_task_that_cancels_the_rounds_batch_fails_its_absorbed_waiters() -> None:
    def scenario() -> Any:
        loader, calls = logged_loader()

        @asynq()
        def guarded(key: int) -> Generator[Any, Any, Any]:
            try:
                return (yield loader.load.asynq(key))
            except batchq.BatchCancelledError as e:
                return str(e)

        @asynq()
        def canceller() -> Generator[Any, Any, Any]:
            yield None  # once the others wait
            loader.load.asynq(0).batch.cancel()
            return (yield loader.load.asynq(1))

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [guarded.asynq(k) for k in range(4)] + [canceller.asynq()])

        return root(), calls

    both_ways(scenario)


@pytest.mark.parametrize("context", ["pause fails", "non-async", "resume fails at once"])
def test_a_context_failing_while_its_task_is_absorbed(context: str) -> None:
    """The task is absorbed, then switched out: its context's pause fails (or it is a
    NonAsyncContext, which refuses the wait). It gets the error at its yield, its key is still
    fetched, and the other tasks get their values."""

    def scenario() -> Any:
        loader, calls = logged_loader()

        class Fragile(AsyncContext):
            resumes = 0

            def resume(self) -> None:
                self.resumes += 1
                if context == "resume fails at once" and self.resumes == 2:
                    raise ValueError("cannot resume")

            def pause(self) -> None:
                if context == "pause fails":
                    raise ValueError("cannot pause")

        @asynq()
        def inside(key: int) -> Generator[Any, Any, Any]:
            try:
                if context == "non-async":
                    with batchq.NonAsyncContext():
                        return (yield loader.load.asynq(key))
                with Fragile():
                    got = yield loader.load.asynq(key)
                    # A second wait: for "resume fails at once", the switch back fails here.
                    return got, (yield plain.asynq(key))
            except (ValueError, AssertionError) as e:
                return type(e).__name__

        @asynq()
        def plain(k: int) -> Generator[Any, Any, int]:
            yield None
            return k

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [child.asynq(loader, 1), inside.asynq(2), child.asynq(loader, 3)])

        return root(), calls

    both_ways(scenario)


# -- order and sharing -------------------------------------------------------------------------


def test_tasks_resume_in_the_same_order() -> None:
    """Which task resumes first after a flush is observable (side effects, the order of the next
    round's keys): it must not depend on which keys were absorbed."""

    def scenario() -> Any:
        log: list[Any] = []
        loader, calls = logged_loader()
        kept: list[Any] = []

        @asynq()
        def step(key: int, keep: bool) -> Generator[Any, Any, Any]:
            item = loader.load.asynq(key)
            if keep:
                kept.append(item)
            del item
            got = yield kept[-1] if keep else loader.load.asynq(key)
            log.append(("resumed", key, got))
            again = yield loader.load.asynq(key + 10)
            log.append(("again", key, again))
            return got

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [step.asynq(k % 5, k % 3 == 0) for k in range(12)])

        return root(), log, calls

    both_ways(scenario)


def test_asyncio_callers_of_the_same_keys_share_the_fetch(mode: str) -> None:
    import asyncio

    from aio_support import run

    calls: list[list[int]] = []

    def fetch(keys: list[int]) -> list[str]:
        calls.append(sorted(keys))
        return values(keys)

    loader: Loader[int, Any] = Loader(fetch)

    @asynq()
    def fan(keys: list[int]) -> Generator[Any, Any, Any]:
        return (yield [child.asynq(loader, k) for k in keys])

    async def main() -> Any:
        return await asyncio.gather(
            fan.asyncio([1, 2, 3, 4]),
            loader.load.asyncio(3),
            fan.asyncio([4, 3, 5]),
            loader.load_many.asyncio([2, 5, 6]),
        )

    assert run(main) == [
        ["v1", "v2", "v3", "v4"],
        "v3",
        ["v4", "v3", "v5"],
        ["v2", "v5", "v6"],
    ]
    assert calls == [[1, 2, 3, 4, 5, 6]]


# -- the reference count the absorption relies on ------------------------------------------------


@pytest.mark.parametrize("hook", ["settrace", "setprofile"])
def test_the_calibration_ignores_a_tool_that_reads_frame_locals(hook: str) -> None:
    """batchq imported under a debugger or a snooping tool whose trace (or profile) function
    reads ``frame.f_locals``: on Python 3.11-3.12 that snapshot holds one more reference to the
    calibration's local while it is measured. Calibrated one too high, ``_drive`` would absorb
    items that one other holder keeps (a task's own ``item`` variable, a second waiter), which
    then never get their values."""

    def reader(frame: Any, event: str, arg: Any) -> Any:
        frame.f_locals  # noqa: B018 (the access is the point)
        return reader

    install: Callable[[Any], None] = sys.settrace if hook == "settrace" else sys.setprofile
    get: Callable[[], Any] = sys.gettrace if hook == "settrace" else sys.getprofile
    old = get()
    install(reader)
    try:
        measured = _loop._calibrate_held()
    finally:
        install(old)
    assert measured == _loop._HELD
    assert get() is old


def test_an_interrupt_from_a_task_resumed_before_the_delivered_ones_closes_them() -> None:
    """The round's first key's task resumes first and raises KeyboardInterrupt while the others
    hold their delivered values, unread: they are closed (``finally`` runs) as waiting tasks."""

    def scenario() -> Any:
        closed: list[Any] = []
        loader: Loader[int, Any] = Loader(values)

        @asynq()
        def boom() -> Generator[Any, Any, None]:
            yield loader.load.asynq(0)
            raise KeyboardInterrupt

        @asynq()
        def waiter(key: int) -> Generator[Any, Any, Any]:
            try:
                got = yield loader.load.asynq(key)
                closed.append(("resumed", key, got))
                return got
            finally:
                closed.append(key)

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [boom.asynq()] + [waiter.asynq(k) for k in range(1, 5)])

        try:
            root()
        except KeyboardInterrupt:
            closed.append("interrupted")
        return closed

    outcome = both_ways(scenario)
    assert outcome[1][-1] == "interrupted"
    assert sorted(k for k in outcome[1] if isinstance(k, int)) == [1, 2, 3, 4]


def test_values_that_look_like_futures_or_nothing_are_delivered_as_values() -> None:
    """Futures, a task, None, falsy values and empty containers as a key's value: the task gets
    the object itself, as it gets it from an item."""
    from batchq._core._futures import ConstFuture, ErrorFuture

    @asynq()
    def lazy(k: int) -> Generator[Any, Any, int]:
        return k
        yield

    def scenario() -> Any:
        odd: dict[int, Any] = {
            1: ConstFuture(5),
            2: ErrorFuture(ValueError("x")),
            3: None,
            4: [None],
            5: (),
            6: lazy.asynq(6),
            7: 0,
            8: False,
        }
        loader: Loader[int, Any] = Loader(lambda keys: [odd.get(k, k) for k in keys])

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            got = yield [child.asynq(loader, k) for k in range(9)]
            shown = [
                "task"
                if isinstance(g, AsyncTask)
                else type(g).__name__
                if hasattr(g, "_value")
                else g
                for g in got
            ]
            return shown, got[6].value()

        return root()

    assert both_ways(scenario) == (
        "returned",
        ([0, "ConstFuture", "ErrorFuture", None, [None], (), "task", 0, False], 6),
    )
