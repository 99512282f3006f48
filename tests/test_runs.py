"""What a run is, in each way of running, and what requests share: the findings of issue 11.

Each test reproduces a scenario that failed before the one-loop rebuild: asyncio requests under
steady load (the driver never goes idle), cancellations, threads with copied contexts.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
import tracemalloc
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aio_support import run

import batchq
from batchq import AsyncTaskCancelledError, Loader, asynq, from_asyncio
from batchq import debug as bq_debug
from batchq._asyncio._driver import drivers
from batchq.memcache import Cache, LocalClient


@asynq()
def hold(release: asyncio.Event) -> Generator[Any, Any, None]:
    """A request that stays in flight until released: the driver never goes idle meanwhile."""
    yield from_asyncio(release.wait())


class SteadyLoad:
    """Keeps one batchq request in flight on the running loop for the duration of a test."""

    async def __aenter__(self) -> SteadyLoad:
        self.release = asyncio.Event()
        self.task = asyncio.create_task(hold.asyncio(self.release))
        await asyncio.sleep(0.01)  # the keeper's run has started
        assert self.driver().runner is not None
        return self

    def driver(self) -> Any:
        return drivers[asyncio.get_running_loop()]

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await self.task


# -- 1. a cancelled task is an error for every later waiter ---------------------------------------


def test_a_task_that_raises_a_cancellation_does_not_return_none() -> None:
    @asynq()
    def cancelled() -> Generator[Any, Any, int]:
        yield None
        raise AsyncTaskCancelledError("stopped")

    @asynq()
    def waiter() -> Generator[Any, Any, Any]:
        return (yield cancelled.asynq())

    with pytest.raises(AsyncTaskCancelledError, match="stopped"):
        waiter()


def test_a_task_closed_by_an_interrupted_run_raises_in_a_later_run() -> None:
    def fetch(keys: list[int]) -> list[int]:
        raise KeyboardInterrupt

    interrupting = Loader(fetch, name="interrupting")

    @asynq()
    def child() -> Generator[Any, Any, int]:
        return (yield interrupting.load.asynq(1))

    task = child.asynq()

    @asynq()
    def first() -> Generator[Any, Any, Any]:
        return (yield task)

    with pytest.raises(KeyboardInterrupt):
        first()

    @asynq()
    def later() -> Generator[Any, Any, Any]:
        return (yield task)

    with pytest.raises(AsyncTaskCancelledError):
        later()
    with pytest.raises(AsyncTaskCancelledError):
        task.value()


def test_a_request_cancelled_during_its_cached_call_leaves_no_none_behind() -> None:
    cache = Cache(LocalClient())
    gate: dict[str, asyncio.Event] = {}
    computed: list[int] = []

    @cache.cached(key=lambda x: f"cancel-test:{x}")
    @asynq()
    def expensive(x: int) -> Generator[Any, Any, str]:
        computed.append(x)
        yield from_asyncio(gate["open"].wait())
        return f"value {x}"

    async def main() -> list[str]:
        gate["open"] = asyncio.Event()
        async with SteadyLoad():
            first = asyncio.create_task(expensive.asyncio(7))
            await asyncio.sleep(0.01)
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            gate["open"].set()
            return [await expensive.asyncio(7), await expensive.asyncio(7)]

    assert run(main) == ["value 7", "value 7"]
    assert computed == [7, 7]  # the cancelled call's compute did not count as a result


# -- 2. under .asyncio(), per-run state belongs to one request ------------------------------------


def _cache_functions(cache: Cache) -> tuple[Any, Any, Any]:
    @asynq()
    def write(key: str, value: Any) -> Generator[Any, Any, None]:
        yield cache.set.asynq(key, value)

    @asynq()
    def delete(key: str) -> Generator[Any, Any, None]:
        yield cache.delete.asynq(key)

    @asynq()
    def read(key: str) -> Generator[Any, Any, Any]:
        return (yield cache.get.asynq(key))

    return write, delete, read


def test_a_request_does_not_read_another_requests_old_write() -> None:
    cache = Cache(LocalClient())
    write, _, read = _cache_functions(cache)

    async def main() -> Any:
        async with SteadyLoad():
            await write.asyncio("k", "old")
            # Another process (here: a thread with its own scheduler) changes the value.
            await asyncio.to_thread(cache.set, "k", "new")
            return await read.asyncio("k")

    assert run(main) == "new"


def test_concurrent_requests_each_read_their_own_writes_and_only_theirs() -> None:
    # While one request that wrote is in flight, every read of the Cache looks for its own run's
    # writes (the Cache's write gate is open): the writer reads its write, the others the server.
    cache = Cache(LocalClient())
    mine_written = asyncio.Event()
    server_changed = asyncio.Event()

    @asynq()
    def writer() -> Generator[Any, Any, Any]:
        yield cache.set.asynq("k", "mine")
        mine_written.set()
        yield from_asyncio(server_changed.wait())
        return (yield cache.get.asynq("k"))

    @asynq()
    def reader() -> Generator[Any, Any, Any]:
        return (yield cache.get.asynq("k"))

    async def main() -> list[Any]:
        async with SteadyLoad():
            task = asyncio.create_task(writer.asyncio())
            await mine_written.wait()
            assert len(cache._write_gate) == 1
            # Another process (here: a thread with its own scheduler) changes the value.
            await asyncio.to_thread(cache.set, "k", "theirs")
            other = await reader.asyncio()
            server_changed.set()
            mine = await task
            return [mine, other, len(cache._write_gate)]

    assert run(main) == ["mine", "theirs", 0]


def test_a_later_request_sees_a_delete() -> None:
    cache = Cache(LocalClient())
    write, delete, read = _cache_functions(cache)

    async def main() -> list[Any]:
        async with SteadyLoad():
            await write.asyncio("k", "v")
            await delete.asyncio("k")
            return [await read.asyncio("k"), cache.get("k")]

    assert run(main) == [None, None]


def test_a_transient_error_is_not_replayed_to_later_requests() -> None:
    cache = Cache(LocalClient())
    calls: list[int] = []

    @cache.cached(key=lambda x: f"flaky:{x}")
    @asynq()
    def flaky(x: int) -> Generator[Any, Any, str]:
        calls.append(x)
        yield None
        if len(calls) == 1:
            raise ConnectionError("database hiccup")
        return "fine"

    async def main() -> str:
        async with SteadyLoad():
            with pytest.raises(ConnectionError):
                await flaky.asyncio(1)
            return await flaky.asyncio(1)

    assert run(main) == "fine"
    assert calls == [1, 1]


def test_requests_share_rounds_but_not_memory_and_memory_stays_flat() -> None:
    """100k requests under steady load: no per-request state outlives its request."""
    cache = Cache(LocalClient())
    write, _, read = _cache_functions(cache)

    @asynq()
    def request(i: int) -> Generator[Any, Any, Any]:
        yield write.asynq(f"key{i % 50}", i)
        return (yield read.asynq(f"key{i % 50}"))

    def measure() -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    async def main() -> list[int]:
        sizes = []
        async with SteadyLoad() as load:
            for block in range(5):
                for start in range(0, 20_000, 500):
                    got = await asyncio.gather(
                        *(request.asyncio(block * 20_000 + i) for i in range(start, start + 500))
                    )
                    assert got == [block * 20_000 + i for i in range(start, start + 500)]
                sizes.append(measure())
                # Only the keeper's run is in flight between blocks.
                assert len(load.driver().sched._runs) == 1
        return sizes

    tracemalloc.start()
    try:
        sizes = run(main)
    finally:
        tracemalloc.stop()
    # Flat: from the first 20k requests to the last, well under a byte per request (before the
    # fix, about 1 KB per request: 80 MB here).
    assert sizes[-1] - sizes[0] < 256 * 1024, sizes


# -- 3. an asyncio call returns after its write-back was sent -------------------------------------


def test_await_returns_after_the_cached_write_back_is_stored() -> None:
    client = LocalClient()
    cache = Cache(client)
    source = {1: "old"}

    @cache.cached(key=lambda x: f"wb:{x}")
    def lookup(x: int) -> str:
        return source[x]

    _, delete, read = _cache_functions(cache)

    async def main() -> list[Any]:
        async with SteadyLoad():
            other = [asyncio.create_task(read.asyncio(f"noise{i}")) for i in range(20)]
            assert await lookup.asyncio(1) == "old"
            stored = client.get(cache.encode_key("wb:1"))
            # The handler updates the source and deletes the key...
            source[1] = "new"
            await delete.asyncio("wb:1")
            await asyncio.gather(*other)
            for _ in range(5):  # ...and no old write-back lands after it.
                await read.asyncio("noise")
            return [stored is not None, await lookup.asyncio(1)]

    assert run(main) == [True, "new"]


@pytest.mark.memcached
def test_await_returns_after_the_write_back_reached_memcached(memcached_server: Any) -> None:
    from pymemcache.client.base import Client

    client = Client(memcached_server.address, connect_timeout=2, timeout=2)
    raw = Client(memcached_server.address, connect_timeout=2, timeout=2)
    cache = Cache(client)
    source = {1: "old"}

    @cache.cached(key=lambda x: f"wb-mc:{x}")
    def lookup(x: int) -> str:
        return source[x]

    async def main() -> bool:
        async with SteadyLoad():
            await lookup.asyncio(1)
            # Another process reads the key as soon as the request answered.
            return raw.get(cache.encode_key("wb-mc:1")) is not None

    try:
        assert run(main) is True
    finally:
        client.close()
        raw.close()


# -- 4. threads that copy a context get their own scheduler ---------------------------------------


def test_threads_with_copied_contexts_never_share_a_scheduler() -> None:
    """4 threads, a 1 µs switch interval, contexts copied after a synchronous call in the parent.

    Before the fix every such thread drove the parent's scheduler: false nested runs, strict-mode
    errors, deadlocks and KeyErrors. Runs per thread: BATCHQ_THREAD_RUNS (250k: 1M in all).
    """
    import os

    per_thread = int(os.environ.get("BATCHQ_THREAD_RUNS", "250000"))
    users = Loader(lambda ids: [i * 10 for i in ids], name="users")

    @asynq()
    def pair(i: int) -> Generator[Any, Any, int]:
        a, b = yield users.load.asynq(i), users.load.asynq(i + 1)
        return a + b  # type: ignore[no-any-return]

    assert pair(1) == 30  # the parent now has a scheduler in its context
    parent = batchq.get_scheduler()
    parent_nested = parent.stats().nested_runs  # earlier tests in this thread may have some
    errors: list[BaseException] = []
    nested: list[int] = []

    def worker(n: int, seed: int) -> None:
        bq_debug.set_strict(True)  # a false nested run would raise SyncCallInAsyncError
        mine = batchq.get_scheduler()
        assert mine is not parent
        for i in range(n):
            try:
                got = pair(seed + i)
                if got != (2 * (seed + i) + 1) * 10:
                    raise AssertionError(f"pair({seed + i}) returned {got}")
            except BaseException as e:
                errors.append(e)
                if len(errors) > 10:
                    return
        assert batchq.get_scheduler() is mine
        nested.append(mine.stats().nested_runs)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [
                pool.submit(contextvars.copy_context().run, worker, per_thread, k * 10**7)
                for k in range(4)
            ]
            for f in futures:
                f.result()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert nested == [0, 0, 0, 0]
    assert parent.stats().nested_runs == parent_nested


def test_asyncio_to_thread_gets_its_own_scheduler() -> None:
    @asynq()
    def ident() -> Generator[Any, Any, int]:
        yield None
        return threading.get_ident()

    async def main() -> tuple[int, int]:
        async with SteadyLoad():
            here = await ident.asyncio()
            there = await asyncio.to_thread(ident)
            return here, there

    here, there = run(main)
    assert here != there


# -- 8. errors through a yielded list carry no internal context -----------------------------------


def test_an_error_through_a_yielded_list_has_no_internal_context() -> None:
    @asynq()
    def fails(x: int) -> Generator[Any, Any, int]:
        yield None
        raise ValueError(f"bad {x}")

    @asynq()
    def ok(x: int) -> Generator[Any, Any, int]:
        yield None
        return x

    @asynq()
    def parent() -> Generator[Any, Any, Any]:
        return (yield [ok.asynq(1), fails.asynq(2)])

    with pytest.raises(ValueError, match="bad 2") as info:
        parent()
    assert info.value.__context__ is None


# -- 11. an interrupt in a fetch under asyncio is not reported as unretrieved ---------------------


def test_keyboard_interrupt_in_a_fetch_under_asyncio_reaches_the_caller_cleanly() -> None:
    def fetch(keys: list[int]) -> list[int]:
        raise KeyboardInterrupt

    interrupting = Loader(fetch, name="interrupting")
    seen: list[dict[str, Any]] = []

    @asynq()
    def load(x: int) -> Generator[Any, Any, int]:
        return (yield interrupting.load.asynq(x))

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
        await load.asyncio(1)

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    gc.collect()
    assert seen == []


def test_steady_load_with_random_cancellations_answers_every_other_request_correctly() -> None:
    """3,000 requests arriving over time, a fifth of them cancelled at random moments."""
    import random

    rng = random.Random(1234)
    cache = Cache(LocalClient())

    def fetch(keys: list[int]) -> list[int]:
        return [k * 3 for k in keys]

    numbers = Loader(fetch, name="numbers")

    @from_asyncio
    async def remote(k: int) -> int:
        await asyncio.sleep(rng.random() * 0.002)
        return k * 2

    @cache.cached(key=lambda k: f"steady:{k}")
    @asynq()
    def cached_double(k: int) -> Generator[Any, Any, int]:
        return (yield remote.asynq(k))  # type: ignore[no-any-return]

    @asynq()
    def request(i: int) -> Generator[Any, Any, tuple[int, int, int]]:
        a, b = yield numbers.load.asynq(i), cached_double.asynq(i % 97)
        c = yield cache.get.asynq(f"steady:{i % 97}")
        return a, b, c

    async def main() -> int:
        answered = 0
        async with SteadyLoad() as load:
            pending: list[tuple[int, asyncio.Task[Any], bool]] = []
            for i in range(3000):
                cancel = rng.random() < 0.2
                pending.append((i, asyncio.create_task(request.asyncio(i)), cancel))
                if i % 25 == 0:
                    await asyncio.sleep(rng.random() * 0.002)
                    for _, task, c in pending[-25:]:
                        if c and rng.random() < 0.5:
                            task.cancel()
            for _, task, c in pending:
                if c and not task.done():
                    task.cancel()
            for i, task, c in pending:
                try:
                    got = await task
                except asyncio.CancelledError:
                    assert c
                    continue
                assert got == (i * 3, (i % 97) * 2, (i % 97) * 2), (i, got)
                answered += 1
            assert len(load.driver().sched._runs) == 1  # only the keeper
            assert load.driver().sched._ready == []
        return answered

    answered = run(main)
    assert 2000 <= answered <= 3000
