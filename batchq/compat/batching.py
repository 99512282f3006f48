"""asynq.batching under the porting rule, with asynq's debug batch.

``yield sync()`` (or ``yield DebugBatchItem(...)``) waits for one flush: a way to force a round
boundary in tests. In batchq, a :class:`batchq.Loader` that returns its keys does the same and
shows up in ``RunStats``.
"""

from __future__ import annotations

import threading
from typing import Any

from batchq import BatchBase as BatchBase
from batchq import BatchCancelledError as BatchCancelledError
from batchq import BatchingError as BatchingError
from batchq import BatchItemBase as BatchItemBase

__all__ = [
    "BatchBase",
    "BatchItemBase",
    "BatchingError",
    "BatchCancelledError",
    "DebugBatch",
    "DebugBatchItem",
    "sync",
]


class _ActiveDebugBatches(threading.local):
    def __init__(self) -> None:
        self.batches: dict[str, DebugBatch] = {}


_active = _ActiveDebugBatches()


class DebugBatch(BatchBase):
    """A batch whose flush gives each item the result it was created with."""

    def __init__(self, name: str = "default", index: int = 0) -> None:
        super().__init__()
        self.name_ = name
        self.index = index

    def name(self) -> str:
        return f"DebugBatch({self.name_!r})"

    def _try_switch_active_batch(self) -> None:
        if _active.batches.get(self.name_) is self:
            _active.batches[self.name_] = DebugBatch(self.name_, self.index + 1)

    def _flush(self) -> None:
        for item in self.items:
            if isinstance(item, DebugBatchItem):
                item.set_value(item.result)
            else:
                item.set_value(None)


class DebugBatchItem(BatchItemBase[Any]):
    """An item of the thread's active :class:`DebugBatch` named ``batch_name``."""

    __slots__ = ("result",)

    def __init__(self, batch_name: str = "default", result: Any = None) -> None:
        batch = _active.batches.get(batch_name)
        if batch is None or batch.is_flushed():
            batch = _active.batches[batch_name] = DebugBatch(batch_name)
        super().__init__(batch)
        self.result = result


def sync(tag: str = "default") -> DebugBatchItem:
    """An item to ``yield`` that completes (with None) at the next flush."""
    return DebugBatchItem("sync-" + tag)
