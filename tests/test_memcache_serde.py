"""JsonSerde round-trips plain data and refuses the rest; nothing unpickles unless asked to."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import json
import math
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchq.memcache import (
    DEFAULT_MAX_VALUE_SIZE,
    DeserializationError,
    JsonSerde,
    PickleSerde,
    SerializationError,
    ValueTooLargeError,
    check_value_size,
)
from batchq.memcache._envelope import MAGIC, decode_reads, unpack
from batchq.memcache._serde import FLAG_BYTES, FLAG_INT, FLAG_JSON, FLAG_PICKLE, FLAG_TEXT

json_serde = JsonSerde()


class Color(enum.IntEnum):
    RED = 1


class Point:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and other.x == self.x

    __hash__ = None  # type: ignore[assignment]  # mutable value object


class Exploit:
    """Unpickling this would run code; a serde that loads it has failed."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (pytest.fail, ("unpickled attacker data",))


def _roundtrip(serde: Any, value: Any) -> Any:
    data, flags = serde.serialize("k", value)
    assert isinstance(data, bytes)
    return serde.deserialize("k", data, flags)


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        (b"raw\x00\xff", FLAG_BYTES),
        (b"", FLAG_BYTES),
        ("text \u00e9\u65e5", FLAG_TEXT),
        ("", FLAG_TEXT),
        ("123", FLAG_TEXT),
        (0, FLAG_INT),
        (-42, FLAG_INT),
        (2**70, FLAG_INT),
        (True, FLAG_JSON),
        (False, FLAG_JSON),
        (None, FLAG_JSON),
        (1.5, FLAG_JSON),
        ([1, "a", None, [True]], FLAG_JSON),
        ({"a": {"b": [1.25, None]}}, FLAG_JSON),
        ([], FLAG_JSON),
        ({}, FLAG_JSON),
    ],
)
def test_plain_values_round_trip_with_distinct_flags(value: Any, flags: int) -> None:
    data, got_flags = json_serde.serialize("k", value)
    assert got_flags == flags
    back = json_serde.deserialize("k", data, got_flags)
    assert back == value
    assert type(back) is type(value)


def test_ints_are_decimal_like_pymemcache_and_incr() -> None:
    assert json_serde.serialize("k", 1234) == (b"1234", 2)
    # memcached pads a value with spaces when decr shortens it in place.
    assert json_serde.deserialize("k", b"9 ", FLAG_INT) == 9


def test_special_floats_round_trip() -> None:
    assert _roundtrip(json_serde, math.inf) == math.inf
    assert math.isnan(_roundtrip(json_serde, math.nan))


def test_shared_references_are_not_cycles() -> None:
    shared = [1, 2]
    assert _roundtrip(json_serde, {"a": shared, "b": shared}) == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize(
    ("value", "where", "type_name"),
    [
        ((1, 2), "value", "tuple"),
        ({1: "a"}, "the key 1 in value", "int"),
        ({"a": [1, {2, 3}]}, "value['a'][1]", "set"),
        (datetime.date(2024, 1, 2), "value", "datetime.date"),
        (decimal.Decimal("1.1"), "value", "decimal.Decimal"),
        (Color.RED, "value", "test_memcache_serde.Color"),
        (collections.defaultdict(int), "value", "collections.defaultdict"),
        (bytearray(b"x"), "value", "bytearray"),
        ([b"nested bytes"], "value[0]", "bytes"),
        (Point(1), "value", "test_memcache_serde.Point"),
    ],
)
def test_other_values_are_refused_with_type_and_fix(value: Any, where: str, type_name: str) -> None:
    with pytest.raises(SerializationError) as info:
        json_serde.serialize("user:1", value)
    message = str(info.value)
    assert "'user:1'" in message
    assert f"{where} is a {type_name}" in message
    assert "serde=PickleSerde()" in message
    assert isinstance(info.value, TypeError)


def test_cycles_and_huge_values_are_serialization_errors() -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    with pytest.raises(SerializationError, match="Circular reference"):
        json_serde.serialize("k", cyclic)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(SerializationError, match="recursion"):
        json_serde.serialize("k", deep)
    with pytest.raises(SerializationError, match="digits"):
        json_serde.serialize("k", 10**5000)


def test_pickled_data_is_never_loaded_by_json_serde() -> None:
    data = pickle.dumps(Exploit())
    with pytest.raises(DeserializationError, match=r"written with pickle.*never loads") as info:
        json_serde.deserialize("k", data, FLAG_PICKLE)
    assert "'k'" in str(info.value)


@pytest.mark.parametrize("flags", [3, 4, 8, 64, 1 << 20])
def test_unknown_flags_are_refused(flags: int) -> None:
    with pytest.raises(DeserializationError, match=f"flags {flags}, which JsonSerde does not know"):
        json_serde.deserialize("k", pickle.dumps(Exploit()), flags)


@pytest.mark.parametrize(
    ("data", "flags"), [(b"\xff\xfe", FLAG_JSON), (b"not json", FLAG_JSON), (b"1.5", FLAG_INT)]
)
def test_corrupt_data_is_a_clear_error(data: bytes, flags: int) -> None:
    with pytest.raises(DeserializationError, match=f"with flags {flags} that JsonSerde cannot"):
        json_serde.deserialize("k", data, flags)


class TestPickleSerde:
    def test_stores_anything_picklable(self) -> None:
        serde = PickleSerde()
        assert _roundtrip(serde, Point(3)) == Point(3)
        assert _roundtrip(serde, (1, 2)) == (1, 2)
        assert serde.serialize("k", Point(3))[1] == FLAG_PICKLE

    def test_plain_types_keep_the_shared_flags(self) -> None:
        serde = PickleSerde()
        assert serde.serialize("k", b"x") == (b"x", FLAG_BYTES)
        assert serde.serialize("k", "x") == (b"x", FLAG_TEXT)
        assert serde.serialize("k", 5) == (b"5", FLAG_INT)

    def test_reads_what_json_serde_wrote(self) -> None:
        data, flags = json_serde.serialize("k", {"a": [1]})
        assert PickleSerde().deserialize("k", data, flags) == {"a": [1]}

    def test_unpicklable_values_and_bad_data(self) -> None:
        with pytest.raises(SerializationError, match="cannot pickle the value for memcache key"):
            PickleSerde().serialize("k", lambda: None)
        with pytest.raises(DeserializationError, match="does not unpickle"):
            PickleSerde().deserialize("k", b"garbage", FLAG_PICKLE)


def test_value_size_limit() -> None:
    check_value_size("k", b"x" * DEFAULT_MAX_VALUE_SIZE, DEFAULT_MAX_VALUE_SIZE)
    with pytest.raises(ValueTooLargeError, match=r"is 11 bytes serialized, over the limit of 10"):
        check_value_size("k", b"x" * 11, 10)
    assert DEFAULT_MAX_VALUE_SIZE < 1024 * 1024


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
).filter(lambda v: not _contains_nested_bytes(v))


def _contains_nested_bytes(value: Any, top: bool = True) -> bool:
    if isinstance(value, bytes):
        return not top
    if isinstance(value, list):
        return any(_contains_nested_bytes(v, False) for v in value)
    if isinstance(value, dict):
        return any(_contains_nested_bytes(v, False) for v in value.values())
    return False


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (so 1 and True, 1 and 1.0 differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@given(json_values)
def test_json_serde_round_trips_exactly(value: Any) -> None:
    assert _same(_roundtrip(json_serde, value), value)


@given(json_values)
def test_pickle_serde_round_trips_exactly(value: Any) -> None:
    assert _same(_roundtrip(PickleSerde(), value), value)


@given(st.binary(), st.integers(0, 2**32 - 1))
def test_json_serde_never_returns_unchecked_data(data: bytes, flags: int) -> None:
    # Whatever another writer stored, reading either succeeds as a plain value or fails clearly.
    try:
        value = json_serde.deserialize("k", data, flags)
    except DeserializationError:
        return
    assert flags in (FLAG_BYTES, FLAG_TEXT, FLAG_INT, FLAG_JSON)
    assert type(value) in (bytes, str, int, float, bool, type(None), list, dict)


# -- the fast path agrees with the full path ------------------------------------------------------

any_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and the infinities too: json writes and reads them
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


def _agree(a: Any, b: Any) -> bool:
    """_same, with NaN equal to NaN."""
    if type(a) is float and type(b) is float and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_agree(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_agree(a[k], b[k]) for k in a)
    return bool(a == b)


def _outcome(read: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "value", read(*args)
    except DeserializationError as e:
        return "error", str(e)


def _same_outcome(fast: tuple[str, Any], full: tuple[str, Any]) -> bool:
    return fast[0] == full[0] and (_agree(fast[1], full[1]) if fast[0] == "value" else fast == full)


@given(any_json, st.booleans(), st.sampled_from([(",", ":"), (", ", ": ")]))
def test_the_json_fast_path_reads_what_json_loads_reads(
    value: Any, ascii_only: bool, separators: tuple[str, str]
) -> None:
    data = json.dumps(value, ensure_ascii=ascii_only, separators=separators).encode(
        "utf-8", errors="surrogatepass"
    )
    expected = json.loads(data.decode("utf-8", errors="surrogatepass"))
    assert _agree(json_serde.deserialize("k", data, FLAG_JSON), expected)
    assert _agree(json_serde._deserialize_full("k", data, FLAG_JSON), expected)


_json_texts = any_json.map(lambda v: json.dumps(v, ensure_ascii=False))


@st.composite
def _malformed(draw: st.DrawFn) -> bytes:
    """JSON text damaged the ways stored data is: cut, padded, spliced, or not JSON at all."""
    text = draw(_json_texts)
    how = draw(st.sampled_from(["cut", "before", "after", "splice", "bom", "raw"]))
    if how == "cut":
        text = text[: draw(st.integers(0, max(len(text) - 1, 0)))]
    elif how == "before":
        text = draw(st.sampled_from([" ", "\n", "x", "]", "0", "\ud800"])) + text
    elif how == "after":  # whitespace (valid), then extra data of every kind (invalid)
        text += draw(st.sampled_from([" ", "\t\n", "}", "1", "x", " []", "\ud800"]))
    elif how == "splice":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=3)) + text[at:]
    elif how == "bom":
        text = "\ufeff" + text
    else:
        return draw(st.binary(max_size=40))
    return text.encode("utf-8", errors="surrogatepass")


@given(_malformed() | _json_texts.map(str.encode))
def test_the_json_fast_path_fails_and_succeeds_exactly_like_the_full_path(data: bytes) -> None:
    fast = _outcome(json_serde.deserialize, "k", data, FLAG_JSON)
    full = _outcome(json_serde._deserialize_full, "k", data, FLAG_JSON)
    assert _same_outcome(fast, full), (fast, full)


@given(
    _malformed() | st.integers().map(lambda i: str(i).encode()),
    st.sampled_from([FLAG_TEXT, FLAG_INT]),
)
def test_the_text_and_int_fast_paths_agree_with_the_full_path(data: bytes, flags: int) -> None:
    fast = _outcome(json_serde.deserialize, "k", data, flags)
    full = _outcome(json_serde._deserialize_full, "k", data, flags)
    assert _same_outcome(fast, full), (fast, full)


@given(
    st.one_of(
        _malformed(),
        _json_texts.map(str.encode),
        st.binary(max_size=20),
    ),
    st.sampled_from([FLAG_BYTES, FLAG_TEXT, FLAG_INT, FLAG_JSON, FLAG_PICKLE, 7]),
    st.sampled_from(["envelope", "short", "foreign"]),
)
def test_the_one_lookup_header_settles_like_unpack(data: bytes, flags: int, shape: str) -> None:
    stored = {
        "envelope": MAGIC + flags.to_bytes(4, "big") + data,
        "short": MAGIC + flags.to_bytes(4, "big")[: len(data) % 4],
        "foreign": data,
    }[shape]

    class Read:
        def __init__(self) -> None:
            self.key = "k"
            self.hit = False
            self._value: Any = None
            self._error: BaseException | None = None

    read = Read()
    decode_reads(json_serde, [(b"k", read)], {b"k": stored}, 1)  # type: ignore[list-item]
    expected = _outcome(unpack, json_serde, "k", stored)
    got = ("error", str(read._error)) if read._error is not None else ("value", read._value)
    assert read.hit is (got[0] == "value")
    assert _same_outcome(got, expected), (got, expected)
