"""``Loader``: the native, simple way to batch a source.

``Loader(fetch)`` where ``fetch(keys)`` returns a mapping key -> value or a sequence in key order.
Every key requested while a round runs joins that round's batch (each distinct key once) and the
batch is fetched when the round flushes. A round with more keys than ``max_batch_size`` is fetched
in chunks.
"""

from __future__ import annotations

from _thread import get_ident
from collections.abc import Callable, Coroutine, Hashable, Iterable, Mapping, Sequence, Sized
from typing import Any, Generic, NoReturn, TypeVar

from ._core._batch import EntryList, KeyedBatch, KeyedItem
from ._core._errors import BatchingError, FetchResultError
from ._core._format import fn_name
from ._core._futures import NOT_COMPUTED
from ._core._graph import wake
from ._core._loop import get_scheduler, run_sync
from ._core._runtime import scheduler_var
from ._core._task import ABSORBED, DELIVERED_ERROR, DELIVERED_VALUE, AsyncTask

__all__ = ["Loader", "LoaderItem", "LoaderBatch"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

FetchResult = Mapping[Any, Any] | Sequence[Any]


# The item of one key: the core's keyed item, which the scheduler can absorb (see KeyedBatch).
LoaderItem = KeyedItem


class LoaderBatch(KeyedBatch, Generic[K, V]):
    """The keys one loader was asked for in one round, in one scheduler.

    Made by :meth:`Loader.request` only, which fills its slots. The scheduler flushes it through
    :meth:`_round_flush`, which does :meth:`BatchBase.flush`'s steps in one call (a round of a
    deep chain is one key: the calls of the generic steps were a tenth of it). ``by_key`` holds
    an item per key, or the task absorbed in its place (see :class:`KeyedBatch`).
    """

    __slots__ = ("loader",)

    loader: Loader[K, V]

    __init__ = object.__init__

    def name(self) -> str:
        return self.loader.name

    def keys(self) -> list[K]:
        return list(self.by_key)

    def flush(self) -> None:
        if self._value is not NOT_COMPUTED:
            msg = f"{self.name()} batch is already flushed or cancelled; it cannot flush again"
            raise BatchingError(msg)
        # Called outside the scheduler's round (``item.batch.flush()`` in a task, asynq-style):
        # the waiters are woken here, because the scheduler finds this batch flushed and its
        # items let go. Items for every key first, so that nobody is woken twice.
        self._unabsorb()
        for item in self._round_flush():
            if item._waiters is not None:
                wake(item)

    def _round_flush(self) -> Sequence[Any]:
        """``flush()`` in one call: switch the active batch, fetch, settle; returns the items,
        and the tasks absorbed in their place (see :class:`KeyedBatch`), in key order.

        The same contract as :meth:`BatchBase.flush`: an ``Exception`` from the fetch fails every
        item it left unset and never propagates; anything else (an interrupt) propagates with
        the batch unflushed and its items kept, so the abort cancels them.
        """
        loader = self.loader
        active = self.sched._active
        if active.get(loader) is self:  # same as _try_switch_active_batch: keep in sync
            del active[loader]
        by_key = self.by_key
        items: Sequence[Any]
        first = self.first
        if len(by_key) == 1 and first is not None:
            items = (first,)
        else:
            many = EntryList(by_key.values())  # items, and tasks absorbed in their place
            items = many
            first = None
        try:
            if first is not None:
                # One key, the round of a deep chain: _fetch_chunks' work inlined (keep in
                # sync), a call and a zip() less; the zip costs more than the rest of the loop.
                keys = [first.key]
                result: Any = loader.fetch(keys)
                if self._value is not NOT_COMPUTED:
                    return self._left_by_fetch()
                rtype = type(result)
                if (rtype is list or rtype is tuple) and len(result) == 1:
                    value = result[0]
                    if isinstance(value, BaseException):
                        first._value = None
                        first._error = value
                    else:
                        first._value = value
                else:
                    loader._settle_chunk(result, keys, [first])
            elif not self._fetch_chunks(many):
                return self._left_by_fetch()
        except Exception as error:
            if self._value is not NOT_COMPUTED:
                # Flushed or cancelled by its own fetch, which then raised: the error stays on
                # the batch (its repr, instruments) unless a cancellation's is there.
                if self._error is None:
                    self._error = error
                return self._left_by_fetch()
            self._value = None
            self._error = error
            self._fail_items(error)
        else:
            self._value = None
        # Let go of the items (the scheduler wakes their waiters from the list returned), so
        # that an item lives only as long as the task waiting on it and no batch <-> item cycle
        # is left for the garbage collector.
        self.by_key = {}
        self.first = None
        return items

    def _left_by_fetch(self) -> list[Any]:
        """The fetch flushed or cancelled this batch itself (``item.batch.flush()`` or
        ``.cancel()``, asynq style): the items whose waiters the round's flush still wakes. A
        flush woke them all and let go of them (none); a cancellation failed the items of every
        key not settled yet, and woke nobody (all of them)."""
        items = self.items
        self.by_key = {}
        self.first = None
        return items

    def _try_switch_active_batch(self) -> None:
        active = self.sched._active
        if active.get(self.loader) is self:
            del active[self.loader]

    def _check_settled(self) -> None:
        """Nothing to check: _fetch_chunks settles every entry of each chunk or raises."""
        self.by_key = {}
        self.first = None

    def _flush(self) -> None:
        self._fetch_chunks(self.items)

    def _fetch_chunks(self, entries: list[Any]) -> bool:
        """Fetch every key of ``by_key`` (``entries`` are its values, in order: items, or tasks
        absorbed in their place) in chunks of at most ``max_batch_size`` keys, and settle them.

        False, with nothing more settled, if a fetch flushed or cancelled this batch itself
        meanwhile (``item.batch.flush()`` or ``.cancel()``, asynq style): that flush settled the
        keys and woke their waiters, and this one must not give them a second value nor wake
        them twice; a cancellation failed the keys, whose waiters :meth:`_left_by_fetch` lists.

        A fetch that gave absorbed keys their items back (it looked at ``items``, or a debug
        view at what a task waits on) leaves a new ``by_key``: ``entries`` is updated in place
        to its items, which are settled and returned to be woken from then on.
        """
        loader = self.loader
        size = loader.max_batch_size
        by_key = self.by_key
        keys = [*by_key]
        n = len(entries)
        step = size if size is not None and size < n else max(n, 1)
        for start in range(0, n, step):
            end = start + step
            chunk = keys[start:end]
            result = loader.fetch(chunk)
            if self._value is not NOT_COMPUTED:
                return False
            if self.by_key is not by_key:
                by_key = self.by_key
                entries[:] = by_key.values()
            loader._settle_chunk(result, chunk, entries[start:end])
        return True


class Loader(Generic[K, V]):
    """Batch requests to ``fetch``: one call per round with every distinct key asked for.

    ``loader.load(key)`` returns the value; ``yield loader.load.asynq(key)`` waits for it inside an
    async function. ``fetch`` may return an exception instance for a key to fail just that key.
    """

    def __init__(
        self,
        fetch: Callable[[list[K]], Mapping[K, V] | Sequence[V]],
        *,
        max_batch_size: int | None = None,
        name: str | None = None,
    ) -> None:
        if not callable(fetch):
            msg = f"Loader(fetch) takes a callable fetch(keys), got {fetch!r}"
            raise TypeError(msg)
        if max_batch_size is not None and (
            isinstance(max_batch_size, bool)
            or not isinstance(max_batch_size, int)
            or max_batch_size < 1
        ):
            msg = f"max_batch_size must be a positive int or None, got {max_batch_size!r}"
            raise ValueError(msg)
        self.fetch = fetch
        self.max_batch_size = max_batch_size
        self.name = name if name is not None else fn_name(fetch)
        self.load: LoadFunction[K, V] = LoadFunction(self)
        self.load_many: LoadManyFunction[K, V] = LoadManyFunction(self)

    def request(self, key: K) -> LoaderItem[V]:
        """The item for ``key`` in this round's batch (one item per distinct key)."""
        # get_scheduler() inlined (same as _core/_loop.py's: keep in sync): once per key.
        sched = scheduler_var.get()
        if sched is None or sched._thread != get_ident():
            sched = get_scheduler()
        batch = sched._active.get(self)
        if batch is not None:
            by_key: dict[Any, Any] = batch.by_key  # type: ignore[attr-defined]
            try:
                item = by_key.get(key)
            except TypeError:
                raise self._unhashable(key) from None
            if item is not None:
                if type(item) is not LoaderItem:
                    # The key's waiting task, absorbed in its item's place (see KeyedBatch):
                    # a second request needs the item back.
                    item = by_key[key] = batch._restore(key, item)  # type: ignore[attr-defined]
                return item  # type: ignore[no-any-return]
        # Slots stored here rather than in an __init__: a call less per key and per batch.
        new_item: LoaderItem[V] = LoaderItem()
        new_item._value = NOT_COMPUTED
        new_item._error = None
        new_item._waiters = None
        new_item.key = key
        if batch is not None:
            new_item.batch = batch
            by_key[key] = new_item
            return new_item
        # The round's first key: a batch made with it (one dict operation, not a lookup and a
        # store into an empty dict).
        new: LoaderBatch[K, V] = LoaderBatch()
        try:
            new.by_key = {key: new_item}
        except TypeError:
            raise self._unhashable(key) from None
        new._value = NOT_COMPUTED
        new._error = None
        new._waiters = None
        new.loader = self
        new.sched = sched
        new.first = new_item
        new_item.batch = new
        sched._active[self] = new
        sched._pending[new] = None  # flushed at the end of this round
        return new_item

    def _unhashable(self, key: object) -> TypeError:
        return TypeError(
            f"Loader {self.name!r} got the unhashable key {key!r} of type "
            f"{type(key).__name__}; keys must be hashable (use a tuple instead of a list)"
        )

    def _settle_chunk(self, result: Any, keys: list[K], items: list[Any]) -> None:
        """Settle every entry of ``items`` (an item, or the task absorbed in its place) from what
        the fetch of ``keys`` returned, or raise."""
        rtype = type(result)
        if rtype is list or rtype is tuple:  # the common answers, without an ABC check
            # (for one key, inlined in LoaderBatch._round_flush: keep in sync)
            if len(result) != len(keys):
                self._wrong_count(result, keys)
            # No strict=: the lengths are equal, and a keyword argument doubles zip()'s cost.
            # An entry is an item, or the task absorbed in its place (see KeyedBatch), which
            # gets the value itself (_settle's work, inlined: keep in sync).
            item_cls = LoaderItem
            delivered = DELIVERED_VALUE
            for item, value in zip(items, result):  # noqa: B905
                if isinstance(value, BaseException):
                    _settle(item, value)
                elif type(item) is item_cls:
                    item._value = value
                else:
                    # An absorbed task (never a finished one: close_tasks detaches, so gives
                    # items back, before it closes). None: resumed as a plain task is
                    # (KeyedBatch's delivered None).
                    item._dep = value
                    item._npending = delivered if value is not None else 0
            return
        if isinstance(result, Mapping):
            missing: list[tuple[K, Any]] = []
            for key, item in zip(keys, items, strict=True):
                try:
                    value = result[key]
                except KeyError:
                    missing.append((key, item))
                    continue
                _settle(item, value)
            if missing:
                shown = ", ".join(repr(k) for k, _ in missing[:5])
                more = "" if len(missing) <= 5 else f" and {len(missing) - 5} more"
                error = FetchResultError(
                    f"fetch of Loader {self.name!r} returned no value for {len(missing)} of "
                    f"{len(keys)} keys ({shown}{more}); return a value for every key it is given "
                    "(e.g. None for a missing row)"
                )
                for _, item in missing:
                    _settle(item, error)
            return
        if isinstance(result, Sequence) and not isinstance(result, (str, bytes, bytearray)):
            if len(result) != len(keys):
                self._wrong_count(result, keys)
            for item, value in zip(items, result, strict=True):
                _settle(item, value)
            return
        msg = (
            f"fetch of Loader {self.name!r} returned {result!r} of type {type(result).__name__}; "
            "it must return a mapping key -> value or a sequence of values in key order"
        )
        raise FetchResultError(msg)

    def _wrong_count(self, result: Sized, keys: list[Any]) -> NoReturn:
        msg = (
            f"fetch of Loader {self.name!r} returned {len(result)} values for {len(keys)} keys; "
            "return one value per key, in key order, or a mapping key -> value"
        )
        raise FetchResultError(msg)

    def __repr__(self) -> str:
        return f"<Loader {self.name!r} max_batch_size={self.max_batch_size}>"


def _settle(entry: Any, value: Any) -> None:
    """Settle one key: its item, or the task absorbed in its place (see KeyedBatch)."""
    if type(entry) is LoaderItem:
        if isinstance(value, BaseException):
            entry._value = None
            entry._error = value
        else:
            entry._value = value
    elif entry._gen is not None:  # a task; finished meanwhile (closed): nothing to give it
        if entry._npending != ABSORBED:
            # Given its item back while this chunk was being settled (the result's own code,
            # a mapping's __getitem__, looked at the batch's items): the item gets the value.
            item = entry._dep
            if type(item) is LoaderItem:
                _settle(item, value)
            return
        entry._dep = value
        if isinstance(value, BaseException):
            entry._npending = DELIVERED_ERROR
        else:
            # None: resumed as a plain task is (KeyedBatch's delivered None).
            entry._npending = DELIVERED_VALUE if value is not None else 0


class LoadFunction(Generic[K, V]):
    """``loader.load``: an async function of one key."""

    __slots__ = ("_loader", "asynq")

    def __init__(self, loader: Loader[K, V]) -> None:
        self._loader = loader
        self.asynq: Callable[[K], LoaderItem[V]] = loader.request

    def __call__(self, key: K) -> V:
        return run_sync(self._loader.request(key))

    def asyncio(self, key: K) -> Coroutine[Any, Any, V]:
        """Await the value of ``key`` from asyncio code; keys pending together share a fetch."""
        from ._asyncio import run_in_loop

        return run_in_loop(lambda: self._loader.request(key), self, (key,))

    def is_pure_async_fn(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<async {self._loader.name}.load>"


def _gather(items: list[LoaderItem[Any]]) -> Any:
    return (yield items)


class LoadManyFunction(Generic[K, V]):
    """``loader.load_many``: an async function of many keys, values in key order."""

    __slots__ = ("_loader",)

    def __init__(self, loader: Loader[K, V]) -> None:
        self._loader = loader

    def asynq(self, keys: Iterable[K]) -> AsyncTask[list[V]]:
        keys = list(keys)
        request = self._loader.request
        return AsyncTask(_gather([request(k) for k in keys]), self, (keys,), None)

    def __call__(self, keys: Iterable[K]) -> list[V]:
        return run_sync(self.asynq(keys))

    def asyncio(self, keys: Iterable[K]) -> Coroutine[Any, Any, list[V]]:
        """Await the values of ``keys`` (in key order) from asyncio code."""
        from ._asyncio import run_in_loop

        keys = list(keys)
        return run_in_loop(lambda: self.asynq(keys))

    def is_pure_async_fn(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<async {self._loader.name}.load_many>"
