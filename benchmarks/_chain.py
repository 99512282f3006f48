"""A chain of ``depth`` levels, each waiting on one batch item before calling the next level:
one batch round per level. Written once per system, the way each system's users write it.
"""

from __future__ import annotations

from typing import Any

import asynq

import batchq

from ._sources import AsynqSource

__all__ = ["aio_chain", "asynq_chain", "batchq_chain"]


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
