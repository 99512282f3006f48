"""One round of a Cache: the batch, its items, and how each item gets its result.

A :class:`CacheBatch` collects every read and write one Cache is asked for in one round of one
scheduler; reads of the same key share one :class:`GetItem`, and the last write to a key wins (every
writer hears how it went). When the scheduler flushes it, the routing module sends it and
:func:`settle` gives each item its value, its miss or its error.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from batchq._core._batch import BatchBase, BatchItemBase
from batchq._core._futures import NOT_COMPUTED, FutureBase
from batchq._core._loop import Scheduler

from ._errors import ServerError

if TYPE_CHECKING:
    from ._cache import Cache
    from ._record import Record
    from ._routing import OneRoute, _Job

__all__ = ["CacheBatch", "GetItem", "WriteItem", "new_read"]

_log = logging.getLogger("batchq.memcache")


class _Hit(FutureBase[Any]):
    """An already-known answer (from the overlay): yielding it costs no round."""

    __slots__ = ("hit", "record")

    def __init__(
        self,
        value: Any,
        hit: bool,
        error: BaseException | None = None,
        record: Record | None = None,
    ) -> None:
        self._value = value
        self._error = error
        self._waiters = None
        self.hit = hit
        self.record = record


class GetItem(BatchItemBase[Any]):
    """One key read in a round: its value, or None with ``hit`` False on a miss.

    ``record``: the herd record the key held (see ``_record``), else None; ``hit`` and the
    value are what a reader gets from it.
    """

    __slots__ = ("key", "hit", "record")

    key: str | bytes
    hit: bool
    record: Record | None

    # Made by new_read() and its inlined copy in Cache._get_asynq, never by GetItem(batch, key):
    # with object's own __init__, GetItem() takes the interpreter's fast path, 30 ns less per
    # new key of a page than object.__new__(GetItem).
    __init__ = object.__init__

    def __repr__(self) -> str:
        state = "pending" if self._value is NOT_COMPUTED else "hit" if self.hit else "miss"
        return f"<GetItem {self.key!r} {state}>"


def new_read(batch: CacheBatch, key: str | bytes) -> GetItem:
    """A pending read of ``key`` in ``batch`` (the caller files it under its raw key)."""
    # BatchItemBase.__init__ inlined: only ever added to the active (unflushed) batch.
    item: GetItem = GetItem()
    item._value = NOT_COMPUTED
    item._error = None
    item._waiters = None
    item.batch = batch
    batch.items.append(item)
    item.key = key
    item.hit = False
    item.record = None
    return item


class WriteItem(BatchItemBase[bool]):
    """One set or delete in a round: True once the server acknowledged it, else False."""

    __slots__ = ("key",)

    def __init__(self, batch: CacheBatch, key: str | bytes) -> None:
        super().__init__(batch)
        self.key = key

    def __repr__(self) -> str:
        state = "pending" if self._value is NOT_COMPUTED else repr(self._value)
        return f"<WriteItem {self.key!r} {state}>"


class _Write:
    """The last write of a round to one key (a later write in the round replaces it)."""

    __slots__ = ("shown", "data", "ttl", "items")

    def __init__(self, shown: str | bytes, data: bytes | None, ttl: int) -> None:
        self.shown = shown
        self.data = data  # None: delete
        self.ttl = ttl
        self.items: list[WriteItem] = []


class CacheBatch(BatchBase):
    """Everything one Cache was asked in one round, in one scheduler."""

    def __init__(self, cache: Cache, sched: Scheduler) -> None:
        super().__init__()
        self.cache = cache
        self.sched = sched
        self.reads: dict[bytes, GetItem] = {}
        self.writes: dict[bytes, _Write] = {}

    def name(self) -> str:
        return self.cache.name

    def _try_switch_active_batch(self) -> None:
        if self.sched.active_batch(self.cache) is self:
            self.sched.set_active_batch(self.cache, None)

    def _flush(self) -> None:
        self.cache._flush(self)

    def _check_settled(self) -> None:
        super()._check_settled()
        # Let go of the round's items (the scheduler wakes their waiters from its own list): an
        # item then lives only as long as the task that waits on it, so a page's reads are freed
        # as it runs instead of staying in a batch <-> item cycle until the garbage collector
        # finds it.
        self.items = []
        self.reads = {}
        self.writes = {}


def settle(
    cache: Cache,
    batch: CacheBatch,
    routes: dict[bytes, _Job] | OneRoute,
    jobs: dict[int, _Job],
    counts: dict[int, list[int]],
) -> None:
    """Give every write and every read not settled by its job its result; count the round."""
    miss_on_fault = cache.on_error == "miss"
    hits = misses = errors = decode_errors = sets = deletes = write_failures = 0
    for job in jobs.values():
        if miss_on_fault and isinstance(job.error, ServerError):
            _log.warning("%s: %s", cache.name, job.error)
    for raw, write in batch.writes.items():
        job = routes[raw]
        if write.data is None:
            deletes += 1
        else:
            sets += 1
        error = job.error
        if error is not None:
            write_failures += 1
            # A fault with on_error="miss" is a False result (logged above); anything else,
            # including a bug that is no fault at all, reaches the caller.
            if not (miss_on_fault and isinstance(error, ServerError)):
                for item in write.items:
                    item.set_error(error)
                continue
            ok = False
        elif raw in job.set_failed:
            write_failures += 1
            ok = False
            _log.warning("%s: memcached did not store %r", cache.name, write.shown)
        else:
            ok = True
        for item in write.items:
            item.set_value(ok)
    for job in jobs.values():
        if job.settled is not None:
            hits += job.settled[0]
            misses += job.settled[1]
            decode_errors += job.settled[2]
    failed = any(job.error is not None for job in jobs.values())
    for raw, read in batch.reads.items() if failed else ():
        job = routes[raw]
        error = job.error
        if error is None:
            continue  # settled by the job, in its thread
        errors += 1
        if miss_on_fault and isinstance(error, ServerError):
            misses += 1
            read.set_value(None)
        else:
            read.set_error(error)
    with cache._stats_lock:
        c = cache._counters
        c.hits += hits
        c.misses += misses
        c.errors += errors
        c.decode_errors += decode_errors
        c.sets += sets
        c.deletes += deletes
        c.write_failures += write_failures
        for ident, job in jobs.items():
            add = counts[ident]
            c.get_many_calls += add[0]
            c.keys_fetched += add[1]
            server = c.server(job.node.name)
            for i, n in enumerate(add):
                server[i] += n
