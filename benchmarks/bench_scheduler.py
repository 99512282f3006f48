"""Scheduler overhead: batchq against asynq (the baseline) and asyncio/aiodataloader.

- ``get-and-set-3000``: asynq's classic performance test. Pure async get/set over a dict; each of
  3000 ``get_and_set(a, b)`` yields a get then a set; the root yields the list of them. Nothing
  batches: it measures the cost of creating, running and finishing tasks.
- ``fanout-10000``: the root waits on 10,000 children, each waiting on one batch item; one round.
- ``chain-1000``: 1000 nested levels, each waiting on one batch item: 1000 rounds of one item.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import asynq
from aiodataloader import DataLoader

import batchq

from ._chain import aio_chain, chain_systems
from ._harness import (
    BenchEnv,
    Outcome,
    Workload,
    raised_recursion_limit,
    ratio_target,
    register,
)
from ._sources import AsynqSource, Store

GET_AND_SET_UNITS = 3000
FANOUT = 10_000
CHAIN_DEPTH = 1000

# -- get_and_set: the same model written for each system -------------------------------------------

_values: dict[int, Any] = {}


@batchq.asynq(pure=True)
def b_get(key: int) -> Any:
    return _values.get(key)
    yield  # a generator: pure async functions return their task


@batchq.asynq(pure=True)
def b_set(key: int, value: Any) -> Any:
    _values[key] = value
    return
    yield


@batchq.asynq(pure=True)
def b_get_and_set(key_from: int, key_to: int) -> Any:
    value = yield b_get(key_from)
    yield b_set(key_to, value)


@batchq.asynq(pure=True)
def b_root(n: int) -> Any:
    yield b_set(0, 0)
    yield [b_get_and_set(i, i + 1) for i in range(n)]


@asynq.asynq(pure=True)
def a_get(key: int) -> Any:
    return _values.get(key)
    yield


@asynq.asynq(pure=True)
def a_set(key: int, value: Any) -> Any:
    _values[key] = value
    return
    yield


@asynq.asynq(pure=True)
def a_get_and_set(key_from: int, key_to: int) -> Any:
    value = yield a_get(key_from)
    yield a_set(key_to, value)


@asynq.asynq(pure=True)
def a_root(n: int) -> Any:
    yield a_set(0, 0)
    yield [a_get_and_set(i, i + 1) for i in range(n)]


async def aio_get(key: int) -> Any:
    return _values.get(key)


async def aio_set(key: int, value: Any) -> None:
    _values[key] = value


async def aio_get_and_set(key_from: int, key_to: int) -> None:
    value = await aio_get(key_from)
    await aio_set(key_to, value)


async def aio_root(n: int) -> None:
    await aio_set(0, 0)
    await asyncio.gather(*[aio_get_and_set(i, i + 1) for i in range(n)])


def _values_answer() -> Outcome:
    answer = dict(_values)
    _values.clear()
    return Outcome(answer=answer)


class _Loop:
    """One event loop per workload, closed by the teardown."""

    loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            self.loop = asyncio.new_event_loop()
        return self.loop

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()
            self.loop = None


_loop = _Loop()


def _build_get_and_set(env: BenchEnv) -> Mapping[str, Callable[[], Outcome]]:
    n = GET_AND_SET_UNITS
    loop = _loop.get()

    def run_batchq() -> Outcome:
        _values.clear()
        b_root(n).value()
        return _values_answer()

    def run_asynq() -> Outcome:
        _values.clear()
        a_root(n).value()
        return _values_answer()

    def run_asynq_noassert() -> Outcome:
        _values.clear()
        with asynq.debug.disable_complex_assertions():
            a_root(n).value()
        return _values_answer()

    def run_asyncio() -> Outcome:
        _values.clear()
        loop.run_until_complete(aio_root(n))
        return _values_answer()

    return {
        "asynq": run_asynq,
        "asynq-noassert": run_asynq_noassert,
        "batchq": run_batchq,
        "asyncio": run_asyncio,
    }


register(
    Workload(
        name="get-and-set-3000",
        description="asynq's classic test: 3000 get_and_set(a, b) tasks over a dict, no batching",
        systems=("asynq", "asynq-noassert", "batchq", "asyncio"),
        baseline="asynq",
        build=_build_get_and_set,
        teardown=_loop.close,
        units=GET_AND_SET_UNITS,
        unit="call",
        targets=(
            ratio_target("batchq", "asynq", at_most=0.5, label="per call <= 0.5x asynq"),
            ratio_target(
                "batchq", "asynq", at_most=0.25, label="issue 15: per call <= 0.25x asynq"
            ),
            ratio_target(
                "batchq",
                "asynq-noassert",
                at_most=0.5,
                label="per call <= 0.5x asynq without its complex assertions",
            ),
        ),
        budget_s=8.0,
        min_reps=10,
        max_reps=80,
    )
)

# -- fan-out: one round, 10,000 children of one batch item each --------------------------------


@batchq.asynq()
def b_child(loader: batchq.Loader[int, int], key: int) -> Any:
    return (yield loader.load.asynq(key))


@batchq.asynq()
def b_fanout(loader: batchq.Loader[int, int], n: int) -> Any:
    values = yield [b_child.asynq(loader, i) for i in range(n)]
    return sum(values)


@asynq.asynq()
def a_child(source: AsynqSource, key: int) -> Any:
    return (yield source.load(key))


@asynq.asynq()
def a_fanout(source: AsynqSource, n: int) -> Any:
    values = yield [a_child.asynq(source, i) for i in range(n)]
    return sum(values)


async def aio_child(loader: Any, key: int) -> int:
    value: int = await loader.load(key)
    return value


async def aio_fanout(store: Store, n: int) -> int:
    loader = DataLoader(store.aget_many)
    values = await asyncio.gather(*[aio_child(loader, i) for i in range(n)])
    return sum(values)


_DATA = {i: i * 7 % 1009 for i in range(1, max(FANOUT, CHAIN_DEPTH) + 1)}
_DATA[0] = 0


def _build_fanout(env: BenchEnv) -> Mapping[str, Callable[[], Outcome]]:
    n = FANOUT
    loop = _loop.get()

    def run_batchq() -> Outcome:
        store = Store(_DATA)
        total = b_fanout(batchq.Loader(store.get_many), n)
        return Outcome(answer=total, round_trips=store.trips)

    def run_asynq() -> Outcome:
        store = Store(_DATA)
        total = a_fanout(AsynqSource(store), n)
        return Outcome(answer=total, round_trips=store.trips)

    def run_aio() -> Outcome:
        store = Store(_DATA)
        total = loop.run_until_complete(aio_fanout(store, n))
        return Outcome(answer=total, round_trips=store.trips)

    return {"asynq": run_asynq, "batchq": run_batchq, "aiodataloader": run_aio}


register(
    Workload(
        name="fanout-10000",
        description="the root waits on 10,000 children, each waiting on one batch item (1 round)",
        systems=("asynq", "batchq", "aiodataloader"),
        baseline="asynq",
        build=_build_fanout,
        teardown=_loop.close,
        units=FANOUT,
        unit="task",
        targets=(ratio_target("batchq", "asynq", at_most=0.5, label="per task <= 0.5x asynq"),),
        budget_s=8.0,
        min_reps=5,
        max_reps=60,
    )
)

# -- chain: 1000 rounds of one item ------------------------------------------------------------


async def aio_chain_root(store: Store, depth: int) -> int:
    return await aio_chain(DataLoader(store.aget_many), depth)


def _build_chain(env: BenchEnv) -> Mapping[str, Callable[[], Outcome]]:
    depth = CHAIN_DEPTH
    loop = _loop.get()

    def run_aio() -> Outcome:
        store = Store(_DATA)
        # Each level awaits the next, so resuming the innermost goes through every level's frame.
        with raised_recursion_limit(depth * 4 + 1000):
            total = loop.run_until_complete(aio_chain_root(store, depth))
        return Outcome(answer=total, round_trips=store.trips)

    return {**chain_systems(_DATA, depth), "aiodataloader": run_aio}


register(
    Workload(
        name="chain-1000",
        description="1000 nested levels, each waiting on one batch item: 1000 rounds of one item",
        systems=("asynq", "batchq", "aiodataloader"),
        baseline="asynq",
        build=_build_chain,
        teardown=_loop.close,
        units=CHAIN_DEPTH,
        unit="round",
        targets=(
            ratio_target("batchq", "asynq", at_most=0.1, label="per round <= 0.1x asynq"),
            ratio_target(
                "batchq", "asynq", at_most=0.02, label="issue 15: per round <= 0.02x asynq"
            ),
        ),
        budget_s=6.0,
        min_reps=5,
        max_reps=60,
    )
)
