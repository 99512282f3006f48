"""The pylibmc client and PylibmcPool as production code misuses them, against real memcached:
closing a pool while threads use it, pools over unsafe clients, errors raised inside a call,
a server that restarts while the clients are in use, and mixing clients in the herd path."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from memcache_fixtures import close_clients, needs_memcached, needs_pylibmc, server1, track
from pymemcache.client.base import PooledClient

from batchq.memcache import Cache, PylibmcPool, SerializationError, pylibmc_client
from batchq.memcache._herd import lease_key
from batchq.testing import MemcachedServer

try:
    import pylibmc
except ImportError:
    pylibmc = None

__all__ = ["close_clients", "server1"]  # fixtures, imported for pytest


def real(test: Any) -> Any:
    """A test against real memcached through pylibmc: skipped, saying why, without either."""
    return pytest.mark.memcached(needs_memcached(needs_pylibmc(test)))


def address(server: MemcachedServer) -> str:
    return f"127.0.0.1:{server.port}"


class Held:
    """Makes every client of a pool block inside ``get_multi`` until ``release`` is set, and
    records which client each thread holds and every ``disconnect_all``, with who held it then."""

    def __init__(self, pool: PylibmcPool) -> None:
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.lock = threading.Lock()
        self.in_use: Counter[int] = Counter()
        self.disconnects: list[tuple[int, int]] = []  # (client, threads using it at the time)
        for client in pool.clients:
            client.get_multi = self._get_multi(client, client.get_multi)
            client.disconnect_all = self._disconnect(client, client.disconnect_all)

    def _get_multi(self, client: Any, real_get: Any) -> Any:
        def get_multi(keys: Any) -> Any:
            with self.lock:
                self.in_use[id(client)] += 1
            self.entered.release()
            try:
                assert self.release.wait(10), "the test never released the call"
                return real_get(keys)
            finally:
                with self.lock:
                    self.in_use[id(client)] -= 1

        return get_multi

    def _disconnect(self, client: Any, real_disconnect: Any) -> Any:
        def disconnect_all() -> None:
            with self.lock:
                self.disconnects.append((id(client), self.in_use[id(client)]))
            real_disconnect()

        return disconnect_all


# -- the pool: close, unsafe clients, errors inside a call ----------------------------------------


@real
def test_closing_a_pool_never_disconnects_a_client_a_thread_is_using(
    server1: MemcachedServer,
) -> None:
    # libmemcached frees a client's connections on disconnect: doing that under a thread that
    # is reading from them crashed the process (a segfault with 4 threads and close() in a loop).
    pool = track(pylibmc_client([address(server1)], pool_size=3))
    cache = Cache(pool)
    assert cache.set("k", "v") is True
    held = Held(pool)
    results: list[Any] = []
    reader = threading.Thread(target=lambda: results.append(cache.get("k")))
    reader.start()
    assert held.entered.acquire(timeout=10)
    busy = next(id(c) for c in pool.clients if held.in_use[id(c)])
    pool.close()
    closed_at_once = [client for client, _ in held.disconnects]
    held.release.set()
    reader.join(10)
    assert results == ["v"]
    assert sorted(closed_at_once) == sorted(id(c) for c in pool.clients if id(c) != busy)
    # The busy client was disconnected too, once its thread gave it back, and nobody used it then.
    assert sorted(held.disconnects) == sorted((id(c), 0) for c in pool.clients)
    assert sorted(map(id, pool._idle)) == sorted(map(id, pool.clients))
    assert cache.get("k") == "v"  # reconnects on use


@real
def test_a_pool_refuses_a_client_that_would_unpickle(server1: MemcachedServer) -> None:
    # The Cache refuses a plain pylibmc.Client; a pool over one must not slip it past.
    plain = pylibmc.Client([address(server1)], binary=True)
    with pytest.raises(TypeError, match=r"unpickles values stored with its pickle flag"):
        PylibmcPool(plain, 2)
    with pytest.raises(TypeError, match=r"client made by batchq.memcache.pylibmc_client.*'x'"):
        PylibmcPool("x", 2)
    client = track(pylibmc_client([address(server1)]))
    for size in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match=rf"size is how many clients, .* got {size!r}"):
            PylibmcPool(client, size)
    assert len(PylibmcPool(client, 2).clients) == 2


@real
@pytest.mark.parametrize("error", [RuntimeError("bug"), KeyboardInterrupt()])
def test_an_error_inside_a_call_gives_the_client_back(
    server1: MemcachedServer, error: BaseException
) -> None:
    pool = track(pylibmc_client([address(server1)], pool_size=2))
    cache = Cache(pool, on_error="raise")
    assert cache.set("k", 1) is True
    for client in pool.clients:

        def get_multi(keys: Any) -> Any:
            raise error

        client.get_multi = get_multi
    for _ in range(3):  # more calls than clients: a client not given back would hang the third
        with pytest.raises(type(error)):
            cache.get("k")
    assert sorted(map(id, pool._idle)) == sorted(map(id, pool.clients))
    for client in pool.clients:
        del client.get_multi
    assert cache.get("k") == 1


# -- a server that restarts while the clients are in use ------------------------------------------


@real
def test_a_pool_uses_a_restarted_server_again_while_calls_keep_coming(
    server1: MemcachedServer,
) -> None:
    # libmemcached 1.0 (pylibmc's wheel) tries a failed server again once retry_timeout has
    # passed *without calls*: a client asked more often than that never did, so a busy process
    # read misses until it restarted. Each client of the pool recovers (see _reconnecting).
    pool = track(
        pylibmc_client([address(server1)], timeout=0.5, behaviors={"retry_timeout": 1}, pool_size=3)
    )
    cache = Cache(pool)
    assert cache.set("k", 1) is True
    before = list(pool.clients)
    server1.stop(graceful=False)
    assert cache.set("k", 2) is False
    # Calls keep coming every 0.25 s (well inside retry_timeout) while memcached restarts and
    # after: libmemcached's wait never runs out on its own.
    restarting = threading.Thread(target=server1.restart, kwargs={"graceful": False})
    restarting.start()
    while restarting.is_alive():
        cache.set("k", 2)
        threading.Event().wait(0.25)
    tries = 0
    while cache.set("k", 3) is not True:
        tries += 1
        assert tries < 40, "the pool never tried the restarted server again"  # 10 timeouts
        threading.Event().wait(0.25)
    assert cache.get("k") == 3
    assert pool.clients == before
    assert sorted(map(id, pool._idle)) == sorted(map(id, pool.clients))


# -- the herd path through a pool, next to pymemcache ---------------------------------------------


@real
def test_threads_on_a_pool_and_on_pymemcache_compute_each_key_once(
    server1: MemcachedServer,
) -> None:
    # Leases are add and cas on the one server, whichever client sends them: threads of one
    # process, half on a PylibmcPool and half on a pymemcache PooledClient, share them.
    caches = [
        Cache(track(pylibmc_client([address(server1)], pool_size=4)), key_prefix="mix:"),
        Cache(track(PooledClient(server1.address, max_pool_size=4, timeout=2)), key_prefix="mix:"),
    ]
    computed: Counter[int] = Counter()
    lock = threading.Lock()
    entered = threading.Barrier(8)
    functions = []
    for cache in caches:

        @cache.cached(ttl=60, herd=True, key=lambda k: f"k{k}")
        def value(k: int) -> int:
            with lock:
                computed[k] += 1
            threading.Event().wait(0.05)  # long enough for the other threads to miss too
            return k * 10

        functions.append(value)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            entered.wait(10)
            results.append([functions[i % 2](k) for k in range(8)])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert results == [[k * 10 for k in range(8)]] * 8
    assert computed == dict.fromkeys(range(8), 1)


@real
def test_a_value_the_serde_refuses_releases_the_lease(server1: MemcachedServer) -> None:
    # The winner's value cannot be stored (JSON has no tuple): the caller gets the error, and the
    # lease goes, as after a failing compute; kept, it made every other caller wait lease_ttl.
    pool = track(pylibmc_client([address(server1)], pool_size=2))
    cache = Cache(pool, key_prefix="ser:")

    @cache.cached(ttl=60, herd=True, lease_ttl=30, key=lambda k: f"t{k}")
    def pair(k: int) -> Any:
        return (k, k)

    with pytest.raises(SerializationError, match=r"value is a tuple"):
        pair(1)
    lease = lease_key(cache, cache.encode_key("t1"))
    assert pool.add(lease, b"1", 30) is True  # nobody holds it: the next caller can take it
