"""The Cache on pylibmc (the C client) against real memcached: rounds, faults, keys, envelope,
and never unpickling what another writer stored with pylibmc's pickle flag."""

from __future__ import annotations

import ast
import asyncio
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from memcache_fixtures import (
    Counting,
    close_clients,
    expected_page,
    make_page,
    needs_memcached,
    needs_pylibmc,
    page_data,
    pylibmc_of,
    server1,
    servers3,
    track,
)
from pymemcache.client.base import Client

import batchq
from batchq.memcache import (
    Cache,
    DeserializationError,
    InvalidKeyError,
    LocalClient,
    PickleSerde,
    PylibmcPool,
    ServerError,
    _pylibmc,
    pylibmc_client,
)
from batchq.testing import MemcachedServer

try:
    import pylibmc
except ImportError:
    pylibmc = None


def real(test: Any) -> Any:
    """A test against real memcached through pylibmc: skipped, saying why, without either."""
    return pytest.mark.memcached(needs_memcached(needs_pylibmc(test)))


__all__ = ["close_clients", "server1", "servers3"]  # fixtures, imported for pytest


def raw_client(server: MemcachedServer) -> Any:
    """pylibmc's own Client, as another program would write with it (it pickles objects)."""
    host, port = server.address
    client = pylibmc.Client([f"{host}:{port}"], binary=True)
    track(type("Closing", (), {"close": lambda self: client.disconnect_all()})())
    return client


class _RunsCode:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (Path.touch, (self.path,))


@real
def test_the_depth_four_page_costs_four_get_many(server1: MemcachedServer) -> None:
    counting = Counting(pylibmc_of(server1))
    cache = Cache(counting)
    data = page_data()
    assert cache.set_many(data) == []
    assert make_page(cache)() == expected_page(data)
    assert counting.calls["get_many"] == 4  # one per level: the same rounds as on pymemcache
    stats = cache.stats()
    assert stats.misses == 0
    assert stats.hits == len(data)  # every key of the page read once, each one a hit


@real
def test_values_read_back_with_their_types(server1: MemcachedServer) -> None:
    cache = Cache(pylibmc_of(server1))
    values: dict[str, Any] = {
        "b": b"\x00\xffraw",
        "s": "t\u00e9xt \ud800",
        "i": -(10**30),
        "f": 1.5,
        "n": None,
        "j": {"a": [1, "x", None, {"b": True}]},
    }
    assert cache.set_many(values) == []
    got = cache.get_many(list(values))
    assert got == values
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in values.items()}
    assert cache.delete("j") is True
    assert cache.get("j", "gone") == "gone"
    # The same bytes a pymemcache Cache wrote: the envelope is the client's neither.
    assert Cache(pylibmc_of(server1)).get("s") == values["s"]


@real
def test_a_planted_pickle_is_never_unpickled(server1: MemcachedServer, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_RunsCode(marker), pickle.HIGHEST_PROTOCOL)  # what pylibmc stores
    # First prove the payload is live: pylibmc's own Client runs it on read.
    raw = raw_client(server1)
    raw.set("planted", _RunsCode(marker))
    assert raw.get("planted") is None  # Path.touch returned None: the code ran
    assert marker.exists()
    marker.unlink()

    cache = Cache(pylibmc_of(server1))
    raw.set("planted", _RunsCode(marker))  # stored with pylibmc's pickle flag (1)
    with pytest.raises(DeserializationError, match=r"'planted'.*no envelope"):
        cache.get("planted")
    assert not marker.exists()
    # Even the client alone hands back the pickle's bytes, untouched.
    assert pylibmc_of(server1).get_many([b"planted"]) == {b"planted": payload}
    assert not marker.exists()
    # A Cache that trusts its writers (PickleSerde) still never lets pylibmc unpickle: only
    # values inside batchq's envelope are read, and this one has none.
    with pytest.raises(DeserializationError):
        Cache(pylibmc_of(server1), serde=PickleSerde()).get("planted")
    assert not marker.exists()


@real
def test_a_plain_pylibmc_client_is_refused(server1: MemcachedServer) -> None:
    with pytest.raises(TypeError, match=r"unpickles.*pylibmc_client\(servers"):
        Cache(raw_client(server1))

    class Custom(_pylibmc._safe_class()):  # type: ignore[misc]
        def deserialize(self, data: bytes, flags: int) -> Any:
            return pickle.loads(data)

    with pytest.raises(TypeError, match="unpickles"):
        Cache(Custom([f"{server1.address[0]}:{server1.address[1]}"], binary=True))


@real
def test_the_client_stores_bytes_only(server1: MemcachedServer) -> None:
    client = pylibmc_of(server1)
    with pytest.raises(TypeError, match=r"bytes only, got dict .*Cache"):
        client.set("k", {"a": 1})
    assert client.set_many({b"k": b"v"}, 0, False) == []
    assert client.get_many([b"k", b"missing"]) == {b"k": b"v"}


@real
def test_the_herd_commands_answer_as_pymemcaches_do(server1: MemcachedServer) -> None:
    # add/add_many: stored or not; gets_many: tokens of the keys found; cas: True stored,
    # False changed since the token was read, None gone. What the herd path relies on.
    client = pylibmc_of(server1)
    assert client.add(b"a", b"1", 0, False) is True
    assert client.add(b"a", b"2", 0, False) is False
    assert client.add_many({b"a": b"3", b"b": b"4"}, 0) == {b"a": False, b"b": True}
    found = client.gets_many([b"a", b"b", b"missing"])
    assert sorted(found) == [b"a", b"b"]
    assert found[b"a"][0] == b"1"
    token = found[b"a"][1]
    assert client.cas(b"a", b"5", token, 0, False) is True
    assert client.cas(b"a", b"6", token, 0, False) is False  # the token is stale now
    assert client.get_many([b"a"]) == {b"a": b"5"}
    client.delete_many([b"a"])
    assert client.cas(b"a", b"7", token, 0, False) is None


@real
def test_herd_without_cas_tokens_says_which_behavior_to_keep(server1: MemcachedServer) -> None:
    client = track(
        pylibmc_client([f"127.0.0.1:{server1.port}"], behaviors={"cas": False}, timeout=2)
    )
    cache = Cache(client)

    @cache.cached(ttl=60, herd=True, key=lambda k: f"nocas:{k}")
    def value(k: int) -> int:
        return k

    with pytest.raises(ValueError, match=r"cas tokens turned off.*leave the 'cas' behavior"):
        value(1)
    assert cache.get("plain") is None  # the Cache itself works without them


@real
def test_bad_keys_never_reach_the_server(server1: MemcachedServer) -> None:
    counting = Counting(pylibmc_of(server1))
    cache = Cache(counting)
    cache.set("keep", "safe")
    for key in ("k\r\nflush_all", "a b", "x" * 251):
        with pytest.raises(InvalidKeyError):
            cache.get(key)
        with pytest.raises(InvalidKeyError):
            cache.set(key, 1)
    assert cache.get("keep") == "safe"
    sent = [k for keys in counting.keys for k in keys]
    assert sent == [b"keep"]


@real
def test_a_killed_server_means_misses_then_recovery(server1: MemcachedServer) -> None:
    client = track(
        pylibmc_client([f"127.0.0.1:{server1.port}"], timeout=0.5, behaviors={"retry_timeout": 1})
    )
    cache = Cache(client)
    assert cache.set("k", 1) is True
    server1.stop(graceful=False)
    assert cache.get("k") is None
    assert cache.set("k", 2) is False
    stats = cache.stats()
    assert (stats.errors, stats.write_failures) == (1, 1)
    assert stats.servers[f"127.0.0.1:{server1.port}"].errors == 2
    server1.restart(graceful=False)
    # libmemcached skips a failed server (calls fail at once) until its retry_timeout has
    # passed without calls: wait longer than that between tries.
    deadline = time.monotonic() + 20
    while cache.set("k", 3) is not True:
        assert time.monotonic() < deadline, "the client never reconnected"
        time.sleep(2.5)
    assert cache.get("k") == 3


@real
def test_on_error_raise_names_the_dead_server(server1: MemcachedServer) -> None:
    cache = Cache(pylibmc_of(server1, timeout=0.5), on_error="raise")
    cache.set("k", 1)
    port = server1.port
    server1.stop(graceful=False)
    with pytest.raises(ServerError, match=rf"127\.0\.0\.1:{port} failed: \w+"):
        cache.get("k")
    with pytest.raises(ServerError, match=f"127.0.0.1:{port}"):
        cache.set("k", 2)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A listening socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


@real
def test_a_silent_server_times_out_into_misses(silent_server: str) -> None:
    cache = Cache(track(pylibmc_client([silent_server], timeout=0.3)))
    started = time.monotonic()
    assert cache.get("k") is None
    assert time.monotonic() - started < 5  # the client's timeout, not a hang
    # libmemcached reports no error for the multi-get that timed out (docs/memcache.md says
    # so): that read is a plain miss. It marks the server failed; a write to it then fails and
    # is counted. (The next read is counted as an error with the libmemcached 1.0 that pylibmc's
    # wheel bundles, and is another silent miss with Debian's 1.1: both are seen here.)
    assert cache.stats().errors == 0
    assert cache.get("k") is None
    assert cache.set("k", 1) is False
    stats = cache.stats()
    assert (stats.write_failures, stats.misses) == (1, 2)
    assert stats.errors in (0, 1)


@real
def test_with_several_servers_one_multi_get_and_one_dead_server_fails_the_round(
    servers3: list[MemcachedServer],
) -> None:
    counting = Counting(pylibmc_of(*servers3, timeout=0.5))
    cache = Cache(counting)
    data = {f"k{i}": i for i in range(60)}
    assert cache.set_many(data) == []
    assert cache.get_many(list(data)) == data
    assert counting.calls["get_many"] == 1  # libmemcached routes one multi-get itself
    # Every server holds some keys: libmemcached spread them.
    for server in servers3:
        assert track(Client(server.address)).stats()[b"curr_items"] > 0
    servers3[1].stop(graceful=False)
    # Documented difference from HashClient: libmemcached fails the whole call.
    assert cache.get_many(list(data)) == {}
    assert cache.stats().errors == len(data)


@real
def test_writes_alone_reach_a_server_restarted_after_many_failures(
    server1: MemcachedServer,
) -> None:
    # After five failures in a row libmemcached would mark the server dead until its
    # retry_timeout passed without calls; a write every 0.1 s never leaves such a gap.
    cache = Cache(pylibmc_of(server1, timeout=0.5))
    server1.stop(graceful=False)
    failed = []
    for _ in range(8):
        failed.append(cache.set("k", 1))
        time.sleep(0.1)
    server1.restart(graceful=False)
    stored = []
    for _ in range(5):
        stored.append(cache.set("k", 2))
        time.sleep(0.1)
    assert (failed, stored) == ([False] * 8, [True] * 5)
    assert cache.get("k") == 2


@real
@pytest.mark.parametrize("pool_size", [1, 2])
def test_a_restarted_server_of_three_is_used_again_under_steady_traffic(
    servers3: list[MemcachedServer], pool_size: int
) -> None:
    # libmemcached would keep the failed server disabled while calls come sooner than its
    # retry_timeout, and with it every round (one dead server fails the whole call). Each of a
    # pool's clients recovers the same way.
    addresses = [f"127.0.0.1:{s.port}" for s in servers3]
    cache = Cache(track(pylibmc_client(addresses, timeout=0.5, pool_size=pool_size)))
    data = {f"k{i}": i for i in range(30)}
    assert cache.set_many(data) == []
    servers3[2].stop(graceful=False)
    assert cache.get_many(list(data)) == {}
    servers3[2].restart(graceful=False)
    rounds = []
    for _ in range(30):  # a request every 0.1 s, past the 2 s retry_timeout
        rounds.append(cache.set_many(data) == [] and cache.get_many(list(data)) == data)
        time.sleep(0.1)
    assert rounds == [True] * 30


@real
def read_in_threads(cache: Cache, threads: int, rounds: int, keys: int) -> list[BaseException]:
    """Write ``keys`` keys, then read them all back ``rounds`` times in each of ``threads``
    threads at once; what any read raised (a wrong value included)."""
    data = {f"t{i}": i for i in range(keys)}
    cache.set_many(data)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(rounds):
                assert cache.get_many(list(data)) == data
        except BaseException as e:
            errors.append(e)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return errors


def test_threads_share_one_client(server1: MemcachedServer) -> None:
    assert read_in_threads(Cache(pylibmc_of(server1)), threads=4, rounds=20, keys=50) == []


class HoldingProxy:
    """A loopback TCP proxy in front of one memcached that holds every reply until ``want``
    connections hold one at once (then lets all through), or ``patience`` seconds have passed;
    ``most`` is the most replies it ever held at once: how many requests were in flight."""

    def __init__(self, upstream: tuple[str, int], want: int, patience: float) -> None:
        self.upstream, self.want, self.patience = upstream, want, patience
        self.most = self.held = 0
        self.released = False
        self.cond = threading.Condition()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return  # closed
            up = socket.create_connection(self.upstream)
            self.sockets += [down, up]
            threading.Thread(target=self._pipe, args=(down, up, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, down, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, hold: bool) -> None:
        try:
            while data := src.recv(65536):
                if hold:
                    with self.cond:
                        self.held += 1
                        self.most = max(self.most, self.held)
                        self.released = self.released or self.held >= self.want
                        self.cond.notify_all()
                        self.cond.wait_for(lambda: self.released, self.patience)
                        self.held -= 1
                dst.sendall(data)
        except OSError:
            pass  # closed

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def in_flight_at_once(
    server: MemcachedServer, client: Any, proxy: HoldingProxy, threads: int
) -> int:
    """Run ``threads`` threads that each read 20 keys through a Cache on ``client`` (in front of
    the proxy); check every read; the most requests that were in flight at once."""
    Cache(pylibmc_of(server)).set_many({f"p{i}": i for i in range(20)})  # not through the proxy
    cache = Cache(track(client))
    start = threading.Barrier(threads)
    results: list[Any] = []

    def work() -> None:
        start.wait()
        results.append(cache.get_many([f"p{i}" for i in range(20)]))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert results == [{f"p{i}": i for i in range(20)}] * threads
    return proxy.most


@real
def test_a_pool_sends_the_threads_rounds_at_once(server1: MemcachedServer) -> None:
    proxy = HoldingProxy(server1.address, want=4, patience=10)
    track(proxy)
    pool = pylibmc_client([proxy.address], pool_size=4, timeout=15)
    assert isinstance(pool, PylibmcPool)
    assert in_flight_at_once(server1, pool, proxy, threads=4) == 4


@real
def test_a_single_client_sends_one_request_at_a_time(server1: MemcachedServer) -> None:
    # What the docs say of a pylibmc client without a pool: the Cache locks it.
    proxy = HoldingProxy(server1.address, want=2, patience=0.3)
    track(proxy)
    client = pylibmc_client([proxy.address], timeout=5)
    assert in_flight_at_once(server1, client, proxy, threads=2) == 1


@real
def test_a_pool_lends_each_client_to_one_thread_at_a_time(server1: MemcachedServer) -> None:
    # More threads than clients: they wait for one; no client ever serves two threads at once.
    pool = track(pylibmc_client([f"127.0.0.1:{server1.port}"], pool_size=2))
    busy: dict[int, int] = {}
    most: list[int] = [0, 0]  # the most uses of one client at once; of all clients at once
    lock = threading.Lock()
    for client in pool.clients:

        def get_many(keys: Any, _client: Any = client, _real: Any = client.get_many) -> Any:
            with lock:
                busy[id(_client)] = busy.get(id(_client), 0) + 1
                most[:] = [max(most[0], busy[id(_client)]), max(most[1], sum(busy.values()))]
            try:
                time.sleep(0.001)  # long enough for the other threads to ask
                return _real(keys)
            finally:
                with lock:
                    busy[id(_client)] -= 1

        client.get_many = get_many
    assert read_in_threads(Cache(pool), threads=6, rounds=30, keys=30) == []
    assert most == [1, 2]
    assert sorted(map(id, pool._idle)) == sorted(map(id, pool.clients))  # all given back


@real
def test_a_pool_works_for_every_cache_operation(server1: MemcachedServer) -> None:
    pool = track(pylibmc_client([f"127.0.0.1:{server1.port}"], pool_size=3))
    assert repr(pool).startswith("<PylibmcPool of 3 clients for 127.0.0.1:")
    cache = Cache(pool, key_prefix="pool:")
    assert cache.set("a", {"x": [1, 2]}) is True
    assert cache.get("a") == {"x": [1, 2]}
    assert cache.set_many({"b": "text", "c": 3}) == []
    assert cache.get_many(["a", "b", "c", "d"]) == {"a": {"x": [1, 2]}, "b": "text", "c": 3}
    assert cache.delete("a") is True
    assert cache.delete_many(["b", "c"]) is True
    assert cache.get_many(["a", "b", "c"]) == {}
    calls: list[int] = []

    @cache.cached(ttl=60, herd=True, key=lambda k: f"herd:{k}")
    def value(k: int) -> int:
        calls.append(k)
        return k * 2

    assert [value(1), value(1)] == [2, 2]
    assert calls == [1]
    assert cache.invalidate("herd:1") is True
    assert value(1) == 2
    assert calls == [1, 1]
    pool.close()
    assert cache.get("b") is None  # reconnects on use
    # pylibmc's other methods, each on a lent client; no private or made-up names.
    assert pool.get_stats()[0][1]["pid"] == str(server1.pid).encode()
    assert pool.touch(b"pool:none", 10) is False
    for name in ("_idle_clients", "no_such_method", "behaviours_x"):
        with pytest.raises(AttributeError, match=name):
            getattr(pool, name)
    with pytest.raises(AttributeError, match="get_stats"):  # not initialized: no recursion
        PylibmcPool.__new__(PylibmcPool).get_stats  # noqa: B018


@real
def test_bad_pool_sizes_are_refused() -> None:
    for size in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=rf"pool_size .* int >= 1, got {size!r}"):
            pylibmc_client(["127.0.0.1:1"], pool_size=size)  # type: ignore[arg-type]


@real
def test_page_through_batchq_run_in_asyncio(server1: MemcachedServer) -> None:
    cache = Cache(pylibmc_of(server1))
    data = page_data()
    cache.set_many(data)
    page = make_page(cache)
    assert asyncio.run(page.asyncio()) == expected_page(data)


@real
def test_no_module_but_one_imports_pylibmc() -> None:
    root = Path(batchq.__file__).parent
    importers = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(n.split(".")[0] in ("pylibmc", "_pylibmc") for n in names):
                importers.add(path.relative_to(root).as_posix())
    assert importers == {"memcache/_pylibmc.py"}


def test_without_pylibmc_the_client_and_the_skip_name_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_pylibmc, "pylibmc", None)
    monkeypatch.setattr(_pylibmc, "_client_class", None)
    assert not _pylibmc.available()
    with pytest.raises(ImportError, match=r"pip install 'batchq\[pylibmc\]'.*libmemcached-dev"):
        pylibmc_client(["127.0.0.1:11211"])
    assert "pip install 'batchq[pylibmc]'" in needs_pylibmc.kwargs["reason"]
    Cache(LocalClient())  # every other client still works


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match=r"list of servers, got the single '127.0.0.1:1'"):
        pylibmc_client("127.0.0.1:1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds, got 0"):
        pylibmc_client(["127.0.0.1:1"], timeout=0)
