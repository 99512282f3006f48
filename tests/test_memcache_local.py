"""LocalClient: pymemcache's Client interface, memcached's semantics, in process."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pymemcache.exceptions import MemcacheClientError

from batchq.memcache import (
    CommandError,
    InvalidKeyError,
    JsonSerde,
    LocalClient,
    PickleSerde,
    SerializationError,
    ValueTooLargeError,
)

THIRTY_DAYS = 60 * 60 * 24 * 30


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(clock: FakeClock) -> LocalClient:
    return LocalClient(clock=clock, default_noreply=False)


def test_set_get_and_default(client: LocalClient) -> None:
    assert client.get("missing") is None
    assert client.get("missing", "fallback") == "fallback"
    assert client.set("k", {"a": [1, 2]}) is True
    assert client.get("k") == {"a": [1, 2]}
    assert client.set("k", b"replaced") is True
    assert client.get(b"k") == b"replaced"
    assert client.server == ("local", 0)


def test_get_many_returns_only_hits_keyed_as_given(client: LocalClient) -> None:
    client.set_many({"a": 1, b"b": "two"})
    assert client.get_many(["a", b"b", "c"]) == {"a": 1, b"b": "two"}
    assert client.get_many([]) == {}


def test_values_come_back_as_copies(client: LocalClient) -> None:
    value = {"a": [1]}
    client.set("k", value)
    value["a"].append(2)
    got = client.get("k")
    got["a"].append(3)
    assert client.get("k") == {"a": [1]}


def test_add_only_stores_missing_keys(client: LocalClient) -> None:
    assert client.add("k", 1) is True
    assert client.add("k", 2) is False
    assert client.get("k") == 1
    assert client.add("k", 3, noreply=True) is True
    assert client.get("k") == 1


def test_delete_and_delete_many(client: LocalClient) -> None:
    client.set_many({"a": 1, "b": 2, "c": 3})
    assert client.delete("a") is True
    assert client.delete("a") is False
    assert client.delete_many(["b", "missing"]) is True
    assert client.get_many(["a", "b", "c"]) == {"c": 3}


def test_noreply_defaults_to_true_like_pymemcache(clock: FakeClock) -> None:
    client = LocalClient(clock=clock)
    assert client.delete("missing") is True
    assert client.delete("missing", noreply=False) is False
    client.set("k", 1)
    assert client.add("k", 2) is True
    assert client.get("k") == 1


def test_flush_all(client: LocalClient) -> None:
    client.set_many({"a": 1, "b": 2})
    assert client.flush_all() is True
    assert client.get_many(["a", "b"]) == {}
    with pytest.raises(CommandError, match="delay=5"):
        client.flush_all(delay=5)


class TestExpiry:
    def test_relative_seconds(self, client: LocalClient, clock: FakeClock) -> None:
        client.set("k", 1, expire=10)
        clock.advance(9.9)
        assert client.get("k") == 1
        clock.advance(0.1)
        assert client.get("k") is None
        assert client.add("k", 2) is True

    def test_zero_means_never(self, client: LocalClient, clock: FakeClock) -> None:
        client.set("k", 1, expire=0)
        clock.advance(10 * THIRTY_DAYS)
        assert client.get("k") == 1

    def test_over_thirty_days_is_absolute_unix_time(
        self, client: LocalClient, clock: FakeClock
    ) -> None:
        client.set("k", 1, expire=int(clock.now) + 100)
        clock.advance(99)
        assert client.get("k") == 1
        clock.advance(1)
        assert client.get("k") is None
        client.set("past", 1, expire=THIRTY_DAYS + 1)  # 1970: already expired
        assert client.get("past") is None

    def test_thirty_days_exactly_is_still_relative(
        self, client: LocalClient, clock: FakeClock
    ) -> None:
        client.set("k", 1, expire=THIRTY_DAYS)
        clock.advance(THIRTY_DAYS - 1)
        assert client.get("k") == 1

    def test_negative_expiry_replaces_then_misses(self, client: LocalClient) -> None:
        client.set("k", 1)
        client.set("k", 2, expire=-1)
        assert client.get("k") is None

    def test_expiry_survives_incr(self, client: LocalClient, clock: FakeClock) -> None:
        client.set("n", 1, expire=10)
        assert client.incr("n", 1) == 2
        clock.advance(10)
        assert client.incr("n", 1) is None

    def test_non_int_expiry_is_refused(self, client: LocalClient) -> None:
        with pytest.raises(CommandError, match=r"expire=1\.5 is a float"):
            client.set("k", 1, expire=1.5)  # type: ignore[arg-type]  # what we are testing


class TestCounters:
    def test_incr_decr(self, client: LocalClient) -> None:
        assert client.incr("n", 1) is None
        client.set("n", 10)
        assert client.incr("n", 5) == 15
        assert client.decr("n", 20) == 0
        assert client.get("n") == 0
        assert client.incr("n", 1, noreply=True) is None
        assert client.get("n") == 1

    def test_incr_wraps_at_64_bits(self, client: LocalClient) -> None:
        client.set("n", 2**64 - 1)
        assert client.incr("n", 2) == 1

    def test_shrinking_decr_pads_like_memcached(self, client: LocalClient) -> None:
        client.set("n", b"10")
        assert client.decr("n", 1) == 9
        assert client.get("n") == b"9 "
        assert client.incr("n", 991) == 1000
        assert client.get("n") == b"1000"

    @pytest.mark.parametrize("value", ["abc", b"-1", 2**64, b"", b"1.5", b"1x", b" ", b"0x1"])
    def test_non_numeric_values(self, client: LocalClient, value: Any) -> None:
        client.set("n", value)
        with pytest.raises(CommandError, match="not a decimal number"):
            client.incr("n", 1)

    @pytest.mark.parametrize("delta", [-1, 2**64, 1.0, "1"])
    def test_bad_delta(self, client: LocalClient, delta: Any) -> None:
        client.set("n", 1)
        with pytest.raises(CommandError, match="takes an int from 0 to 2\\*\\*64-1"):
            client.incr("n", delta)


class TestEviction:
    def test_least_recently_used_item_goes_first(self, clock: FakeClock) -> None:
        client = LocalClient(clock=clock, max_items=3, max_bytes=None)
        client.set_many({"a": 1, "b": 2, "c": 3})
        client.get("a")  # now b is the least recently used
        client.set("d", 4)
        assert client.get_many(["a", "b", "c", "d"]) == {"a": 1, "c": 3, "d": 4}

    def test_byte_bound_counts_keys_and_serialized_values(self, clock: FakeClock) -> None:
        client = LocalClient(clock=clock, max_items=None, max_bytes=30)
        client.set("a", b"x" * 9)  # 10 bytes
        client.set("b", b"x" * 9)
        client.set("c", b"x" * 9)
        assert client.get_many(["a", "b", "c"]) == dict.fromkeys("abc", b"x" * 9)
        client.set("d", b"x")  # 2 more bytes: a must go
        assert set(client.get_many(["a", "b", "c", "d"])) == {"b", "c", "d"}
        client.set("b", b"")  # replacing frees bytes instead of counting twice
        client.set("e", b"x" * 9)
        assert set(client.get_many(["a", "b", "c", "d", "e"])) == {"b", "c", "d", "e"}

    def test_an_item_larger_than_the_bound_is_kept_alone(self, clock: FakeClock) -> None:
        client = LocalClient(clock=clock, max_items=None, max_bytes=10)
        client.set("a", b"1")
        client.set("big", b"x" * 50)
        assert client.get_many(["a", "big"]) == {"big": b"x" * 50}

    @pytest.mark.parametrize("limit", [0, -1])
    def test_limits_must_be_positive(self, limit: int) -> None:
        with pytest.raises(ValueError, match=f"max_items={limit} must be at least 1"):
            LocalClient(max_items=limit)


class TestSameChecksAsAServer:
    def test_keys_are_validated(self, client: LocalClient) -> None:
        with pytest.raises(InvalidKeyError, match="whitespace"):
            client.set("a b", 1)
        with pytest.raises(InvalidKeyError):
            client.get("k\r\nflush_all")
        with pytest.raises(InvalidKeyError):
            client.delete("x" * 251)
        with pytest.raises(InvalidKeyError):
            client.get_many(["ok", ""])

    def test_a_bad_item_stores_nothing(self, client: LocalClient) -> None:
        with pytest.raises(InvalidKeyError):
            client.set_many({"ok": 1, "a b": 2})
        with pytest.raises(SerializationError):
            client.set_many({"ok": 1, "bad": (1, 2)})
        assert client.get("ok") is None
        client.set("keep", 1)
        with pytest.raises(InvalidKeyError):
            client.delete_many(["keep", "a b"])
        assert client.get("keep") == 1

    def test_values_go_through_the_serde(self, client: LocalClient) -> None:
        with pytest.raises(SerializationError, match="is a tuple"):
            client.set("k", (1, 2))
        pickling = LocalClient(serde=PickleSerde())
        pickling.set("k", (1, 2))
        assert pickling.get("k") == (1, 2)
        assert isinstance(LocalClient().serde, JsonSerde)

    def test_value_size_limit(self, clock: FakeClock) -> None:
        client = LocalClient(clock=clock, max_value_size=100)
        client.set("k", b"x" * 100)
        with pytest.raises(ValueTooLargeError, match="101 bytes serialized, over the limit of 100"):
            client.set("k", b"x" * 101)
        assert client.get("k") == b"x" * 100

    def test_prefix_and_hashing(self, clock: FakeClock) -> None:
        client = LocalClient(clock=clock, key_prefix="app:", hash_long_keys=True)
        long_key = "x" * 300
        client.set(long_key, 1)
        client.set("a b", 2)
        assert client.get_many([long_key, "a b"]) == {long_key: 1, "a b": 2}
        with pytest.raises(InvalidKeyError, match="prefix"):
            LocalClient(key_prefix="bad prefix").get("k")


def test_threads_do_not_lose_updates() -> None:
    client = LocalClient(default_noreply=False, max_items=50)
    client.set("n", 0)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(500):
                client.incr("n", 1)
                client.set(f"w{worker}:{i}", i)
                client.get_many([f"w{worker}:{i}", "n"])
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert client.get("n") == 8 * 500
    assert client._bytes == sum(len(k) + len(e.data) for k, e in client._items.items())
    assert len(client._items) <= 50


# -- against a real memcached ---------------------------------------------------------------------

OPERATIONS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("get", ("a",), {}),
    ("get", ("a", "fallback"), {}),
    ("set", ("a", 1), {}),
    ("get", ("a",), {}),
    ("add", ("a", 2), {}),
    ("add", ("b", "two \u00e9"), {}),
    ("get_many", (["a", "b", "c"],), {}),
    ("get_many", ([],), {}),
    ("incr", ("a", 5), {}),
    ("decr", ("a", 10), {}),
    ("get", ("a",), {}),
    ("incr", ("missing", 1), {}),
    ("decr", ("missing", 1), {}),
    ("incr", ("a", 1), {"noreply": True}),
    ("get", ("a",), {}),
    ("set", ("n", b"10"), {}),
    ("decr", ("n", 1), {}),
    ("get", ("n",), {}),
    ("incr", ("n", 991), {}),
    ("get", ("n",), {}),
    ("set", ("big", 2**64 - 1), {}),
    ("incr", ("big", 2), {}),
    ("set", ("text", "abc"), {}),
    ("incr", ("text", 1), {}),
    ("set", ("negative", -5), {}),
    ("incr", ("negative", 1), {}),
    ("set", ("overflow", 2**64), {}),
    ("incr", ("overflow", 1), {}),
    ("set", ("float", b"1.5"), {}),
    ("incr", ("float", 1), {}),
    ("set", ("leading", b" 1"), {}),
    ("incr", ("leading", 1), {}),
    ("set", ("trailing", b"1 "), {}),
    ("incr", ("trailing", 1), {}),
    ("get", ("trailing",), {}),
    ("set", ("signed", b"+5"), {}),
    ("incr", ("signed", 1), {}),
    ("set", ("minus-zero", b"-0"), {}),
    ("incr", ("minus-zero", 1), {}),
    ("set", ("suffix", b"1 abc"), {}),
    ("incr", ("suffix", 1), {}),
    ("get", ("suffix",), {}),
    ("set", ("zeros", b"0" * 30 + b"7"), {}),
    ("incr", ("zeros", 1), {}),
    ("get", ("zeros",), {}),
    ("set", ("hex", b"0x1"), {}),
    ("incr", ("hex", 1), {}),
    ("set", ("empty", b""), {}),
    ("incr", ("empty", 1), {}),
    ("set", ("doc", {"a": [1, None, 2.5], "b": {"c": True}}), {}),
    ("get", ("doc",), {}),
    ("set", ("gone", 1), {"expire": -1}),
    ("get", ("gone",), {}),
    ("set", ("a", 7), {"expire": -1}),
    ("get", ("a",), {}),
    ("add", ("a", 8), {}),
    ("get", ("a",), {}),
    ("set", ("past", 1), {"expire": THIRTY_DAYS + 1}),
    ("get", ("past",), {}),
    ("add", ("past", 2), {}),
    ("set", ("later", 1), {"expire": 3600}),
    ("get", ("later",), {}),
    ("set", (b"bytes-key", [1, 2]), {}),
    ("get_many", ([b"bytes-key", "later"],), {}),
    ("set_many", ({"m1": 1, "m2": "2", b"m3": b"3"},), {}),
    ("get_many", (["m1", "m2", b"m3"],), {}),
    ("delete", ("m1",), {}),
    ("delete", ("m1",), {}),
    ("delete", ("m2",), {"noreply": True}),
    ("delete_many", (["m2", b"m3", "never"],), {}),
    ("get_many", (["m1", "m2", b"m3"],), {}),
    ("add", ("a", 9), {"noreply": True}),
    ("flush_all", (), {}),
    ("get_many", (["a", "b", "doc", "later", b"bytes-key"],), {}),
]


def _outcome(client: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return getattr(client, name)(*args, **kwargs)
    except (CommandError, MemcacheClientError):
        # The server's CLIENT_ERROR reply (pymemcache), LocalClient's refusal of the same command.
        return "client error"


@pytest.mark.memcached
class TestSameAsMemcached:
    @pytest.fixture
    def real(self) -> Any:
        from batchq.testing import MemcachedServer, find_memcached

        if find_memcached() is None:
            pytest.skip("memcached is not installed (scripts/ensure-memcached.sh)")
        from pymemcache.client.base import Client

        server = MemcachedServer().start()
        client = Client(server.address, serde=JsonSerde(), default_noreply=False, timeout=5)
        yield client
        client.close()
        server.stop(graceful=False)

    def test_operations_give_the_same_results(self, real: Any) -> None:
        local = LocalClient(default_noreply=False)
        for step, (name, args, kwargs) in enumerate(OPERATIONS):
            expected = _outcome(real, name, args, kwargs)
            got = _outcome(local, name, args, kwargs)
            assert got == expected, f"step {step}: {name}{args} {kwargs}"

    def test_default_noreply_results_match(self, real: Any) -> None:
        from pymemcache.client.base import Client

        fire_and_forget = Client(real.server, serde=JsonSerde(), timeout=5)
        local = LocalClient()
        try:
            for name, args, kwargs in OPERATIONS:
                expected = _outcome(fire_and_forget, name, args, kwargs)
                assert _outcome(local, name, args, kwargs) == expected, (name, args, kwargs)
        finally:
            fire_and_forget.close()

    def test_largest_allowed_value_fits_in_memcached(self, real: Any) -> None:
        from batchq.memcache import DEFAULT_MAX_VALUE_SIZE, MAX_KEY_LENGTH

        key = "k" * MAX_KEY_LENGTH
        value = b"v" * DEFAULT_MAX_VALUE_SIZE
        assert real.set(key, value) is True
        assert real.get(key) == value
        # ...and the limit is close to memcached's own: one MiB is refused by the server.
        with pytest.raises(Exception, match="too large"):
            real.set("k", b"v" * 1024 * 1024)
