"""Batches written for asynq's protocol work unchanged."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import batchq
from batchq import BatchBase, BatchItemBase, asynq

flushes: list[list[str]] = []


class KVBatch(BatchBase):
    """asynq style: a class-level active batch, switched when a flush starts."""

    active: KVBatch

    def _try_switch_active_batch(self) -> None:
        if KVBatch.active is self:
            KVBatch.active = KVBatch()

    def _flush(self) -> None:
        keys = [item.key for item in self.items]  # type: ignore[attr-defined]
        flushes.append(keys)
        for item in self.items:
            if item.key == "fail":  # type: ignore[attr-defined]
                item.set_error(KeyError("fail"))
            else:
                item.set_value(item.key.upper())  # type: ignore[attr-defined]


KVBatch.active = KVBatch()


class KVItem(BatchItemBase[str]):
    def __init__(self, key: str) -> None:
        super().__init__(KVBatch.active)
        self.key = key


@pytest.fixture(autouse=True)
def _reset() -> None:
    flushes.clear()
    KVBatch.active = KVBatch()


def test_items_of_a_round_flush_together() -> None:
    @asynq()
    def get(key: str) -> Generator[Any, Any, str]:
        return (yield KVItem(key))

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        first = yield [get.asynq("a"), get.asynq("b")]
        second = yield get.asynq("c")
        return first, second

    assert root() == (["A", "B"], "C")
    assert flushes == [["a", "b"], ["c"]]


def test_item_value_outside_a_task_flushes_its_batch() -> None:
    item = KVItem("x")
    assert item.value() == "X"
    assert item.batch.is_flushed()
    assert flushes == [["x"]]


def test_set_error_in_flush_reaches_the_waiter() -> None:
    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield KVItem("fail"))

    with pytest.raises(KeyError, match="fail"):
        root()


def test_flushed_batch_refuses_new_items_and_second_flush() -> None:
    batch = KVBatch()
    KVBatch.active = batch
    KVItem("a").value()
    with pytest.raises(batchq.BatchingError, match="already flushed"):
        BatchItemBase(batch)
    with pytest.raises(batchq.BatchingError, match="already flushed"):
        batch.flush()


def test_cancel_fails_pending_items_and_calls__cancel() -> None:
    cancelled: list[bool] = []

    class C(KVBatch):
        def _cancel(self) -> None:
            cancelled.append(True)

    batch = C()
    KVBatch.active = batch
    item = KVItem("k")
    batch.cancel()
    assert cancelled == [True]
    assert batch.is_cancelled()
    with pytest.raises(batchq.BatchCancelledError):
        item.value()


def test_batch_without_flush_is_explained() -> None:
    class Lazy(BatchBase):
        def _try_switch_active_batch(self) -> None:
            pass

    item: BatchItemBase[Any] = BatchItemBase(Lazy())
    with pytest.raises(NotImplementedError, match="Lazy must implement _flush"):
        item.value()


def test_the_scheduler_flushes_through_an_overridden_flush() -> None:
    """A subclass that overrides flush() (not only _flush) is still what a round calls."""
    calls: list[int] = []

    class Counted(KVBatch):
        def flush(self) -> None:
            calls.append(len(self.items))
            super().flush()

    KVBatch.active = Counted()

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [KVItem("a"), KVItem("b")])

    assert root() == ["A", "B"]
    assert calls == [2]
    assert flushes == [["a", "b"]]


def test_an_item_left_unset_by__flush_fails_clearly_in_a_round() -> None:
    class Forgetful(KVBatch):
        def _flush(self) -> None:
            self.items[0].set_value("only the first")

    KVBatch.active = Forgetful()

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        first, second = KVItem("a"), KVItem("b")
        one = yield first
        try:
            yield second
        except batchq.BatchingError as e:
            return one, str(e)
        return one, "no error"

    one, message = root()
    assert one == "only the first"
    assert "Forgetful._flush() left 1 of 2 items without a value" in message
