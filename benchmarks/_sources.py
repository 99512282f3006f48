"""The data source every system batches against, and the asynq way of batching it.

One :class:`Store` serves every system of a workload, so each does the same work; it counts the
requests it receives (round trips) and can sleep per request to simulate a network.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import asynq

__all__ = ["AsynqSource", "Store"]


class Store:
    """A dict behind a request interface: ``get_many(keys)`` returns values in key order."""

    def __init__(self, data: Mapping[Any, Any], *, latency: float = 0.0) -> None:
        self.data = data
        self.latency = latency
        self.trips = 0
        self.keys_read = 0

    def get_many(self, keys: Sequence[Hashable]) -> list[Any]:
        self.trips += 1
        self.keys_read += len(keys)
        if self.latency:
            time.sleep(self.latency)
        data = self.data
        return [data[k] for k in keys]

    def get(self, key: Hashable) -> Any:
        return self.get_many([key])[0]

    async def aget_many(self, keys: Sequence[Hashable]) -> list[Any]:
        """For aiodataloader: the same request, as its batch_load_fn wants it."""
        return self.get_many(keys)


class _Batch(asynq.BatchBase):  # type: ignore[type-arg]
    def __init__(self, source: AsynqSource) -> None:
        super().__init__()
        self.source = source

    def _try_switch_active_batch(self) -> None:
        if self.source.active is self:
            self.source.active = _Batch(self.source)

    def _flush(self) -> None:
        keys = list(dict.fromkeys(item.key for item in self.items))
        found = dict(zip(keys, self.source.get_many(keys), strict=True))
        for item in self.items:
            item.set_value(found[item.key])

    def _cancel(self) -> None:
        pass


class _Item(asynq.BatchItemBase):
    def __init__(self, batch: _Batch, key: Hashable) -> None:
        super().__init__(batch)
        self.key = key


class AsynqSource:
    """A batch source written the way asynq's documentation writes them (BatchBase/BatchItemBase):
    every ``load`` joins the active batch; the flush sends each distinct key once.
    """

    def __init__(self, store: Store) -> None:
        self.get_many = store.get_many
        self.active = _Batch(self)

    def load(self, key: Hashable) -> Any:
        return _Item(self.active, key)
