"""The Cache shared by threads over real memcached processes (issue 11, findings 6 and 7).

Thread-pool web servers share one Cache, and so one client, between request threads. Neither a
plain pymemcache ``Client`` (one socket) nor HashClient's record of failed servers is safe for
that on its own; the Cache must be: every value read is the one written or, with
``on_error="miss"``, a documented miss while a server is down, and nothing but batchq's
documented errors ever reaches request code.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from memcache_fixtures import close_clients, needs_memcached, servers3, track
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient

import batchq
from batchq.memcache import Cache, ServerError
from batchq.testing import MemcachedServer

pytestmark = [pytest.mark.memcached, needs_memcached]
__all__ = ["close_clients", "servers3"]  # fixtures, imported for pytest

THREADS = 6


@pytest.fixture
def switchy() -> Iterator[None]:
    """Switch threads often, so that unsynchronised use of one socket shows up quickly."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def run_threads(worker: Callable[[int], None], seconds: float) -> list[BaseException]:
    """Run ``worker(thread index)`` in THREADS threads until ``seconds`` pass; their errors."""
    errors: list[BaseException] = []
    deadline = time.monotonic() + seconds

    def loop(index: int) -> None:
        while time.monotonic() < deadline:
            try:
                worker(index)
            except BaseException as e:
                errors.append(e)
                return

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def read_your_write_worker(cache: Cache) -> Callable[[int], None]:
    """Each run writes fresh values, then reads them back in a later run: all must match."""
    counter = [0]

    @batchq.asynq()
    def write_then_read(keys: list[str], values: list[int]) -> Any:
        yield [cache.set.asynq(k, v) for k, v in zip(keys, values, strict=True)]
        return None

    def worker(index: int) -> None:
        counter[0] += 1
        keys = [f"t{index}:{i}" for i in range(20)]
        values = [counter[0] * 100 + i for i in range(20)]
        write_then_read(keys, values)
        got = cache.get_many(keys)  # a new run: from the server, not the run's memory
        assert got == dict(zip(keys, values, strict=True)), (
            f"thread {index} read {got} after writing {values}"
        )

    return worker


@pytest.mark.parametrize("on_error", ["miss", "raise"])
def test_a_plain_client_shared_by_threads_reads_every_write(
    servers3: list[MemcachedServer], switchy: None, on_error: Any
) -> None:
    client = track(Client(servers3[0].address, connect_timeout=2, timeout=2))
    cache = Cache(client, on_error=on_error)
    errors = run_threads(read_your_write_worker(cache), seconds=1.0)
    assert errors == []
    assert cache.stats().errors == 0
    assert cache.stats().write_failures == 0
    # Every run that wrote is over: the write gate, opened and closed from every thread, is shut.
    assert cache._write_gate == []


def test_two_caches_over_one_plain_client_in_threads(
    servers3: list[MemcachedServer], switchy: None
) -> None:
    # The socket belongs to the client, not to a Cache: two Caches must not interleave on it.
    client = track(Client(servers3[0].address, connect_timeout=2, timeout=2))
    caches = [Cache(client, key_prefix="a:"), Cache(client, key_prefix="b:")]
    workers = [read_your_write_worker(c) for c in caches]
    errors = run_threads(lambda i: workers[i % 2](i), seconds=1.0)
    assert errors == []
    assert all(c.stats().errors == 0 for c in caches)


@pytest.mark.parametrize("use_pooling", [False, True])
def test_a_hash_client_shared_by_threads_reads_every_write(
    servers3: list[MemcachedServer], switchy: None, use_pooling: bool
) -> None:
    client = track(
        HashClient(
            [s.address for s in servers3], connect_timeout=2, timeout=2, use_pooling=use_pooling
        )
    )
    cache = Cache(client, on_error="raise")
    errors = run_threads(read_your_write_worker(cache), seconds=1.0)
    assert errors == []


def test_a_pooled_client_is_used_without_a_lock(servers3: list[MemcachedServer]) -> None:
    # PooledClient is thread-safe: its threads each use their own connection concurrently.
    client = track(PooledClient(servers3[0].address, connect_timeout=2, timeout=2))
    cache = Cache(client)
    errors = run_threads(read_your_write_worker(cache), seconds=0.3)
    assert errors == []


@pytest.mark.parametrize("use_pooling", [False, True])
def test_a_server_killed_under_threaded_load_leaks_no_pymemcache_error(
    servers3: list[MemcachedServer], use_pooling: bool
) -> None:
    # retry_timeout=0 and a short dead_timeout make HashClient fail, retry, mark dead and revive
    # the killed server over and over while the threads run: its bookkeeping is busiest then.
    client = track(
        HashClient(
            [s.address for s in servers3],
            connect_timeout=0.5,
            timeout=0.5,
            retry_attempts=1,
            retry_timeout=0,
            dead_timeout=0.01,
            use_pooling=use_pooling,
        )
    )
    cache = Cache(client, on_error="miss")
    source_calls = [0]

    @cache.cached(key=lambda n: f"n:{n}")
    def square(n: int) -> int:
        source_calls[0] += 1
        return n * n

    @batchq.asynq()
    def page(base: int) -> Any:
        ns = [base + i for i in range(30)]
        squares = yield [square.asynq(n) for n in ns]
        raw = yield [cache.get.asynq(f"n:{n}") for n in ns]
        return ns, squares, raw

    wrong: list[str] = []
    runs = [0]

    def worker(index: int) -> None:
        runs[0] += 1
        ns, squares, raw = page(index * 7 % 50)
        if squares != [n * n for n in ns]:
            wrong.append(f"computed {squares} for {ns}")
        # A plain read is the value or, while a server is down, a documented miss (None).
        wrong.extend(
            f"read {r!r} for n:{n}" for n, r in zip(ns, raw, strict=True) if r not in (None, n * n)
        )

    killer = threading.Timer(0.3, servers3[1].stop, kwargs={"graceful": False})
    killer.start()
    errors = run_threads(worker, seconds=1.2)
    killer.join()
    assert not servers3[1].running
    assert errors == []  # no KeyError, ValueError or pymemcache error reached request code
    assert wrong == []
    assert runs[0] > 20
    stats = cache.stats()
    assert stats.errors > 0  # the dead server was noticed, as misses
    assert stats.hits > 0  # the live servers kept serving


def test_on_error_raise_gives_server_errors_only(servers3: list[MemcachedServer]) -> None:
    client = track(
        HashClient(
            [s.address for s in servers3],
            connect_timeout=0.5,
            timeout=0.5,
            retry_attempts=1,
            retry_timeout=0,
            dead_timeout=0.01,
        )
    )
    cache = Cache(client, on_error="raise")
    unexpected: list[BaseException] = []
    seen_server_errors = [0]
    reads = [0]

    def worker(index: int) -> None:
        keys = [f"k{index}:{i}" for i in range(30)]
        try:
            cache.set_many(dict.fromkeys(keys, index))
            got = cache.get_many(keys)
        except ServerError:
            seen_server_errors[0] += 1
            return
        except Exception as e:
            unexpected.append(e)
            return
        # Keys move between servers as HashClient marks one dead or revives it, so a key written
        # just before may be missing; a value read is always the one written.
        if any(value != index for value in got.values()) or not set(got) <= set(keys):
            unexpected.append(AssertionError(f"thread {index} read {got}"))
        reads[0] += len(got)

    killer = threading.Timer(0.3, servers3[2].stop, kwargs={"graceful": False})
    killer.start()
    errors = run_threads(worker, seconds=1.2)
    killer.join()
    assert errors == []
    assert unexpected == []
    assert seen_server_errors[0] > 0
    assert reads[0] > 0
