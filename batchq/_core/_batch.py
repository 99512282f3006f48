"""The batch protocol: requests pending in a round are grouped per source and flushed together.

``BatchBase``/``BatchItemBase`` keep asynq's protocol (``items``, ``_try_switch_active_batch``,
``_flush``, ``_cancel``, ``set_value``/``set_error``) so batches written for asynq work unchanged.
The scheduler calls :meth:`BatchBase.flush` once per batch (through ``_round_flush``, which a batch
class may fuse with its own steps, as ``Loader``'s does); ``flush`` never raises an ``Exception``:
a failure reaches every item of the batch instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import BatchCancelledError, BatchingError
from ._futures import NOT_COMPUTED, FutureBase
from ._runtime import run_future
from ._task import ABSORBED, DELIVERED_ERROR, DELIVERED_VALUE, AsyncTask

if TYPE_CHECKING:
    from ._loop import Scheduler

__all__ = ["BatchBase", "BatchItemBase", "EntryList", "KeyedBatch", "KeyedItem"]

T_co = TypeVar("T_co", covariant=True)


class BatchBase(FutureBase[None]):
    """A group of requests to one source, flushed in one call."""

    # No __slots__ restriction for subclasses written for asynq, which add attributes freely.
    def __init__(self) -> None:
        super().__init__()
        self.items: list[BatchItemBase[Any]] = []

    def is_flushed(self) -> bool:
        return self._value is not NOT_COMPUTED

    def is_cancelled(self) -> bool:
        return self._value is not NOT_COMPUTED and self._error is not None

    def is_empty(self) -> bool:
        return not self.items

    def get_priority(self) -> tuple[int, int]:
        """Kept for asynq compatibility; batchq flushes every pending batch each round."""
        return (0, len(self.items))

    def name(self) -> str:
        """How statistics, traces and assertion messages call this batch's source."""
        return type(self).__qualname__

    def flush(self) -> None:
        """Flush once: switch the active batch, run ``_flush``, and make sure every item is done."""
        if self._value is not NOT_COMPUTED:
            msg = f"{self.name()} batch is already flushed or cancelled; it cannot flush again"
            raise BatchingError(msg)
        self._try_switch_active_batch()
        error: BaseException | None = None
        try:
            self._flush()
        except Exception as e:
            error = e
        if error is not None:
            self._value = None
            self._error = error
            self._fail_items(error)
            self._cancel()
            return
        self._value = None
        self._check_settled()

    def _round_flush(self) -> Sequence[BatchItemBase[Any]]:
        """The scheduler's entry: :meth:`flush`, then the items whose waiters it wakes.

        One call per batch per round; a batch class may fuse it with its own steps (``Loader``'s
        does) under :meth:`flush`'s contract.
        """
        # Read before the flush: a batch may let go of its items once they are settled.
        items = self.items
        self.flush()
        return items

    def _check_settled(self) -> None:
        """After a flush: fail clearly every item ``_flush()`` left without a value."""
        unset = [item for item in self.items if item._value is NOT_COMPUTED]
        if unset:
            self._fail_items(
                BatchingError(
                    f"{type(self).__name__}._flush() left {len(unset)} of {len(self.items)} "
                    f"items without a value (first: {unset[0]!r}); _flush() must call "
                    "set_value() or set_error() on every item"
                )
            )

    def cancel(self, error: BaseException | None = None) -> None:
        """Give up on the batch: every pending item gets ``error``. Never raises."""
        if self._value is not NOT_COMPUTED:
            return
        self._try_switch_active_batch()
        if error is None:
            error = BatchCancelledError(f"{self.name()} batch was cancelled before it was flushed")
        self._value = None
        self._error = error
        self._fail_items(error)
        try:
            self._cancel()
        except Exception:
            pass  # cancel must never raise; the items already carry the error

    def _fail_items(self, error: BaseException) -> None:
        for item in self.items:
            if item._value is NOT_COMPUTED:
                item._value = None
                item._error = error

    def _compute(self) -> None:
        self.flush()

    def _flush(self) -> None:
        """Send every item's request to the source and set each item's value or error."""
        raise NotImplementedError(f"{type(self).__name__} must implement _flush()")

    def _cancel(self) -> None:
        """Discard whatever the source holds for this batch (optional)."""

    def _try_switch_active_batch(self) -> None:
        """Make later requests go to a new batch: this one is about to flush."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement _try_switch_active_batch()"
        )

    def _flush_state(self) -> str:
        if self._value is NOT_COMPUTED:
            return "pending"
        if self._error is not None:
            return "cancelled" if isinstance(self._error, BatchCancelledError) else "failed"
        return "flushed"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._flush_state()}, {len(self.items)} items>"


class BatchItemBase(FutureBase[T_co]):
    """One request inside a batch; its value arrives when the batch flushes."""

    __slots__ = ("batch",)

    def __init__(self, batch: BatchBase) -> None:
        self._value = NOT_COMPUTED
        self._error = None
        self._waiters = None
        if batch._value is not NOT_COMPUTED:
            msg = (
                f"cannot add an item to {batch!r}: it is already flushed; "
                "_try_switch_active_batch() should have made a new active batch"
            )
            raise BatchingError(msg)
        self.batch = batch
        batch.items.append(self)

    @property
    def index(self) -> int:
        """Position in the batch (computed on demand: storing it costs an int per item)."""
        return self.batch.items.index(self)

    def _compute(self) -> None:
        run_future(self)


class KeyedItem(BatchItemBase[T_co]):
    """The pending value of one key of a :class:`KeyedBatch`. Made by the batch's owner, which
    fills its slots (``Loader.request``): a Python ``__init__`` call costs more, once per key."""

    __slots__ = ("key",)

    key: Any

    __init__ = object.__init__

    def __repr__(self) -> str:
        batch = self.batch
        name = batch.name() if isinstance(batch, BatchBase) else "?"
        state = "pending" if self._value is NOT_COMPUTED else "done"
        return f"<{type(self).__name__} {name}[{self.key!r}] {state}>"


class EntryList(list[Any]):
    """What a :class:`KeyedBatch`'s flush of several keys returns: its items, and the tasks
    absorbed in their place. Its type tells the scheduler's wake-up to look for tasks, so that
    other batches pay nothing for it (a class attribute read per batch cost 1% of a deep
    chain's round on CPython 3.11, which does not specialize it)."""

    __slots__ = ()


class KeyedBatch(BatchBase):
    """A batch of keyed requests: one :class:`KeyedItem` per distinct key, in ``by_key``.

    **Absorption.** When a task yields a ``KeyedItem`` that nothing else holds (no other waiter,
    no reference but ``by_key``'s), the scheduler stores the task in ``by_key`` in the item's
    place and lets the item go (``_drive``): a pending key then costs no object of its own. The
    task's ``_dep`` is this batch and its ``_npending`` is ``ABSORBED``. The flush gives such a
    task its value directly (``_dep`` = the value or the error, ``_npending`` =
    ``DELIVERED_VALUE``/``DELIVERED_ERROR``; a None value leaves ``_dep`` None and
    ``_npending`` 0, which the drive loop reads as any plain resumption, so that its hot
    path checks ``_npending`` only when ``_dep`` is set) and lists the task among the items it
    returns (in an :class:`EntryList`); the scheduler's wake-up makes it runnable and
    ``_drive`` sends it that value.

    Everything else sees items only: :attr:`items`, a failure or cancellation, and
    ``blocked_on()`` (every debug view, detach and deadlock diagnosis) first give each absorbed
    key an item again (:meth:`_unabsorb`), which restores the state without the absorption.
    Subclasses fetch in ``_round_flush``/``_flush`` and settle each entry of ``by_key``, item or
    task, as ``Loader``'s does.
    """

    # Slots: no per-instance dict lookups on the hot path (BatchBase's subclasses may have one).
    __slots__ = ("sched", "by_key", "first")

    sched: Scheduler
    by_key: dict[Any, Any]  # key -> KeyedItem, or the task absorbed in its place
    # The first key's item (also in by_key; never absorbed): a one-key round, each round of a
    # deep chain, flushes without copying by_key's values into a list.
    first: KeyedItem[Any] | None

    __init__ = object.__init__

    @property
    def items(self) -> list[BatchItemBase[Any]]:
        self._unabsorb()
        return list(self.by_key.values())

    @items.setter
    def items(self, value: list[BatchItemBase[Any]]) -> None:
        msg = f"a {type(self).__name__}'s items come from its keys; add keys through its owner"
        raise AttributeError(msg)

    def is_empty(self) -> bool:
        return not self.by_key

    def get_priority(self) -> tuple[int, int]:
        return (0, len(self.by_key))

    def _unabsorb(self) -> None:
        """Give every key held as its waiting task an item again (see the class docstring).

        In a new ``by_key`` dict when any key is given back: a flush under way (whose fetch
        looked at ``items``) sees that its entries changed, and settles and wakes the items.
        """
        by_key = self.by_key
        restored = {
            key: self._restore(key, entry)
            for key, entry in by_key.items()
            if type(entry) is not KeyedItem
        }
        if restored:
            self.by_key = {**by_key, **restored}  # the same keys, in the same order

    def _restore(self, key: Any, task: AsyncTask[Any]) -> KeyedItem[Any]:
        """The item of ``key``, held as ``task``: pending, or settled with what was delivered."""
        item: KeyedItem[Any] = KeyedItem()
        item._value = NOT_COMPUTED
        item._error = None
        item._waiters = None
        item.key = key
        item.batch = self
        if task._gen is None:
            return item  # finished meanwhile (closed): the key stays, with nobody waiting
        n = task._npending
        # The task waits on the item as it would without the absorption, a settled one included
        # (settled by an earlier chunk of a flush still under way: it wakes the item's waiters
        # when it ends, or a flush the fetch called does).
        item._waiters = task
        if n == DELIVERED_VALUE:
            item._value = task._dep
        elif n == DELIVERED_ERROR:
            item._value = None
            item._error = task._dep
        elif n != ABSORBED:
            item._value = None  # delivered None: 0, and _dep None (see the class docstring)
        task._dep = item
        task._npending = 0
        return item

    def __repr__(self) -> str:
        # By the keys: ``items`` would give absorbed keys their items back.
        return f"<{type(self).__name__} {self._flush_state()}, {len(self.by_key)} keys>"
