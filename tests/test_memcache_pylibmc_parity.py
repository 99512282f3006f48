"""The Cache on pylibmc_client against the same Cache on pymemcache, on real memcached: each test
runs one script through both and compares values, errors, round trips and counters. Documented
differences (docs/memcache.md) are checked as documented; bugs are strict xfails naming them."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from memcache_fixtures import close_clients, needs_memcached, server1, track
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheError

import batchq
from batchq.memcache import (
    DEFAULT_MAX_VALUE_SIZE,
    Cache,
    DeserializationError,
    InvalidKeyError,
    KeyTypeError,
    PickleSerde,
    ServerError,
    ValueTooLargeError,
    _pylibmc,
    pylibmc_client,
)
from batchq.testing import MemcachedServer

try:
    import pylibmc
except ImportError:
    pylibmc = None

__all__ = ["close_clients", "server1"]  # fixtures, imported for pytest

pytestmark = [
    pytest.mark.memcached,
    needs_memcached,
    pytest.mark.skipif(pylibmc is None, reason=f"pylibmc is not installed: {_pylibmc.INSTALL}"),
]

KINDS = ("pymemcache", "pylibmc")


def client(kind: str, *servers: MemcachedServer, timeout: float = 2.0) -> Any:
    """The client of ``kind`` for the servers (a HashClient for several on pymemcache)."""
    if kind == "pylibmc":
        names = [f"127.0.0.1:{s.port}" for s in servers]
        return track(pylibmc_client(names, connect_timeout=timeout, timeout=timeout))
    if len(servers) == 1:
        return track(Client(servers[0].address, connect_timeout=timeout, timeout=timeout))
    hashing = {"retry_attempts": 1, "retry_timeout": 0, "dead_timeout": 60}
    addresses = [s.address for s in servers]
    return track(HashClient(addresses, connect_timeout=timeout, timeout=timeout, **hashing))


def fresh() -> str:
    """A key prefix of its own (the same length every time: key-length tests rely on it)."""
    return f"{uuid.uuid4().hex[:8]}:"


def outcome(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What ``call(*args, **kwargs)`` shows a user: its result, or its error's type and message
    (the server's port, the fresh() prefix and the client's own cause left out: they are
    compared by the tests that need them)."""
    try:
        return call(*args, **kwargs)
    except Exception as e:
        text = re.sub(r"127\.0\.0\.1:\d+", "SERVER", str(e))
        text = re.sub(r"b'[0-9a-f]{8}:'", "PREFIX", text)  # fresh() prefixes
        text = re.sub(r"failed: .*?; it ", "failed: CAUSE; it ", text)
        return (type(e).__name__, text)


def normalized(stats: Any) -> Any:
    """The stats without the servers' names (their ports differ; compared where it matters)."""
    return stats.__class__(**{**vars(stats), "servers": list(stats.servers.values())})


def write_read(cache: Cache, key: str | bytes, value: Any, ttl: int | None = None) -> Any:
    return cache.set(key, value, ttl=ttl), cache.get(key)


def same(server: MemcachedServer, script: Callable[[Cache], Any], **options: Any) -> Any:
    """``(result, stats)`` of ``script(cache)``, asserted the same through both clients."""
    seen = {}
    for kind in KINDS:
        cache = Cache(client(kind, server), key_prefix=fresh(), **options)
        seen[kind] = (outcome(script, cache), normalized(cache.stats()))
    assert seen["pylibmc"] == seen["pymemcache"]
    return seen["pymemcache"]


# -- operations, values, rounds ------------------------------------------------------------------


def test_get_set_delete_and_their_counters(server1: MemcachedServer) -> None:
    def script(cache: Cache) -> Any:
        return [
            cache.get("a"),
            cache.get("a", "dflt"),
            cache.set("a", {"x": 1}),
            cache.get("a"),
            cache.delete("a"),
            cache.delete("a"),  # deleting a missing key is acknowledged on both
            cache.get("a", "gone"),
            cache.set("b", 1) and cache.invalidate("b"),
            cache.get("b", "stale"),  # invalidated, with nothing to serve stale
        ]

    result, stats = same(server1, script)
    assert result == [None, "dflt", True, {"x": 1}, True, True, "gone", True, "stale"]
    assert (stats.hits, stats.misses, stats.deletes) == (1, 4, 2)
    assert stats.servers[0].get_many_calls == 5


def test_get_many_set_many_delete_many(server1: MemcachedServer) -> None:
    def script(cache: Cache) -> Any:
        stored = cache.set_many({"a": 1, b"b": [2], "c": None})
        got = cache.get_many(["a", b"b", "c", "missing"])
        deleted = cache.delete_many(["a", "missing"])
        empty = cache.get_many([]), cache.set_many({}), cache.delete_many([])
        return stored, got, deleted, cache.get_many(["a", b"b"]), empty

    result, stats = same(server1, script)
    assert result == ([], {"a": 1, b"b": [2], "c": None}, True, {b"b": [2]}, ({}, [], True))
    assert (stats.hits, stats.misses, stats.keys_fetched) == (4, 2, 6)


def test_one_round_sends_the_same_requests(server1: MemcachedServer) -> None:
    def script(cache: Cache) -> Any:
        cache.set_many({"old": 0, "gone": 1})

        @batchq.asynq()
        def round_() -> Any:
            # Two TTLs, a delete, a key written twice and a key read three times, in one round.
            return (
                yield (
                    cache.set.asynq("t0", "a"),
                    cache.set.asynq("t60", "b", ttl=60),
                    cache.set.asynq("twice", 1),
                    cache.set.asynq("twice", 2),
                    cache.delete.asynq("gone"),
                    cache.get.asynq("old"),
                    cache.get.asynq("old"),
                    cache.get_many.asynq(["old", "twice", "gone"]),
                )
            )

        return round_(), cache.get_many(["twice", "t0", "t60", "gone"])

    result, stats = same(server1, script)
    assert result == (
        (True, True, True, True, True, 0, 0, {"old": 0, "twice": 2}),
        {"twice": 2, "t0": "a", "t60": "b"},
    )
    server = stats.servers[0]  # one set_many per TTL (3 of them overall), one delete_many
    assert (server.set_many_calls, server.delete_many_calls, server.get_many_calls) == (3, 1, 2)
    # 'old' fetched once for its three reads; 'twice' and 'gone' answered by the run's writes.
    assert (stats.keys_fetched, stats.overlay_hits) == (1 + 4, 2)


@pytest.mark.parametrize(("size", "keys", "requests"), [(7, 50, 8), (10**6, 20_000, 1)])
def test_max_batch_size_chunks_every_request(
    server1: MemcachedServer, size: int, keys: int, requests: int
) -> None:
    # 20,000 keys in one request: far beyond libmemcached's I/O buffers and watermarks.
    data = {f"key-{i:06d}": i for i in range(keys)}

    def script(cache: Cache) -> Any:
        return cache.set_many(data), cache.get_many(list(data)) == data, cache.delete_many(data)

    result, stats = same(server1, script, max_batch_size=size)
    assert result == ([], True, True)
    server = stats.servers[0]
    calls = (server.set_many_calls, server.get_many_calls, server.delete_many_calls)
    assert (calls, stats.hits) == ((requests,) * 3, keys)


VALUES: dict[str, Any] = {"empty-str": "", "empty-bytes": b"", "none": None, "false": False}
VALUES |= {"zero": 0, "big-int": -(10**300), "float": -0.5, "empty-list": []}
VALUES |= {"text": "t\u00e9xt \U0001f600 \ud800", "bytes": bytes(range(256))}
VALUES |= {"nested": {"a": [1, "x", None, {"b": True}], "": []}}


def test_every_json_value_reads_back_with_its_type(server1: MemcachedServer) -> None:
    def script(cache: Cache) -> Any:
        stored = cache.set_many(VALUES)
        got = cache.get_many(list(VALUES))
        return stored, got, {k: type(v) for k, v in got.items()}, cache.get("none", "dflt")

    (stored, got, types, none), _ = same(server1, script)
    assert (stored, got, none) == ([], VALUES, None)
    assert types == {k: type(v) for k, v in VALUES.items()}
    refused = same(server1, lambda c: [outcome(c.set, "k", v) for v in ((1,), {1: 2}, object())])
    assert [r[0] for r in refused[0]] == ["SerializationError"] * 3
    assert refused[1].sets == 0  # refused before anything was queued


class _Reversed:
    """A custom serde: bytes reversed, under flags 7."""

    def serialize(self, key: str | bytes, value: Any) -> tuple[bytes, int]:
        return str(value).encode()[::-1], 7

    def deserialize(self, key: str | bytes, data: bytes, flags: int) -> Any:
        if flags != 7:
            raise ValueError(f"flags {flags}")
        return data[::-1].decode()


@pytest.mark.parametrize("serde", [PickleSerde(), _Reversed()], ids=["pickle", "custom"])
def test_other_serdes_and_cross_serde_reads(server1: MemcachedServer, serde: Any) -> None:
    value = (1, {2, 3}) if isinstance(serde, PickleSerde) else "abc"  # _Reversed: a str

    def script(cache: Cache) -> Any:
        json_cache = Cache(cache.client, key_prefix=cache.key_prefix)
        json_cache.set("json", [1])
        written = cache.set("v", value), cache.get("v")
        return written, outcome(cache.get, "json"), outcome(json_cache.get, "v")

    (written, crossed, refused), _ = same(server1, script, serde=serde)
    assert written == (True, value)
    assert refused[0] == "DeserializationError"  # the default JSON Cache never unpickles
    if isinstance(serde, PickleSerde):
        assert crossed == [1]  # PickleSerde reads JSON envelopes too
    else:
        assert crossed[0] == "DeserializationError"  # the custom serde refuses other flags


# -- sizes, ttls, keys ---------------------------------------------------------------------------


def test_values_at_and_over_max_value_size(server1: MemcachedServer) -> None:
    key = "k" * (250 - len(fresh()))  # the longest key, with the longest value
    room = DEFAULT_MAX_VALUE_SIZE - 7  # the envelope's header; a str is stored as its UTF-8
    at_limit = "x" * room

    def script(cache: Cache) -> Any:
        fits = cache.set(key, at_limit), cache.get(key) == at_limit
        over = outcome(cache.set, key, at_limit + "y")
        return fits, over

    (fits, over), stats = same(server1, script)
    assert fits == (True, True)
    assert over[0] == ValueTooLargeError.__name__
    assert stats.sets == 1  # the value over the limit was never sent


def test_a_value_over_the_servers_item_size(server1: MemcachedServer) -> None:
    # The Cache told to allow 2 MiB, the server keeping its 1 MiB: the server refuses it.
    big = "z" * (1536 * 1024)

    def script(cache: Cache) -> Any:
        @batchq.asynq()
        def round_() -> Any:
            return (yield cache.set.asynq("big", big), cache.get.asynq("other"))

        raising = Cache(cache.client, on_error="raise", max_value_size=2 * 2**20)
        return round_(), cache.get("big"), outcome(raising.set, "big2", big)

    (written, got, raised), stats = same(server1, script, max_value_size=2 * 2**20)
    assert (written, got) == ((False, None), None)
    assert raised[0] == "ServerError"
    # An answer, not a dead server: the message says so, and what to change.
    assert "answered the command with an error" in raised[1]
    assert "max_value_size" in raised[1]
    assert "it is down" not in raised[1]
    assert (stats.write_failures, stats.errors, stats.servers[0].errors) == (1, 1, 1)


def test_a_server_item_size_above_one_mebibyte() -> None:
    server = MemcachedServer(extra_args=["-I", "4m"], memory_mb=128).start()
    try:
        big = {"payload": "p" * (3 * 2**20)}
        result, _ = same(
            server, lambda c: (c.set("big", big), c.get("big") == big), max_value_size=4 * 2**20
        )
        assert result == (True, True)
    finally:
        server.stop(graceful=False)


def test_ttl_zero_relative_and_absolute(server1: MemcachedServer) -> None:
    # memcached reads a ttl over 30 days as a Unix time: both clients pass it through as such.
    ttls = {"zero": 0, "day": 86_400, "abs-past": 30 * 86_400 + 1, "abs-future": 0}

    def script(cache: Cache) -> Any:
        ttls["abs-future"] = int(time.time()) + 3600
        written = [cache.set(name, name, ttl=ttl) for name, ttl in ttls.items()]
        return written, cache.get_many(list(ttls))

    result, _ = same(server1, script)
    assert result == ([True] * 4, {"zero": "zero", "day": "day", "abs-future": "abs-future"})


def test_a_short_ttl_expires_on_both(server1: MemcachedServer) -> None:
    caches = {k: Cache(client(k, server1), key_prefix=fresh()) for k in KINDS}
    assert [c.set("k", 1, ttl=1) for c in caches.values()] == [True, True]
    time.sleep(2.2)  # memcached's clock ticks in whole seconds
    assert [c.get("k", "expired") for c in caches.values()] == ["expired", "expired"]


TTLS = (2**31, 2**32 - 1, 2**63 - 1, 10**30)


def test_a_ttl_memcached_cannot_carry_is_refused_before_sending(
    server1: MemcachedServer,
) -> None:
    # At 2**31 and over, pymemcache's text command stores the key already expired and pylibmc's
    # 32-bit binary field a time in 2038 (or another ttl): the Cache refuses them on both.
    def script(cache: Cache) -> Any:
        return [outcome(write_read, cache, f"t{ttl}", 1, ttl) for ttl in TTLS]

    results, stats = same(server1, script)
    assert [r[0] for r in results] == ["ValueError"] * len(TTLS)
    assert all("at most 2147483647" in r[1] for r in results)
    assert stats.sets == 0  # nothing was sent


def test_the_largest_ttl_is_a_unix_time_on_both(server1: MemcachedServer) -> None:
    def script(cache: Cache) -> Any:
        return write_read(cache, "t", 1, 2**31 - 1), write_read(cache, "past", 1, 2592001)

    # 2**31 - 1 is a unix time in 2038: kept; 2592001 one in 1970: already expired.
    assert same(server1, script)[0] == ((True, 1), (True, None))


def test_unicode_and_bytes_keys(server1: MemcachedServer) -> None:
    text = "ключ-\U0001f600-\u200d"  # the zero-width joiner is allowed: it is not whitespace

    def script(cache: Cache) -> Any:
        cache.set(text, "via str")
        binary = b"\xff\xfe\x80bin"  # not UTF-8: a binary key
        cache.set(binary, "via bytes")
        return cache.get(text.encode()), cache.get_many([text, text.encode(), binary])

    result, stats = same(server1, script)
    assert result == (
        "via str",
        {text: "via str", text.encode(): "via str", b"\xff\xfe\x80bin": "via bytes"},
    )
    assert stats.keys_fetched == 1 + 2  # the str and its UTF-8 bytes are one key, fetched once


def test_keys_at_the_250_byte_limit_and_over(server1: MemcachedServer) -> None:
    room = 250 - len(fresh())
    long_keys = ["k" * room, "é" * (room // 2), "k" * (room + 1), "é" * (room // 2 + 1)]

    def script(cache: Cache) -> Any:
        return [outcome(write_read, cache, key, len(key)) for key in long_keys]

    result, stats = same(server1, script)
    assert result[:2] == [(True, room), (True, room // 2)]
    assert [r[0] for r in result[2:]] == ["InvalidKeyError"] * 2
    assert "over memcached's limit of 250" in result[2][1]
    assert stats.sets == 2  # the keys over the limit were never sent

    hashed = same(server1, lambda c: [write_read(c, k, 1) for k in long_keys], hash_long_keys=True)
    assert hashed[0] == [(True, 1)] * 4


def test_bad_keys_are_refused_before_sending(server1: MemcachedServer) -> None:
    bad: list[Any] = ["a b", "k\r\nflush_all", "\t", "\x00", "\x7f", "\u00a0", "\ud800", b"", 7]

    def script(cache: Cache) -> Any:
        refused = [outcome(cache.get, key) for key in bad]
        refused += [outcome(cache.set_many, {"ok": 1, key: 2}) for key in bad]
        return refused, cache.get("ok")

    (refused, ok), stats = same(server1, script)
    names = [r[0] for r in refused]
    assert names == 2 * ([InvalidKeyError.__name__] * 8 + [KeyTypeError.__name__])
    assert ok is None  # set_many with one bad key wrote nothing
    assert (stats.sets, stats.get_many_calls) == (0, 1)
    hashed = same(server1, lambda c: [write_read(c, k, 1) for k in bad[:6]], hash_long_keys=True)
    assert hashed[0] == [(True, 1)] * 6


# -- faults --------------------------------------------------------------------------------------


@pytest.fixture
def own_servers() -> Iterator[dict[str, MemcachedServer]]:
    """A server per client, for tests that stop one."""
    running = {kind: MemcachedServer().start() for kind in KINDS}
    yield running
    for server in running.values():
        server.stop(graceful=False)


def _dead_server_script(cache: Cache, server: MemcachedServer) -> Any:
    @batchq.asynq()
    def run() -> Any:
        before = yield cache.get.asynq("k")
        server.stop(graceful=False)  # mid-run, between two rounds
        after = yield cache.get_many.asynq(["k", "j"])
        own = yield cache.set.asynq("w", 1)
        return before, after, own, (yield cache.get.asynq("w"))  # read-your-writes

    cache.set("k", 1)
    return [
        outcome(run),
        outcome(cache.get, "k"),
        outcome(cache.set_many, {"k": 2, "j": 3}),
        outcome(cache.delete, "k"),
        outcome(cache.delete_many, ["k", "j"]),
    ]


@pytest.mark.parametrize("on_error", ["miss", "raise"])
def test_a_server_stopped_mid_run(own_servers: dict[str, MemcachedServer], on_error: str) -> None:
    seen = {}
    for kind, server in own_servers.items():
        cache = Cache(client(kind, server, timeout=0.5), on_error=on_error, key_prefix="p:")
        seen[kind] = (_dead_server_script(cache, server), normalized(cache.stats()))
        if on_error == "raise":  # the error names the server; its cause is the client's fault
            with pytest.raises(ServerError, match=rf"127\.0\.0\.1:{server.port} failed") as e:
                cache.get("k")
            assert isinstance(e.value.__cause__, (OSError, MemcacheError, *_pylibmc.FAULTS))
    assert seen["pylibmc"] == seen["pymemcache"]
    results, stats = seen["pymemcache"]
    if on_error == "miss":
        assert results == [(1, {}, False, 1), None, ["k", "j"], False, False]
        assert (stats.errors, stats.write_failures, stats.servers[0].errors) == (3, 6, 6)
    else:
        assert all(r[0] == "ServerError" for r in results)
        assert "failed: CAUSE; it is down" in results[0][1]
        assert "with on_error='miss' its keys would count as misses" in results[0][1]


@pytest.mark.parametrize("kind", ["pymemcache", "pylibmc"])
def test_a_restarted_server_is_used_again_under_steady_traffic(
    own_servers: dict[str, MemcachedServer], kind: str
) -> None:
    server = own_servers[kind]
    cache = Cache(client(kind, server, timeout=0.5))
    assert cache.set("k", 1) is True
    server.stop(graceful=False)
    assert cache.get("k") is None
    server.restart(graceful=False)
    # A web server's traffic: a request every 0.1 s, for twice libmemcached's retry_timeout.
    stored = []
    for _ in range(40):
        stored.append(cache.set("k", 2))
        time.sleep(0.1)
    assert stored == [True] * 40, f"stored {stored.count(True)} of 40"
    assert cache.get("k") == 2


def test_a_read_that_times_out(own_servers: dict[str, MemcachedServer]) -> None:
    # Documented: pymemcache reports the timeout (counted as an error); libmemcached returns
    # misses without an error. Both read the key as a miss.
    seen = {}
    for kind, server in own_servers.items():
        cache = Cache(client(kind, server, timeout=0.3))
        cache.set("k", 1)
        server.pause()
        try:
            seen[kind] = (cache.get("k", "miss"), cache.stats().errors, cache.stats().misses)
        finally:
            server.resume()
    assert seen == {"pymemcache": ("miss", 1, 1), "pylibmc": ("miss", 0, 1)}


# -- values other writers stored -----------------------------------------------------------------


def test_a_value_without_envelope_fails_only_its_key(server1: MemcachedServer) -> None:
    other = track(Client(server1.address))

    def script(cache: Cache) -> Any:
        prefix = cache.key_prefix
        other.set(prefix + b"alien", b"plain text", flags=2, noreply=False)
        cache.set("mine", 1)
        errors = []

        @batchq.asynq()
        def read(key: str) -> Any:
            try:
                return (yield cache.get.asynq(key))
            except DeserializationError as e:
                errors.append(str(e).replace(prefix.decode(), ""))
                return "error"

        @batchq.asynq()
        def round_() -> Any:
            return (yield [read.asynq("alien"), read.asynq("mine")])

        return round_(), errors

    (values, errors), stats = same(server1, script)
    assert values == ["error", 1]
    assert "'alien' holds b'plain text', which no batchq Cache wrote" in errors[0]
    assert (stats.decode_errors, stats.hits, stats.errors) == (1, 1, 0)


def test_compressed_values_differ_as_documented(server1: MemcachedServer) -> None:
    # pylibmc decompresses a value stored with its compression flag (8) before batchq sees it;
    # one that does not decompress fails libmemcached's whole call (a fault, the round's other
    # keys included). pymemcache hands back the stored bytes: no envelope for either.
    writer = track(Client(server1.address))
    Cache(writer, key_prefix=b"src:").set("v", "w" * 4096)
    packed = writer.get(b"src:v")
    # Documented (docs/memcache.md, compressed values): max_value_size does not bound what
    # pylibmc reads. A 9 KB item expands to 8 MiB (zlib reaches ~1000:1, so a 1 MiB item costs
    # every reader ~1 GB).
    bomb = zlib.compress(packed[:7] + b"w" * (8 * 2**20), 9)
    for key, data, flags in [
        (b"z:good", zlib.compress(packed), 8),
        (b"z:bad", b"not zlib", 8),
        (b"z:plain", packed, 0),
        (b"z:bomb", bomb, 8),
    ]:
        assert writer.set(key, data, flags=flags, noreply=False)
    seen = {}
    for kind in KINDS:
        cache = Cache(client(kind, server1), key_prefix=b"z:")
        seen[kind] = (
            outcome(cache.get, "good"),
            outcome(cache.get_many, ["bad", "plain"]),
            cache.stats().errors,
            outcome(cache.get, "plain"),  # the server was not marked failed
            outcome(lambda c: len(c.get("bomb")), cache),
        )
    pm_good, pm_round, pm_errors, pm_plain, pm_bomb = seen["pymemcache"]
    assert [pm_good[0], pm_round[0], pm_bomb[0]] == ["DeserializationError"] * 3
    assert (pm_errors, pm_plain) == (0, "w" * 4096)
    assert len(bomb) < 10_000 < DEFAULT_MAX_VALUE_SIZE
    assert seen["pylibmc"] == ("w" * 4096, {}, 2, "w" * 4096, 8 * 2**20)  # 'plain' lost too


# -- cached functions, asyncio, threads ----------------------------------------------------------


def test_cached_functions_without_herd(server1: MemcachedServer) -> None:
    def script(cache: Cache) -> Any:
        calls: list[int] = []

        @cache.cached(ttl=60, key=lambda x: f"double:{x}", none_ttl=30, local_ttl=5)
        def double(x: int) -> int | None:
            calls.append(x)
            if x == 13:
                raise LookupError("unlucky")
            return None if x < 0 else 2 * x

        @batchq.asynq()
        def page() -> Any:
            return (yield [double.asynq(x) for x in (1, 2, -1, 1)])

        first, second = page(), page()
        failed = outcome(double, 13)
        double.invalidate(2)
        return first, second, failed, outcome(double, 13), double(2), calls

    result, stats = same(server1, script)
    assert result == (
        [2, 4, None, 2],
        [2, 4, None, 2],
        ("LookupError", "unlucky"),
        ("LookupError", "unlucky"),  # errors are never cached
        4,
        [1, 2, -1, 13, 13, 2],
    )
    assert stats.write_failures == 0


def test_requests_through_asyncio(server1: MemcachedServer) -> None:
    def script(cache: Cache) -> Any:
        cache.set_many({f"a{i}": i for i in range(20)})

        @batchq.asynq()
        def request(n: int) -> Any:
            got = yield [cache.get.asynq(f"a{i}") for i in range(n)]
            ok = yield cache.set.asynq(f"r{n}", sum(got))
            return sum(got), ok, (yield cache.get.asynq(f"r{n}"))

        async def main() -> Any:
            return await asyncio.gather(*(request.asyncio(n) for n in (5, 10, 20)))

        return asyncio.run(main()), cache.get_many(["r5", "r10", "r20"])

    result, stats = same(server1, script)
    assert result == (
        [(10, True, 10), (45, True, 45), (190, True, 190)],
        {"r5": 10, "r10": 45, "r20": 190},
    )
    assert stats.overlay_hits == 3  # each request reads its own write


def test_threads_share_one_cache(server1: MemcachedServer) -> None:
    def script(cache: Cache) -> Any:
        failures: list[BaseException] = []

        def work(t: int) -> None:
            try:
                for i in range(30):
                    pair = {f"t{t}:{i}": [t, i], f"t{t}:{i}:x": i}
                    assert cache.set_many(pair) == []
                    assert cache.get_many([*pair, "shared"]) == pair
                    assert cache.delete(f"t{t}:{i}") is True
            except BaseException as e:
                failures.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return failures

    failures, stats = same(server1, script)
    assert failures == []
    assert (stats.hits, stats.misses, stats.sets, stats.deletes) == (360, 180, 360, 180)


# -- several servers -----------------------------------------------------------------------------


@pytest.fixture
def three_pairs() -> Iterator[dict[str, list[MemcachedServer]]]:
    running = {kind: [MemcachedServer().start() for _ in range(3)] for kind in KINDS}
    yield running
    for servers in running.values():
        for server in servers:
            server.stop(graceful=False)


def test_several_servers_differ_as_documented(three_pairs: dict[str, Any]) -> None:
    data = {f"k{i}": i for i in range(60)}
    seen = {}
    for kind, servers in three_pairs.items():
        cache = Cache(client(kind, *servers, timeout=0.5))
        assert cache.set_many(data) == []
        assert cache.get_many(list(data)) == data
        calls = cache.stats().get_many_calls
        if kind == "pymemcache":
            # Documented (docs/memcache.md): libmemcached's hashing (modula by default) is not
            # HashClient's, so with several servers a pylibmc Cache misses keys a HashClient
            # Cache wrote.
            crossed = Cache(client("pylibmc", *servers)).get_many(list(data))
            assert 0 < len(crossed) < len(data)
        servers[1].stop(graceful=False)
        cache.reset_stats()
        found = cache.get_many(list(data))
        stats = cache.stats()
        seen[kind] = (calls, len(found), stats.errors, stats.misses, sorted(stats.servers))
    calls, found, errors, misses, names = seen["pymemcache"]  # HashClient: that server only
    assert (calls, found + errors, misses) == (3, 60, errors)
    assert 0 < errors < 60
    assert len(names) == 3
    # pylibmc: one request for the three servers; a dead one fails every key of the round.
    # Documented: stats().servers has one entry, named by the three addresses together.
    ports = ", ".join(f"127.0.0.1:{s.port}" for s in three_pairs["pylibmc"])
    assert seen["pylibmc"] == (1, 0, 60, 60, [ports])
