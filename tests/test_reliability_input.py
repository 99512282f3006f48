"""Bad input: each kind gets a clear error naming the value and the fix, and nothing reaches the
server.

Core: invalid yields and loader fetches that break the contract (``test_errors.py`` and
``test_loader.py`` cover the first cases; these are the rest). Memcache: keys, value sizes and
serializers, against a counting ``LocalClient`` and a real memcached whose byte counter proves that
not one byte was sent.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Generator, Iterable
from typing import Any

import pytest

import batchq
from batchq import Loader, asynq
from batchq.memcache import (
    DEFAULT_MAX_VALUE_SIZE,
    Cache,
    DeserializationError,
    InvalidKeyError,
    KeyTypeError,
    LocalClient,
    SerializationError,
    ValueTooLargeError,
)
from batchq.testing import MemcachedServer

# -- invalid yields ---------------------------------------------------------------------------


@asynq()
def _child() -> Generator[Any, Any, int]:
    yield None
    return 1


def _plain_gen() -> Generator[Any, Any, int]:
    yield None
    return 1


BAD_YIELDS: list[tuple[str, Callable[[], Any], str]] = [
    ("a set", lambda: {1, 2}, r"yielded \{1, 2\} of type set"),
    ("a string", lambda: "key", r"yielded 'key' of type str"),
    ("a generator object", lambda: _plain_gen(), r"yielded <generator object _plain_gen"),
    ("the async function itself", lambda: _child, r"yielded <@asynq\(\) '_child'>"),
    ("an object", lambda: 3.5, r"yielded 3\.5 of type float"),
    (
        "an int inside a dict",
        lambda: {"a": _child.asynq(), "b": 7},
        r"cannot wait on 7 of type int",
    ),
    ("a set inside a list", lambda: [[_child.asynq()], {3}], r"cannot wait on \{3\} of type set"),
]


@pytest.mark.parametrize(("what", "make", "shown"), BAD_YIELDS, ids=[b[0] for b in BAD_YIELDS])
def test_an_invalid_yield_is_a_clear_error_the_task_can_catch(
    what: str, make: Callable[[], Any], shown: str
) -> None:
    made: list[Any] = []

    @asynq()
    def bad() -> Generator[Any, Any, Any]:
        value = make()
        made.append(value)
        try:
            yield value
        except batchq.YieldTypeError as e:
            return ("caught", str(e))
        return "not raised"

    outcome, message = bad()
    assert outcome == "caught"
    assert re.search(shown, message), message
    # The fix is named: what may be yielded.
    assert "f.asynq" in message or "only tasks, batch items, futures" in message
    if hasattr(made[0], "close"):
        made[0].close()  # the generator object was never run: close it quietly


def test_an_uncaught_invalid_yield_reaches_the_caller_as_a_type_error() -> None:
    @asynq()
    def bad() -> Generator[Any, Any, Any]:
        yield object()

    with pytest.raises(TypeError, match=r"yielded <object object at .*of type object"):
        bad()


# -- loader fetches that break the contract ---------------------------------------------------


def _page(src: Loader[Any, Any], keys: Iterable[Any]) -> Any:
    @asynq()
    def get(k: Any) -> Generator[Any, Any, Any]:
        try:
            return (yield src.load.asynq(k))
        except batchq.FetchResultError as e:
            return ("error", str(e))

    @asynq()
    def page() -> Generator[Any, Any, Any]:
        return (yield [get.asynq(k) for k in keys])

    return page()


def test_fetch_returning_too_many_values_fails_each_key_with_the_counts() -> None:
    src = Loader(lambda keys: [*keys, "extra"], name="long")
    results = _page(src, [1, 2, 3])
    assert [r[0] for r in results] == ["error"] * 3
    assert "fetch of Loader 'long' returned 4 values for 3 keys" in results[0][1]
    assert "one value per key, in key order" in results[0][1]


def test_a_bad_chunk_fails_only_its_own_keys() -> None:
    def fetch(keys: list[int]) -> list[int]:
        return keys[:-1] if 4 in keys else keys  # the chunk holding 4 is one value short

    src = Loader(fetch, name="chunked", max_batch_size=2)
    results = _page(src, [1, 2, 3, 4, 5])
    assert results[0] == 1
    assert results[1] == 2
    assert results[2][0] == "error"
    assert results[3][0] == "error"
    assert "returned 1 values for 2 keys" in results[2][1]
    # Chunks after the bad one were not fetched: they fail with the same error, not hang.
    assert results[4][0] == "error"


@pytest.mark.parametrize(
    ("returned", "shown"),
    [("abc", r"returned 'abc' of type str"), (None, r"returned None of type NoneType"), (7, "7")],
)
def test_fetch_returning_neither_mapping_nor_sequence_is_explained(
    returned: Any, shown: str
) -> None:
    src = Loader(lambda keys: returned, name="odd")
    results = _page(src, [1, 2])
    assert [r[0] for r in results] == ["error", "error"]
    assert re.search(shown, results[0][1])
    assert "mapping key -> value or a sequence" in results[0][1]


def test_fetch_returning_a_generator_is_refused_not_consumed_half_way() -> None:
    def fetch(keys: list[int]) -> Any:
        return (k for k in keys)

    results = _page(Loader(fetch, name="lazy"), [1, 2])
    assert results[0][0] == "error"
    assert "of type generator" in results[0][1]


# -- memcache: keys, sizes, serializers -------------------------------------------------------


class CountingClient(LocalClient):
    """A LocalClient that counts every request the Cache sends it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[tuple[str, list[Any]]] = []

    def get_many(self, keys: Any) -> dict[str | bytes, Any]:
        keys = list(keys)
        self.sent.append(("get_many", keys))
        return super().get_many(keys)

    def set_many(self, values: Any, expire: int = 0, noreply: bool | None = None) -> Any:
        self.sent.append(("set_many", list(values)))
        return super().set_many(values, expire, noreply)

    def delete_many(self, keys: Any, noreply: bool | None = None) -> bool:
        keys = list(keys)
        self.sent.append(("delete_many", keys))
        return super().delete_many(keys, noreply)


BAD_KEYS: list[tuple[str, Any, type[Exception], str]] = [
    ("int", 42, KeyTypeError, "build the key explicitly"),
    ("tuple", ("user", 1), KeyTypeError, "build the key explicitly"),
    ("None", None, KeyTypeError, "build the key explicitly"),
    ("space", "user 1", InvalidKeyError, "hash_long_keys=True"),
    ("command injection", "k\r\nflush_all", InvalidKeyError, "would split the command"),
    ("tab", "a\tb", InvalidKeyError, "hash_long_keys=True"),
    ("NUL", b"a\x00b", InvalidKeyError, "hash_long_keys=True"),
    ("DEL", "a\x7fb", InvalidKeyError, "hash_long_keys=True"),
    ("251 bytes", "k" * 251, InvalidKeyError, "over memcached's limit of 250"),
    ("250 chars, 252 bytes", "\u00e9" * 126, InvalidKeyError, "is 252 bytes"),
    ("empty", "", InvalidKeyError, "is empty"),
]
OPERATIONS: dict[str, Callable[[Cache, Any], Any]] = {
    "get": lambda cache, key: cache.get.asynq(key),
    "get_many": lambda cache, key: cache.get_many.asynq(["fine", key]),
    "set": lambda cache, key: cache.set.asynq(key, "v"),
    "set_many": lambda cache, key: cache.set_many.asynq({"fine": 1, key: 2}),
    "delete": lambda cache, key: cache.delete.asynq(key),
    "cached": lambda cache, key: _cached_with_key(cache, key).asynq(1),
}


def _cached_with_key(cache: Cache, key: Any) -> Any:
    @cache.cached(key=lambda n: key)
    def compute(n: int) -> int:
        return n

    return compute


def _shown(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 80 else text[:40]


@pytest.mark.parametrize("op", list(OPERATIONS))
@pytest.mark.parametrize(("what", "key", "error", "fix"), BAD_KEYS, ids=[k[0] for k in BAD_KEYS])
def test_a_bad_key_is_refused_before_anything_is_sent(
    op: str, what: str, key: Any, error: type[Exception], fix: str
) -> None:
    client = CountingClient()
    cache = Cache(client)

    @asynq()
    def page() -> Generator[Any, Any, Any]:
        return (yield OPERATIONS[op](cache, key))

    with pytest.raises(error) as info:
        page()
    message = str(info.value)
    assert _shown(key) in message
    assert fix in message
    assert client.sent == []  # not the bad key, nor the good keys of the same call


def test_a_get_many_refused_for_a_bad_key_sends_nothing() -> None:
    client = CountingClient()
    cache = Cache(client)

    @asynq()
    def page() -> Generator[Any, Any, Any]:
        return (yield cache.get_many.asynq(["fine", "bad key"]))

    with pytest.raises(InvalidKeyError):
        page()
    assert client.sent == []


def test_a_bad_key_fails_its_own_task_while_the_rest_of_the_round_goes_out() -> None:
    client = CountingClient()
    cache = Cache(client)

    @asynq()
    def safe_get(key: Any) -> Generator[Any, Any, Any]:
        try:
            return (yield cache.get.asynq(key))
        except InvalidKeyError as e:
            return type(e).__name__

    @asynq()
    def page() -> Generator[Any, Any, Any]:
        return (yield [safe_get.asynq("good:1"), safe_get.asynq("bad key"), safe_get.asynq(7)])

    cache.set("good:1", "one")
    client.sent.clear()
    assert page() == ["one", "InvalidKeyError", "KeyTypeError"]
    assert client.sent == [("get_many", [b"good:1"])]


def test_a_value_over_the_limit_is_refused_with_its_size_and_the_fix() -> None:
    client = CountingClient()
    cache = Cache(client)
    with pytest.raises(ValueTooLargeError) as info:
        cache.set("big", "x" * (1024 * 1024))
    message = str(info.value)
    assert "'big'" in message
    assert f"over the limit of {DEFAULT_MAX_VALUE_SIZE}" in message
    assert "split it or compress it" in message
    assert client.sent == []


def test_set_many_with_one_bad_value_writes_nothing() -> None:
    client = CountingClient()
    cache = Cache(client)
    with pytest.raises(ValueTooLargeError, match="'b'"):
        cache.set_many({"a": 1, "b": "x" * (2 * 1024 * 1024), "c": 3})
    with pytest.raises(SerializationError, match="'b'"):
        cache.set_many({"a": 1, "b": {1, 2}, "c": 3})
    assert client.sent == []
    assert cache.get_many(["a", "c"]) == {}


def test_a_cached_result_too_large_to_store_is_returned_uncached_and_not_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = CountingClient()
    cache = Cache(client)

    @cache.cached(key=lambda n: f"render:n={n}")
    def render(n: int) -> str:
        return "x" * n

    with caplog.at_level("WARNING"):
        assert render(2_000_000) == "x" * 2_000_000
    assert [op for op, _ in client.sent] == ["get_many"]  # the lookup only
    assert "render:n=2000000' is 2000007 bytes" in caplog.text
    assert cache.stats().write_failures == 1


def test_a_value_json_cannot_store_names_the_part_and_the_fix() -> None:
    client = CountingClient()
    cache = Cache(client)
    with pytest.raises(SerializationError) as info:
        cache.set("k", {"ok": [1, 2], "bad": (1, 2)})
    message = str(info.value)
    assert "'k'" in message
    assert "tuple" in message
    assert "PickleSerde" in message
    assert client.sent == []


class ExplodingSerde:
    """A custom serde that fails on some values."""

    def serialize(self, key: str | bytes, value: Any) -> tuple[bytes, int]:
        if value == "boom":
            msg = "cannot encode this"
            raise ValueError(msg)
        if value == "text":
            return "not bytes", 0  # type: ignore[return-value]
        return repr(value).encode(), 0

    def deserialize(self, key: str | bytes, data: bytes, flags: int) -> Any:
        return data.decode()


def test_a_serde_returning_the_wrong_type_is_named() -> None:
    client = CountingClient()
    cache = Cache(client, serde=ExplodingSerde())
    with pytest.raises(SerializationError, match=r"returned str data .* for key 'k'"):
        cache.set("k", "text")
    assert client.sent == []


def test_a_failing_custom_serde_is_wrapped_with_the_key_and_the_fix() -> None:
    client = CountingClient()
    cache = Cache(client, serde=ExplodingSerde())
    with pytest.raises(SerializationError) as info:
        cache.set("k", "boom")
    assert "'k'" in str(info.value)
    assert "ExplodingSerde" in str(info.value)
    assert client.sent == []


def test_a_value_another_program_wrote_is_a_clear_error_and_a_cached_call_recomputes() -> None:
    client = LocalClient()
    cache = Cache(client)

    @cache.cached(key=lambda n: f"shared:{n}")
    def compute(n: int) -> int:
        return n * 2

    client.set("shared:1", b"written by someone else")
    with pytest.raises(DeserializationError, match=r"'shared:1' holds .*key_prefix"):
        cache.get("shared:1")
    assert compute(1) == 2  # recomputed and overwritten
    assert cache.get("shared:1") == 2


# -- the same against a real memcached: not one byte sent -------------------------------------


def _server_stats(address: tuple[str, int]) -> dict[str, int]:
    with socket.create_connection(address, timeout=5) as conn:
        conn.sendall(b"stats\r\n")
        reply = b""
        while not reply.endswith(b"END\r\n"):
            chunk = conn.recv(65536)
            assert chunk, "memcached closed the stats connection"
            reply += chunk
    out = {}
    for line in reply.split(b"\r\n"):
        parts = line.split()
        if len(parts) == 3 and parts[0] == b"STAT" and parts[2].isdigit():
            out[parts[1].decode()] = int(parts[2])
    return out


STATS_COMMAND_BYTES = len(b"stats\r\n")


@pytest.mark.memcached
def test_against_real_memcached_bad_input_sends_not_one_byte(
    memcached_server: MemcachedServer, memcache_client: Any
) -> None:
    cache = Cache(memcache_client)
    cache.set("warm", 1)  # the client is connected: a reconnect would not hide a send
    before = _server_stats(memcached_server.address)
    for _, key, error, _ in BAD_KEYS:
        for op in OPERATIONS.values():

            @asynq()
            def page(op: Any = op, key: Any = key) -> Generator[Any, Any, Any]:
                return (yield op(cache, key))

            with pytest.raises(error):
                page()
    with pytest.raises(ValueTooLargeError):
        cache.set("big", b"x" * (DEFAULT_MAX_VALUE_SIZE + 1))
    with pytest.raises(SerializationError):
        cache.set("k", {1})
    after = _server_stats(memcached_server.address)
    assert after["bytes_read"] - before["bytes_read"] == STATS_COMMAND_BYTES
    assert after["cmd_get"] == before["cmd_get"]
    assert after["cmd_set"] == before["cmd_set"]


@pytest.mark.memcached
def test_against_real_memcached_the_size_limit_fits_the_server(memcache_client: Any) -> None:
    """The largest value the Cache accepts is one memcached stores, under the longest key."""
    cache = Cache(memcache_client, on_error="raise")
    key = "k" * 250
    header = len(cache._pack(key, b""))
    largest = b"v" * (DEFAULT_MAX_VALUE_SIZE - header)
    assert cache.set(key, largest) is True
    assert cache.get(key) == largest
    with pytest.raises(ValueTooLargeError):
        cache.set(key, largest + b"v")
