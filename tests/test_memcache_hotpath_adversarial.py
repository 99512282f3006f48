"""Adversarial checks of issue 15's memcache shortcuts: each one must behave as the slow path it
replaces (the same values, the same refusals and error types), also at the edges."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from batchq.memcache import Cache, JsonSerde, LocalClient, PickleSerde, SerializationError
from batchq.memcache._serde import FLAG_INT, FLAG_JSON, FLAG_PICKLE


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
