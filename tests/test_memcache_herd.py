"""Cached functions under load (issue 13): one recompute per key across threads, asyncio requests
and processes; a crashed or failing winner; invalidation racing a write-back; stale serving
bounded by ``stale_ttl``; ``none_ttl``; the in-process tier. Every behaviour runs on the embedded
LocalClient and on real memcached processes (a pooled client, and a three-server HashClient where
a key's lease and its value live on different servers), and on pylibmc (one server, three routed
by libmemcached, and a pool of clients that threads share); processes with pymemcache and pylibmc
clients share one server."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from memcache_fixtures import (
    Counting,
    close_clients,
    needs_memcached,
    needs_pylibmc,
    pylibmc_of,
    track,
)
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.client.retrying import RetryingClient

import batchq
from batchq.memcache import Cache, LocalClient, pylibmc_client
from batchq.memcache._herd import lease_key
from batchq.memcache._record import parse_record
from batchq.testing import MemcachedServer

__all__ = ["close_clients"]  # fixture, imported for pytest

BACKENDS = [
    "local",
    pytest.param("memcached", marks=[pytest.mark.memcached, needs_memcached]),
    pytest.param("hash3", marks=[pytest.mark.memcached, needs_memcached]),
    pytest.param("pylibmc", marks=[pytest.mark.memcached, needs_memcached, needs_pylibmc]),
    pytest.param("pylibmc3", marks=[pytest.mark.memcached, needs_memcached, needs_pylibmc]),
    pytest.param("pylibmc-pool", marks=[pytest.mark.memcached, needs_memcached, needs_pylibmc]),
]


@pytest.fixture(scope="module")
def servers() -> Iterator[list[MemcachedServer]]:
    if needs_memcached.args[0]:  # no memcached binary: only the "local" backend runs
        yield []
        return
    running = [MemcachedServer().start() for _ in range(3)]
    yield running
    for server in running:
        server.stop(graceful=False)


_prefixes = itertools.count()


def fresh_prefix() -> str:
    """A key prefix no earlier test used: the servers are shared by the module's tests (and
    memcached's flush_all spares items written in the last second)."""
    return f"t{next(_prefixes)}-{time.time_ns()}:"


def make_client(backend: str, servers: list[MemcachedServer]) -> Any:
    if backend == "local":
        return LocalClient()
    if backend == "memcached":
        return track(PooledClient(servers[0].address, max_pool_size=32, timeout=2))
    if backend == "pylibmc":
        return pylibmc_of(servers[0])
    if backend == "pylibmc3":
        return pylibmc_of(*servers)
    if backend == "pylibmc-pool":
        return track(
            pylibmc_client([f"{s.address[0]}:{s.address[1]}" for s in servers], pool_size=8)
        )
    return track(
        HashClient([s.address for s in servers], use_pooling=True, max_pool_size=32, timeout=2)
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cache(backend: str, request: pytest.FixtureRequest) -> Cache:
    servers = request.getfixturevalue("servers") if backend != "local" else []
    return Cache(make_client(backend, servers), key_prefix=fresh_prefix())


class Source:
    """The expensive thing behind a cached function: counts calls per key, can block or fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: Counter[Any] = Counter()
        self.lock = threading.Lock()
        self.version = 0
        self.fail: set[Any] = set()
        self.fail_once: set[Any] = set()  # the next call of these keys fails
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, key: Any) -> Any:
        with self.lock:
            self.calls[key] += 1
            version = self.version
            failing = key in self.fail or key in self.fail_once
            self.fail_once.discard(key)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        if self.delay:
            time.sleep(self.delay)
        if failing:
            msg = f"source failed for {key!r}"
            raise RuntimeError(msg)
        return f"{key}@v{version}"


def run_threads(n: int, target: Callable[[], Any]) -> list[Any]:
    """Start ``n`` threads at one barrier; their results (re-raising the first error)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def body(i: int) -> None:
        barrier.wait(5)
        try:
            results[i] = target()
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a thread was still waiting after 30 s"
    if errors:
        raise errors[0]
    return results


# -- herd protection ------------------------------------------------------------------------------


def test_threads_missing_together_call_the_source_once_per_key(cache: Cache) -> None:
    source = Source(delay=0.05)

    @cache.cached(ttl=60, herd=True, key=lambda k: f"herd:{k}")
    def value(k: int) -> Any:
        return source(k)

    @batchq.asynq()
    def page() -> Any:
        return (yield [value.asynq(k) for k in range(10)])

    results = run_threads(8, page)
    expected = [f"{k}@v0" for k in range(10)]
    assert results == [expected] * 8
    assert source.calls == dict.fromkeys(range(10), 1)
    # The lease is released with the write-back.
    assert cache.client.get(lease_key(cache, cache.encode_key("herd:3")).decode()) is None


class _CountingAdds(Client):
    """A real pymemcache Client that counts its add commands: pipelined, and one at a time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipelined_adds: list[int] = []
        self.single_adds = 0

    def _store_cmd(self, name: bytes, values: Any, *args: Any, **kwargs: Any) -> Any:
        if name == b"add":
            self.pipelined_adds.append(len(values))
        return super()._store_cmd(name, values, *args, **kwargs)

    def add(self, *args: Any, **kwargs: Any) -> Any:
        self.single_adds += 1
        return super().add(*args, **kwargs)


@pytest.mark.memcached
@needs_memcached
@pytest.mark.parametrize("retrying", [False, True], ids=["Client", "RetryingClient"])
def test_a_rounds_adds_go_in_one_write_per_server(
    servers: list[MemcachedServer], retrying: bool
) -> None:
    client = track(_CountingAdds(servers[0].address, timeout=2))
    cache = Cache(RetryingClient(client) if retrying else client, key_prefix=fresh_prefix())
    source = Source()

    @cache.cached(ttl=60, herd=True, key=lambda k: f"pipe:{k}")
    def value(k: int) -> Any:
        return source(k)

    @batchq.asynq()
    def page() -> Any:
        return (yield [value.asynq(k) for k in range(20)])

    assert page() == [f"{k}@v0" for k in range(20)]
    # The 20 leases in one write, then the 20 values (nothing was stored: add) in one write.
    assert (client.pipelined_adds, client.single_adds) == ([20, 20], 0)
    assert page() == [f"{k}@v0" for k in range(20)]
    assert source.calls == dict.fromkeys(range(20), 1)


def test_asyncio_requests_missing_together_call_the_source_once(cache: Cache) -> None:
    source = Source(delay=0.05)

    @cache.cached(ttl=60, herd=True, key=lambda k: f"aio:{k}")
    def value(k: int) -> Any:
        return source(k)

    async def main() -> list[Any]:
        return await asyncio.gather(*(value.asyncio(k % 3) for k in range(12)))

    # Three event loops (each its own driver, as three servers' processes would be), each with
    # twelve concurrent requests: the losers wait on asyncio timers.
    results = run_threads(3, lambda: asyncio.run(main()))
    assert results == [[f"{k % 3}@v0" for k in range(12)]] * 3
    assert source.calls == {0: 1, 1: 1, 2: 1}


@pytest.mark.parametrize("backend", BACKENDS[:2])
def test_warm_values_cost_one_get_many_and_nothing_else(
    backend: str, request: pytest.FixtureRequest
) -> None:
    servers = request.getfixturevalue("servers") if backend != "local" else []
    counting = Counting(make_client(backend, servers))
    cache = Cache(counting, key_prefix=fresh_prefix())
    source = Source()

    @cache.cached(ttl=60, herd=True, key=lambda k: f"warm:{k}")
    def value(k: int) -> Any:
        return source(k)

    @batchq.asynq()
    def page() -> Any:
        return (yield [value.asynq(k) for k in range(20)])

    page()
    counting.calls.clear()
    assert page() == [f"{k}@v0" for k in range(20)]
    assert dict(counting.calls) == {"get_many": 1}
    assert sum(source.calls.values()) == 20


def test_a_winner_that_crashed_blocks_the_others_at_most_its_lease(cache: Cache) -> None:
    source = Source()

    @cache.cached(ttl=60, herd=True, lease_ttl=2, key=lambda k: f"crash:{k}")
    def value(k: int) -> Any:
        return source(k)

    # A winner that took the lease and died before writing (its process is gone).
    # (As a str: a HashClient routes str keys as the Cache does.)
    lease = lease_key(cache, cache.encode_key("crash:1")).decode()
    assert cache.client.add(lease, b"1", 2, noreply=False)
    started = time.monotonic()
    results = run_threads(4, lambda: value(1))
    waited = time.monotonic() - started
    assert results == ["1@v0"] * 4
    assert source.calls[1] == 1  # the lease ran out, and then only one caller computed
    # They waited for the dead winner's lease (2 s; memcached counts whole seconds, so 1-2 s).
    assert waited >= 0.9


def test_a_failing_compute_releases_its_lease_and_is_never_cached(cache: Cache) -> None:
    source = Source()
    source.gate = threading.Event()
    source.fail_once.add(1)

    @cache.cached(ttl=60, herd=True, lease_ttl=30, key=lambda k: f"fail:{k}")
    def value(k: int) -> Any:
        return source(k)

    outcome: list[Any] = []

    def first() -> None:
        try:
            value(1)
        except RuntimeError as e:
            outcome.append(e)

    winner = threading.Thread(target=first)
    winner.start()
    assert source.entered.wait(5)

    waiter = threading.Thread(target=lambda: outcome.append(value(1)))
    waiter.start()
    time.sleep(0.1)  # the second caller is waiting on the first's lease
    assert source.calls[1] == 1
    started = time.monotonic()
    source.gate.set()
    winner.join(10)
    waiter.join(10)
    assert len(outcome) == 2
    assert isinstance(outcome[0], RuntimeError)
    assert outcome[1] == "1@v0"
    assert source.calls[1] == 2
    # Far sooner than the 30 s lease: the failure released it.
    assert time.monotonic() - started < 10


def _process_worker(
    address: tuple[str, int], prefix: str, barrier: Any, out: Any, delay: float, kind: str
) -> None:
    if kind == "pylibmc":
        client = pylibmc_client([f"{address[0]}:{address[1]}"], timeout=2)
    else:
        client = PooledClient(address, max_pool_size=4, timeout=2)
    cache = Cache(client, key_prefix=prefix)
    computed: list[int] = []

    @cache.cached(ttl=60, herd=True, key=lambda k: f"proc:{k}")
    def value(k: int) -> Any:
        computed.append(k)
        time.sleep(delay)
        return k * 10

    @batchq.asynq()
    def page() -> Any:
        return (yield [value.asynq(k) for k in range(12)])

    barrier.wait(30)
    out.put((page(), computed))


@pytest.mark.memcached
@needs_memcached
@pytest.mark.parametrize(
    "kinds",
    [
        pytest.param(["pymemcache"] * 4, id="pymemcache"),
        pytest.param(["pymemcache", "pylibmc"] * 2, marks=needs_pylibmc, id="mixed-clients"),
    ],
)
def test_processes_missing_together_call_the_source_once_per_key(
    servers: list[MemcachedServer], kinds: list[str]
) -> None:
    prefix = fresh_prefix()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    out = ctx.Queue()
    address = servers[0].address
    procs = [
        ctx.Process(target=_process_worker, args=(address, prefix, barrier, out, 0.03, kind))
        for kind in kinds
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    assert all(page == [k * 10 for k in range(12)] for page, _ in results)
    computed = Counter(k for _, keys in results for k in keys)
    assert computed == dict.fromkeys(range(12), 1)


def _crashing_worker(address: tuple[str, int], prefix: str, entered: Any) -> None:
    cache = Cache(PooledClient(address, timeout=2), key_prefix=prefix)

    @cache.cached(ttl=60, herd=True, lease_ttl=2, key=lambda k: f"dies:{k}")
    def value(k: int) -> Any:
        entered.set()  # it holds the lease now ...
        time.sleep(0.2)
        os._exit(1)  # ... and its process dies before writing anything

    value(1)


@pytest.mark.memcached
@needs_memcached
def test_a_winner_process_that_dies_mid_compute_is_replaced_after_its_lease(
    servers: list[MemcachedServer],
) -> None:
    prefix = fresh_prefix()
    ctx = multiprocessing.get_context("spawn")
    entered = ctx.Event()
    proc = ctx.Process(target=_crashing_worker, args=(servers[0].address, prefix, entered))
    proc.start()
    assert entered.wait(30)
    started = time.monotonic()
    cache = Cache(make_client("memcached", servers), key_prefix=prefix)
    source = Source()

    @cache.cached(ttl=60, herd=True, lease_ttl=2, key=lambda k: f"dies:{k}")
    def value(k: int) -> Any:
        return source(k)

    results = run_threads(3, lambda: value(1))
    proc.join(10)
    assert proc.exitcode == 1
    assert results == ["1@v0"] * 3
    assert source.calls[1] == 1
    assert time.monotonic() - started >= 0.9  # they waited for the dead process's lease


# -- invalidation ---------------------------------------------------------------------------------


def test_invalidate_makes_the_next_call_recompute(cache: Cache) -> None:
    source = Source()

    @cache.cached(ttl=60, herd=True, key=lambda k: f"inv:{k}")
    def value(k: int) -> Any:
        return source(k)

    assert value(1) == "1@v0"
    source.version = 1
    assert value(1) == "1@v0"  # cached
    assert value.invalidate(1) is True
    assert value(1) == "1@v1"
    assert source.calls[1] == 2
    # Without stale_ttl the value is stored plain, as cache.set stores it (a record would add
    # nothing); the invalidation's tombstone was replaced.
    raw = cache.encode_key(value.cache_key(1))
    stored = cache.client.get(raw.decode())
    assert stored == cache._pack(raw, "1@v1")
    assert cache.get(value.cache_key(1)) == "1@v1"


def test_a_value_that_may_be_served_stale_is_stored_in_a_record(cache: Cache) -> None:
    @cache.cached(ttl=60, stale_ttl=30, key=lambda k: f"rec:{k}")
    def value(k: int) -> Any:
        return f"{k}!"

    assert value(1) == "1!"
    raw = cache.encode_key(value.cache_key(1))
    stored = cache.client.get(raw.decode())
    record = parse_record(raw, stored, cache.serde)
    assert record.is_fresh(time.time())
    assert (record.value, record.stale_span) == ("1!", 30.0)
    assert 59 < record.fresh_until - time.time() <= 60


@pytest.mark.parametrize("present", [False, True], ids=["absent", "stale-present"])
def test_invalidation_racing_a_write_back_never_leaves_the_old_value_fresh(
    cache: Cache, present: bool
) -> None:
    source = Source()

    @cache.cached(ttl=60, herd=True, key=lambda k: f"race:{k}")
    def value(k: int) -> Any:
        return source(k)

    if present:
        # The key holds an invalidated record (a tombstone): the write-back goes through cas.
        assert value(1) == "1@v0"
        assert value.invalidate(1) is True
    source.gate = threading.Event()
    source.entered.clear()
    result: list[Any] = []
    computing = threading.Thread(target=lambda: result.append(value(1)))
    computing.start()
    assert source.entered.wait(5)  # it read the data ("v0"), and now stalls before writing
    source.version = 1  # the data changes ...
    assert cache.invalidate(value.cache_key(1)) is True  # ... and is invalidated
    source.gate.set()
    computing.join(10)
    assert result == ["1@v0"]  # the caller that computed gets what it computed
    source.gate = None
    # But the old value was not stored as fresh: the next call recomputes.
    assert value(1) == "1@v1"


def test_invalidate_many_and_errors(cache: Cache) -> None:
    source = Source()

    @cache.cached(ttl=60, herd=True, key=lambda k: f"many:{k}")
    def value(k: int) -> Any:
        return source(k)

    assert [value(k) for k in range(3)] == ["0@v0", "1@v0", "2@v0"]
    source.version = 1
    assert cache.invalidate_many([value.cache_key(k) for k in range(2)]) is True
    assert [value(k) for k in range(3)] == ["0@v1", "1@v1", "2@v0"]
    with pytest.raises(TypeError, match=r"invalidate_many\(\['many:1'\]\)"):
        cache.invalidate_many("many:1")


def test_get_reads_a_protected_key_as_the_function_does(cache: Cache) -> None:
    """``cache.get``/``get_many`` of a herd record: its value while the function would serve it
    (fresh, or stale within stale_ttl), a miss once it would not (a tombstone, or past it)."""
    source = Source()

    @cache.cached(ttl=60, stale_ttl=30, key=lambda k: f"getrec:{k}")
    def stale(k: int) -> Any:
        return source(k)

    @cache.cached(ttl=60, herd=True, key=lambda k: f"getherd:{k}")
    def herd(k: int) -> Any:
        return source(k)

    assert (stale(1), herd(1)) == ("1@v0", "1@v0")
    keys = [stale.cache_key(1), herd.cache_key(1)]
    assert [cache.get(k) for k in keys] == ["1@v0", "1@v0"]
    assert cache.get_many(keys) == dict.fromkeys(keys, "1@v0")
    # Invalidated: the stale record still serves its value; without stale_ttl it is a miss.
    assert cache.invalidate_many(keys) is True
    assert cache.get(keys[0]) == "1@v0"
    cache.reset_stats()
    assert cache.get(keys[1], "absent") == "absent"
    assert cache.get_many(keys) == {keys[0]: "1@v0"}
    assert cache.stats().misses == 2
    # Where nothing was stored an invalidation leaves a tombstone: a miss, never its bytes.
    assert cache.invalidate("getrec:never-written") is True
    assert cache.get("getrec:never-written") is None


# -- stale serving --------------------------------------------------------------------------------


def test_stale_values_are_served_while_one_caller_recomputes(cache: Cache) -> None:
    source = Source()

    @cache.cached(ttl=1, stale_ttl=30, key=lambda k: f"stale:{k}")
    def value(k: int) -> Any:
        return source(k)

    assert value(1) == "1@v0"
    source.version = 1
    assert value.invalidate(1) is True
    source.gate = threading.Event()  # the recompute stalls: nobody may wait for it
    source.entered.clear()
    results = run_threads(6, lambda: value(1))
    assert results == ["1@v0"] * 6  # all served the stale value at once
    assert source.entered.wait(5)
    source.gate.set()
    cache.drain(10)
    assert source.calls[1] == 2  # one recompute for the six stale reads
    assert value(1) == "1@v1"


@pytest.mark.parametrize("backend", BACKENDS[:2])  # a cluster adds nothing here but 2 s
def test_stale_serving_is_bounded_by_stale_ttl(cache: Cache) -> None:
    source = Source()

    @cache.cached(ttl=1, stale_ttl=1, key=lambda k: f"bound:{k}")
    def value(k: int) -> Any:
        return source(k)

    assert value(1) == "1@v0"
    source.version = 1
    source.fail.add(1)  # recomputes fail: the stale value stays as long as it may
    time.sleep(1.1)  # past ttl, inside stale_ttl
    assert value(1) == "1@v0"
    cache.drain(10)
    assert source.calls[1] == 2  # the background recompute ran (and failed, uncached)
    time.sleep(1.1)  # past ttl + stale_ttl: never served again
    with pytest.raises(RuntimeError, match="source failed"):
        value(1)
    source.fail.clear()
    assert value(1) == "1@v1"


def test_drain_waits_for_the_background_recomputes() -> None:
    cache = Cache(LocalClient(), name="drained")
    cache.drain()  # nothing ever ran in the background: returns at once
    source = Source()

    @cache.cached(ttl=60, stale_ttl=60, key=lambda k: f"drain:{k}")
    def value(k: int) -> Any:
        return source(k)

    assert value(1) == "1@v0"
    source.version = 1
    value.invalidate(1)
    source.gate = threading.Event()
    source.entered.clear()
    assert value(1) == "1@v0"  # stale; the recompute starts in the background and stalls
    assert source.entered.wait(5)
    with pytest.raises(TimeoutError, match=r"background recomputes of drained still running"):
        cache.drain(timeout=0.05)
    source.gate.set()
    cache.drain()
    assert cache.get(value.cache_key(1)) == "1@v1"  # written by the time drain returns
    with pytest.raises(ValueError, match=r"drain\(timeout=...\) takes seconds >= 0.*got -1"):
        cache.drain(-1)


# -- none_ttl -------------------------------------------------------------------------------------


def test_none_is_cached_with_its_own_ttl() -> None:
    now = [1000.0]
    cache = Cache(LocalClient(clock=lambda: now[0]))
    found: dict[int, Any] = {1: "one"}
    calls: Counter[int] = Counter()

    @cache.cached(ttl=3600, none_ttl=5, key=lambda k: f"user:{k}")
    def user(k: int) -> Any:
        calls[k] += 1
        return found.get(k)

    assert (user(1), user(2)) == ("one", None)
    assert (user(1), user(2)) == ("one", None)
    assert calls == {1: 1, 2: 1}  # "not found" is cached too
    found[2] = "two"
    now[0] += 6  # past none_ttl, well inside ttl
    assert (user(1), user(2)) == ("one", "two")
    assert calls == {1: 1, 2: 2}


@pytest.mark.memcached
@needs_memcached
def test_none_ttl_with_herd_on_memcached(servers: list[MemcachedServer]) -> None:
    cache = Cache(make_client("memcached", servers), key_prefix=fresh_prefix())
    found: dict[int, Any] = {}
    calls: Counter[int] = Counter()

    @cache.cached(ttl=60, none_ttl=1, herd=True, key=lambda k: f"neg:{k}")
    def user(k: int) -> Any:
        calls[k] += 1
        return found.get(k)

    assert user(7) is None
    assert user(7) is None
    found[7] = "seven"
    time.sleep(1.1)
    assert user(7) == "seven"
    assert calls[7] == 2


# -- the in-process tier --------------------------------------------------------------------------


def test_the_local_tier_is_bounded_and_skips_the_round_trip() -> None:
    counting = Counting(LocalClient())
    cache = Cache(counting)
    source = Source()

    @cache.cached(ttl=60, local_ttl=30, local_max=3, key=lambda k: f"tier:{k}")
    def value(k: int) -> Any:
        return source(k)

    assert [value(k) for k in range(5)] == [f"{k}@v0" for k in range(5)]
    counting.calls.clear()
    assert [value(k) for k in (2, 3, 4)] == ["2@v0", "3@v0", "4@v0"]
    assert counting.calls["get_many"] == 0  # the three most recent: in the tier
    assert value(0) == "0@v0"
    assert counting.calls["get_many"] == 1  # evicted from the tier (bound 3): read from the cache


@pytest.mark.parametrize("how", ["invalidate", "delete", "set"])
def test_writes_in_this_process_clear_the_tier(how: str) -> None:
    cache = Cache(LocalClient())
    source = Source()

    @cache.cached(ttl=60, herd=True, local_ttl=30, key=lambda k: f"tclear:{k}")
    def value(k: int) -> Any:
        return source(k)

    assert value(1) == "1@v0"
    source.version = 1
    assert value(1) == "1@v0"
    key = value.cache_key(1)
    if how == "invalidate":
        value.invalidate(1)
    elif how == "delete":
        cache.delete(key)
    else:
        cache.set(key, "written")
    expected = "written" if how == "set" else "1@v1"
    assert value(1) == expected


def test_other_processes_writes_reach_the_tier_after_local_ttl() -> None:
    shared = LocalClient()
    here, there = Cache(shared), Cache(shared)  # two processes' Caches on one server
    source = Source()

    def define(cache: Cache) -> Any:
        @cache.cached(ttl=60, herd=True, local_ttl=0.3, key=lambda k: f"xproc:{k}")
        def value(k: int) -> Any:
            return source(k)

        return value

    local, remote = define(here), define(there)
    assert local(1) == "1@v0"
    source.version = 1
    remote.invalidate(1)
    assert remote(1) == "1@v1"
    assert local(1) == "1@v0"  # this process's tier: stale up to local_ttl
    time.sleep(0.35)
    assert local(1) == "1@v1"


# -- options --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lease_ttl": 0}, ValueError, r"lease_ttl=0.*at least 1 second"),
        ({"stale_ttl": -1}, ValueError, r"stale_ttl=...\) takes a number of seconds >= 0, got -1"),
        ({"none_ttl": 1.5}, TypeError, r"none_ttl=...\) takes a whole number of seconds, got 1.5"),
        ({"herd": "yes"}, TypeError, r"herd=...\) is True or False, got 'yes'"),
        ({"local_ttl": -1}, ValueError, r"local_ttl=...\) takes seconds >= 0"),
        ({"local_ttl": 1, "local_max": 0}, ValueError, r"local_max=...\).*got 0"),
        # Seconds from now, so at most 30 days: memcached reads more as a unix time (a lease
        # of 31 days would be one in 1970, already expired: no caller would ever wait).
        ({"lease_ttl": 31 * 86400}, ValueError, r"lease_ttl=...\) takes at most 2592000"),
        ({"none_ttl": 2592001}, ValueError, r"none_ttl=...\) takes at most 2592000 .*2592001"),
        (
            {"ttl": 20 * 86400, "stale_ttl": 11 * 86400},
            ValueError,
            r"ttl=1728000, stale_ttl=950400\).*at most 2592000 seconds",
        ),
        ({"ttl": 40 * 86400, "herd": True}, ValueError, r"ttl \+ stale_ttl is how long.*30 days"),
    ],
)
def test_bad_options_are_clear_errors(kwargs: dict[str, Any], error: type, match: str) -> None:
    cache = Cache(LocalClient())
    with pytest.raises(error, match=match):
        cache.cached(**kwargs)


def test_the_longest_options_are_taken() -> None:
    cache = Cache(LocalClient())
    cache.cached(ttl=20 * 86400, stale_ttl=10 * 86400, lease_ttl=2592000, none_ttl=2592000)
    cache.cached(ttl=2**31 - 1)  # no herd: a unix time, as memcached reads it


def test_localclient_cas_follows_memcached() -> None:
    client = LocalClient(default_noreply=False)
    assert client.gets("k") == (None, None)
    assert client.cas("k", b"v", b"1") is None  # NOT_FOUND
    client.set("k", b"a")
    value, token = client.gets("k")
    assert value == b"a"
    assert isinstance(token, bytes)
    client.set("k", b"b")  # any write changes the token
    assert client.cas("k", b"c", token) is False  # EXISTS
    value, token = client.gets("k")
    assert client.cas("k", b"c", token) is True
    assert client.get("k") == b"c"
    with pytest.raises(ValueError, match=r"cas token is the digits gets\(\) returned"):
        client.cas("k", b"d", b"x1")


def test_the_record_reads_the_caches_envelope() -> None:
    from batchq.memcache import _envelope, _record

    assert _record.ENVELOPE_MAGIC == _envelope.MAGIC
    assert len(_record.ENVELOPE_MAGIC) + 4 == _envelope.HEADER


def test_one_lease_taken_twice_in_one_round_has_one_winner() -> None:
    from batchq.memcache._herd import _request

    cache = Cache(LocalClient())
    raw = cache.encode_key("twice")
    lease = lease_key(cache, raw)

    @batchq.asynq()
    def both() -> Any:
        # Two requests for the same lease in one round, as two asyncio requests of one driver
        # (in different contexts, so neither sees the other's computation) would make.
        first = _request(cache, "lease", "twice", raw, lease=lease, ttl=5)
        second = _request(cache, "lease", "twice", raw, lease=lease, ttl=5)
        return (yield [first, second])

    outcomes = both()
    assert [won for won, _, _ in outcomes] == [True, False]
