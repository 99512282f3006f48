"""Serializers: how values become ``(bytes, flags)`` for memcached and back.

They follow pymemcache's serde protocol (``serialize(key, value)`` / ``deserialize(key, data,
flags)``), so the same object can be handed to a pymemcache client. The default,
:class:`JsonSerde`, never unpickles: whoever can write to a memcached server must not be able to
run code in its readers.
"""

from __future__ import annotations

import json
import json.scanner
import pickle
from collections.abc import Callable
from typing import Any, Final, Protocol

from ._errors import DeserializationError, SerializationError, ValueTooLargeError

__all__ = [
    "DEFAULT_MAX_VALUE_SIZE",
    "FLAG_BYTES",
    "FLAG_PICKLE",
    "FLAG_INT",
    "FLAG_TEXT",
    "FLAG_JSON",
    "JsonSerde",
    "PickleSerde",
    "Serde",
    "check_value_size",
]

# Flags shared with pymemcache's default serde, so values either library writes read back in the
# other: raw bytes, pickle, a decimal int (which memcached's incr/decr also understand), UTF-8 text.
FLAG_BYTES = 0
FLAG_PICKLE = 1
FLAG_INT = 2
FLAG_TEXT = 16
# pymemcache has no JSON flag; this bit is batchq's own.
FLAG_JSON = 32

DEFAULT_MAX_VALUE_SIZE = 1024 * 1024 - 1024
"""Largest serialized value sent: memcached's default 1 MiB item limit, less room for the item
header, a 250-byte key and the CAS field."""

_SCALARS = (str, int, float, bool, type(None))
# Ints this big cannot be printed under Python's default int_max_str_digits (4300); they go
# through json.dumps, which then reports the limit as a SerializationError.
_INT_LIMIT = 10**4000


# The fast path of JSON decoding: json.loads() without its wrapping (type checks, two whitespace
# regex matches, raw_decode's frame). The C scanner parses one JSON value at index 0 and returns
# (value, end), exactly what json.loads() computes for a text with no whitespace around the value,
# which is every text JsonSerde writes. Anything else (whitespace, extra data, invalid JSON, an
# undecodable byte, nesting past the recursion limit) raises here, and the caller takes the full
# path, which reads it or raises the usual error. Measured: 0.87 against 2.1 us per page value;
# raw_decode() 1.4. Like json's own default decoder, one scanner serves every thread.
# typeshed types make_scanner as a class that takes itself; it takes the decoder whose settings
# it uses (json.JSONDecoder() builds its own scan_once this way).
_scan: Final[Callable[[str, int], tuple[Any, int]]] = json.scanner.make_scanner(
    json.JSONDecoder()  # type: ignore[arg-type]
)


#
# Each reader reads ``data[start:]``: the Cache's envelope (a header before the serde's bytes) is
# read without copying the value out first. JSON decodes the whole of ``data`` and scans from
# ``start``, which is the same place only when the bytes before it are ASCII (the envelope's
# header is: _envelope checks); with anything else it raises, and the full path reads the value.
# Measured on the page's values: JSON 0.74 -> 0.60 us with the header skipped in place, text
# 0.24 -> 0.15 us as a plain function (methodcaller builds its arguments on every call).


def _read_json(data: bytes, start: int) -> Any:
    text = data.decode()  # strict UTF-8 is the fast codec; surrogates take the full path
    value, end = _scan(text, start)
    if end != len(text):
        raise ValueError(end)
    return value


def _read_text(data: bytes, start: int) -> str:
    return data[start:].decode("utf-8", "surrogatepass")


def _read_int(data: bytes, start: int) -> int:
    # int() also skips the trailing spaces memcached leaves after a shrinking decr.
    return int(data[start:])


def _same(data: bytes, start: int) -> bytes:
    return data[start:]  # data itself when start is 0


Reader = Callable[[bytes, int], Any]
"""``reader(data, start)``: the value of ``data[start:]``, or an exception for anything unusual."""

_READERS: Final[dict[int, Reader]] = {
    FLAG_BYTES: _same,
    FLAG_TEXT: _read_text,
    FLAG_INT: _read_int,
    FLAG_JSON: _read_json,
}
"""JsonSerde's reader of each flag, for the common case: each one returns the value, or raises
for anything unusual, and then :meth:`JsonSerde.deserialize`'s full path decides (and explains)."""


def readers(serde: object) -> dict[int, Reader] | None:
    """The fast readers that give what ``serde.deserialize`` gives, by flags (None: none known).

    A reader may raise where the serde would not; its caller then asks the serde itself."""
    kind = type(serde)
    if kind is JsonSerde or kind is PickleSerde:
        # PickleSerde reads JSON's flags with JsonSerde; its own flag (pickle) is left to it.
        return _READERS
    return None


class Serde(Protocol):
    """What a client needs from a serializer (the pymemcache serde protocol)."""

    def serialize(self, key: str | bytes, value: Any) -> tuple[bytes, int]: ...

    def deserialize(self, key: str | bytes, data: bytes, flags: int) -> Any: ...


class JsonSerde:
    """The default serde: bytes, str, int, float, bool, None, and lists and str-keyed dicts of them.

    Values are refused unless they read back equal and of the same type, so tuples, int dict keys
    and subclasses (enums, ``defaultdict``) raise :class:`SerializationError` instead of silently
    coming back different.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "JsonSerde()"

    def serialize(self, key: str | bytes, value: Any) -> tuple[bytes, int]:
        kind = type(value)
        if kind is bytes:
            return value, FLAG_BYTES
        if kind is str:
            return value.encode("utf-8", errors="surrogatepass"), FLAG_TEXT
        if kind is int and abs(value) < _INT_LIMIT:
            try:
                return str(value).encode("ascii"), FLAG_INT
            except ValueError:
                pass  # over a lowered sys.get_int_max_str_digits(): json.dumps refuses it below
        problem = _json_problem(value, "value")
        if problem is not None:
            where, bad = problem
            msg = (
                f"cannot store the value for memcache key {key!r} with JsonSerde: {where} is "
                f"{_describe(bad)}; JsonSerde stores only bytes, str, int, float, bool, None, and "
                "lists and str-keyed dicts of them, so that nothing needs unpickling; convert it "
                "(e.g. to a str, list or dict), or pass serde=PickleSerde() explicitly if everyone "
                "who can write to this cache is trusted"
            )
            raise SerializationError(msg)
        try:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        except (ValueError, RecursionError) as exc:
            # A reference cycle, nesting deeper than the recursion limit, or an int too long to
            # print (sys.get_int_max_str_digits()).
            msg = (
                f"cannot store the value for memcache key {key!r} with JsonSerde: {exc}; "
                "store a flatter, acyclic form of it"
            )
            raise SerializationError(msg) from None
        return text.encode("utf-8", errors="surrogatepass"), FLAG_JSON

    def deserialize(self, key: str | bytes, data: bytes, flags: int) -> Any:
        reader = _READERS.get(flags)
        if reader is not None:
            try:
                return reader(data, 0)
            except Exception:
                pass  # something unusual: the full path reads it, or says what is wrong
        return self._deserialize_full(key, data, flags)

    def _deserialize_full(self, key: str | bytes, data: bytes, flags: int) -> Any:
        """Every case, each error explained: what deserialize() does when a fast reader fails."""
        try:
            if flags == FLAG_BYTES:
                return data
            if flags == FLAG_TEXT:
                return data.decode("utf-8", errors="surrogatepass")
            if flags == FLAG_INT:
                # int() also skips the trailing spaces memcached leaves after a shrinking decr.
                return int(data)
            if flags == FLAG_JSON:
                return json.loads(data.decode("utf-8", errors="surrogatepass"))
        except (ValueError, RecursionError) as exc:
            msg = (
                f"memcache key {key!r} holds {_preview(data)} with flags {flags} that JsonSerde "
                f"cannot decode ({exc}); another writer stored different data under this key, "
                "so delete the key or use the serde that wrote it"
            )
            raise DeserializationError(msg) from exc
        hint = (
            "it was written with pickle (e.g. pymemcache's default serde), which JsonSerde never "
            "loads because anyone who can write to the cache could run code here"
            if flags == FLAG_PICKLE
            else "another client or serde wrote it"
        )
        msg = (
            f"memcache key {key!r} holds {_preview(data)} with flags {flags}, which JsonSerde does "
            f"not know; {hint}; delete the key, or read it with the serde that wrote it"
        )
        raise DeserializationError(msg)


class PickleSerde:
    """Stores any picklable value. Only for caches whose every writer is trusted.

    Warning: unpickling runs code chosen by the data. Anyone who can write to the memcached server
    (any client on its network, unless it is locked down) can then run code in every reader.
    Reads JsonSerde's formats too, so switching to it keeps existing entries readable.
    """

    __slots__ = ("protocol",)

    def __init__(self, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        self.protocol = protocol

    def __repr__(self) -> str:
        return f"PickleSerde(protocol={self.protocol})"

    def serialize(self, key: str | bytes, value: Any) -> tuple[bytes, int]:
        kind = type(value)
        if kind is bytes or kind is str or kind is int:
            try:
                return _JSON.serialize(key, value)
            except SerializationError:
                if kind is not int:
                    raise
                # An int too long to print as text (sys.get_int_max_str_digits()): pickle it.
        try:
            return pickle.dumps(value, protocol=self.protocol), FLAG_PICKLE
        except Exception as exc:
            # pickle raises PicklingError, TypeError or AttributeError depending on the object.
            msg = (
                f"cannot pickle the value for memcache key {key!r}: {_describe(value)} ({exc}); "
                "store a plain data form of it instead"
            )
            raise SerializationError(msg) from exc

    def deserialize(self, key: str | bytes, data: bytes, flags: int) -> Any:
        if flags == FLAG_PICKLE:
            try:
                # Deliberately unsafe: choosing PickleSerde is the caller's statement of trust.
                return pickle.loads(data)
            except Exception as exc:
                msg = (
                    f"memcache key {key!r} holds {_preview(data)} that does not unpickle ({exc}); "
                    "the class may have moved or the data is corrupt; delete the key"
                )
                raise DeserializationError(msg) from exc
        return _JSON.deserialize(key, data, flags)


_JSON = JsonSerde()


def check_value_size(key: str | bytes, data: bytes, max_value_size: int) -> None:
    """Refuse a serialized value over ``max_value_size`` bytes, before it is sent."""
    if len(data) > max_value_size:
        msg = (
            f"value for memcache key {key!r} is {len(data)} bytes serialized, over the limit of "
            f"{max_value_size}; memcached would refuse it (default item size 1 MiB); store less "
            "(split it or compress it), or raise max_value_size together with memcached's -I"
        )
        raise ValueTooLargeError(msg)


def _json_problem(value: object, where: str) -> tuple[str, object] | None:
    """Find the first part of ``value`` that would not read back equal through JSON."""
    # Iterative and visiting each container once: deep or cyclic values get past this walk and
    # fail in json.dumps, which reports them clearly.
    stack: list[tuple[object, str]] = [(value, where)]
    seen: set[int] = set()
    while stack:
        item, path = stack.pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is list:
            assert isinstance(item, list)
            if id(item) in seen:
                continue
            seen.add(id(item))
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
        elif kind is dict:
            assert isinstance(item, dict)
            if id(item) in seen:
                continue
            seen.add(id(item))
            for child_key, child in item.items():
                if type(child_key) is not str:
                    return f"the key {child_key!r} in {path}", child_key
                stack.append((child, f"{path}[{child_key!r}]"))
        else:
            return path, item
    return None


def _describe(value: object) -> str:
    kind = type(value)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    text = repr(value)
    if len(text) > 80:
        text = f"{text[:60]}...{text[-15:]}"
    return f"a {name} ({text})"


def _preview(data: bytes) -> str:
    head = repr(data[:40])
    return f"{len(data)} bytes ({head}{'...' if len(data) > 40 else ''})"
