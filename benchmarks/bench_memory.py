"""Memory per pending task: N tasks, each blocked on one batch item, measured just before the flush.

``tracemalloc`` records every allocation from before the tasks are created until the moment the
round's flush starts (nothing has been answered yet), so the figure includes each task, its
generator frame, its arguments, its batch item and the bookkeeping that links them. Divided by N.
Slow under tracemalloc (about 10 s for asynq), and the figure does not vary between repetitions
(the same allocations every time), so the workload runs one repetition without a warm-up.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Mapping
from typing import Any

import asynq

import batchq
from batchq._core._instruments import Instrument, instruments
from batchq._core._loop import Scheduler

from ._harness import BenchEnv, Outcome, Workload, per_unit_target, register
from ._sources import AsynqSource, Store, _Batch

PENDING = 100_000
TARGET_BYTES = 500
ISSUE_15_BYTES = 420

_DATA = {i: i % 13 for i in range(PENDING)}


class _FlushProbe(Instrument):
    """Reads the traced memory when batchq's first flush begins."""

    def __init__(self) -> None:
        self.traced: int | None = None

    def round_started(self, scheduler: Scheduler, round_index: int) -> None:
        if self.traced is None:
            self.traced = tracemalloc.get_traced_memory()[0]


@batchq.asynq()
def _b_child(loader: batchq.Loader[int, int], key: int) -> Any:
    return (yield loader.load.asynq(key))


@batchq.asynq()
def _b_root(loader: batchq.Loader[int, int], n: int) -> Any:
    values = yield [_b_child.asynq(loader, i) for i in range(n)]
    return sum(values)


@asynq.asynq()
def _a_child(source: AsynqSource, key: int) -> Any:
    return (yield source.load(key))


@asynq.asynq()
def _a_root(source: AsynqSource, n: int) -> Any:
    values = yield [_a_child.asynq(source, i) for i in range(n)]
    return sum(values)


class _ProbedBatch(_Batch):
    """asynq's flush starts by switching the active batch: read the traced memory there."""

    traced: int | None = None

    def _try_switch_active_batch(self) -> None:
        if _ProbedBatch.traced is None:
            _ProbedBatch.traced = tracemalloc.get_traced_memory()[0]
        if self.source.active is self:
            self.source.active = _ProbedBatch(self.source)


def pending_bytes_batchq(n: int) -> Outcome:
    """Bytes allocated for ``n`` batchq tasks pending on one item each."""
    store = Store(_DATA)
    loader: batchq.Loader[int, int] = batchq.Loader(store.get_many)
    probe = _FlushProbe()
    with instruments(probe):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            total = _b_root(loader, n)
        finally:
            tracemalloc.stop()
    assert probe.traced is not None, "the batchq run never flushed"
    return Outcome(answer=total, round_trips=store.trips, measured=probe.traced - base)


def pending_bytes_asynq(n: int) -> Outcome:
    """Bytes allocated for ``n`` asynq tasks pending on one item each."""
    store = Store(_DATA)
    source = AsynqSource(store)
    source.active = _ProbedBatch(source)
    _ProbedBatch.traced = None
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        total = _a_root(source, n)
    finally:
        tracemalloc.stop()
    traced = _ProbedBatch.traced
    assert traced is not None, "the asynq run never flushed"
    return Outcome(answer=total, round_trips=store.trips, measured=traced - base)


def _build(env: BenchEnv) -> Mapping[str, Callable[[], Outcome]]:
    n = PENDING
    return {"asynq": lambda: pending_bytes_asynq(n), "batchq": lambda: pending_bytes_batchq(n)}


register(
    Workload(
        name="memory-pending-tasks",
        description=(
            f"bytes per pending task: {PENDING:,} tasks, each blocked on one batch item, "
            "measured with tracemalloc when the flush starts"
        ),
        systems=("asynq", "batchq"),
        baseline="asynq",
        build=_build,
        units=PENDING,
        unit="task",
        measure="bytes",
        targets=(
            per_unit_target(
                "batchq", at_most=TARGET_BYTES, label=f"<= {TARGET_BYTES} bytes per pending task"
            ),
            per_unit_target(
                "batchq",
                at_most=ISSUE_15_BYTES,
                label=f"issue 15: <= {ISSUE_15_BYTES} bytes per pending task",
            ),
        ),
        budget_s=0.0,
        min_reps=1,
        max_reps=1,
        warmup=False,
    )
)
