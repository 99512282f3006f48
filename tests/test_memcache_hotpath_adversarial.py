"""Adversarial checks of issue 15's memcache shortcuts: each one must behave as the slow path it
replaces (the same values, the same refusals and error types), also at the edges."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memcache_fixtures import close_clients, needs_memcached, server1, track
from pymemcache.client.base import Client

import batchq
from batchq.memcache import (
    Cache,
    InvalidKeyError,
    JsonSerde,
    KeyTypeError,
    LocalClient,
    PickleSerde,
    SerializationError,
)
from batchq.memcache._keys import encode_key
from batchq.memcache._serde import FLAG_INT, FLAG_JSON, FLAG_PICKLE
from batchq.testing import MemcachedServer

__all__ = ["close_clients", "server1"]  # fixtures, imported for pytest


@pytest.fixture
def low_int_digits() -> Iterator[int]:
    """Python's lowest allowed int_max_str_digits (640), restored afterwards."""
    before = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        yield 640
    finally:
        sys.set_int_max_str_digits(before)


# -- JsonSerde.serialize: the int shortcut refuses as json.dumps does -----------------------------


def test_an_int_over_a_lowered_digit_limit_is_a_serialization_error(low_int_digits: int) -> None:
    # The int shortcut (str(value) for |value| < 10**4000) assumed the default limit of 4300
    # digits; under a lower limit str() raised a bare ValueError, where the slow path (json.dumps)
    # gives the SerializationError every refusal of JsonSerde is.
    big = 10**1000
    with pytest.raises(SerializationError, match=r"'k'.*digits"):
        JsonSerde().serialize("k", big)
    with pytest.raises(SerializationError, match="digits"):
        JsonSerde().serialize("k", [big])  # the slow path, for comparison
    # Below the limit the shortcut still stores a decimal int, as memcached's incr reads it.
    assert JsonSerde().serialize("k", 10**600) == (str(10**600).encode(), FLAG_INT)


def test_a_local_client_refuses_such_an_int_with_the_serdes_error(low_int_digits: int) -> None:
    with pytest.raises(SerializationError, match="digits"):
        LocalClient().set("k", 10**1000)


# -- PickleSerde stores any picklable value, huge ints included ------------------------------------


@pytest.mark.parametrize("digits", [700, 5000])
def test_pickle_serde_stores_ints_json_cannot_print(digits: int, low_int_digits: int) -> None:
    # PickleSerde hands ints to JsonSerde's shortcut; an int too long to print as text was then
    # refused ("store a flatter, acyclic form of it") although pickle stores it.
    value: Any = -(10 ** (digits - 1)) - 7
    data, flags = PickleSerde().serialize("k", value)
    assert flags == FLAG_PICKLE
    assert PickleSerde().deserialize("k", data, flags) == value
    # Ints that print keep the shared int flag.
    assert PickleSerde().serialize("k", 12)[1] == FLAG_INT
    assert PickleSerde().serialize("k", [1])[1] == FLAG_PICKLE
    assert JsonSerde().serialize("k", 1.5)[1] == FLAG_JSON


def test_a_pickle_cache_round_trips_a_huge_int() -> None:
    value = 7 * 10**5000
    cache = Cache(LocalClient(), serde=PickleSerde())
    assert cache.set("k", value) is True
    assert cache.get("k") == value


# -- the key check's ASCII shortcut: the client's own prefix ---------------------------------------


@needs_memcached
@pytest.mark.memcached
@pytest.mark.parametrize("prefix", [b"a b:", b"p\n", b"t\x00"])
def test_a_client_prefix_memcached_cannot_carry_is_refused_for_every_key_form(
    server1: MemcachedServer, prefix: bytes
) -> None:
    # Cache.encode_key's shortcut for printable-ASCII str keys checked the key and the Cache's own
    # key_prefix only: under a client whose key_prefix holds whitespace, b"k" and "café" raised
    # InvalidKeyError naming the prefix, while "k" went out, was refused by pymemcache as a
    # "server fault" and read as a silent miss (writes: False). Now the Cache refuses the client's
    # prefix when it is made, as the slow path does at each key.
    client = track(Client(server1.address, key_prefix=prefix, connect_timeout=2, timeout=2))
    with pytest.raises(InvalidKeyError, match=f"prefix {re.escape(repr(prefix))}"):
        Cache(client)
    with pytest.raises(InvalidKeyError, match="prefix"):
        Cache(client, key_prefix="v2:")
    with pytest.raises(InvalidKeyError, match="prefix"):
        Cache(LocalClient(key_prefix=prefix))


@needs_memcached
@pytest.mark.memcached
def test_a_valid_client_prefix_reads_alike_through_every_key_form(server1: MemcachedServer) -> None:
    client = track(Client(server1.address, key_prefix=b"app:", connect_timeout=2, timeout=2))
    cache = Cache(client, key_prefix="v1:", on_error="raise")
    assert cache.set("k", 1) is True
    assert cache.set("caf\u00e9", 2) is True
    assert [
        cache.get("k"),
        cache.get(b"k"),
        cache.get("caf\u00e9"),
        cache.get("caf\u00e9".encode()),
    ] == [
        1,
        1,
        2,
        2,
    ]
    assert track(Client(server1.address)).get(b"app:v1:k") is not None


# -- the key memo: only what encode_key() accepts, whatever came before ---------------------------


class UnhashableKey(str):
    """A str key that cannot be a dict key (str subclasses are valid keys for encode_key)."""

    __hash__ = None  # type: ignore[assignment]


def test_an_unhashable_str_key_is_encoded_like_any_str_key() -> None:
    # encode_key() accepts str subclasses; the memo's store raised a bare "unhashable type".
    cache = Cache(LocalClient())
    assert cache.encode_key(UnhashableKey("k")) == b"k"
    assert cache.set(UnhashableKey("k"), 1) is True
    assert cache.get(UnhashableKey("k")) == 1
    assert cache.get.asynq(UnhashableKey("k"), default=0).value() == 1


@pytest.mark.xfail(
    strict=True,
    reason="the key memo answers any key equal to a remembered one (memoryview(b'k') == b'k' with "
    "the same hash): refusing it needs a type check on every memo hit, the hot path of a page",
)
def test_a_key_encode_key_refuses_is_refused_after_an_equal_bytes_key_was_read() -> None:
    cache = Cache(LocalClient())
    with pytest.raises(KeyTypeError):
        cache.get(memoryview(b"k"))  # type: ignore[arg-type]
    assert cache.get(b"k") is None
    with pytest.raises(KeyTypeError):
        cache.get(memoryview(b"k"))  # type: ignore[arg-type]


_keys = st.one_of(
    st.text(max_size=260),
    st.text(alphabet=st.characters(max_codepoint=127), max_size=260),
    st.binary(max_size=260),
    st.sampled_from(["h:x", "h:" + "a" * 64, "a" * 250, "a" * 247, "a" * 246, "k", b"k"]),
)


def _outcome(func: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        return ("value", func(*args, **kwargs))
    except Exception as e:
        return ("error", type(e), str(e))


@settings(max_examples=300)
@given(
    st.lists(_keys, max_size=6),
    st.sampled_from([b"", b"p:", b"x" * 10]),
    st.sampled_from([b"", b"c:"]),
    st.booleans(),
)
def test_the_key_shortcut_and_memo_encode_like_encode_key(
    keys: list[str | bytes], prefix: bytes, client_prefix: bytes, hash_long_keys: bool
) -> None:
    # Each key twice: the first time through the ASCII shortcut or encode_key, then the memo.
    cache = Cache(
        LocalClient(key_prefix=client_prefix), key_prefix=prefix, hash_long_keys=hash_long_keys
    )
    for key in keys + keys:
        expected = _outcome(encode_key, key, client_prefix + prefix, hash_long_keys=hash_long_keys)
        if expected[0] == "value":
            expected = ("value", expected[1][len(client_prefix) :])
        assert _outcome(cache.encode_key, key) == expected, key


# -- Cache.get's inlined lookup agrees with _lookup (get with a default, get_many) -----------------

_MISSING: Any = object()
_op = st.tuples(
    st.sampled_from(["set", "set and wait", "delete", "read"]),
    st.sampled_from(["a", "b", b"a"]),
    st.integers(0, 3),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3)), max_size=3),
    st.lists(st.lists(_op, max_size=8), max_size=3),
)
def test_the_inlined_get_reads_what_lookup_reads_and_the_runs_own_writes(
    stored: list[tuple[str, int]], runs: list[list[tuple[str, str | bytes, int]]]
) -> None:
    cache = Cache(LocalClient())
    for key, value in stored:
        cache.set(key, value)

    @batchq.asynq()
    def run(ops: list[tuple[str, str | bytes, int]]) -> Any:
        written: dict[str, Any] = {}  # this run's writes, by the key's text
        for kind, key, value in ops:
            name = key.decode() if isinstance(key, bytes) else key
            if kind == "set":
                cache.set.asynq(key, value)  # not waited on: read back from the overlay
                written[name] = value
            elif kind == "set and wait":
                yield cache.set.asynq(key, value)
                written[name] = value
            elif kind == "delete":
                cache.delete.asynq(key)
                written[name] = _MISSING
            else:
                before = cache.stats().overlay_hits
                hot, with_default, many = yield [
                    cache.get.asynq(key),
                    cache.get.asynq(key, default=_MISSING),
                    cache.get_many.asynq([key]),
                ]
                assert hot == (None if with_default is _MISSING else with_default)
                assert (with_default is _MISSING) == (key not in many)
                # A key this run wrote is read from its overlay by all three, never the server.
                assert cache.stats().overlay_hits - before == (3 if name in written else 0)
                if name in written:
                    assert with_default == written[name]

    for ops in runs:
        run(ops)


# -- the client's serde: bytes exactly, or no read could ever settle ------------------------------


class BytearraySerde:
    """A client serde that hands back a bytearray: equal to the bytes it was given."""

    def serialize(self, key: str | bytes, value: Any) -> tuple[bytes, int]:
        return bytes(value), 0

    def deserialize(self, key: str | bytes, data: bytes, flags: int) -> Any:
        return bytearray(data)


def test_a_client_serde_that_returns_a_bytearray_is_refused_when_the_cache_is_made() -> None:
    # The probe compared with ==, which a bytearray passes; decode_reads' header lookup and the
    # full path take bytes only, so every read then failed with "no batchq Cache wrote" (a lie).
    with pytest.raises(SerializationError, match=r"does not hand back.*bytearray"):
        Cache(LocalClient(serde=BytearraySerde()), serde=JsonSerde())
