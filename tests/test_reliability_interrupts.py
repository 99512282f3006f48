"""Interrupts: a KeyboardInterrupt (or an asyncio cancellation) in the middle of a run closes every
generator, runs every ``finally``, cancels what was pending, and leaves the scheduler usable.

The interrupt is raised in each place it can come from: a task's own code, a loader's fetch, an
asynq-style batch's ``_flush``, an instrument hook between rounds, a nested synchronous run, and the
bottom of a deep chain. ``test_errors.py`` has the basic case (an interrupting ``_flush``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Generator
from typing import Any

import pytest

import batchq
from batchq import BatchBase, BatchItemBase, Loader, asynq
from batchq._core._instruments import Instrument, instruments
from batchq._core._loop import Scheduler


class OldStyleBatch(BatchBase):
    """An asynq-style batch: its own active batch, a ``_cancel`` that must be called."""

    active: OldStyleBatch | None = None

    def __init__(self) -> None:
        super().__init__()
        self.flushed = 0
        self.cancelled = 0

    @classmethod
    def item(cls, value: Any) -> OldStyleItem:
        if cls.active is None:
            cls.active = cls()
        return OldStyleItem(cls.active, value)

    def _try_switch_active_batch(self) -> None:
        if OldStyleBatch.active is self:
            OldStyleBatch.active = None

    def _flush(self) -> None:
        self.flushed += 1
        for item in self.items:
            assert isinstance(item, OldStyleItem)
            item.set_value(("old", item.request))

    def _cancel(self) -> None:
        self.cancelled += 1


class OldStyleItem(BatchItemBase[Any]):
    __slots__ = ("request",)

    def __init__(self, batch: OldStyleBatch, request: Any) -> None:
        super().__init__(batch)
        self.request = request


class World:
    """Loaders, an old-style batch source and a record of every task's cleanup."""

    def __init__(self, interrupt_fetch: str | None = None) -> None:
        OldStyleBatch.active = None
        self.interrupt_fetch = interrupt_fetch
        self.fetched: dict[str, list[list[int]]] = {"A": [], "B": []}
        self.loaders = {name: Loader(self._fetcher(name), name=name) for name in "AB"}
        self.cleaned: list[str] = []
        self.generators: list[Generator[Any, Any, Any]] = []
        self.items: list[BatchItemBase[Any]] = []
        self.batches: list[OldStyleBatch] = []

    def _fetcher(self, name: str) -> Any:
        def fetch(keys: list[int]) -> list[Any]:
            self.fetched[name].append(list(keys))
            if self.interrupt_fetch == name:
                raise KeyboardInterrupt
            return [(name, k) for k in keys]

        return fetch

    def load(self, name: str, key: int) -> BatchItemBase[Any]:
        item = self.loaders[name].load.asynq(key)
        self.items.append(item)
        return item

    def old(self, request: Any) -> OldStyleItem:
        item = OldStyleBatch.item(request)
        assert isinstance(item.batch, OldStyleBatch)
        if item.batch not in self.batches:
            self.batches.append(item.batch)
        self.items.append(item)
        return item

    def track(self, task: batchq.AsyncTask[Any]) -> batchq.AsyncTask[Any]:
        assert task._gen is not None
        self.generators.append(task._gen)
        return task

    def assert_all_closed(self, expected_cleanups: set[str]) -> None:
        assert set(self.cleaned) == expected_cleanups
        assert len(self.cleaned) == len(expected_cleanups), "a finally ran twice"
        for gen in self.generators:
            assert inspect.getgeneratorstate(gen) == inspect.GEN_CLOSED


def assert_scheduler_clean(sched: Scheduler) -> None:
    assert not sched.is_running()
    assert sched._ready == []
    assert sched._pending == {}
    assert sched._active == {}
    assert sched.active_task is None


def assert_next_run_works(world: World) -> None:
    world.interrupt_fetch = None

    @asynq()
    def after() -> Generator[Any, Any, Any]:
        return (yield [world.load("A", 7), world.load("B", 8), world.old("x")])

    assert after() == [("A", 7), ("B", 8), ("old", "x")]


def make_graph(world: World, raise_in: str | None = None) -> Any:
    """root -> [waits_a(A 1), chain(), waits_old("r")]; chain -> A 10, then [late(), boom()].

    Round 0 asks A for 1 and 10 and the old-style source for "r". In round 1, ``late`` asks for
    A 21, B 22 and old "late", then ``boom`` (which runs after it: yield order) asks for B 11, or
    with ``raise_in="chain"`` raises KeyboardInterrupt while late's three requests are pending.
    """

    @asynq()
    def waits(name: str, source: str, key: Any) -> Generator[Any, Any, Any]:
        try:
            if source == "old":
                return (yield world.old(key))
            return (yield world.load(source, key))
        finally:
            world.cleaned.append(name)

    @asynq()
    def late() -> Generator[Any, Any, Any]:
        try:
            return (yield [world.load("A", 21), world.load("B", 22), world.old("late")])
        finally:
            world.cleaned.append("late")

    @asynq()
    def boom() -> Generator[Any, Any, Any]:
        try:
            if raise_in == "chain":
                raise KeyboardInterrupt
            return (yield world.load("B", 11))
        finally:
            world.cleaned.append("boom")

    @asynq()
    def chain() -> Generator[Any, Any, Any]:
        try:
            first = yield world.load("A", 10)
            rest = yield [world.track(late.asynq()), world.track(boom.asynq())]
            return first, rest
        finally:
            world.cleaned.append("chain")

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        try:
            return (
                yield [
                    world.track(waits.asynq("a", "A", 1)),
                    world.track(chain.asynq()),
                    world.track(waits.asynq("old", "old", "r")),
                ]
            )
        finally:
            world.cleaned.append("root")

    return root


ALL = {"a", "chain", "late", "boom", "old", "root"}


def test_keyboard_interrupt_in_a_task_closes_everything_and_cancels_pending_batches() -> None:
    world = World()
    root = make_graph(world, raise_in="chain")
    sched = batchq.get_scheduler()
    with pytest.raises(KeyboardInterrupt):
        world.track(root.asynq()).value()
    world.assert_all_closed(ALL)
    assert_scheduler_clean(sched)
    # Round 1 was interrupted before its flush: late's keys were never fetched, and every one of
    # its items holds a BatchCancelledError, the loaders' and the old-style batch's alike.
    assert world.fetched == {"A": [[1, 10]], "B": []}
    assert all(item.is_computed() for item in world.items)
    cancelled = [i for i in world.items if isinstance(i._error, batchq.BatchCancelledError)]
    assert sorted(repr(getattr(i, "key", getattr(i, "request", None))) for i in cancelled) == [
        "'late'",
        "21",
        "22",
    ]
    second_old = world.batches[-1]
    assert second_old.cancelled == 1
    assert second_old.flushed == 0
    assert world.batches[0].flushed == 1
    assert world.batches[0].cancelled == 0
    assert_next_run_works(world)


@pytest.mark.parametrize(
    ("source", "started"),
    [("A", ALL - {"late", "boom"}), ("B", ALL)],  # A is interrupted in round 0, B in round 1
)
def test_keyboard_interrupt_in_a_fetch(source: str, started: set[str]) -> None:
    world = World(interrupt_fetch=source)
    root = make_graph(world)
    sched = batchq.get_scheduler()
    with pytest.raises(KeyboardInterrupt):
        world.track(root.asynq()).value()
    world.assert_all_closed(started)
    assert_scheduler_clean(sched)
    # The fetch that raised is not retried; every item of the round not yet flushed is
    # cancelled, and no item is left without an outcome.
    assert all(item.is_computed() for item in world.items)
    cancelled = [i for i in world.items if isinstance(i._error, batchq.BatchCancelledError)]
    assert cancelled
    for batch in world.batches:
        assert batch.flushed + batch.cancelled == 1
    assert_next_run_works(world)


class RaiseAt(Instrument):
    def __init__(self, hook: str, round_index: int) -> None:
        self.hook = hook
        self.round_index = round_index
        self.base = 0
        self.current = -1

    def run_started(self, scheduler: Scheduler) -> None:
        self.base = scheduler.stats().rounds

    def round_started(self, scheduler: Scheduler, round_index: int) -> None:
        self.current = round_index - self.base
        if self.hook == "round_started" and round_index - self.base == self.round_index:
            raise KeyboardInterrupt

    def round_finished(self, scheduler: Scheduler, round_index: int) -> None:
        if self.hook == "round_finished" and round_index - self.base == self.round_index:
            raise KeyboardInterrupt

    def batch_flushed(self, batch: BatchBase, items: Any, seconds: float) -> None:
        # After A's flush in the chosen round: B's and the old-style batch are still to flush.
        if (
            self.hook == "batch_flushed"
            and self.current == self.round_index
            and batch.name() == "A"
        ):
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    "hook",
    [
        "round_finished",
        "batch_flushed",
        "round_started",
    ],
)
def test_keyboard_interrupt_between_rounds_from_an_instrument(hook: str) -> None:
    world = World()
    root = make_graph(world)
    sched = batchq.get_scheduler()
    with instruments(RaiseAt(hook, 1)), pytest.raises(KeyboardInterrupt):
        world.track(root.asynq()).value()
    world.assert_all_closed(ALL)
    assert_scheduler_clean(sched)
    assert all(item.is_computed() for item in world.items), [
        i for i in world.items if not i.is_computed()
    ]
    for batch in world.batches:
        assert batch.flushed + batch.cancelled == 1, batch
    assert_next_run_works(world)


def test_round_started_interrupt_still_cancels_loader_batches() -> None:
    """Loader items of the interrupted round are cancelled, as well as old-style batches."""
    world = World()
    root = make_graph(world)
    with instruments(RaiseAt("round_started", 1)), pytest.raises(KeyboardInterrupt):
        world.track(root.asynq()).value()
    world.assert_all_closed(ALL)
    loader_items = [i for i in world.items if not isinstance(i, OldStyleItem)]
    assert all(item.is_computed() for item in loader_items)
    assert any(isinstance(i._error, batchq.BatchCancelledError) for i in loader_items)


def test_keyboard_interrupt_inside_a_nested_sync_run_closes_both_runs() -> None:
    world = World()

    @asynq()
    def inner() -> Generator[Any, Any, Any]:
        try:
            yield world.load("A", 1)
            raise KeyboardInterrupt
        finally:
            world.cleaned.append("inner")

    @asynq()
    def sibling() -> Generator[Any, Any, Any]:
        try:
            return (yield world.load("B", 2))
        finally:
            world.cleaned.append("sibling")

    @asynq()
    def outer() -> Generator[Any, Any, Any]:
        try:
            yield None
            return inner()  # a synchronous call inside a task: a nested run
        finally:
            world.cleaned.append("outer")

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        try:
            return (yield [world.track(sibling.asynq()), world.track(outer.asynq())])
        finally:
            world.cleaned.append("root")

    sched = batchq.get_scheduler()
    with pytest.raises(KeyboardInterrupt):
        world.track(root.asynq()).value()
    world.assert_all_closed({"inner", "sibling", "outer", "root"})
    assert_scheduler_clean(sched)
    assert batchq.get_scheduler() is sched
    # The outer run's B 2 was pending when the nested run was interrupted.
    b2 = [i for i in world.items if getattr(i, "key", None) == 2]
    assert len(b2) == 1
    assert isinstance(b2[0]._error, batchq.BatchCancelledError)
    assert_next_run_works(world)


def test_keyboard_interrupt_at_the_bottom_of_a_deep_chain() -> None:
    depth = 20_000
    closed = [0]

    @asynq()
    def chain(n: int) -> Generator[Any, Any, int]:
        try:
            if n == 0:
                yield None
                raise KeyboardInterrupt
            return (yield chain.asynq(n - 1)) + 1
        finally:
            closed[0] += 1

    sched = batchq.get_scheduler()
    with pytest.raises(KeyboardInterrupt):
        chain(depth)
    assert closed[0] == depth + 1
    assert_scheduler_clean(sched)


def test_misbehaving_generators_do_not_stop_the_cleanup() -> None:
    """A generator that yields in its ``finally`` or raises there cannot stop the others closing."""
    world = World()

    @asynq()
    def stubborn() -> Generator[Any, Any, Any]:
        try:
            yield world.load("A", 1)
        finally:
            world.cleaned.append("stubborn")
            yield world.load("A", 2)  # refuses to close: close() raises RuntimeError

    @asynq()
    def raises_in_finally() -> Generator[Any, Any, Any]:
        try:
            yield world.load("A", 3)
        finally:
            world.cleaned.append("raises")
            raise ValueError("cleanup failed")  # the misbehaviour under test

    @asynq()
    def polite() -> Generator[Any, Any, Any]:
        try:
            yield world.load("B", 4)
        finally:
            world.cleaned.append("polite")

    world.interrupt_fetch = "A"

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        yield [
            world.track(stubborn.asynq()),
            world.track(raises_in_finally.asynq()),
            world.track(polite.asynq()),
        ]

    sched = batchq.get_scheduler()
    with pytest.raises(KeyboardInterrupt):
        root()
    stubborn_gen = world.generators.pop(0)
    world.assert_all_closed({"stubborn", "raises", "polite"})
    # Python cannot close a generator that yields while closing; batchq moved on past it.
    assert inspect.getgeneratorstate(stubborn_gen) == inspect.GEN_SUSPENDED
    assert_scheduler_clean(sched)
    assert_next_run_works(world)
    # Let it finish, or the garbage collector reports that it ignored GeneratorExit.
    with pytest.raises(GeneratorExit):
        stubborn_gen.send(None)  # the finally ends and re-raises the GeneratorExit of close()


# -- asyncio cancellation -------------------------------------------------------------------------


def test_asyncio_cancellation_closes_the_cancelled_call_and_the_loop_stays_usable() -> None:
    import threading

    world = World()
    fetch_started = threading.Event()
    release = threading.Event()

    def slow_fetch(keys: list[int]) -> list[Any]:
        fetch_started.set()
        release.wait(10)
        return [("slow", k) for k in keys]

    slow = Loader(slow_fetch, name="slow")

    @asynq()
    def waits_slow(k: int) -> Generator[Any, Any, Any]:
        try:
            first = yield slow.load.asynq(k)
            second = yield world.load("A", k)  # never reached: cancelled during the first flush
            return first, second
        finally:
            world.cleaned.append(f"slow{k}")

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        try:
            return (yield [world.track(waits_slow.asynq(1)), world.track(waits_slow.asynq(2))])
        finally:
            world.cleaned.append("root")

    async def main() -> Any:
        call = asyncio.ensure_future(root.asyncio())
        await asyncio.get_running_loop().run_in_executor(None, fetch_started.wait, 10)
        call.cancel()
        await asyncio.sleep(0)  # the cancellation reaches batchq while the fetch still runs
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        # The loop and batchq both still work.
        return await root_after.asyncio()

    @asynq()
    def root_after() -> Generator[Any, Any, Any]:
        return (yield [world.load("A", 5), world.load("B", 6)])

    assert asyncio.run(main()) == [("A", 5), ("B", 6)]
    assert set(world.cleaned) == {"slow1", "slow2", "root"}
    assert world.fetched["A"] == [[5]]  # the cancelled call's second stage never ran


def test_asyncio_cancellation_while_asyncio_work_runs_cancels_that_work() -> None:
    log: list[str] = []
    fetched: list[list[int]] = []

    def fetch(keys: list[int]) -> list[int]:
        fetched.append(list(keys))
        return [k * 10 for k in keys]

    src = Loader(fetch, name="S")

    async def sleeper() -> str:
        log.append("sleeping")
        try:
            await asyncio.sleep(30)
            return "slept"
        finally:
            log.append("sleeper finally")

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        try:
            slept = yield batchq.from_asyncio(sleeper())
            return slept, (yield src.load.asynq(1))
        finally:
            log.append("root finally")

    @asynq()
    def other() -> Generator[Any, Any, Any]:
        return (yield src.load.asynq(2))

    async def main() -> Any:
        call = asyncio.ensure_future(root.asyncio())
        while "sleeping" not in log:
            await asyncio.sleep(0.001)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return await other.asyncio()

    assert asyncio.run(main()) == 20
    assert "root finally" in log
    assert "sleeper finally" in log  # nobody else waited on it: its asyncio task was cancelled
    assert fetched == [[2]]


def test_event_loop_shutdown_with_a_call_in_flight_closes_its_generators() -> None:
    log: list[str] = []
    gens: list[Generator[Any, Any, Any]] = []
    slow = Loader(lambda keys: keys, name="never")

    async def forever() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            log.append("forever finally")

    @asynq()
    def child(k: int) -> Generator[Any, Any, Any]:
        try:
            yield batchq.from_asyncio(forever())
            return (yield slow.load.asynq(k))
        finally:
            log.append(f"child {k} finally")

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        tasks = [child.asynq(1), child.asynq(2)]
        gens.extend(t._gen for t in tasks if t._gen is not None)
        return (yield tasks)

    in_flight: list[Any] = []

    async def main() -> None:
        in_flight.append(asyncio.ensure_future(root.asyncio()))
        while len(gens) < 2:
            await asyncio.sleep(0.001)
        # Return with the call in flight: asyncio.run cancels every task left, the runner too.

    asyncio.run(main())
    assert sorted(log) == ["child 1 finally", "child 2 finally", *["forever finally"] * 2]
    assert all(inspect.getgeneratorstate(g) == inspect.GEN_CLOSED for g in gens)
