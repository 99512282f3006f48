"""asyncio both ways: `.asyncio()` calls share rounds on a loop; batchq awaits via from_asyncio."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

import pytest
from aio_support import HANG_GUARD_SECONDS, run

import batchq
from batchq import Loader, asynq, from_asyncio
from batchq import debug as bq_debug
from batchq._asyncio._driver import drivers as _drivers
from batchq._asyncio._work import AsyncioFuture

T = TypeVar("T")


class Counting:
    """A fetch that records every call: its keys and the thread it ran in."""

    def __init__(self, transform: Callable[[Any], Any] = lambda k: ("v", k)) -> None:
        self.calls: list[list[Any]] = []
        self.threads: set[int] = set()
        self.transform = transform
        self._lock = threading.Lock()

    def __call__(self, keys: list[Any]) -> list[Any]:
        with self._lock:
            self.calls.append(list(keys))
            self.threads.add(threading.get_ident())
        return [self.transform(k) for k in keys]


def two_level_model(
    loader: Loader[Any, Any],
) -> batchq.AsyncFunction[[int], tuple[Any, Any]]:
    """A request that needs two dependent rounds, with keys shared between requests."""

    @asynq()
    def page(i: int) -> Generator[Any, Any, tuple[Any, Any]]:
        user = yield loader.load.asynq(("user", i % 50))
        friends = yield loader.load_many.asynq([("friend", i % 7), ("friend", user[1][1])])
        return user, friends

    return page


# -- many concurrent requests ----------------------------------------------------------------------


def test_concurrent_requests_share_rounds_like_one_sync_run() -> None:
    sync_fetch = Counting()
    sync_page = two_level_model(Loader(sync_fetch, name="db"))

    @asynq()
    def everything() -> Generator[Any, Any, list[Any]]:
        return (yield [sync_page.asynq(i) for i in range(200)])

    expected = everything()
    assert len(sync_fetch.calls) == 2  # the model really needs two rounds

    fetch = Counting()
    page = two_level_model(Loader(fetch, name="db"))

    async def main() -> list[Any]:
        return await asyncio.gather(*(page.asyncio(i) for i in range(200)))

    assert run(main) == expected
    assert len(fetch.calls) == len(sync_fetch.calls)
    # Each distinct key once per round, as in the synchronous run.
    assert sorted(map(sorted, fetch.calls)) == sorted(map(sorted, sync_fetch.calls))


def test_blocking_fetch_never_runs_on_the_loop_thread() -> None:
    fetch = Counting()
    page = two_level_model(Loader(fetch))
    loop_thread: list[int] = []

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        await asyncio.gather(*(page.asyncio(i) for i in range(20)))

    run(main)
    assert fetch.threads
    assert loop_thread[0] not in fetch.threads


def test_flushes_run_even_when_the_default_executor_is_saturated() -> None:
    # Flushes used the loop's default executor: when its threads were all blocked waiting for a
    # batchq result (sync code in asyncio.to_thread calling back into the loop), no flush could
    # run and every one of them waited forever.
    import concurrent.futures

    loader: Loader[int, int] = Loader(lambda keys: [k * 2 for k in keys])

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(2))

        def sync_handler(k: int) -> int:
            future = asyncio.run_coroutine_threadsafe(loader.load.asyncio(k), loop)
            return future.result(timeout=5)

        return list(await asyncio.gather(*(asyncio.to_thread(sync_handler, k) for k in (1, 2))))

    assert run(main) == [2, 4]


def test_calls_arriving_during_a_flush_join_the_next_round() -> None:
    release = threading.Event()
    entered = threading.Event()
    calls: list[list[int]] = []

    def fetch(keys: list[int]) -> list[int]:
        calls.append(list(keys))
        if len(calls) == 1:
            entered.set()
            release.wait(HANG_GUARD_SECONDS)
        return [k * 10 for k in keys]

    loader: Loader[int, int] = Loader(fetch)

    async def main() -> list[int]:
        first = asyncio.ensure_future(loader.load.asyncio(1))
        await asyncio.to_thread(entered.wait, HANG_GUARD_SECONDS)  # the first flush is running
        late = [asyncio.ensure_future(loader.load.asyncio(k)) for k in (2, 3, 2)]
        await asyncio.sleep(0)
        release.set()
        return [await first, *[await t for t in late]]

    assert run(main) == [10, 20, 30, 20]
    assert calls == [[1], [2, 3]]


def test_sequential_awaits_and_a_second_loop_each_work() -> None:
    fetch = Counting(lambda k: k + 1)
    loader: Loader[int, int] = Loader(fetch)

    async def main() -> list[int]:
        return [await loader.load.asyncio(1), await loader.load.asyncio(2)]

    assert run(main) == [2, 3]
    assert run(main) == [2, 3]
    assert fetch.calls == [[1], [2], [1], [2]]


def test_a_loop_run_again_from_another_thread_keeps_its_driver_current() -> None:
    # The driver's scheduler was bound to the thread that first ran the loop: run from a new
    # thread, its tasks found no current scheduler or run (no read-your-writes scope, nested
    # calls not counted, from_asyncio not bridged to the loop).
    from batchq._core._runtime import current_run

    async def where() -> int:
        return threading.get_ident()

    @asynq()
    def probe() -> Generator[Any, Any, tuple[bool, bool, bool]]:
        ran_on = yield from_asyncio(where())
        return (
            batchq.get_active_task() is not None,
            current_run() is not None,
            ran_on == threading.get_ident(),  # bridged: ran on the loop, not a private one
        )

    loop = asyncio.new_event_loop()
    try:
        results = [loop.run_until_complete(probe.asyncio())]
        thread = threading.Thread(
            target=lambda: results.append(loop.run_until_complete(probe.asyncio()))
        )
        thread.start()
        thread.join(HANG_GUARD_SECONDS)
    finally:
        loop.close()
    assert results == [(True, True, True), (True, True, True)]


# -- every kind of batchq function ---------------------------------------------------------------


def test_asyncio_on_every_kind_of_function() -> None:
    loader: Loader[int, int] = Loader(lambda keys: [k * 2 for k in keys])

    class Model:
        def __init__(self, base: int) -> None:
            self.base = base

        @asynq()
        def method(self, k: int) -> Generator[Any, Any, int]:
            return self.base + (yield loader.load.asynq(k))

        @asynq()
        @classmethod
        def cmethod(cls, k: int) -> Generator[Any, Any, str]:
            v = yield loader.load.asynq(k)
            return f"{cls.__name__}:{v}"

        @asynq()
        @staticmethod
        def smethod(k: int) -> Generator[Any, Any, int]:
            return -(yield loader.load.asynq(k))

    @asynq(pure=True)
    def pure(k: int) -> Generator[Any, Any, int]:
        return (yield loader.load.asynq(k)) + 1

    @asynq()
    def plain(k: int) -> int:
        return k * 100

    async def main() -> list[Any]:
        m = Model(1000)
        return list(
            await asyncio.gather(
                m.method.asyncio(1),
                Model.cmethod.asyncio(2),
                m.smethod.asyncio(3),
                pure.asyncio(4),
                plain.asyncio(5),
                loader.load.asyncio(6),
                loader.load_many.asyncio(iter([7, 8, 7])),
            )
        )

    assert run(main) == [1002, "Model:4", -6, 9, 500, 12, [14, 16, 14]]


def test_bad_arguments_raise_from_the_await() -> None:
    @asynq()
    def one(k: int) -> Generator[Any, Any, int]:
        return k
        yield

    async def main() -> None:
        with pytest.raises(TypeError):
            await one.asyncio(1, 2)  # type: ignore[call-arg]

    run(main)


# -- errors cross unchanged ------------------------------------------------------------------------


def test_an_error_reaches_the_asyncio_caller_unchanged_with_its_async_chain() -> None:
    raised: list[BaseException] = []

    def fetch(keys: list[int]) -> list[Any]:
        return list(keys)

    loader: Loader[int, int] = Loader(fetch)

    @asynq()
    def inner(k: int) -> Generator[Any, Any, int]:
        v = yield loader.load.asynq(k)
        err = LookupError(f"no row {v}")
        raised.append(err)
        raise err

    @asynq()
    def middle(k: int) -> Generator[Any, Any, int]:
        return (yield inner.asynq(k + 1))

    @asynq()
    def outer(k: int) -> Generator[Any, Any, int]:
        return (yield middle.asynq(k + 1))

    async def main() -> BaseException:
        with pytest.raises(LookupError) as info:
            await outer.asyncio(1)
        return info.value

    error = run(main)
    assert error is raised[0]
    note = "\n".join(getattr(error, "__notes__", []))
    assert note.index("outer(k=1)") < note.index("middle(k=2)") < note.index("inner(k=3)")


def test_from_asyncio_errors_cross_both_ways_unchanged() -> None:
    raised: list[BaseException] = []
    caught: list[BaseException] = []

    @from_asyncio
    async def failing(k: int) -> int:
        await asyncio.sleep(0)
        err = KeyError(k)
        raised.append(err)
        raise err

    @asynq()
    def catches(k: int) -> Generator[Any, Any, str]:
        try:
            yield failing.asynq(k)
        except KeyError as e:
            caught.append(e)
            return "caught"
        return "not raised"

    @asynq()
    def lets_through(k: int) -> Generator[Any, Any, int]:
        return (yield failing.asynq(k))

    async def main() -> BaseException:
        assert await catches.asyncio(1) == "caught"
        with pytest.raises(KeyError) as info:
            await lets_through.asyncio(2)
        return info.value

    # asyncio -> batchq (caught in the generator) and asyncio -> batchq -> asyncio.
    assert run(main) is raised[1]
    assert caught == [raised[0]]
    # The same both ways in a plain synchronous run.
    assert catches(3) == "caught"
    assert caught[1] is raised[2]
    with pytest.raises(KeyError) as info:
        lets_through(4)
    assert info.value is raised[3]


def test_fetch_errors_fail_only_their_key_under_asyncio() -> None:
    missing = LookupError("gone")
    loader: Loader[int, int] = Loader(lambda keys: [missing if k == 2 else k for k in keys])

    async def main() -> list[Any]:
        calls = (loader.load.asyncio(k) for k in (1, 2, 3))
        return list(await asyncio.gather(*calls, return_exceptions=True))

    assert run(main) == [1, missing, 3]


# -- from_asyncio ----------------------------------------------------------------------------------


def barrier_coroutine(n: int) -> Callable[[int], Awaitable[int]]:
    """Each call finishes only once ``n`` calls have started: run one by one, they would hang."""
    started: list[int] = []
    state: dict[str, asyncio.Event] = {}

    async def wait_for_all(k: int) -> int:
        # The event belongs to whichever loop runs the calls.
        event = state.setdefault("event", asyncio.Event())
        started.append(k)
        if len(started) == n:
            event.set()
        await asyncio.wait_for(event.wait(), HANG_GUARD_SECONDS)
        return k * 3

    return wait_for_all


def test_from_asyncio_runs_a_rounds_coroutines_concurrently_in_a_sync_run() -> None:
    wait_for_all = from_asyncio(barrier_coroutine(4))
    other = from_asyncio(barrier_coroutine(1))

    @asynq()
    def root() -> Generator[Any, Any, list[int]]:
        return (yield [*(wait_for_all.asynq(k) for k in range(4)), other.asynq(9)])

    assert root() == [0, 3, 6, 9, 27]
    stats = batchq.get_scheduler().last_run
    assert stats is not None
    assert (stats.rounds, stats.batches, stats.items) == (1, 1, 5)


def test_from_asyncio_runs_concurrently_under_a_driver() -> None:
    wait_for_all = from_asyncio(barrier_coroutine(6))

    @asynq()
    def two(k: int) -> Generator[Any, Any, list[int]]:
        return (yield [wait_for_all.asynq(k), wait_for_all.asynq(k + 10)])

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(two.asyncio(k) for k in range(3))))

    assert run(main) == [[0, 30], [3, 33], [6, 36]]


def test_from_asyncio_of_an_awaitable_and_a_sync_call_inside_asyncio_code() -> None:
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    adder = from_asyncio(add)

    @asynq()
    def uses_awaitable(k: int) -> Generator[Any, Any, int]:
        return (yield from_asyncio(add(k, 1)))

    async def main() -> list[int]:
        # A synchronous call from a coroutine: the loop is busy, so a private loop in a worker
        # thread runs the coroutine.
        in_sync = [uses_awaitable(1), adder(2, 3)]
        return [*in_sync, await uses_awaitable.asyncio(4), await adder.asyncio(5, 6)]

    assert run(main) == [2, 5, 5, 11]
    assert uses_awaitable(7) == 8


def test_a_bridged_coroutine_may_await_batchq_again() -> None:
    loader: Loader[int, int] = Loader(lambda keys: [k + 1 for k in keys])

    @asynq()
    def leaf(k: int) -> Generator[Any, Any, int]:
        return (yield loader.load.asynq(k))

    @from_asyncio
    async def via_asyncio(k: int) -> int:
        return await leaf.asyncio(k) * 2

    @asynq()
    def root(k: int) -> Generator[Any, Any, int]:
        return (yield via_asyncio.asynq(k))

    async def main() -> list[int]:
        return list(await asyncio.gather(root.asyncio(1), root.asyncio(2)))

    assert run(main) == [4, 6]


def test_from_asyncio_refuses_what_it_cannot_wrap() -> None:
    @asynq()
    def gen_fn() -> Generator[Any, Any, int]:
        return 1
        yield

    with pytest.raises(TypeError, match="batchq"):
        from_asyncio(gen_fn)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got 42 of type int"):
        from_asyncio(42)  # type: ignore[call-overload]

    @from_asyncio  # type: ignore[arg-type]
    def not_async(k: int) -> int:
        return k

    with pytest.raises(TypeError, match="not awaitable"):
        not_async(1)


def test_an_unfinished_bridged_future_refuses_a_synchronous_wait() -> None:
    gate: dict[str, asyncio.Event] = {}

    async def wait() -> int:
        await gate["go"].wait()
        return 5

    @asynq()
    def root() -> Generator[Any, Any, tuple[str, int]]:
        fut = from_asyncio(wait())
        assert isinstance(fut, AsyncioFuture)
        try:
            fut.value()
        except batchq.DeadlockError as e:
            message = str(e)
        gate["go"].set()
        return message, (yield fut)

    async def main() -> tuple[str, int]:
        gate["go"] = asyncio.Event()
        return await root.asyncio()

    message, value = run(main)
    assert value == 5
    assert "yield it" in message.lower()


def test_an_unyielded_coroutine_is_closed_when_its_batch_is_cancelled() -> None:
    async def never() -> int:
        return 1

    sched = batchq.Scheduler()
    token = batchq._core._runtime.set_current(sched)
    try:
        item = from_asyncio(never())
        batch = item.batch  # type: ignore[attr-defined]
        batch.cancel()
    finally:
        batchq._core._runtime.reset_current(token)
    assert isinstance(item.error(), batchq.BatchCancelledError)
    # Closed: no "coroutine was never awaited" warning (an error under this test run).
    gc.collect()


# -- cancellation ----------------------------------------------------------------------------------


def test_cancelling_a_caller_closes_its_generators_and_the_asyncio_work() -> None:
    closed: list[str] = []
    bridged_cancelled: list[bool] = []

    async def forever() -> int:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            bridged_cancelled.append(True)
            raise
        return 0

    @asynq()
    def inner() -> Generator[Any, Any, int]:
        try:
            return (yield from_asyncio(forever()))
        finally:
            closed.append("inner")

    @asynq()
    def outer() -> Generator[Any, Any, int]:
        try:
            return (yield inner.asynq())
        finally:
            closed.append("outer")

    loader: Loader[int, int] = Loader(lambda keys: list(keys))

    async def main() -> int:
        task = asyncio.ensure_future(outer.asyncio())
        for _ in range(5):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        driver = _drivers[asyncio.get_running_loop()]
        # The driver is not stuck: another call still runs, and afterwards the driver is idle.
        value = await loader.load.asyncio(7)
        for _ in range(5):
            await asyncio.sleep(0)
        assert driver.runner is None
        assert driver.tasks == set()
        return value

    assert run(main) == 7
    assert closed == ["inner", "outer"]
    assert bridged_cancelled == [True]


def test_cancelling_a_caller_during_a_flush_leaves_other_callers_alone() -> None:
    release = threading.Event()
    entered = threading.Event()
    closed: list[int] = []

    def fetch(keys: list[int]) -> list[int]:
        entered.set()
        release.wait(HANG_GUARD_SECONDS)
        return [k * 10 for k in keys]

    loader: Loader[int, int] = Loader(fetch)

    @asynq()
    def get(k: int) -> Generator[Any, Any, int]:
        try:
            first = yield loader.load.asynq(k)
            return first + (yield loader.load.asynq(k + 1))
        finally:
            closed.append(k)

    async def main() -> int:
        doomed = asyncio.ensure_future(get.asyncio(1))
        kept = asyncio.ensure_future(get.asyncio(2))
        await asyncio.to_thread(entered.wait, HANG_GUARD_SECONDS)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        release.set()
        return await kept

    assert run(main) == 20 + 30
    assert sorted(closed) == [1, 2]


def test_a_call_taken_in_between_rounds_is_made_in_its_own_run() -> None:
    # make() ran with the frame of the task driven last still current, so what a call such as
    # cache.get.asyncio(k) requested there belonged to another request's run (its
    # read-your-writes memory included).
    from batchq._asyncio._driver import run_in_loop
    from batchq._core._runtime import current_run

    loader: Loader[int, int] = Loader(lambda keys: list(keys))
    seen: dict[str, object] = {}

    @asynq()
    def first() -> Generator[Any, Any, int]:
        seen["first"] = current_run()
        return (yield loader.load.asynq(1))  # type: ignore[no-any-return]

    def make_second() -> batchq.AsyncTask[int]:
        seen["second"] = current_run()
        return loader.load.asynq(2)

    async def second() -> int:
        await asyncio.sleep(0)  # submitted while the runner lets the loop run before a flush
        return await run_in_loop(make_second)

    async def main() -> list[int]:
        return list(await asyncio.gather(first.asyncio(), second()))

    assert run(main) == [1, 2]
    assert seen["first"] is not None
    assert seen["second"] is not None
    assert seen["second"] is not seen["first"]


def test_a_tasks_scoped_override_does_not_leak_to_other_code_on_the_loop() -> None:
    # The contexts of the task driven last stayed active while the runner waited on the loop:
    # an unrelated handler (and every bridged coroutine) saw a request's override.
    user = batchq.AsyncScopedValue("nobody")

    async def peek() -> str:
        await asyncio.sleep(0.01)
        return user.get()

    @asynq()
    def request() -> Generator[Any, Any, str]:
        with user.override("alice"):
            seen = yield from_asyncio(peek())
        return seen  # type: ignore[no-any-return]

    async def other_handler() -> str:
        await asyncio.sleep(0.005)
        return user.get()

    async def main() -> list[str]:
        return list(await asyncio.gather(request.asyncio(), other_handler()))

    assert run(main) == ["nobody", "nobody"]
    assert request() == "nobody"  # as in a synchronous run: paused while it waits


def test_a_driver_cancelled_before_it_ran_still_serves_later_calls() -> None:
    # A shutdown handler or test teardown that cancels every task can cancel the driver's
    # runner before its first step; its cleanup never ran, and every later call on that loop
    # waited forever.
    loader: Loader[int, int] = Loader(lambda keys: list(keys))

    async def cancel_everything() -> bool:
        pending = asyncio.ensure_future(loader.load.asyncio(1))
        await asyncio.sleep(0)  # the call is submitted: the runner exists but has not run
        me = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not me:
                task.cancel()
        try:
            await pending
        except asyncio.CancelledError:
            return True
        return False

    async def later() -> int:
        return await asyncio.wait_for(loader.load.asyncio(2), 5)

    loop = asyncio.new_event_loop()  # one loop for both, as asyncio.Runner (3.11+) keeps
    try:
        assert loop.run_until_complete(cancel_everything())
        assert loop.run_until_complete(later()) == 2
    finally:
        loop.close()


def test_a_pending_caller_at_loop_shutdown_is_closed_without_warnings() -> None:
    closed: list[str] = []

    @asynq()
    def stuck() -> Generator[Any, Any, int]:
        try:
            return (yield from_asyncio(asyncio.Event().wait()))
        finally:
            closed.append("stuck")

    async def main() -> None:
        task = asyncio.ensure_future(stuck.asyncio())
        keep.append(task)
        for _ in range(5):
            await asyncio.sleep(0)
        # Returns with the task still pending: asyncio.run cancels every task left.

    keep: list[asyncio.Future[Any]] = []
    seen: list[dict[str, Any]] = []

    async def outer() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
        await main()

    asyncio.run(outer())
    gc.collect()
    assert seen == []
    assert closed == ["stuck"]
    assert keep[0].cancelled()


# -- scheduling details ----------------------------------------------------------------------------


def test_a_dependency_cycle_is_reported_to_the_caller() -> None:
    holder: dict[str, batchq.AsyncTask[int]] = {}

    @asynq()
    def waits_on_itself() -> Generator[Any, Any, int]:
        return (yield holder["task"])

    @asynq()
    def root() -> Generator[Any, Any, int]:
        holder["task"] = waits_on_itself.asynq()
        return (yield holder["task"])

    async def main() -> None:
        with pytest.raises(batchq.DependencyCycleError):
            await root.asyncio()

    run(main)


def test_a_stuck_run_is_reported_after_unawaited_asyncio_work_ends() -> None:
    # The runner waits for outstanding asyncio work before it diagnoses a stuck run; work that
    # nobody waited on ended without waking it, so the caller hung instead of getting the error.
    holder: dict[str, batchq.AsyncTask[int]] = {}

    @asynq()
    def waits_on_itself() -> Generator[Any, Any, int]:
        return (yield holder["task"])

    @asynq()
    def root() -> Generator[Any, Any, int]:
        side = from_asyncio(asyncio.sleep(0.01))  # started at once, never yielded
        holder["task"] = waits_on_itself.asynq()
        value = yield holder["task"]
        return value + (yield side)  # type: ignore[no-any-return]

    async def main() -> None:
        with pytest.raises(batchq.DependencyCycleError):
            await asyncio.wait_for(root.asyncio(), HANG_GUARD_SECONDS)

    run(main)


def test_strict_mode_and_nested_runs_under_asyncio() -> None:
    loader: Loader[int, int] = Loader(lambda keys: list(keys))

    @asynq()
    def splits(k: int) -> Generator[Any, Any, int]:
        first = loader.load(k)  # a synchronous call inside a running task
        return first + (yield loader.load.asynq(k + 1))

    async def main() -> None:
        assert await splits.asyncio(1) == 3
        driver = _drivers[asyncio.get_running_loop()]
        for _ in range(5):
            await asyncio.sleep(0)
        assert driver.sched.last_run is not None
        assert driver.sched.last_run.nested_runs == 1
        with bq_debug.strict(), pytest.raises(batchq.SyncCallInAsyncError, match="splits"):
            await splits.asyncio(1)

    run(main)


def test_strict_mode_is_per_call_not_shared_with_concurrent_calls() -> None:
    # Strict mode used to be installed as the union of the calls in flight: a lax request that
    # happened to share a round with a strict one failed with SyncCallInAsyncError.
    loader: Loader[int, int] = Loader(lambda keys: list(keys))

    @asynq()
    def splits(k: int) -> Generator[Any, Any, int]:
        first = loader.load(k)  # a synchronous call inside a running task
        return first + (yield loader.load.asynq(k + 1))

    @asynq()
    def clean(k: int) -> Generator[Any, Any, int]:
        a = yield loader.load.asynq(k)
        return a + (yield loader.load.asynq(k + 1))

    async def strict_caller(f: Any) -> int:
        with bq_debug.strict():
            return await f.asyncio(10)  # type: ignore[no-any-return]

    async def main() -> list[object]:
        return list(
            await asyncio.gather(
                strict_caller(clean),
                splits.asyncio(1),
                strict_caller(splits),
                return_exceptions=True,
            )
        )

    lax_ok, lax, strict_fails = run(main)
    assert (lax_ok, lax) == (21, 3)
    assert isinstance(strict_fails, batchq.SyncCallInAsyncError)


def test_instruments_of_an_asyncio_caller_see_its_rounds() -> None:
    loader: Loader[int, int] = Loader(lambda keys: list(keys), name="numbers")
    recorder = bq_debug.TraceRecorder()

    async def main() -> list[int]:
        with bq_debug.instrument(recorder):
            return list(await asyncio.gather(*(loader.load.asyncio(k) for k in range(5))))

    assert run(main) == [0, 1, 2, 3, 4]
    flushes = [e for e in recorder.events() if e.get("cat") == "flush"]
    assert [(e["name"], e["args"]["keys"]) for e in flushes] == [("numbers", 5)]
    runs = [e for e in recorder.events() if e.get("name") == "run"]
    assert len(runs) == 1
    assert runs[0]["args"]["rounds"] == 1


def test_an_instrument_hears_its_call_finish_while_other_calls_go_on() -> None:
    # run_finished used to wait until the driver went idle: under steady load, never.
    loader: Loader[int, int] = Loader(lambda keys: list(keys))
    finished: list[tuple[str, int]] = []

    class Recorder(bq_debug.Instrument):
        def run_finished(self, scheduler: Any, stats: Any) -> None:
            finished.append(("finished", stats.rounds))

    @asynq()
    def slow() -> Generator[Any, Any, int]:
        yield from_asyncio(asyncio.sleep(0.2))
        return (yield loader.load.asynq(1))  # type: ignore[no-any-return]

    async def main() -> list[tuple[str, int]]:
        background = asyncio.ensure_future(slow.asyncio())
        await asyncio.sleep(0.01)
        with bq_debug.instrument(Recorder()):
            assert await loader.load.asyncio(5) == 5
        seen = list(finished)
        assert await background == 1
        return seen

    assert run(main) == [("finished", 1)]
    assert finished == [("finished", 1)]  # told once, counting its own round only


def test_from_asyncio_on_a_method_and_a_sync_call_inside_a_driver_task() -> None:
    class Service:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        @from_asyncio
        async def scale(self, k: int) -> int:
            await asyncio.sleep(0)
            return k * self.factor

    service = Service(4)

    @asynq()
    def root(k: int) -> Generator[Any, Any, list[int]]:
        yielded = yield service.scale.asynq(k)
        # A synchronous call inside a task run by the driver: a nested run, on a private loop.
        return [yielded, service.scale(k + 1)]

    async def main() -> list[int]:
        return await root.asyncio(1)

    assert run(main) == [4, 8]
    assert root(2) == [8, 12]


def test_cancelling_one_caller_keeps_a_task_it_shares_with_another() -> None:
    # Two callers wait on one task object (memoised by the application); cancelling the first
    # must not close it under the second, directly or through a helper task in between.
    gate = asyncio.Event()
    closed: list[str] = []

    async def slow() -> int:
        await gate.wait()
        return 5

    @asynq()
    def shared_work() -> Generator[Any, Any, int]:
        try:
            return (yield from_asyncio(slow()))
        finally:
            closed.append("shared")

    @asynq()
    def via_helper(task: batchq.AsyncTask[int]) -> Generator[Any, Any, int]:
        return (yield task)

    @asynq()
    def first(task: batchq.AsyncTask[int]) -> Generator[Any, Any, int]:
        try:
            return (yield task)
        finally:
            closed.append("first")

    async def main() -> int:
        task = shared_work.asynq()
        doomed = asyncio.ensure_future(first.asyncio(task))
        kept = asyncio.ensure_future(via_helper.asyncio(task))
        for _ in range(5):
            await asyncio.sleep(0)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        for _ in range(5):
            await asyncio.sleep(0)
        assert closed == ["first"]
        gate.set()
        return await kept

    assert run(main) == 5
    assert closed == ["first", "shared"]


def test_cancelling_a_caller_looks_only_at_its_own_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Under steady load a cancellation must cost what the cancelled call holds: with 100 other
    # calls in flight, 20 tasks each, dropping one call looks at its 21 tasks, not at 2,000.
    import batchq._core._graph as graph

    looked: list[int] = []
    real_leaves = graph.leaves

    def counting_leaves(obj: Any) -> Any:
        looked.append(1)
        return real_leaves(obj)

    gate = asyncio.Event()

    async def wait_for_gate() -> int:
        await gate.wait()
        return 1

    @asynq()
    def leaf(i: int) -> Generator[Any, Any, int]:
        return (yield from_asyncio(wait_for_gate()))

    @asynq()
    def request(n: int) -> Generator[Any, Any, int]:
        return sum((yield [leaf.asynq(i) for i in range(n)]))

    async def main() -> list[int]:
        others = [asyncio.ensure_future(request.asyncio(20)) for _ in range(100)]
        doomed = asyncio.ensure_future(request.asyncio(20))
        for _ in range(10):
            await asyncio.sleep(0)
        monkeypatch.setattr(graph, "leaves", counting_leaves)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        for _ in range(5):
            await asyncio.sleep(0)
        monkeypatch.setattr(graph, "leaves", real_leaves)
        gate.set()
        return list(await asyncio.gather(*others))

    assert run(main) == [20] * 100
    assert 0 < len(looked) <= 3 * 21


@asynq()
def _wait_on(tasks: dict[str, batchq.AsyncTask[int]], name: str) -> Generator[Any, Any, int]:
    return (yield tasks[name])


def _cycle(tasks: dict[str, batchq.AsyncTask[int]], a: str, b: str) -> None:
    """Two tasks waiting on each other, under ``tasks[a]`` and ``tasks[b]``."""
    tasks[a], tasks[b] = _wait_on.asynq(tasks, b), _wait_on.asynq(tasks, a)


@asynq()
def _never_done() -> Generator[Any, Any, None]:
    yield from_asyncio(asyncio.Event().wait())


async def _beside_endless_work(call: Awaitable[Any]) -> None:
    """Await ``call``, which must fail with a dependency cycle, while another call waits on
    asyncio work that never ends (cancelled afterwards)."""
    endless = asyncio.ensure_future(_never_done.asyncio())
    for _ in range(3):
        await asyncio.sleep(0)
    try:
        with pytest.raises(batchq.DependencyCycleError):
            await asyncio.wait_for(call, 10)
    finally:
        endless.cancel()
        with pytest.raises(asyncio.CancelledError):
            await endless


def test_a_stuck_call_fails_while_other_asyncio_work_goes_on_forever() -> None:
    # One call waits on a dependency cycle; another waits on asyncio work that never ends. The
    # stuck call must fail at once, not wait for the unrelated work to finish (it never does).
    tasks: dict[str, batchq.AsyncTask[int]] = {}

    async def main() -> None:
        _cycle(tasks, "a", "b")
        await _beside_endless_work(_wait_on.asyncio(tasks, "a"))

    run(main)


def test_a_call_waiting_on_its_own_asyncio_work_is_not_stuck() -> None:
    # The other side: while asyncio work a call waits on is in flight, the call is not stuck,
    # even when another call beside it is diagnosed as stuck meanwhile.
    gate = asyncio.Event()
    tasks: dict[str, batchq.AsyncTask[int]] = {}

    @asynq()
    def waits_for_gate() -> Generator[Any, Any, str]:
        yield from_asyncio(gate.wait())
        return "opened"

    async def main() -> str:
        _cycle(tasks, "a", "b")
        waiting = asyncio.ensure_future(waits_for_gate.asyncio())
        for _ in range(3):
            await asyncio.sleep(0)
        with pytest.raises(batchq.DependencyCycleError):
            await asyncio.wait_for(_wait_on.asyncio(tasks, "a"), 10)
        assert not waiting.done()
        gate.set()
        return await waiting

    assert run(main) == "opened"


def test_a_call_told_of_a_cycle_and_stuck_again_fails_beside_endless_work() -> None:
    # The cycle error is caught and the call waits on a second cycle: it must be found again.
    tasks: dict[str, batchq.AsyncTask[int]] = {}

    @asynq()
    def stubborn() -> Generator[Any, Any, int]:
        try:
            return (yield tasks["a"])
        except batchq.DependencyCycleError:
            return (yield tasks["c"])

    async def main() -> None:
        _cycle(tasks, "a", "b")
        _cycle(tasks, "c", "d")
        await _beside_endless_work(stubborn.asyncio())

    run(main)


def test_answered_calls_leave_nothing_behind_in_the_driver() -> None:
    loader: Loader[int, int] = Loader(lambda keys: [k + 1 for k in keys])

    async def main() -> list[int]:
        values = list(await asyncio.gather(*[loader.load.asyncio(i) for i in range(50)]))
        driver = _drivers[asyncio.get_running_loop()]
        assert driver.calls == {}
        assert driver.unchecked == {}
        return values

    assert run(main) == list(range(1, 51))


def test_a_cancelled_call_is_not_kept_by_the_asyncio_work_it_waited_on() -> None:
    # The driver looked at the call while its asyncio work ran (and noted it on that work); the
    # call is cancelled, then the work ends: the driver must not take the dropped call back.
    gate = asyncio.Event()

    @asynq()
    def waits_for_gate() -> Generator[Any, Any, None]:
        yield from_asyncio(gate.wait())

    async def main() -> None:
        call = asyncio.ensure_future(waits_for_gate.asyncio())
        for _ in range(5):
            await asyncio.sleep(0)
        driver = _drivers[asyncio.get_running_loop()]
        assert driver.outstanding == 1
        assert driver.unchecked == {}  # looked at: waiting on the gate
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        for _ in range(5):
            await asyncio.sleep(0)
        assert driver.outstanding == 0
        assert driver.calls == {}
        assert driver.unchecked == {}

    run(main)


def test_work_shared_with_a_live_call_does_not_keep_a_cancelled_one() -> None:
    # Two calls wait on one task, which waits on asyncio work that goes on; the driver files
    # both on that work. The cancelled one must not stay filed there until the work ends.
    gate = asyncio.Event()

    @asynq()
    def shared_work() -> Generator[Any, Any, int]:
        yield from_asyncio(gate.wait())
        return 3

    @asynq()
    def caller(task: batchq.AsyncTask[int]) -> Generator[Any, Any, int]:
        return (yield task)

    async def main() -> int:
        task = shared_work.asynq()
        doomed = asyncio.ensure_future(caller.asyncio(task))
        kept = asyncio.ensure_future(caller.asyncio(task))
        for _ in range(5):
            await asyncio.sleep(0)
        work = task._dep
        assert isinstance(work, AsyncioFuture)
        assert work.watchers is not None
        assert len(work.watchers) == 2
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(work.watchers) == 1
        gate.set()
        return await kept

    assert run(main) == 3
