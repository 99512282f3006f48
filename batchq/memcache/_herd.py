"""Cached functions under load: one recompute per key (leases), stale serving, invalidation.

The design uses only commands every client the Cache accepts has (pymemcache's ``Client``,
``PooledClient``, ``HashClient``, ``RetryingClient`` and the embedded ``LocalClient``): ``add``,
``gets``, ``cas``, ``set``, ``get`` and ``delete``. No meta commands.

- **Lease.** A caller that misses takes the key's lease with ``add`` (atomic on the server; its ttl
  is ``lease_ttl``, so a winner that crashes blocks the others at most that long) and, in the same
  flush, reads the value's cas token with ``gets``. The winner computes; the losers wait.
- **Waiting.** A loser sleeps a short, growing interval (an asyncio timer through
  ``from_asyncio``: under an asyncio driver other rounds and requests carry on; in a synchronous
  run it is the round's wait), then re-checks the key with an ordinary lookup that joins the
  round's ``get_many``. Still missing, it tries the lease again (a failing winner released it, or
  its lease ran out). After ``2 * lease_ttl`` seconds it computes without a lease.
- **Record.** The value is stored in a record (see ``_record``) with a soft expiry: fresh for
  ``ttl``, then servable stale for ``stale_ttl`` more; memcached's ttl is the sum. A stale hit
  returns at once and queues the recompute for one background thread per Cache, which takes the
  queued keys in batches (one lease request per server for all of them; the lease picks one
  process per key).
- **Write-back.** With ``cas`` (token from the lease's ``gets``), or ``add`` where nothing was
  stored. Any write in between (an invalidation) changes the token or fills the slot, so the old
  value never lands fresh. Then the lease is deleted.
- **Invalidation.** Rewrites the record as invalidated (never fresh again, servable stale for
  its ``stale_ttl``); where nothing (or a plain value) was stored it leaves a tombstone, so that a
  write-back in flight fails. The read and the rewrite are not atomic: a write-back landing
  between them is overwritten by the invalidated record, which is the safe outcome.

The herd requests of a round (leases, write-backs, releases, invalidations) go in one batch per
Cache and scheduler, flushed with one pipelined request per server and command.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import TYPE_CHECKING, Any, Final

from batchq._asyncio import from_asyncio
from batchq._core._batch import BatchBase, BatchItemBase
from batchq._core._futures import FutureBase
from batchq._core._loop import Scheduler, get_scheduler, run_sync
from batchq._core._runtime import current_scheduler
from batchq._core._task import AsyncTask

from ._envelope import MAGIC
from ._errors import DeserializationError, ServerError, ValueTooLargeError
from ._keys import MAX_KEY_LENGTH
from ._record import HERD_MAGIC, Record, pack_record, parse_record
from ._routing import _Job, _Node, as_server_error
from ._run import run_state
from ._tier import LocalTier, discard, register
from ._ttl import MAX_RELATIVE_TTL, check_duration

if TYPE_CHECKING:
    from ._cache import Cache

__all__ = [
    "Policy",
    "make_policy",
    "cached_call",
    "invalidate_item",
    "invalidate_many_task",
    "drain",
]

_log = logging.getLogger("batchq.memcache")


TOMBSTONE_TTL: Final = 60
"""Seconds a tombstone (an invalidation where nothing was stored) lives: longer than any sane
compute, so that a write-back that started before the invalidation finds it and fails."""

FIRST_POLL: Final = 0.004
MAX_POLL: Final = 0.02
_LEASE_SUFFIX: Final = b"#lease"
_LEASE_VALUE: Final = b"1"


class Policy:
    """How one cached function caches (the options of ``cache.cached``)."""

    __slots__ = ("ttl", "stale_ttl", "none_ttl", "lease_ttl", "herd", "tier")

    def __init__(
        self,
        ttl: int,
        stale_ttl: int,
        none_ttl: int | None,
        lease_ttl: int,
        herd: bool,
        tier: LocalTier | None,
    ) -> None:
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.none_ttl = none_ttl
        self.lease_ttl = lease_ttl
        self.herd = herd
        self.tier = tier

    def ttl_for(self, value: Any) -> int:
        return self.none_ttl if value is None and self.none_ttl is not None else self.ttl


def make_policy(
    ttl: int,
    herd: Any,
    stale_ttl: Any,
    none_ttl: Any,
    lease_ttl: Any,
    local_ttl: Any,
    local_max: Any,
    cache: Cache,
) -> Policy | None:
    """Check the options of ``cache.cached`` (``ttl`` is checked already); None when they ask
    for nothing beyond ttl and key."""
    if not isinstance(herd, bool):
        msg = f"cached(herd=...) is True or False, got {herd!r}"
        raise TypeError(msg)
    stale = check_duration("stale_ttl", stale_ttl)
    nones = None if none_ttl is None else check_duration("none_ttl", none_ttl)
    lease = check_duration("lease_ttl", lease_ttl)
    if lease < 1:
        msg = (
            f"cached(lease_ttl={lease_ttl!r}): a lease lasts at least 1 second (memcached's "
            "ttl granularity); pass the longest the function normally takes, rounded up"
        )
        raise ValueError(msg)
    if isinstance(local_ttl, bool) or not isinstance(local_ttl, (int, float)) or local_ttl < 0:
        msg = f"cached(local_ttl=...) takes seconds >= 0 (0: no local tier), got {local_ttl!r}"
        raise ValueError(msg)
    if isinstance(local_max, bool) or not isinstance(local_max, int) or local_max < 1:
        msg = f"cached(local_max=...) takes the tier's most entries (>= 1), got {local_max!r}"
        raise ValueError(msg)
    herd = herd or stale > 0
    if not herd and nones is None and not local_ttl:
        return None
    if ttl + stale > MAX_RELATIVE_TTL:
        # These writes are always seconds from now: a larger expiry would be a unix time.
        msg = (
            f"cached(ttl={ttl!r}, stale_ttl={stale!r}) with herd, stale_ttl, none_ttl or "
            f"local_ttl: ttl + stale_ttl is how long memcached keeps the value, at most "
            f"{MAX_RELATIVE_TTL} seconds (30 days); pass a shorter ttl"
        )
        raise ValueError(msg)
    tier = None
    if local_ttl:
        tier = LocalTier(local_max, float(local_ttl))
        register(cache, tier)
    return Policy(ttl, stale, nones, lease, herd, tier)


# -- per-Cache state ------------------------------------------------------------------------------


class _Herd:
    """What the herd machinery keeps per Cache: the batch source and background revalidations."""

    def __init__(self, cache: Cache) -> None:
        self.cache_ref = weakref.ref(cache)
        self.lock = threading.Lock()
        self.revalidating: set[bytes] = set()
        self.queue: dict[bytes, tuple[Any, ...]] = {}  # stale keys waiting for the drainer
        self.draining = False
        self.pool: ThreadPoolExecutor | None = None
        self.background: list[Any] = []  # futures of drainer runs (for drain())

    def batch(self, sched: Scheduler) -> _HerdBatch:
        batch = sched.active_batch(self)
        if batch is None:
            cache = self.cache_ref()
            assert cache is not None
            batch = _HerdBatch(cache, self, sched)
            sched.set_active_batch(self, batch)
        return batch  # type: ignore[return-value]

    def submit(self, job: Callable[[], None]) -> None:
        with self.lock:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(1, thread_name_prefix="batchq-revalidate")
                weakref.finalize(self, self.pool.shutdown, wait=False)
            fut = self.pool.submit(contextvars.Context().run, job)
            self.background = [f for f in self.background if not f.done()]
            self.background.append(fut)


_herds: weakref.WeakKeyDictionary[Any, _Herd] = weakref.WeakKeyDictionary()
_herds_lock = threading.Lock()


def _herd(cache: Cache) -> _Herd:
    found = _herds.get(cache)
    if found is None:
        with _herds_lock:
            found = _herds.get(cache)
            if found is None:
                found = _herds[cache] = _Herd(cache)
    return found


def drain(cache: Cache, timeout: float | None = None) -> None:
    """Wait for the Cache's background recomputes, those queued meanwhile included
    (``Cache.drain``)."""
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
    ):
        msg = f"drain(timeout=...) takes seconds >= 0, or None for no limit, got {timeout!r}"
        raise ValueError(msg)
    herd = _herds.get(cache)
    if herd is None:
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        with herd.lock:
            running = [f for f in herd.background if not f.done()]
            if not running and not herd.draining:
                return
        try:
            for fut in running:
                fut.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except FutureTimeoutError:
            pass  # reported below, with the Cache's name
        if not running:
            time.sleep(0.001)  # the drainer was just submitted
        if deadline is not None and time.monotonic() > deadline:
            msg = (
                f"background recomputes of {cache.name} still running after {timeout} s; a "
                "cached function is slower than that, or blocked"
            )
            raise TimeoutError(msg)


def lease_key(cache: Cache, raw: bytes) -> bytes:
    """Where the lease of ``raw`` lives: next to it, or under a hash when the key is long."""
    if len(cache._client_prefix) + len(raw) + len(_LEASE_SUFFIX) <= MAX_KEY_LENGTH:
        return raw + _LEASE_SUFFIX
    return cache.key_prefix + b"h:" + hashlib.sha256(raw).hexdigest().encode() + _LEASE_SUFFIX


# -- the herd batch -------------------------------------------------------------------------------


class _HerdItem(BatchItemBase[Any]):
    """One herd request: ``kind`` is 'lease', 'write', 'release' or 'invalidate'."""

    __slots__ = ("kind", "key", "raw", "lease", "data", "ttl", "cas")

    def __init__(
        self,
        batch: _HerdBatch,
        kind: str,
        key: str | bytes,
        raw: bytes,
        lease: bytes | None = None,
        data: bytes | None = None,
        ttl: int = 0,
        cas: Any = None,
    ) -> None:
        super().__init__(batch)
        self.kind = kind
        self.key = key
        self.raw = raw
        self.lease = lease
        self.data = data
        self.ttl = ttl
        self.cas = cas

    def __repr__(self) -> str:
        return f"<herd {self.kind} {self.key!r}>"


class _HerdBatch(BatchBase):
    """The herd requests of one Cache in one round of one scheduler."""

    def __init__(self, cache: Cache, herd: _Herd, sched: Scheduler) -> None:
        super().__init__()
        self.cache = cache
        self.herd = herd
        self.sched = sched

    def name(self) -> str:
        return f"{self.cache.name} (herd)"

    def _try_switch_active_batch(self) -> None:
        if self.sched.active_batch(self.herd) is self:
            self.sched.set_active_batch(self.herd, None)

    def _flush(self) -> None:
        items: list[_HerdItem] = self.items  # type: ignore[assignment]
        by_kind: dict[str, list[_HerdItem]] = {}
        for item in items:
            by_kind.setdefault(item.kind, []).append(item)
        cache = self.cache
        # Write-backs first (a lease later in the round then sees the value), then releases,
        # invalidations (after a write-back of the same key: the safe order), leases last.
        if "write" in by_kind:
            _per_node(cache, by_kind["write"], _write_backs, _raw_of)
        if "release" in by_kind:
            _per_node(cache, by_kind["release"], _releases, _lease_of)
        if "invalidate" in by_kind:
            _per_node(cache, by_kind["invalidate"], _invalidations, _raw_of)
        if "lease" in by_kind:
            # The lease and the value may live on different servers: add the leases routed by
            # lease key, then read the values' cas tokens routed by value key.
            leases = by_kind["lease"]
            _per_node(cache, leases, _add_leases, _lease_of)
            _per_node(cache, [i for i in leases if not i.is_computed()], _read_tokens, _raw_of)


def _write_backs(node: _Node, items: list[_HerdItem]) -> None:
    adds: dict[int, dict[bytes, bytes]] = {}
    for item in items:
        assert item.data is not None
        if item.cas is None:
            adds.setdefault(item.ttl, {})[item.raw] = item.data
        else:
            stored = node._call("cas", item.raw, item.data, item.cas, item.ttl, False)
            item.set_value(bool(stored))
    for ttl, values in adds.items():
        added = node.add_many(values, ttl)
        for item in items:
            if item.cas is None and item.ttl == ttl:
                item.set_value(bool(added.get(item.raw)))


def _releases(node: _Node, items: list[_HerdItem]) -> None:
    node.delete_many([_lease_of(item) for item in items])
    for item in items:
        item.set_value(None)


def _invalidations(node: _Node, items: list[_HerdItem]) -> None:
    found = node.get_many(list(dict.fromkeys(item.raw for item in items)))
    now = time.time()
    sets: dict[int, dict[bytes, bytes]] = {}
    for item in items:
        rec = _record_of(item.key, found.get(item.raw))
        if rec is not None and rec.inner:
            # Servable stale for the record's stale_ttl from now, or, if it was invalidated
            # before, no longer than that first invalidation allowed.
            stale_until = rec.stale_until if rec.invalidated else now + rec.stale_span
            if stale_until > now:
                data = pack_record(rec.inner, now, stale_until - now, invalidated=True)
                ttl = 0
                if math.isfinite(stale_until):
                    ttl = min(max(1, math.ceil(stale_until - now)), MAX_RELATIVE_TTL)
                sets.setdefault(ttl, {})[item.raw] = data
                continue
        # A tombstone: nothing fresh, nothing stale, and a write-back in flight fails.
        sets.setdefault(TOMBSTONE_TTL, {})[item.raw] = pack_record(b"", now, 0.0, True)
    failed: set[bytes] = set()
    for ttl, values in sets.items():
        failed.update(node.set_many(values, ttl))
    for item in items:
        item.set_value(item.raw not in failed)


def _add_leases(node: _Node, items: list[_HerdItem]) -> None:
    ttls: dict[int, dict[bytes, bytes]] = {}
    for item in items:
        ttls.setdefault(item.ttl, {})[_lease_of(item)] = _LEASE_VALUE
    won: dict[bytes, bool] = {}
    for ttl, values in ttls.items():
        won.update(node.add_many(values, ttl))
    granted: set[bytes] = set()
    for item in items:
        # Two callers of one scheduler can ask for the same lease in one round (requests of one
        # asyncio driver, in different contexts): the add succeeded once, so only one wins.
        lease = _lease_of(item)
        if won.get(lease) and lease not in granted:
            granted.add(lease)
            item.data = b"won"
        else:
            item.data = b""


def _read_tokens(node: _Node, items: list[_HerdItem]) -> None:
    found = node._call("gets_many", list(dict.fromkeys(item.raw for item in items)))
    for item in items:
        value, token = found.get(item.raw, (None, None))
        item.set_value((bool(item.data), value if isinstance(value, bytes) else None, token))


def _raw_of(item: _HerdItem) -> bytes:
    return item.raw


def _lease_of(item: _HerdItem) -> bytes:
    assert item.lease is not None
    return item.lease


def _per_node(
    cache: Cache,
    items: list[_HerdItem],
    run: Callable[[_Node, list[_HerdItem]], None],
    key: Callable[[_HerdItem], bytes],
) -> None:
    """Group ``items`` by server (routed as the Cache routes reads) and ``run`` each group."""
    jobs: dict[int, _Job] = {}
    routes = cache._servers.route([key(i) for i in items], jobs)
    groups: dict[int, tuple[_Node, list[_HerdItem]]] = {}
    for item in items:
        node = routes[key(item)].node
        groups.setdefault(id(node), (node, []))[1].append(item)
    on_miss = cache.on_error == "miss"
    for node, group in groups.values():
        try:
            run(node, group)
        except Exception as e:
            error = as_server_error(node, e, on_miss)
            if on_miss and isinstance(error, ServerError):
                _log.warning("%s: %s", cache.name, error)
                for item in group:
                    if not item.is_computed():
                        # A lease nobody can grant is won (compute rather than wait for nobody);
                        # every other request failed quietly, as writes do with on_error='miss'.
                        item.set_value((True, None, None) if item.kind == "lease" else False)
            else:
                for item in group:
                    if not item.is_computed():
                        item.set_error(error)


def _is_plain(stored: bytes) -> bool:
    return stored.startswith(MAGIC)


def _record_of(key: str | bytes, stored: Any, cache: Cache | None = None) -> Record | None:
    if isinstance(stored, bytes) and stored.startswith(HERD_MAGIC):
        try:
            return parse_record(key, stored, cache.serde if cache is not None else None)
        except DeserializationError:
            return None
    return None


# -- requests -------------------------------------------------------------------------------------


def _request(cache: Cache, kind: str, key: str | bytes, raw: bytes, **kw: Any) -> _HerdItem:
    batch = _herd(cache).batch(get_scheduler())
    return _HerdItem(batch, kind, key, raw, **kw)


def _sleep(seconds: float) -> FutureBase[None]:
    """Something to yield that completes ``seconds`` later, without holding up other requests.

    Under an asyncio driver (an event loop runs in this thread), an asyncio timer through
    ``from_asyncio``: other rounds and requests carry on meanwhile. In a synchronous run, a batch
    whose flush sleeps: the run has nothing else to wait for in that round but its own batches,
    and ``time.sleep`` costs a fraction of a private event loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        sched = get_scheduler()
        batch = sched.active_batch(_SLEEP)
        if batch is None:
            batch = _SleepBatch(sched)
            sched.set_active_batch(_SLEEP, batch)
        return _SleepItem(batch, seconds)  # type: ignore[arg-type]
    return from_asyncio(asyncio.sleep(seconds))


_SLEEP: Final[Any] = object()  # the batch source of the sleeps of a synchronous run


class _SleepItem(BatchItemBase[None]):
    __slots__ = ("seconds",)

    def __init__(self, batch: _SleepBatch, seconds: float) -> None:
        super().__init__(batch)
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"<herd wait {self.seconds * 1000:.0f} ms>"


class _SleepBatch(BatchBase):
    """The waits of one round of a synchronous run: the shortest one, then every waiter wakes."""

    def __init__(self, sched: Scheduler) -> None:
        super().__init__()
        self.sched = sched

    def name(self) -> str:
        return "herd wait"

    def _try_switch_active_batch(self) -> None:
        if self.sched.active_batch(_SLEEP) is self:
            self.sched.set_active_batch(_SLEEP, None)

    def _flush(self) -> None:
        items: list[_SleepItem] = self.items  # type: ignore[assignment]
        # Waking a waiter early only makes it re-check sooner.
        time.sleep(min(item.seconds for item in items))
        for item in items:
            item.set_value(None)


def invalidate_item(cache: Cache, key: str | bytes) -> FutureBase[bool]:
    """The request behind ``cache.invalidate(key)``: True once the key is marked stale."""
    raw = cache.encode_key(key)
    discard(cache, raw)
    state = run_state()
    if state is not None:
        slot = (id(cache), raw)
        state.inflight.pop(slot, None)
        # This run reads a miss from now on, not what it wrote before.
        state.remember(cache._write_gate, slot, None)
    return _request(cache, "invalidate", key, raw)


def invalidate_many_task(cache: Cache, keys: list[str | bytes]) -> AsyncTask[bool]:
    for k in keys:
        cache.encode_key(k)  # every key is checked before any is queued
    items = [invalidate_item(cache, k) for k in keys]
    return AsyncTask(_all_true(items), cache.invalidate_many, (keys,), None)


def _all_true(items: list[FutureBase[bool]]) -> Generator[Any, Any, bool]:
    results = yield items
    return all(results)


# -- the cached call ------------------------------------------------------------------------------


def cached_call(
    cache: Cache,
    policy: Policy,
    keyer: Callable[[tuple[Any, ...], dict[str, Any]], str | bytes],
    make_task: Callable[..., FutureBase[Any]],
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Generator[Any, Any, Any]:
    """One call of a cached function with herd protection, a tier or ``none_ttl``."""
    key = keyer(args, kwargs)
    raw = cache.encode_key(key)
    tier = policy.tier
    if tier is not None:
        inner = tier.get(raw)
        if inner is not None:
            return cache._unpack(key, inner)
    got = cache._lookup(key, raw)
    try:
        value = yield got
    except DeserializationError as e:
        _log.warning("%s: recomputing %r: %s", cache.name, key, e)
    else:
        # A hit is a plain value, or a record's value while it may be served (see decode_stored).
        if got.hit:
            record = got.record
            if record is None:
                if tier is not None:
                    tier.put(raw, cache._pack(key, value))
                return value
            now = time.time()
            if not record.invalidated and now < record.fresh_until:  # is_fresh(), inlined
                if tier is not None:
                    tier.put(raw, record.inner)
                return value
            if policy.herd and record.may_serve_stale(now):
                _revalidate_later(cache, policy, key, raw, make_task, args, kwargs)
                return value
    state = run_state()
    slot = (id(cache), raw)
    task = state.inflight.get(slot) if state is not None else None
    if task is None or (task._sched is not None and task._sched is not current_scheduler()):
        if policy.herd:
            gen = _fill(cache, policy, key, raw, make_task, args, kwargs)
        else:
            gen = _compute_plain(cache, policy, key, raw, make_task, args, kwargs)
        task = AsyncTask(gen, fn, args, kwargs)
        if state is not None:
            state.inflight[slot] = task
    return (yield task)


def _value(cache: Cache, key: str | bytes, raw: bytes, inner: bytes, tier: LocalTier | None) -> Any:
    value = cache._unpack(key, inner)
    if tier is not None:
        tier.put(raw, inner)
    return value


def _compute_plain(
    cache: Cache,
    policy: Policy,
    key: str | bytes,
    raw: bytes,
    make_task: Callable[..., FutureBase[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Generator[Any, Any, Any]:
    value = yield make_task(*args, **kwargs)
    inner = _pack_or_none(cache, key, value)
    if inner is not None:
        cache._write(key, raw, inner, policy.ttl_for(value))
        if policy.tier is not None:
            policy.tier.put(raw, inner)
    return value


def _pack_or_none(cache: Cache, key: str | bytes, value: Any) -> bytes | None:
    try:
        return cache._pack(key, value)
    except ValueTooLargeError as e:
        # Data-dependent, not a bug: the caller still gets its value, just uncached.
        _log.warning("%s: not caching %r: %s", cache.name, key, e)
        with cache._stats_lock:
            cache._counters.write_failures += 1
        return None


def _fresh_in(cache: Cache, key: str | bytes, stored: bytes | None, now: float) -> tuple[bool, Any]:
    """(True, value) if ``stored`` (raw bytes from ``gets``) holds a fresh value."""
    if stored is None:
        return False, None
    rec = _record_of(key, stored, cache)
    if rec is not None:
        if rec.is_fresh(now):
            return True, rec.value
        return False, None
    if _is_plain(stored):
        try:
            return True, cache._unpack(key, stored)
        except DeserializationError:
            return False, None
    return False, None


def _fill(
    cache: Cache,
    policy: Policy,
    key: str | bytes,
    raw: bytes,
    make_task: Callable[..., FutureBase[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Generator[Any, Any, Any]:
    """A miss: take the lease and compute, or wait for the winner (bounded), then compute."""
    lease = lease_key(cache, raw)
    start = time.monotonic()
    give_up = start + 2 * policy.lease_ttl
    delay = FIRST_POLL
    won, stored, token = yield _request(cache, "lease", key, raw, lease=lease, ttl=policy.lease_ttl)
    while True:
        fresh, value = _fresh_in(cache, key, stored, time.time())
        if fresh:
            if won:
                _request(cache, "release", key, raw, lease=lease)  # flushed with the round
            if policy.tier is not None:
                policy.tier.put(raw, cache._pack(key, value))
            return value
        if won or time.monotonic() >= give_up:
            break
        # Lost: wait for the winner's write-back, re-checking with the round's lookups.
        yield _sleep(delay)
        delay = min(delay * 1.5, MAX_POLL)
        got = cache._lookup(key, raw)
        try:
            found = yield got
        except DeserializationError:
            pass  # unreadable: as missing (got.hit is False)
        if got.hit:
            record = got.record
            if record is None:
                return found
            now = time.time()
            if record.is_fresh(now):
                if policy.tier is not None:
                    policy.tier.put(raw, record.inner)
                return found
            if record.may_serve_stale(now):
                return found  # invalidated meanwhile; another caller recomputes
        # Still nothing: the winner failed (and released its lease) or its lease ran out.
        won, stored, token = yield _request(
            cache, "lease", key, raw, lease=lease, ttl=policy.lease_ttl
        )
    try:
        value = yield make_task(*args, **kwargs)
    except Exception:
        if won:
            _request(cache, "release", key, raw, lease=lease)  # errors are never cached
        raise
    try:
        inner = _pack_or_none(cache, key, value)
    except Exception:
        if won:
            _request(cache, "release", key, raw, lease=lease)  # a value the serde refuses
        raise
    if inner is None:
        if won:
            _request(cache, "release", key, raw, lease=lease)
        return value
    _write_back(cache, policy, key, raw, inner, value, token, lease if won else None)
    return value


def _write_back(
    cache: Cache,
    policy: Policy,
    key: str | bytes,
    raw: bytes,
    inner: bytes,
    value: Any,
    token: Any,
    lease: bytes | None,
) -> None:
    """Store the value (not waited for: it joins the round and is flushed before the run ends)."""
    ttl = policy.ttl_for(value)
    if policy.stale_ttl == 0:
        # Nothing to serve stale: a record would only repeat memcached's own expiry, and an
        # invalidation leaves a tombstone either way. The plain envelope keeps the warm read of a
        # protected function the same as a plain cached one's.
        data = inner
        hard = min(ttl, MAX_RELATIVE_TTL)
    else:
        data = _stale_record(policy, ttl, inner)
        hard = 0 if ttl == 0 else min(ttl + policy.stale_ttl, MAX_RELATIVE_TTL)
    discard(cache, raw)
    _request(cache, "write", key, raw, data=data, ttl=hard, cas=token)
    if lease is not None:
        _request(cache, "release", key, raw, lease=lease)
    if policy.tier is not None:
        policy.tier.put(raw, inner)


def _stale_record(policy: Policy, ttl: int, inner: bytes) -> bytes:
    """The record of a value that may be served stale: fresh for ``ttl``, then ``stale_ttl``."""
    fresh_until = math.inf if ttl == 0 else time.time() + ttl
    return pack_record(inner, fresh_until, float(policy.stale_ttl), invalidated=False)


# -- stale serving: the recompute in the background -----------------------------------------------


def _revalidate_later(
    cache: Cache,
    policy: Policy,
    key: str | bytes,
    raw: bytes,
    make_task: Callable[..., FutureBase[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Queue the recompute of a stale key; one background thread drains the queue in batches."""
    herd = _herd(cache)
    with herd.lock:
        if raw in herd.revalidating:
            return  # this process already recomputes it
        herd.revalidating.add(raw)
        herd.queue[raw] = (policy, key, make_task, args, kwargs)
        if herd.draining:
            return
        herd.draining = True
    herd.submit(lambda: _drain_queue(cache, herd))


def _drain_queue(cache: Cache, herd: _Herd) -> None:
    """Recompute what the queue holds, a batch per run (one lease request per server for all)."""
    while True:
        with herd.lock:
            work, herd.queue = herd.queue, {}
            if not work:
                herd.draining = False
                return
        try:
            run_sync(AsyncTask(_revalidate_all(cache, work)))
        except Exception as e:  # a bug here must not kill the drainer silently
            _log.error("%s: background recompute failed: %s: %s", cache.name, type(e).__name__, e)
        finally:
            with herd.lock:
                herd.revalidating.difference_update(work)


def _revalidate_all(cache: Cache, work: dict[bytes, tuple[Any, ...]]) -> Generator[Any, Any, None]:
    yield [
        AsyncTask(_revalidate(cache, policy, key, raw, make_task, args, kwargs))
        for raw, (policy, key, make_task, args, kwargs) in work.items()
    ]


def _revalidate(
    cache: Cache,
    policy: Policy,
    key: str | bytes,
    raw: bytes,
    make_task: Callable[..., FutureBase[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Generator[Any, Any, None]:
    lease = lease_key(cache, raw)
    won, stored, token = yield _request(cache, "lease", key, raw, lease=lease, ttl=policy.lease_ttl)
    if not won:
        return  # another process recomputes it
    if _fresh_in(cache, key, stored, time.time())[0]:
        _request(cache, "release", key, raw, lease=lease)
        return
    try:
        value = yield make_task(*args, **kwargs)
    except Exception as e:
        # Never cached; the stale value stays servable until its stale_ttl runs out.
        _request(cache, "release", key, raw, lease=lease)
        _log.warning(
            "%s: recomputing stale %r failed: %s: %s", cache.name, key, type(e).__name__, e
        )
        return
    inner = _pack_or_none(cache, key, value)
    if inner is None:
        _request(cache, "release", key, raw, lease=lease)
        return
    _write_back(cache, policy, key, raw, inner, value, token, lease)
