"""A chain of ``depth`` levels, each waiting on one batch item before calling the next level:
one batch round per level. Written once per system, the way each system's users write it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import asynq

import batchq

from ._harness import Outcome
from ._sources import AsynqSource, Store

__all__ = ["aio_chain", "asynq_chain", "batchq_chain", "chain_systems"]


@batchq.asynq()
def batchq_chain(loader: batchq.Loader[int, int], n: int) -> Any:
    value = yield loader.load.asynq(n)
    if n > 1:
        rest = yield batchq_chain.asynq(loader, n - 1)
        return value + rest
    return value


@asynq.asynq()
def asynq_chain(source: AsynqSource, n: int) -> Any:
    value = yield source.load(n)
    if n > 1:
        rest = yield asynq_chain.asynq(source, n - 1)
        return value + rest
    return value


async def aio_chain(loader: Any, n: int) -> int:
    value: int = await loader.load(n)
    if n > 1:
        return value + await aio_chain(loader, n - 1)
    return value


def chain_systems(data: Mapping[int, int], depth: int) -> dict[str, Callable[[], Outcome]]:
    """One repetition of the chain for asynq and for batchq, each over a fresh store of ``data``."""

    def run_batchq() -> Outcome:
        store = Store(data)
        total = batchq_chain(batchq.Loader(store.get_many), depth)
        return Outcome(answer=total, round_trips=store.trips)

    def run_asynq() -> Outcome:
        store = Store(data)
        total = asynq_chain(AsynqSource(store), depth)
        return Outcome(answer=total, round_trips=store.trips)

    return {"asynq": run_asynq, "batchq": run_batchq}
