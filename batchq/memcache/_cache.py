"""``Cache``: memcached through batchq's rounds.

Every key any task asks for in a round goes to memcached in one ``get_many`` per server; every
write of the round in one ``set_many`` per server and TTL, and one ``delete_many``. Inside one
round, per server, writes are sent before reads, so a read sees a write of the same round. A
per-run overlay makes a read issued after a write in the same run return that write even before it
is flushed (and even if it failed), so code reads its own writes.

This module is the Cache and its operations. The rest of its work lives beside it, one job per
module: ``_batch`` (a round's batch and items, and how they settle), ``_run`` (the per-run
read-your-writes memory and in-flight cached calls), ``_routing`` (routing keys to servers and the
worker threads), ``_envelope`` (how values are stored), ``_cached`` (cached functions and their
keys), ``_stats`` (counters) and ``_pymemcache`` (every use of pymemcache's internals).
"""

from __future__ import annotations

import threading
from _thread import get_ident
from collections.abc import Callable, Generator, Iterable, Mapping
from time import time
from typing import Any, Final, Literal, ParamSpec, TypeVar

from batchq._core._futures import NOT_COMPUTED, FutureBase
from batchq._core._loop import get_scheduler
from batchq._core._runtime import scheduler_var
from batchq._core._task import AsyncTask

from . import _herd, _pylibmc, _pymemcache, _tier
from ._batch import CacheBatch, GetItem, WriteItem, _Hit, _Write, new_read, settle
from ._cached import _CacheDecorator
from ._envelope import check_client_serdes, decode_reads, decode_stored, pack, unpack
from ._errors import DeserializationError
from ._keys import _FORBIDDEN_BYTES, _HASH_MARK, MAX_KEY_LENGTH, encode_key
from ._local import LocalClient
from ._op import _Op
from ._routing import OneRoute, Servers, _Job
from ._run import WriteGate, peek_run_state, run_state
from ._serde import DEFAULT_MAX_VALUE_SIZE, JsonSerde, Serde
from ._stats import CacheStats, _Counters
from ._ttl import check_ttl

# Mapping is invariant in its keys: accept dict[str, X] and dict[bytes, X] as well as mixed.
_Values = Mapping[str, Any] | Mapping[bytes, Any] | Mapping[str | bytes, Any]

__all__ = ["Cache"]

P = ParamSpec("P")
T = TypeVar("T")

OnError = Literal["miss", "raise"]
_ON_ERROR: Final = ("miss", "raise")

DEFAULT_MAX_BATCH_SIZE: Final = 4096
"""Keys per ``get_many``/``set_many`` request to one server; larger rounds are sent in chunks."""

_KEY_MEMO_SIZE: Final = 100_000


def _gather_get(item: GetItem | _Hit, default: Any) -> Generator[Any, Any, Any]:
    value = yield item
    return value if item.hit else default


def _gather_many(
    keys: list[str | bytes], items: list[GetItem | _Hit]
) -> Generator[Any, Any, dict[str | bytes, Any]]:
    values = yield items
    return {k: v for k, v, item in zip(keys, values, items, strict=True) if item.hit}


def _gather_writes(
    keys: list[str | bytes], items: list[WriteItem]
) -> Generator[Any, Any, list[str | bytes]]:
    results = yield items
    return [k for k, ok in zip(keys, results, strict=True) if not ok]


# -- the Cache ------------------------------------------------------------------------------------


class Cache:
    """memcached (or a :class:`LocalClient`) behind batchq's rounds.

    ``client`` is any pymemcache client (``Client``, ``PooledClient``, ``HashClient``,
    ``RetryingClient``), a pylibmc client from :func:`pylibmc_client`, or a :class:`LocalClient`
    (the default: in process). ``on_error`` says what a server fault does: ``"miss"``
    (default) logs it, counts it, and makes that server's reads misses and its writes return
    False; ``"raise"`` gives every waiting request a :class:`ServerError` naming the server.
    ``serde`` serializes values (default :class:`JsonSerde`, which never unpickles).
    """

    def __init__(
        self,
        client: Any = None,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        on_error: OnError = "miss",
        serde: Serde | None = None,
        key_prefix: str | bytes = b"",
        hash_long_keys: bool = False,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        name: str | None = None,
    ) -> None:
        if client is None:
            client = LocalClient()
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
            msg = f"max_batch_size must be a positive int, got {max_batch_size!r}"
            raise TypeError(msg)
        if max_batch_size < 1:
            msg = f"max_batch_size must be at least 1, got {max_batch_size!r}"
            raise ValueError(msg)
        if on_error not in _ON_ERROR:
            msg = f"on_error must be 'miss' or 'raise', got {on_error!r}"
            raise ValueError(msg)
        _pylibmc.check_client(client)  # a plain pylibmc.Client would unpickle what it reads
        if not callable(getattr(client, "get_many", None)):
            msg = (
                f"Cache(client) takes a pymemcache client (Client, PooledClient, HashClient, "
                f"RetryingClient), batchq.memcache.pylibmc_client(...) or "
                f"batchq.memcache.LocalClient(), got {client!r}"
            )
            raise TypeError(msg)
        if isinstance(key_prefix, str):
            key_prefix = key_prefix.encode("utf-8")
        self.client = client
        self.max_batch_size = max_batch_size
        self.on_error: OnError = on_error
        self.serde: Serde = serde if serde is not None else JsonSerde()
        check_client_serdes(client, serde)
        self.hash_long_keys = hash_long_keys
        self.max_value_size = max_value_size
        self._client_prefix: bytes = _pymemcache.client_prefix(client)
        self.key_prefix = key_prefix
        if self._client_prefix or key_prefix:
            # Refuse a bad prefix now, the client's own included: encode_key's shortcut for
            # printable-ASCII keys does not look at the prefixes again.
            encode_key(b"x", self._client_prefix + key_prefix)
        # How long a key may be once both prefixes are added (for encode_key's fast path).
        self._key_room = MAX_KEY_LENGTH - len(self._client_prefix) - len(key_prefix)
        self.name = name if name is not None else f"Cache({_pymemcache.describe_client(client)})"
        # Checked keys: the same keys come back every page, and checking costs more than a lookup.
        self._key_memo: dict[str | bytes, bytes] = {}
        self._servers = Servers(client, max_batch_size, miss=on_error == "miss")
        self._counters = _Counters()
        self._stats_lock = threading.Lock()
        # Open while a run that wrote to this Cache is in progress (see _run.WriteGate): reads
        # look for their run's writes only then.
        self._write_gate: WriteGate = []
        self.get = _Op(self._get_asynq, f"{self.name}.get")
        self.get_many = _Op(self._get_many_asynq, f"{self.name}.get_many")
        self.set = _Op(self._set_asynq, f"{self.name}.set")
        self.set_many = _Op(self._set_many_asynq, f"{self.name}.set_many")
        self.delete = _Op(self._delete_asynq, f"{self.name}.delete")
        self.delete_many = _Op(self._delete_many_asynq, f"{self.name}.delete_many")
        self.invalidate = _Op(self._invalidate_asynq, f"{self.name}.invalidate")
        self.invalidate_many = _Op(self._invalidate_many_asynq, f"{self.name}.invalidate_many")

    def __repr__(self) -> str:
        return f"<{self.name} on_error={self.on_error!r} max_batch_size={self.max_batch_size}>"

    # -- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the Cache's thread pool (the client is the caller's to close)."""
        self._servers.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def drain(self, timeout: float | None = None) -> None:
        """Wait until the background recomputes of stale values (``cached(stale_ttl=...)``) are
        done, those they queue meanwhile included: before a test checks what they wrote, or at
        shutdown. TimeoutError after ``timeout`` seconds (None: no limit).

        Call it outside any batchq run: it blocks the thread.
        """
        _herd.drain(self, timeout)

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        with self._stats_lock:
            return self._counters.snapshot()

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._counters = _Counters()

    # -- keys and values --------------------------------------------------------------------------

    def encode_key(self, key: str | bytes) -> bytes:
        """The bytes handed to the client for ``key`` (the client adds its own prefix)."""
        memo = self._key_memo
        try:
            raw = memo.get(key)
        except TypeError:
            raw = None  # unhashable: encode_key refuses it with the clear message
        if raw is not None:
            return raw
        if type(key) is str and key.isascii():
            # The common new key, checked with C calls only: printable ASCII of a valid length.
            raw = key.encode("ascii")
            size = len(raw)
            if (
                0 < size <= self._key_room
                and len(raw.translate(None, _FORBIDDEN_BYTES)) == size
                and not (self.hash_long_keys and raw.startswith(_HASH_MARK))
            ):
                raw = self.key_prefix + raw
                if len(memo) >= _KEY_MEMO_SIZE:
                    memo.clear()
                memo[key] = raw
                return raw
        full = encode_key(
            key, self._client_prefix + self.key_prefix, hash_long_keys=self.hash_long_keys
        )
        raw = full[len(self._client_prefix) :]
        if len(memo) >= _KEY_MEMO_SIZE:
            memo.clear()
        # Only str and bytes reach here (encode_key refused the rest); 1 and True never share.
        try:
            memo[key] = raw
        except TypeError:
            pass  # a str or bytes subclass that is unhashable: valid, but not remembered
        return raw

    def _pack(self, key: str | bytes, value: Any) -> bytes:
        return pack(self.serde, key, value, self.max_value_size)

    def _unpack(self, key: str | bytes, stored: Any) -> Any:
        return unpack(self.serde, key, stored)

    # -- requests ---------------------------------------------------------------------------------

    def _batch(self) -> CacheBatch:
        sched = get_scheduler()
        batch = sched.active_batch(self)
        if batch is None:
            batch = CacheBatch(self, sched)
            sched.set_active_batch(self, batch)
        return batch  # type: ignore[return-value]

    def _lookup(self, key: str | bytes, raw: bytes) -> GetItem | _Hit:
        """The future of one read: from the run's overlay if written in this run, else batched."""
        # Reads never create the run's state: only a write of this run can put a key in it.
        state = peek_run_state() if self._write_gate else None
        if state is not None and state.overlay:
            slot = (id(self), raw)
            if slot in state.overlay:
                stored = state.overlay[slot]
                with self._stats_lock:
                    self._counters.overlay_hits += 1
                if stored is None:
                    return _Hit(None, False)
                try:
                    hit, value, record = decode_stored(self.serde, key, stored, time())
                    return _Hit(value, hit, None, record)
                except DeserializationError as e:
                    # Fails the read that waits on it, like a value read from the server.
                    return _Hit(None, False, e)
        batch = self._batch()
        item = batch.reads.get(raw)
        if item is None:
            item = batch.reads[raw] = new_read(batch, key)
        return item

    def _write(self, key: str | bytes, raw: bytes, data: bytes | None, ttl: int) -> WriteItem:
        if _tier.has_tiers():  # a write drops the key from this process's local tiers
            _tier.discard(self, raw)
        state = run_state()
        if state is not None:
            state.remember(self._write_gate, (id(self), raw), data)
        batch = self._batch()
        write = _Write(key, data, ttl)
        old = batch.writes.pop(raw, None)
        if old is not None:
            write.items = old.items  # the last write of the round wins; every caller hears how
        batch.writes[raw] = write
        item = WriteItem(batch, key)
        write.items.append(item)
        return item

    def _get_asynq(self, key: str | bytes, default: Any = None) -> GetItem | _Hit | AsyncTask[Any]:
        try:
            raw = self._key_memo.get(key)
        except TypeError:
            raw = None  # unhashable: encode_key() explains
        if raw is None:
            raw = self.encode_key(key)
        if default is not None:
            item = self._lookup(key, raw)
            return AsyncTask(_gather_get(item, default), self.get, (key, default), None)
        # The hot path of every page: current_scheduler() (same as in _core/_runtime.py: keep
        # in sync), _lookup() and _batch() inlined.
        sched = scheduler_var.get()
        if sched is not None and sched._thread == get_ident():
            if self._write_gate:
                return self._lookup(key, raw)  # a run wrote to this Cache: maybe this one
            batch = sched._active.get(self)
        else:
            batch = None
        if batch is None:
            batch = self._batch()
        reads: dict[bytes, GetItem] = batch.reads  # type: ignore[attr-defined]
        got = reads.get(raw)
        if got is None:
            # new_read() inlined (same as _batch.new_read: keep in sync): every new key of a page.
            got = reads[raw] = GetItem()
            got._value = NOT_COMPUTED
            got._error = None
            got._waiters = None
            got.batch = batch
            batch.items.append(got)
            got.key = key
            got.hit = False
            got.record = None
        return got

    def _get_many_asynq(self, keys: Iterable[str | bytes]) -> AsyncTask[dict[str | bytes, Any]]:
        keys = _key_list(keys, "get_many")
        # Every key is checked before any is queued: a bad key sends nothing.
        raws = [self.encode_key(k) for k in keys]
        items = [self._lookup(k, raw) for k, raw in zip(keys, raws, strict=True)]
        return AsyncTask(_gather_many(keys, items), self.get_many, (keys,), None)

    def _set_asynq(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteItem:
        raw = self.encode_key(key)
        return self._write(key, raw, self._pack(key, value), check_ttl(ttl))

    def _set_many_asynq(
        self, values: _Values, ttl: int | None = None
    ) -> AsyncTask[list[str | bytes]]:
        if not isinstance(values, Mapping):
            msg = f"set_many takes a mapping key -> value, got {values!r}"
            raise TypeError(msg)
        seconds = check_ttl(ttl)
        # Check and serialize everything before queuing anything: a bad value writes nothing.
        packed = [(k, self.encode_key(k), self._pack(k, v)) for k, v in values.items()]
        items = [self._write(k, raw, data, seconds) for k, raw, data in packed]
        keys = [k for k, _, _ in packed]
        return AsyncTask(_gather_writes(keys, items), self.set_many, (values,), None)

    def _delete_asynq(self, key: str | bytes) -> WriteItem:
        return self._write(key, self.encode_key(key), None, 0)

    def _delete_many_asynq(self, keys: Iterable[str | bytes]) -> AsyncTask[bool]:
        keys = _key_list(keys, "delete_many")
        raws = [self.encode_key(k) for k in keys]
        items = [self._write(k, raw, None, 0) for k, raw in zip(keys, raws, strict=True)]
        return AsyncTask(_all_true(items), self.delete_many, (keys,), None)

    def _invalidate_asynq(self, key: str | bytes) -> FutureBase[bool]:
        """Mark ``key`` stale: never fresh again; servable stale for its ``stale_ttl``."""
        return _herd.invalidate_item(self, key)

    def _invalidate_many_asynq(self, keys: Iterable[str | bytes]) -> AsyncTask[bool]:
        return _herd.invalidate_many_task(self, _key_list(keys, "invalidate_many"))

    # -- cached functions -------------------------------------------------------------------------

    def cached(
        self,
        ttl: int = 0,
        key: Callable[..., str | bytes] | None = None,
        *,
        herd: bool = False,
        stale_ttl: int = 0,
        none_ttl: int | None = None,
        lease_ttl: int = 3,
        local_ttl: float = 0,
        local_max: int = 1000,
    ) -> _CacheDecorator:
        """Decorate an async (or generator, or plain) function so its results are cached.

        Lookups of concurrent calls share the round's ``get_many``; a miss runs the function
        (which may yield) and writes the value back, batched; a cached ``None`` is a hit. The
        default key is ``module:qualname:`` and the arguments, encoded the same in every process;
        pass ``key=f(*args, **kwargs) -> str`` for arguments that have no such encoding.

        Under load (docs/memcache.md, "Misses under load"): ``herd=True`` makes concurrent misses
        of a key, in any process, run the function once (a lease held at most ``lease_ttl``
        seconds); ``stale_ttl`` (implies ``herd``) serves the old value that long after ``ttl``
        or an invalidation while one caller recomputes in the background; ``none_ttl`` is the ttl
        of a ``None`` result; ``local_ttl``/``local_max`` keep up to ``local_max`` values in this
        process for ``local_ttl`` seconds.
        """
        if callable(ttl):
            msg = (
                f"cache.cached is a decorator factory: write @cache.cached(), not @cache.cached "
                f"(got {ttl!r})"
            )
            raise TypeError(msg)
        seconds = check_ttl(ttl)
        if key is not None and not callable(key):
            msg = f"cached(key=...) takes a function of the call's arguments, got {key!r}"
            raise TypeError(msg)
        policy = _herd.make_policy(
            seconds, herd, stale_ttl, none_ttl, lease_ttl, local_ttl, local_max, self
        )
        return _CacheDecorator(self, seconds, key, policy)

    # -- flushing ---------------------------------------------------------------------------------

    def _flush(self, batch: CacheBatch) -> None:
        servers = self._servers
        writes = batch.writes
        reads = batch.reads
        serde = self.serde
        single = servers.single
        if single is not None:
            # One server: one job takes every key, in the batch's order; nothing to route.
            job = _Job(single)
            route = OneRoute(job)
            _queue_writes(writes, route)
            if reads:
                job.reads = list(reads)

                def settle_all(job: _Job) -> tuple[int, int, int]:
                    return decode_reads(serde, reads.items(), job.found, len(reads))

                job.settle = settle_all
            add = [0, 0, 0, 0, 0]
            job.run(servers.max_batch_size, add, servers.miss)
            settle(self, batch, route, {0: job}, {0: add})
            return
        jobs: dict[int, _Job] = {}
        routes = servers.route([*writes, *reads], jobs)
        _queue_writes(writes, routes)
        for raw in reads:
            routes[raw].reads.append(raw)

        def settle_reads(job: _Job) -> tuple[int, int, int]:
            # One server (or every key on one): its reads are the batch's, in the batch's order.
            if len(job.reads) == len(reads):
                return decode_reads(serde, reads.items(), job.found, len(reads))
            pairs = [(raw, reads[raw]) for raw in job.reads]
            return decode_reads(serde, pairs, job.found, len(pairs))

        for job in jobs.values():
            job.settle = settle_reads
        counts = {ident: [0, 0, 0, 0, 0] for ident in jobs}
        servers.run(jobs, counts)
        settle(self, batch, routes, jobs, counts)


# -- helpers --------------------------------------------------------------------------------------


def _queue_writes(writes: dict[bytes, _Write], routes: dict[bytes, _Job] | OneRoute) -> None:
    """Give each write of a round to the job of its server: sets grouped by TTL, deletes."""
    for raw, write in writes.items():
        job = routes[raw]
        if write.data is None:
            job.deletes.append(raw)
        else:
            job.sets.setdefault(write.ttl, {})[raw] = write.data


def _all_true(items: list[WriteItem]) -> Generator[Any, Any, bool]:
    results = yield items
    return all(results)


def _key_list(keys: Iterable[str | bytes], op: str) -> list[str | bytes]:
    if isinstance(keys, (str, bytes)):
        msg = (
            f"{op} takes an iterable of keys, got the single key {keys!r}; "
            f"wrap it in a list: {op}([{keys!r}])"
        )
        raise TypeError(msg)
    return list(keys)
