"""``Cache``: memcached through batchq's rounds.

Every key any task asks for in a round goes to memcached in one ``get_many`` per server; every
write of the round in one ``set_many`` per server and TTL, and one ``delete_many``. Inside one
round, per server, writes are sent before reads, so a read sees a write of the same round. A
per-run overlay makes a read issued after a write in the same run return that write even before it
is flushed (and even if it failed), so code reads its own writes.

Values travel in a small envelope (a marker, the serde's flags, the serde's bytes) because
pymemcache clients drop the flags on ``get_many``: the Cache serializes, the client only moves
bytes. The default serde is :class:`JsonSerde`, which never unpickles.

With a ``HashClient`` the keys of a round are grouped by the server pymemcache's hashing picks and
the servers are asked concurrently from a small thread pool owned by the Cache, so a round costs
the slowest server, not the sum.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import threading
import weakref
from collections.abc import Callable, Generator, Iterable, Mapping
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final, Generic, Literal, ParamSpec, TypeVar, overload

from pymemcache import serde as pymemcache_serde
from pymemcache.client.hash import HashClient
from pymemcache.client.retrying import RetryingClient
from pymemcache.exceptions import MemcacheError as PymemcacheError

from batchq._batch import BatchBase, BatchItemBase
from batchq._decorators import AsyncFunction
from batchq._futures import NOT_COMPUTED, FutureBase
from batchq._scheduler import Scheduler, _current, get_scheduler, run_sync
from batchq._task import AsyncTask

from . import _tier  # herd (issue 13)
from ._errors import DeserializationError, SerializationError, ServerError, ValueTooLargeError
from ._keys import _FORBIDDEN_BYTES, MAX_KEY_LENGTH, encode_key
from ._local import LocalClient
from ._record import HERD_MAGIC, parse_record  # herd (issue 13)
from ._serde import DEFAULT_MAX_VALUE_SIZE, JsonSerde, PickleSerde, Serde, check_value_size

# Mapping is invariant in its keys: accept dict[str, X] and dict[bytes, X] as well as mixed.
_Values = Mapping[str, Any] | Mapping[bytes, Any] | Mapping[str | bytes, Any]

__all__ = ["Cache", "CacheStats", "ServerStats", "CachedFunction"]

P = ParamSpec("P")
T = TypeVar("T")

_log = logging.getLogger("batchq.memcache")

OnError = Literal["miss", "raise"]
_ON_ERROR: Final = ("miss", "raise")

DEFAULT_MAX_BATCH_SIZE: Final = 4096
"""Keys per ``get_many``/``set_many`` request to one server; larger rounds are sent in chunks."""

# Envelope: marker, 4-byte big-endian serde flags, serde bytes. The NUL first byte keeps it apart
# from text values other writers store.
_KEY_MEMO_SIZE: Final = 100_000
_MAGIC: Final = b"\x00bq"
_MAGIC_LEN: Final = len(_MAGIC)
_HEADER: Final = _MAGIC_LEN + 4


# -- statistics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerStats:
    """What one server cost and how often it failed."""

    get_many_calls: int = 0
    keys_fetched: int = 0
    set_many_calls: int = 0
    delete_many_calls: int = 0
    errors: int = 0


@dataclass(frozen=True)
class CacheStats:
    """Totals since the Cache was created (or since :meth:`Cache.reset_stats`)."""

    hits: int = 0
    misses: int = 0
    overlay_hits: int = 0
    errors: int = 0
    decode_errors: int = 0
    get_many_calls: int = 0
    keys_fetched: int = 0
    sets: int = 0
    deletes: int = 0
    write_failures: int = 0
    servers: Mapping[str, ServerStats] = field(default_factory=dict)


class _Counters:
    __slots__ = (
        "hits",
        "misses",
        "overlay_hits",
        "errors",
        "decode_errors",
        "get_many_calls",
        "keys_fetched",
        "sets",
        "deletes",
        "write_failures",
        "servers",
    )

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.overlay_hits = 0
        self.errors = 0
        self.decode_errors = 0
        self.get_many_calls = 0
        self.keys_fetched = 0
        self.sets = 0
        self.deletes = 0
        self.write_failures = 0
        self.servers: dict[str, list[int]] = {}

    def server(self, name: str) -> list[int]:
        counts = self.servers.get(name)
        if counts is None:
            counts = self.servers[name] = [0, 0, 0, 0, 0]
        return counts


# -- the per-run overlay --------------------------------------------------------------------------


class _RunState:
    """What one top-level run wrote (read-your-writes) and which cached calls it is computing."""

    __slots__ = ("sched", "marker", "overlay", "inflight")

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        # A scheduler's last_run is replaced at the end of every run, so (sched, last_run) names
        # the run in progress; nested runs happen while it is still running with the same marker.
        self.marker = sched.last_run
        self.overlay: dict[tuple[int, bytes], bytes | None] = {}
        self.inflight: dict[tuple[int, bytes], AsyncTask[Any]] = {}

    def is_live(self) -> bool:
        return self.sched.is_running() and self.sched.last_run is self.marker


# One per context (thread, asyncio task); replaced by the next run, so it never outlives it by more
# than one run's writes.
_runs: ContextVar[_RunState | None] = ContextVar("batchq_memcache_run", default=None)


def _run_state() -> _RunState | None:
    """The state of the run in progress in this context, or None outside any run."""
    state = _runs.get()
    if state is not None and state.is_live():
        return state
    sched = get_scheduler()
    if not sched.is_running():
        if state is not None:
            _runs.set(None)
        return None
    state = _RunState(sched)
    _runs.set(state)
    return state


# -- futures the Cache hands out ------------------------------------------------------------------


class _Hit(FutureBase[Any]):
    """An already-known answer (from the overlay): yielding it costs no round."""

    __slots__ = ("hit",)

    def __init__(self, value: Any, hit: bool) -> None:
        self._value = value
        self._error = None
        self._waiters = None
        self.hit = hit


class GetItem(BatchItemBase[Any]):
    """One key read in a round: its value, or None with ``hit`` False on a miss."""

    __slots__ = ("key", "hit")

    def __init__(self, batch: CacheBatch, key: str | bytes) -> None:
        # Inlined BatchItemBase.__init__: only ever added to the active (unflushed) batch.
        self._value = NOT_COMPUTED
        self._error = None
        self._waiters = None
        self.batch = batch
        batch.items.append(self)
        self.key = key
        self.hit = False

    def __repr__(self) -> str:
        state = "pending" if self._value is NOT_COMPUTED else "hit" if self.hit else "miss"
        return f"<GetItem {self.key!r} {state}>"


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


# -- servers --------------------------------------------------------------------------------------

_ABSENT: Final[Any] = object()
_new_item = object.__new__
_FAILED: Final[Any] = object()  # what HashClient returns for a server it failed or is backing off


class _Node:
    """One server as the Cache talks to it (plain client, or one server of a HashClient)."""

    __slots__ = ("name", "client", "hash_client", "retrying")

    def __init__(
        self,
        name: str,
        client: Any,
        hash_client: HashClient | None = None,
        retrying: RetryingClient | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.hash_client = hash_client
        self.retrying = retrying

    def _call(self, op: str, *args: Any) -> Any:
        func = getattr(self.client, op)
        hc = self.hash_client
        if hc is not None:
            # Through HashClient's own bookkeeping, so its retry and dead-server handling stay
            # in charge of routing; _FAILED tells us it swallowed an error (ignore_exc=True).
            def call(*a: Any) -> Any:
                return hc._safely_run_func(self.client, func, _FAILED, *a)

        else:
            call = func
        retrying = self.retrying
        result = call(*args) if retrying is None else retrying._retry(op, call, *args)
        if result is _FAILED:
            msg = (
                f"memcached server {self.name} failed during {op}: HashClient(ignore_exc=True) "
                "hid the error, or the server is in its retry_timeout after an earlier failure"
            )
            raise ServerError(msg)
        return result

    def get_many(self, keys: list[bytes]) -> dict[bytes, Any]:
        result = self._call("get_many", keys)
        return result  # type: ignore[no-any-return]

    def set_many(self, values: dict[bytes, bytes], ttl: int) -> list[bytes]:
        failed = self._call("set_many", values, ttl, False)
        return list(failed) if failed else []

    def delete_many(self, keys: list[bytes]) -> None:
        self._call("delete_many", keys, False)


class _NoServer(_Node):
    """Where HashClient routes keys when every server is marked dead."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        super().__init__("(no live server)", None)
        self.error = error

    def _call(self, op: str, *args: Any) -> Any:
        raise ServerError(f"no memcached server for {op}: {self.error}")


def _server_name(client: Any) -> str:
    server = getattr(client, "server", None)
    if isinstance(server, tuple) and len(server) == 2:
        return f"{server[0]}:{server[1]}"
    if isinstance(server, str):
        return server
    return type(client).__name__


class _Job:
    """One server's share of a round, run in one thread: writes first, then reads, in chunks."""

    __slots__ = (
        "node",
        "sets",
        "deletes",
        "reads",
        "found",
        "set_failed",
        "error",
        "errors",
        "settle",
        "settled",
    )

    def __init__(self, node: _Node) -> None:
        self.node = node
        # Settles this server's reads in the job's own thread as soon as they arrive, so that the
        # decoding of a fast server's values overlaps the wait for a slow one. Returns the
        # (hits, misses, decode errors) counts; None once run, or when the job failed.
        self.settle: Callable[[_Job], tuple[int, int, int]] | None = None
        self.settled: tuple[int, int, int] | None = None
        self.sets: dict[int, dict[bytes, bytes]] = {}
        self.deletes: list[bytes] = []
        self.reads: list[bytes] = []
        self.found: dict[bytes, Any] = {}
        self.set_failed: set[bytes] = set()
        # The first failure; later requests to the same server are not tried in this round, so a
        # dead server costs one timeout per round, not one per chunk.
        self.error: BaseException | None = None
        self.errors: list[tuple[str, int]] = []  # (what, how many calls) for statistics

    def run(self, size: int, counts: list[int]) -> None:
        node = self.node
        try:
            for ttl, values in self.sets.items():
                items = list(values.items())
                for start in range(0, len(items), size):
                    counts[2] += 1
                    self.set_failed.update(node.set_many(dict(items[start : start + size]), ttl))
            for start in range(0, len(self.deletes), size):
                counts[3] += 1
                node.delete_many(self.deletes[start : start + size])
            for start in range(0, len(self.reads), size):
                chunk = self.reads[start : start + size]
                counts[0] += 1
                counts[1] += len(chunk)
                self.found.update(node.get_many(chunk))
        except Exception as e:
            counts[4] += 1
            self.error = _as_server_error(node, e)
            return
        if self.settle is not None and self.reads:
            self.settled = self.settle(self)


def _as_server_error(node: _Node, error: Exception) -> BaseException:
    if isinstance(error, ServerError):
        return error
    if isinstance(error, (OSError, PymemcacheError)):
        msg = (
            f"memcached server {node.name} failed: {type(error).__name__}: {error}; it is down, "
            "refusing connections or slower than the client's timeout. Check the server; with "
            "on_error='miss' its keys count as misses instead"
        )
        wrapped = ServerError(msg)
        wrapped.__cause__ = error
        return wrapped
    return error  # a bug, not a fault: never turned into a miss


# -- the async functions cache.get & co -----------------------------------------------------------


class _Op(Generic[P, T]):
    """An async function of the Cache: ``op(...)`` runs it, ``op.asynq(...)`` is yieldable."""

    __slots__ = ("asynq", "_name")

    def __init__(self, asynq: Callable[P, FutureBase[T]], name: str) -> None:
        self.asynq = asynq
        self._name = name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(self.asynq(*args, **kwargs))

    def is_pure_async_fn(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<async {self._name}>"


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


class CachedFunction(AsyncFunction[P, T]):
    """An async function whose results live in a Cache; see :meth:`Cache.cached`."""

    cache_key: Callable[..., str | bytes]
    # herd (issue 13): fn.invalidate(*args, **kwargs) marks one call's key stale.
    invalidate: _Op[..., bool]


# -- the Cache ------------------------------------------------------------------------------------


class Cache:
    """memcached (or a :class:`LocalClient`) behind batchq's rounds.

    ``client`` is any pymemcache client (``Client``, ``PooledClient``, ``HashClient``,
    ``RetryingClient``) or a :class:`LocalClient` (the default: in process). ``on_error`` says
    what a server fault does: ``"miss"`` (default) logs it, counts it, and makes that server's
    reads misses and its writes return False; ``"raise"`` gives every waiting request a
    :class:`ServerError` naming the server. ``serde`` serializes values (default
    :class:`JsonSerde`, which never unpickles).
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
        if not callable(getattr(client, "get_many", None)):
            msg = (
                f"Cache(client) takes a pymemcache client (Client, PooledClient, HashClient, "
                f"RetryingClient) or batchq.memcache.LocalClient(), got {client!r}"
            )
            raise TypeError(msg)
        if isinstance(key_prefix, str):
            key_prefix = key_prefix.encode("utf-8")
        self.client = client
        self.max_batch_size = max_batch_size
        self.on_error: OnError = on_error
        self.serde: Serde = serde if serde is not None else JsonSerde()
        _check_client_serdes(client, serde)
        self.hash_long_keys = hash_long_keys
        self.max_value_size = max_value_size
        self._client_prefix: bytes = _client_prefix(client)
        self.key_prefix = key_prefix
        if key_prefix:
            encode_key(b"x", self._client_prefix + key_prefix)  # refuse a bad prefix now
        # How long a key may be once both prefixes are added (for encode_key's fast path).
        self._key_room = MAX_KEY_LENGTH - len(self._client_prefix) - len(key_prefix)
        self.name = name if name is not None else f"Cache({_describe_client(client)})"
        self._nodes: dict[int, _Node] = {}
        # Checked keys: the same keys come back every page, and checking costs more than a lookup.
        self._key_memo: dict[str | bytes, bytes] = {}
        # HashClient routing is pure-Python murmur3 per key and server: remember it while the
        # set of live servers stays the same.
        self._route_memo: dict[bytes, Any] = {}
        self._route_version: tuple[Any, ...] = ()
        self._single = self._single_node(client)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._finalizer: weakref.finalize[..., Any] | None = None
        self._counters = _Counters()
        self._stats_lock = threading.Lock()
        self.get = _Op(self._get_asynq, f"{self.name}.get")
        self.get_many = _Op(self._get_many_asynq, f"{self.name}.get_many")
        self.set = _Op(self._set_asynq, f"{self.name}.set")
        self.set_many = _Op(self._set_many_asynq, f"{self.name}.set_many")
        self.delete = _Op(self._delete_asynq, f"{self.name}.delete")
        self.delete_many = _Op(self._delete_many_asynq, f"{self.name}.delete_many")
        # herd (issue 13)
        self.invalidate = _Op(self._invalidate_asynq, f"{self.name}.invalidate")
        self.invalidate_many = _Op(self._invalidate_many_asynq, f"{self.name}.invalidate_many")

    def __repr__(self) -> str:
        return f"<{self.name} on_error={self.on_error!r} max_batch_size={self.max_batch_size}>"

    # -- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the Cache's thread pool (the client is the caller's to close)."""
        finalizer, self._finalizer = self._finalizer, None
        self._pool = None
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> CacheStats:
        """A snapshot of the counters."""
        c = self._counters
        with self._stats_lock:
            servers = {name: ServerStats(*counts) for name, counts in sorted(c.servers.items())}
            return CacheStats(
                c.hits,
                c.misses,
                c.overlay_hits,
                c.errors,
                c.decode_errors,
                c.get_many_calls,
                c.keys_fetched,
                c.sets,
                c.deletes,
                c.write_failures,
                servers,
            )

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
            if 0 < size <= self._key_room and len(raw.translate(None, _FORBIDDEN_BYTES)) == size:
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
        memo[key] = raw
        return raw

    def _pack(self, key: str | bytes, value: Any) -> bytes:
        try:
            data, flags = self.serde.serialize(key, value)
        except SerializationError:
            raise  # ours already names the key, the value and the fix
        except Exception as e:
            msg = (
                f"serde {self.serde!r} failed to serialize the value of type "
                f"{type(value).__name__} for key {key!r}: {type(e).__name__}: {e}; fix the serde, "
                "or convert the value to something it supports"
            )
            raise SerializationError(msg) from e
        if type(data) is not bytes or not 0 <= flags < 2**32:
            msg = (
                f"serde {self.serde!r} returned {type(data).__name__} data with flags {flags!r} "
                f"for key {key!r}; a serde must return (bytes, int flags from 0 to 2**32-1)"
            )
            raise SerializationError(msg)
        packed = _MAGIC + flags.to_bytes(4, "big") + data
        check_value_size(key, packed, self.max_value_size)
        return packed

    def _unpack(self, key: str | bytes, stored: Any) -> Any:
        # herd (issue 13): a herd-protected function's record; never on the plain hot path.
        if type(stored) is bytes and stored[:3] == HERD_MAGIC:
            return parse_record(key, stored, self.serde)
        # -- end herd --
        if type(stored) is not bytes or not stored.startswith(_MAGIC) or len(stored) < _HEADER:
            shown = repr(stored[:40]) if isinstance(stored, (bytes, str)) else _type_name(stored)
            msg = (
                f"memcache key {key!r} holds {shown}, which no batchq Cache wrote (no envelope); "
                "another program uses this key: give this Cache a key_prefix, or delete the key"
            )
            raise DeserializationError(msg)
        flags = int.from_bytes(stored[len(_MAGIC) : _HEADER], "big")
        return self.serde.deserialize(key, stored[_HEADER:], flags)

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
        state = _runs.get()
        # Reads never create the run's state: only a write of this run can put a key in it.
        if state is not None and state.overlay and state.is_live():
            slot = (id(self), raw)
            if slot in state.overlay:
                stored = state.overlay[slot]
                self._counters.overlay_hits += 1
                if stored is None:
                    return _Hit(None, False)
                return _Hit(self._unpack(key, stored), True)
        batch = self._batch()
        item = batch.reads.get(raw)
        if item is None:
            item = GetItem(batch, key)
            batch.reads[raw] = item
        return item

    def _write(self, key: str | bytes, raw: bytes, data: bytes | None, ttl: int) -> WriteItem:
        if _tier.has_tiers():  # herd (issue 13): a write drops the key from this process's tiers
            _tier.discard(self, raw)
        state = _run_state()
        if state is not None:
            state.overlay[(id(self), raw)] = data
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
        state = _runs.get()
        if state is not None and state.overlay:
            return self._lookup(key, raw)  # this run wrote something: read-your-writes
        # The hot path of every page: _lookup() and _batch() inlined.
        sched = _current.get()
        batch = sched._active.get(self) if sched is not None else None
        if batch is None:
            batch = self._batch()
        reads: dict[bytes, GetItem] = batch.reads  # type: ignore[attr-defined]
        got = reads.get(raw)
        if got is None:
            # GetItem.__init__ inlined: a new key of every page passes here.
            got = reads[raw] = _new_item(GetItem)
            got._value = NOT_COMPUTED
            got._error = None
            got._waiters = None
            got.batch = batch
            batch.items.append(got)
            got.key = key
            got.hit = False
        return got

    def _get_many_asynq(self, keys: Iterable[str | bytes]) -> AsyncTask[dict[str | bytes, Any]]:
        keys = _key_list(keys, "get_many")
        # Every key is checked before any is queued: a bad key sends nothing.
        raws = [self.encode_key(k) for k in keys]
        items = [self._lookup(k, raw) for k, raw in zip(keys, raws, strict=True)]
        return AsyncTask(_gather_many(keys, items), self.get_many, (keys,), None)

    def _set_asynq(self, key: str | bytes, value: Any, ttl: int | None = None) -> WriteItem:
        raw = self.encode_key(key)
        return self._write(key, raw, self._pack(key, value), _check_ttl(ttl))

    def _set_many_asynq(
        self, values: _Values, ttl: int | None = None
    ) -> AsyncTask[list[str | bytes]]:
        if not isinstance(values, Mapping):
            msg = f"set_many takes a mapping key -> value, got {values!r}"
            raise TypeError(msg)
        seconds = _check_ttl(ttl)
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

    # -- herd (issue 13): invalidation; the machinery lives in _herd.py -------------------------

    def _invalidate_asynq(self, key: str | bytes) -> FutureBase[bool]:
        """Mark ``key`` stale: never fresh again; servable stale for its ``stale_ttl``."""
        from ._herd import invalidate_item

        return invalidate_item(self, key)

    def _invalidate_many_asynq(self, keys: Iterable[str | bytes]) -> AsyncTask[bool]:
        from ._herd import invalidate_many_task

        return invalidate_many_task(self, _key_list(keys, "invalidate_many"))

    # -- end herd --

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
        seconds = _check_ttl(ttl)
        if key is not None and not callable(key):
            msg = f"cached(key=...) takes a function of the call's arguments, got {key!r}"
            raise TypeError(msg)
        # herd (issue 13): options beyond ttl and key select the machinery in _herd.py.
        from ._herd import make_policy

        policy = make_policy(
            seconds, herd, stale_ttl, none_ttl, lease_ttl, local_ttl, local_max, self
        )
        return _CacheDecorator(self, seconds, key, policy)

    def _cached_call(
        self,
        keyer: Callable[[tuple[Any, ...], dict[str, Any]], str | bytes],
        make_task: Callable[..., FutureBase[Any]],
        ttl: int,
        fn: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Generator[Any, Any, Any]:
        key = keyer(args, kwargs)
        raw = self.encode_key(key)
        got = self._lookup(key, raw)
        try:
            value = yield got
        except DeserializationError as e:
            # Unreadable (another writer, another serde): recompute and overwrite it.
            _log.warning("%s: recomputing %r: %s", self.name, key, e)
        else:
            if got.hit:
                return value
        state = _run_state()
        slot = (id(self), raw)
        task = state.inflight.get(slot) if state is not None else None
        if task is None or (task._sched is not None and task._sched is not get_scheduler()):
            task = AsyncTask(
                self._compute(key, raw, make_task, ttl, args, kwargs), fn, args, kwargs
            )
            if state is not None:
                state.inflight[slot] = task
        return (yield task)

    def _compute(
        self,
        key: str | bytes,
        raw: bytes,
        make_task: Callable[..., FutureBase[Any]],
        ttl: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Generator[Any, Any, Any]:
        value = yield make_task(*args, **kwargs)
        try:
            packed = self._pack(key, value)
        except ValueTooLargeError as e:
            # Data-dependent, not a bug: the caller still gets its value, just uncached.
            _log.warning("%s: not caching %r: %s", self.name, key, e)
            with self._stats_lock:
                self._counters.write_failures += 1
            return value
        # Not waited for: the write joins this round's batch and the scheduler flushes it before
        # the run returns; a failure is logged and counted (the caller has its value either way).
        # An unserializable value is a programming error and raises above, from _pack.
        self._write(key, raw, packed, ttl)
        return value

    # -- flushing ---------------------------------------------------------------------------------

    def _single_node(self, client: Any) -> _Node | None:
        if isinstance(client, HashClient):
            return None
        if isinstance(client, RetryingClient):
            inner = client._client
            if isinstance(inner, HashClient):
                return None
            return _Node(_server_name(inner), client)
        return _Node(_server_name(client), client)

    def _route(self, raws: Iterable[bytes], jobs: dict[int, _Job]) -> dict[bytes, _Job]:
        """The job (server) of every key, creating jobs as needed."""
        out: dict[bytes, _Job] = {}
        single = self._single
        if single is not None:
            job = jobs.get(0)
            if job is None:
                job = jobs[0] = _Job(single)
            return dict.fromkeys(raws, job)
        client = self.client
        retrying = None
        if isinstance(client, RetryingClient):
            retrying = client
            client = client._client
        hc: HashClient = client
        if hc._dead_clients:
            hc._retry_dead()  # what HashClient._get_client does first: revive servers in time
        hasher = hc.hasher
        version = tuple(getattr(hasher, "nodes", ()))
        if version != self._route_version or len(self._route_memo) > 100_000:
            self._route_memo = {}
            self._route_version = version
        memo = self._route_memo
        for raw in raws:
            server = memo.get(raw)
            if server is None:
                server = hasher.get_node(_route_key(raw))
                if server is not None:
                    memo[raw] = server
            sub = hc.clients.get(server) if server is not None else None
            if sub is None:
                ident = -1
                node: _Node = _NoServer(
                    "every server of the HashClient is marked dead (it retries them after "
                    f"dead_timeout={hc.dead_timeout}s)"
                )
            else:
                ident = id(sub)
                found = self._nodes.get(ident)
                if found is None or found.client is not sub:
                    found = self._nodes[ident] = _Node(_server_name(sub), sub, hc, retrying)
                node = found
            job = jobs.get(ident)
            if job is None:
                job = jobs[ident] = _Job(node)
            out[raw] = job
        return out

    def _flush(self, batch: CacheBatch) -> None:
        jobs: dict[int, _Job] = {}
        writes = batch.writes
        reads = batch.reads
        routes = self._route([*writes, *reads], jobs)
        for raw, write in writes.items():
            job = routes[raw]
            if write.data is None:
                job.deletes.append(raw)
            else:
                job.sets.setdefault(write.ttl, {})[raw] = write.data
        if self._single is not None and jobs:
            jobs[0].reads.extend(reads)
        else:
            for raw in reads:
                routes[raw].reads.append(raw)

        def settle(job: _Job) -> tuple[int, int, int]:
            return self._settle_reads(job, reads)

        for job in jobs.values():
            job.settle = settle
        counts = {ident: [0, 0, 0, 0, 0] for ident in jobs}
        self._run_jobs(jobs, counts)
        self._settle(batch, routes, jobs, counts)

    def _run_jobs(self, jobs: dict[int, _Job], counts: dict[int, list[int]]) -> None:
        size = self.max_batch_size
        if len(jobs) == 1:
            for ident, job in jobs.items():
                job.run(size, counts[ident])
            return
        pool = self._thread_pool()
        running: list[ThreadFuture[None]] = []
        items = list(jobs.items())
        # The calling thread takes one server itself instead of waiting idle.
        for ident, job in items[1:]:
            running.append(pool.submit(job.run, size, counts[ident]))
        first_ident, first = items[0]
        first.run(size, counts[first_ident])
        for fut in running:
            fut.result()  # job.run catches everything; this only waits

    def _settle_reads(self, job: _Job, reads: dict[bytes, GetItem]) -> tuple[int, int, int]:
        """Set the value of each read of a job that succeeded; its (hits, misses, decode errors)."""
        misses = decode_errors = 0
        get = job.found.get
        deserialize = self.serde.deserialize
        from_bytes = int.from_bytes
        # One server (or every key on one): its reads are the batch's, in the batch's order.
        pairs = (
            reads.items()
            if len(job.reads) == len(reads)
            else [(raw, reads[raw]) for raw in job.reads]
        )
        for raw, read in pairs:
            # Direct slot writes: each read of this batch is settled exactly once, here.
            stored = get(raw, _ABSENT)
            if stored is _ABSENT:
                misses += 1
                read._value = None
                continue
            try:
                # _unpack() inlined for the envelope every value this Cache wrote has.
                if (
                    type(stored) is bytes
                    and stored[:_MAGIC_LEN] == _MAGIC
                    and len(stored) >= _HEADER
                ):
                    flags = from_bytes(stored[_MAGIC_LEN:_HEADER], "big")
                    value = deserialize(read.key, stored[_HEADER:], flags)
                else:
                    value = self._unpack(read.key, stored)
            except DeserializationError as e:
                decode_errors += 1
                read._value = None
                read._error = e
                continue
            read.hit = True
            read._value = value
        return len(pairs) - misses - decode_errors, misses, decode_errors

    def _settle(
        self,
        batch: CacheBatch,
        routes: dict[bytes, _Job],
        jobs: dict[int, _Job],
        counts: dict[int, list[int]],
    ) -> None:
        miss_on_fault = self.on_error == "miss"
        hits = misses = errors = decode_errors = sets = deletes = write_failures = 0
        for job in jobs.values():
            if miss_on_fault and isinstance(job.error, ServerError):
                _log.warning("%s: %s", self.name, job.error)
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
                _log.warning("%s: memcached did not store %r", self.name, write.shown)
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
        c = self._counters
        with self._stats_lock:
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

    def _thread_pool(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                pool = self._pool
                if pool is None:
                    pool = ThreadPoolExecutor(32, thread_name_prefix="batchq-memcache")
                    self._finalizer = weakref.finalize(self, pool.shutdown, wait=False)
                    self._pool = pool
        return pool


class _CacheDecorator:
    """What ``cache.cached(...)`` returns: applies the caching to a function."""

    def __init__(
        self,
        cache: Cache,
        ttl: int,
        key: Callable[..., str | bytes] | None,
        policy: Any = None,  # herd (issue 13): a _herd.Policy, or None for the plain path
    ) -> None:
        self._cache = cache
        self._ttl = ttl
        self._key = key
        self._policy = policy

    @overload
    def __call__(self, fn: AsyncFunction[P, T]) -> CachedFunction[P, T]: ...
    @overload
    def __call__(self, fn: Callable[P, Generator[Any, Any, T]]) -> CachedFunction[P, T]: ...
    @overload
    def __call__(self, fn: Callable[P, T]) -> CachedFunction[P, T]: ...

    def __call__(self, fn: Any) -> Any:
        cache = self._cache
        ttl = self._ttl
        if getattr(fn, "is_pure_async_fn", None) is not None:
            make_task = fn if fn.is_pure_async_fn() else fn.asynq
        elif callable(fn):
            make_task = AsyncFunction(fn).asynq
        else:
            msg = f"cache.cached() decorates functions, got {fn!r}"
            raise TypeError(msg)
        keyer = _make_keyer(fn, self._key)
        original = getattr(fn, "fn", fn)
        cached_call = cache._cached_call
        policy = self._policy
        if policy is None:

            def call(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                return cached_call(keyer, make_task, ttl, original, args, kwargs)

        else:  # herd (issue 13)
            from ._herd import cached_call as herd_call

            def call(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                return herd_call(cache, policy, keyer, make_task, original, args, kwargs)

        result: CachedFunction[Any, Any] = CachedFunction(call)
        # The generator is call()'s; present the wrapped function's identity.
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            value = getattr(fn, attr, None)
            if value is not None:
                setattr(result, attr, value)
        result._is_gen = True
        result.__wrapped__ = fn
        result.cache_key = lambda *a, **kw: keyer(a, kw)
        # herd (issue 13)
        invalidate = cache._invalidate_asynq
        result.invalidate = _Op(
            lambda *a, **kw: invalidate(keyer(a, kw)),
            f"{getattr(fn, '__qualname__', fn)!s}.invalidate",
        )
        return result


# -- helpers --------------------------------------------------------------------------------------


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


def _check_ttl(ttl: Any) -> int:
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        msg = f"ttl must be a whole number of seconds (0: no expiry), got {ttl!r}"
        raise TypeError(msg)
    if ttl < 0:
        msg = f"ttl must be 0 (no expiry) or a positive number of seconds, got {ttl!r}"
        raise ValueError(msg)
    return ttl


def _route_key(raw: bytes) -> str | bytes:
    """The key as pymemcache users pass it (str), so both pick the same server for it."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def _type_name(value: object) -> str:
    return f"a {type(value).__name__}"


def _client_prefix(client: Any) -> bytes:
    inner = client._client if isinstance(client, RetryingClient) else client
    prefix = getattr(inner, "key_prefix", b"")
    if isinstance(prefix, str):
        prefix = prefix.encode("utf-8")
    return prefix if isinstance(prefix, bytes) else b""


def _describe_client(client: Any) -> str:
    if isinstance(client, RetryingClient):
        return f"RetryingClient({_describe_client(client._client)})"
    if isinstance(client, HashClient):
        return f"HashClient({len(client.clients)} servers)"
    return f"{type(client).__name__} {_server_name(client)}"


# -- the client's serde ---------------------------------------------------------------------------

_PROBE: Final = _MAGIC + b"\x00\x00\x00\x10probe \x80\xff"


def _client_serdes(client: Any) -> list[Any]:
    if isinstance(client, RetryingClient):
        return _client_serdes(client._client)
    if isinstance(client, HashClient):
        found = [c.serde for c in client.clients.values() if hasattr(c, "serde")]
        return found or [client.default_kwargs.get("serde")]
    return [getattr(client, "serde", None)]


def _serde_kind(serde: Any) -> str:
    """'raw' (bytes in, bytes out), 'pickle' (may unpickle what it reads) or 'unknown'."""
    if serde is None:
        return "raw"
    if isinstance(serde, JsonSerde):
        return "raw"
    if isinstance(serde, (PickleSerde, pymemcache_serde.PickleSerde)):
        return "pickle"
    if isinstance(serde, pymemcache_serde.LegacyWrappingSerde):
        des = getattr(serde.deserialize, "__func__", serde.deserialize)
        if des is pymemcache_serde.LegacyWrappingSerde._default_deserialize:
            return "raw"
        if des is pymemcache_serde.python_memcache_deserializer:
            return "pickle"
        return "unknown"
    if isinstance(serde, pymemcache_serde.CompressedSerde):
        inner = _serde_kind(getattr(serde, "_serde", None))
        return "pickle" if inner == "pickle" else "unknown"
    return "unknown"


def _check_client_serdes(client: Any, chosen: Serde | None) -> None:
    """Refuse a client whose own serde could unpickle server data, unless the user opted in."""
    if isinstance(client, LocalClient):
        serdes: list[Any] = [client.serde]
    else:
        serdes = _client_serdes(client)
    for serde in serdes:
        kind = _serde_kind(serde)
        if kind == "pickle" and not isinstance(chosen, PickleSerde):
            msg = (
                f"the client {client!r} is configured with {serde!r}, which unpickles what it "
                "reads: anyone who can write to the memcached server could run code here. Create "
                "the client without a serde (the Cache serializes values itself), or pass "
                "serde=batchq.memcache.PickleSerde() to the Cache to state that every writer is "
                "trusted"
            )
            raise SerializationError(msg)
        if kind == "unknown" and chosen is None:
            msg = (
                f"the client {client!r} is configured with the serde {serde!r}, which batchq "
                "cannot tell is safe (it might unpickle what it reads). Create the client without "
                "a serde (the Cache serializes values itself), or pass serde=... to the Cache "
                "explicitly to confirm the client's serde is trusted"
            )
            raise SerializationError(msg)
        if serde is not None:
            try:
                data, flags = serde.serialize(b"probe", _PROBE)
                back = serde.deserialize(b"probe", data, flags)
            except Exception as e:
                back = e
            if back != _PROBE:
                msg = (
                    f"the client's serde {serde!r} does not hand back the bytes it was given "
                    f"(got {back!r}); the Cache stores bytes it serialized itself, so create the "
                    "client without a serde"
                )
                raise SerializationError(msg)


# -- default keys for cached functions ------------------------------------------------------------

_KEY_ROOM: Final = MAX_KEY_LENGTH - 64  # leave room for prefixes


def _make_keyer(
    fn: Any, custom: Callable[..., str | bytes] | None
) -> Callable[[tuple[Any, ...], dict[str, Any]], str | bytes]:
    if custom is not None:

        def custom_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | bytes:
            return custom(*args, **kwargs)

        return custom_key
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    head = f"{module}:{qualname}"
    try:
        sig: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None

    def default_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if sig is not None:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            pairs = list(bound.arguments.items())
        else:
            pairs = [(str(i), a) for i, a in enumerate(args)] + sorted(kwargs.items())
        parts = []
        for name, value in pairs:
            try:
                parts.append(f"{name}={_canon(value)}")
            except _Unencodable as e:
                msg = (
                    f"cannot build a cache key for {head} from the argument {name}={value!r}: "
                    f"{e.args[0]}; default keys take None, bool, int, float, str, bytes and "
                    "tuples, lists, sets and dicts of them. Pass key=lambda ...: f'...' to "
                    "cache.cached() to name the key yourself"
                )
                raise TypeError(msg) from None
        text = f"{head}:{','.join(parts)}"
        encoded = text.encode("utf-8", errors="surrogatepass")
        if len(encoded) <= _KEY_ROOM and not any(b <= 0x20 or b == 0x7F for b in encoded):
            return text
        # Too long, or a space in an argument: the same hash in every process.
        return f"{head[:120]}:#{hashlib.sha256(encoded).hexdigest()}"

    return default_key


class _Unencodable(Exception):
    pass


def _canon(value: Any) -> str:
    """A text for ``value`` that is the same in every process (unlike ``hash()``)."""
    kind = type(value)
    if value is None or kind is bool:
        return repr(value)
    if kind is int:
        return str(value)
    if kind is float:
        return f"f{value!r}"
    if kind is str:
        return json.dumps(value)
    if kind is bytes:
        return f"x{value.hex()}"
    if kind is tuple:
        return "(" + ",".join(_canon(v) for v in value) + ")"
    if kind is list:
        return "[" + ",".join(_canon(v) for v in value) + "]"
    if kind is dict:
        return "{" + ",".join(sorted(f"{_canon(k)}:{_canon(v)}" for k, v in value.items())) + "}"
    if kind is set or kind is frozenset:
        return "<" + ",".join(sorted(_canon(v) for v in value)) + ">"
    raise _Unencodable(f"{kind.__qualname__} has no process-stable encoding")
