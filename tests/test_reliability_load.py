"""Load: memory bounded by the pending work, deep nesting without recursion, threads kept apart.

Memory is measured with tracemalloc (Python allocations only, which is what tasks and items are),
never with timings: the machine running the tests may be busy.
"""

from __future__ import annotations

import gc
import itertools
import sys
import threading
import tracemalloc
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import batchq
from batchq import Loader, asynq
from batchq import debug as bq_debug
from batchq._core._instruments import Instrument, instruments
from batchq._core._loop import Scheduler

PENDING_BUDGET = 500
"""Bytes one pending task (with its loader item) may take: 100,000 of them fit in 50 MB."""


@contextmanager
def traced() -> Iterator[list[int]]:
    """Trace allocations; yields ``[baseline]`` (bytes traced when tracing started)."""
    gc.collect()
    tracemalloc.start()
    try:
        yield [tracemalloc.get_traced_memory()[0]]
    finally:
        tracemalloc.stop()


class MemoryAtFlush(Instrument):
    """Traced bytes when each round starts flushing: every task of the round is pending then."""

    def __init__(self) -> None:
        self.samples: list[int] = []

    def round_started(self, scheduler: Scheduler, round_index: int) -> None:
        self.samples.append(tracemalloc.get_traced_memory()[0])


@pytest.fixture
def production_tasks() -> Iterator[None]:
    """Tasks as production makes them: batchq's pytest plugin makes checked ones (which report a
    forgotten yield, at 8 bytes and a string more per task)."""
    previous = bq_debug.warn_unyielded(False)
    try:
        yield
    finally:
        bq_debug.warn_unyielded(previous)


@pytest.mark.usefixtures("production_tasks")
def test_100_000_pending_tasks_take_at_most_500_bytes_each() -> None:
    n = 100_000
    src = Loader(lambda keys: keys, name="ids")

    @asynq()
    def child(key: int) -> Generator[Any, Any, int]:
        return (yield src.load.asynq(key))

    @asynq()
    def root(keys: list[int]) -> Generator[Any, Any, int]:
        return sum((yield [child.asynq(k) for k in keys]))

    keys = list(range(n))  # the caller's data, allocated before measuring
    probe = MemoryAtFlush()
    with traced() as baseline, instruments(probe):
        assert root(keys) == sum(keys)
    assert len(probe.samples) == 1
    per_task = (probe.samples[0] - baseline[0]) / n
    # Everything pending counts: task, generator and frame, loader item, batch slot, the list the
    # root yielded. A measure near zero would mean the probe ran at the wrong moment.
    assert 100 < per_task <= PENDING_BUDGET, f"{per_task:.0f} bytes per pending task"


def test_a_million_tasks_in_waves_use_memory_bounded_by_the_pending_wave() -> None:
    waves, width = 1_000, 1_000
    fetched = [0]

    def fetch(keys: list[int]) -> list[int]:
        fetched[0] += len(keys)
        return [k % 7 for k in keys]

    src = Loader(fetch, name="wave")

    @asynq()
    def child(key: int) -> Generator[Any, Any, int]:
        return (yield src.load.asynq(key))

    @asynq()
    def root() -> Generator[Any, Any, int]:
        total = 0
        for wave in range(waves):
            values = yield [child.asynq(wave * width + i) for i in range(width)]
            total += sum(values)
        return total

    expected = sum(k % 7 for k in range(waves * width))
    with traced() as baseline:
        tracemalloc.reset_peak()
        assert root() == expected
        peak = tracemalloc.get_traced_memory()[1] - baseline[0]
    stats = batchq.get_scheduler().last_run
    assert stats is not None
    assert stats.tasks == waves * width + 1
    assert stats.rounds == waves
    assert fetched[0] == waves * width
    # One wave pending at a time: the peak is a small multiple of one wave's budget (measured:
    # about 2.5 MB here), where a million live tasks would need some 450 MB.
    one_wave = width * PENDING_BUDGET
    assert peak < 20 * one_wave, f"peak {peak} bytes"
    assert peak < waves * width * PENDING_BUDGET / 40


def frame_depth() -> int:
    depth = 0
    frame = sys._getframe()
    while frame is not None:
        depth += 1
        frame = frame.f_back  # type: ignore[assignment]
    return depth


@contextmanager
def shallow_recursion_limit(headroom: int = 200) -> Iterator[None]:
    """A recursion limit a little above the current depth: any recursion per level would hit it."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(frame_depth() + headroom)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def test_100_000_levels_of_nesting_with_a_fetch_at_the_bottom_and_a_tight_recursion_limit() -> None:
    depth = 100_000
    src = Loader(lambda keys: [k + 1 for k in keys], name="bottom")

    @asynq()
    def level(n: int) -> Generator[Any, Any, int]:
        if n == 0:
            return (yield src.load.asynq(41))
        return (yield level.asynq(n - 1))

    with shallow_recursion_limit():
        assert level(depth) == 42
    stats = batchq.get_scheduler().last_run
    assert stats is not None
    assert stats.tasks == depth + 1
    assert stats.rounds == 1


def test_an_error_crosses_100_000_levels_and_is_caught_at_the_top() -> None:
    depth = 100_000

    def fetch(keys: list[int]) -> list[Any]:
        return [LookupError(f"no row {k}") for k in keys]

    src = Loader(fetch, name="rows")
    finals = [0]

    @asynq()
    def level(n: int) -> Generator[Any, Any, int]:
        try:
            if n == 0:
                return (yield src.load.asynq(7))
            return (yield level.asynq(n - 1)) + 1
        finally:
            finals[0] += 1

    @asynq()
    def top() -> Generator[Any, Any, str]:
        try:
            yield level.asynq(depth)
        except LookupError as e:
            return f"caught: {e}"
        return "not raised"

    with shallow_recursion_limit():
        assert top() == "caught: no row 7"
    assert finals[0] == depth + 1
    # The uncaught case reaches the caller too, with its note, and formats without recursion.
    with shallow_recursion_limit(), pytest.raises(LookupError, match="no row 7") as info:
        level(depth)
    assert "".join(info.value.__notes__).count("level(") < 100


def test_threads_running_batchq_concurrently_never_mix_batches_or_results() -> None:
    threads, runs, width = 4, 100, 40
    lock = threading.Lock()
    calls: list[tuple[str, list[tuple[str, int]]]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def fetch(keys: list[tuple[str, int]]) -> list[Any]:
        me = threading.current_thread().name
        with lock:
            calls.append((me, list(keys)))
        # Odd keys fail, with the thread that asked in the message: a leak would show.
        return [KeyError(f"{owner}:{k}") if k % 2 else (owner, k * 3) for owner, k in keys]

    shared = Loader(fetch, name="shared")

    @asynq()
    def get(owner: str, k: int) -> Generator[Any, Any, Any]:
        try:
            return (yield shared.load.asynq((owner, k)))
        except KeyError as e:
            return ("missing", str(e))

    @asynq()
    def page(owner: str, run: int) -> Generator[Any, Any, Any]:
        first = yield [get.asynq(owner, run * width + i) for i in range(width)]
        second = yield shared.load_many.asynq([(owner, 2 * i) for i in range(3)])
        return first, second

    results: dict[str, list[Any]] = {}

    def worker() -> None:
        me = threading.current_thread().name
        try:
            barrier.wait()
            results[me] = [page(me, run) for run in range(runs)]
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads as often as possible, inside rounds too
    try:
        pool = [threading.Thread(target=worker, name=f"T{i}") for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    finally:
        sys.setswitchinterval(old_interval)

    assert errors == []
    for i in range(threads):
        me = f"T{i}"
        expected = [
            (
                [
                    (me, k * 3) if k % 2 == 0 else ("missing", repr(f"{me}:{k}"))
                    for k in range(run * width, (run + 1) * width)
                ],
                [(me, 0), (me, 6), (me, 12)],
            )
            for run in range(runs)
        ]
        assert results[me] == expected
    # Every fetch holds the keys of the thread that made it, and only those.
    assert all(owner == caller for caller, keys in calls for owner, _ in keys)
    assert len(calls) == threads * runs * 2
    # The runs did overlap (otherwise this test proves nothing).
    switches = sum(a[0] != b[0] for a, b in itertools.pairwise(calls))
    assert switches >= threads
