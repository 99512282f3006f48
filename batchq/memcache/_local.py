"""An in-process stand-in for a memcached server, with pymemcache's ``Client`` interface.

Tests and single-process programs can use :class:`LocalClient` where a pymemcache client would go.
It applies the same key rules, serde and value-size limit as the path to a real server, so code
that works against it does not break on memcached: a value memcached would refuse is refused here.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._errors import CommandError
from ._keys import encode_key
from ._serde import DEFAULT_MAX_VALUE_SIZE, JsonSerde, Serde, check_value_size
from ._ttl import MAX_RELATIVE_TTL

# Mapping is invariant in its keys: accept dict[str, X] and dict[bytes, X] as well as mixed.
_Values = Mapping[str, Any] | Mapping[bytes, Any] | Mapping[str | bytes, Any]

__all__ = ["LocalClient"]

_UINT64 = 2**64
_COUNTER = re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]+)(?:[ \t\n\v\f\r\x00]|\Z)")


class _Entry:
    """One stored item: serialized bytes, flags, absolute expiry time (None: never)."""

    __slots__ = ("data", "expires_at", "flags", "cas")

    def __init__(self, data: bytes, flags: int, expires_at: float | None) -> None:
        self.data = data
        self.flags = flags
        self.expires_at = expires_at
        self.cas = 0  # set by _store: a new number for every write, as memcached's cas unique


class LocalClient:
    """A thread-safe in-memory cache with pymemcache ``Client``'s methods and return values.

    Holds at most ``max_items`` items and ``max_bytes`` bytes of keys plus serialized values
    (None: unbounded), evicting the least recently used. ``clock`` (unix seconds) is injectable
    so tests can expire items without sleeping. As with pymemcache, ``noreply`` (default
    ``default_noreply``) makes ``set``/``add``/``delete`` return True without saying what happened.
    """

    server: tuple[str, int] = ("local", 0)

    def __init__(
        self,
        *,
        serde: Serde | None = None,
        key_prefix: bytes | str = b"",
        hash_long_keys: bool = False,
        max_items: int | None = 100_000,
        max_bytes: int | None = 64 * 1024 * 1024,
        max_value_size: int = DEFAULT_MAX_VALUE_SIZE,
        default_noreply: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, limit in (("max_items", max_items), ("max_bytes", max_bytes)):
            if limit is not None and limit < 1:
                msg = f"LocalClient {name}={limit!r} must be at least 1, or None for no limit"
                raise ValueError(msg)
        self.serde: Serde = serde if serde is not None else JsonSerde()
        self.key_prefix = key_prefix.encode("utf-8") if isinstance(key_prefix, str) else key_prefix
        self.hash_long_keys = hash_long_keys
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_value_size = max_value_size
        self.default_noreply = default_noreply
        self.clock = clock
        self._items: OrderedDict[bytes, _Entry] = OrderedDict()  # least recently used first
        self._bytes = 0
        self._lock = threading.Lock()
        self._cas_counter = 0

    def __repr__(self) -> str:
        return f"<LocalClient {len(self._items)} items, {self._bytes} bytes>"

    # -- reads --------------------------------------------------------------------------------

    def get(self, key: str | bytes, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        encoded = self._encode(key)
        with self._lock:
            entry = self._live(encoded)
            if entry is None:
                return default
            data, flags = entry.data, entry.flags
        return self.serde.deserialize(key, data, flags)

    def get_many(self, keys: Iterable[str | bytes]) -> dict[str | bytes, Any]:
        """The hits among ``keys``, keyed as given; misses are absent."""
        encoded = [(key, self._encode(key)) for key in keys]
        found: list[tuple[str | bytes, bytes, int]] = []
        with self._lock:
            for key, raw in encoded:
                entry = self._live(raw)
                if entry is not None:
                    found.append((key, entry.data, entry.flags))
        return {key: self.serde.deserialize(key, data, flags) for key, data, flags in found}

    def gets(self, key: str | bytes, default: Any = None, cas_default: Any = None) -> Any:
        """``(value, cas)`` for ``key``, or ``(default, cas_default)``; cas is for :meth:`cas`."""
        return self.gets_many([key]).get(key, (default, cas_default))

    def gets_many(self, keys: Iterable[str | bytes]) -> dict[str | bytes, tuple[Any, bytes]]:
        """``{key: (value, cas)}`` for the hits among ``keys``; cas tokens are bytes."""
        encoded = [(key, self._encode(key)) for key in keys]
        found: list[tuple[str | bytes, bytes, int, int]] = []
        with self._lock:
            for key, raw in encoded:
                entry = self._live(raw)
                if entry is not None:
                    found.append((key, entry.data, entry.flags, entry.cas))
        return {
            key: (self.serde.deserialize(key, data, flags), str(cas).encode("ascii"))
            for key, data, flags, cas in found
        }

    # -- writes -------------------------------------------------------------------------------

    def set(
        self, key: str | bytes, value: Any, expire: int = 0, noreply: bool | None = None
    ) -> bool:
        """Store ``value`` for ``expire`` seconds (0: until evicted); always True."""
        return not self.set_many({key: value}, expire, noreply)

    def set_many(
        self, values: _Values, expire: int = 0, noreply: bool | None = None
    ) -> list[str | bytes]:
        """Store every item, or none if one is invalid; returns the keys not stored (none)."""
        prepared = [self._prepare(key, value) for key, value in values.items()]
        with self._lock:
            expires_at = self._expires_at(expire)
            for encoded, data, flags in prepared:
                self._store(encoded, _Entry(data, flags, expires_at))
        return []

    def add(
        self, key: str | bytes, value: Any, expire: int = 0, noreply: bool | None = None
    ) -> bool:
        """Store only if ``key`` holds nothing; True if stored (always True with noreply)."""
        encoded, data, flags = self._prepare(key, value)
        with self._lock:
            expires_at = self._expires_at(expire)
            if self._live(encoded) is not None:
                stored = False
            else:
                self._store(encoded, _Entry(data, flags, expires_at))
                stored = True
        return True if self._noreply(noreply) else stored

    def cas(
        self,
        key: str | bytes,
        value: Any,
        cas: int | str | bytes,
        expire: int = 0,
        noreply: bool | None = False,
    ) -> bool | None:
        """Store only if ``key`` was not written since :meth:`gets` returned ``cas``.

        True: stored; False: written since (memcached's EXISTS); None: ``key`` holds nothing
        (NOT_FOUND). With noreply, always True.
        """
        token = _check_cas(key, cas)
        encoded, data, flags = self._prepare(key, value)
        with self._lock:
            expires_at = self._expires_at(expire)
            entry = self._live(encoded)
            if entry is None:
                result: bool | None = None
            elif entry.cas != token:
                result = False
            else:
                self._store(encoded, _Entry(data, flags, expires_at))
                result = True
        return True if noreply else result

    def incr(self, key: str | bytes, value: int, noreply: bool | None = False) -> int | None:
        """Add ``value`` to a decimal value, wrapping at 2**64; None if ``key`` is missing."""
        return self._delta(key, value, noreply, incr=True)

    def decr(self, key: str | bytes, value: int, noreply: bool | None = False) -> int | None:
        """Subtract ``value`` from a decimal value, stopping at 0; None if ``key`` is missing."""
        return self._delta(key, value, noreply, incr=False)

    def delete(self, key: str | bytes, noreply: bool | None = None) -> bool:
        """Remove ``key``; True if it was there (always True with noreply)."""
        encoded = self._encode(key)
        with self._lock:
            existed = self._live(encoded) is not None
            if existed:
                self._remove(encoded)
        return True if self._noreply(noreply) else existed

    def delete_many(self, keys: Iterable[str | bytes], noreply: bool | None = None) -> bool:
        """Remove every key (all keys are checked first); always True."""
        encoded = [self._encode(key) for key in keys]
        with self._lock:
            for raw in encoded:
                if raw in self._items:
                    self._remove(raw)
        return True

    def flush_all(self, delay: int = 0, noreply: bool | None = None) -> bool:
        """Remove everything; always True."""
        if delay != 0:
            msg = (
                f"LocalClient.flush_all(delay={delay!r}) is not supported: a delayed flush "
                "would need a timer; call flush_all() when the delay has passed"
            )
            raise CommandError(msg)
        with self._lock:
            self._items.clear()
            self._bytes = 0
        return True

    def close(self) -> None:
        """Nothing to release; present so LocalClient can stand in for a network client."""

    # -- internals ----------------------------------------------------------------------------

    def _noreply(self, noreply: bool | None) -> bool:
        return self.default_noreply if noreply is None else noreply

    def _encode(self, key: str | bytes) -> bytes:
        return encode_key(key, self.key_prefix, hash_long_keys=self.hash_long_keys)

    def _prepare(self, key: str | bytes, value: Any) -> tuple[bytes, bytes, int]:
        """Check and serialize outside the lock, exactly as for a real server."""
        encoded = self._encode(key)
        data, flags = self.serde.serialize(key, value)
        check_value_size(key, data, self.max_value_size)
        return encoded, data, flags

    def _expires_at(self, expire: int) -> float | None:
        if type(expire) is not int:
            msg = (
                f"expire={expire!r} is a {type(expire).__name__}; memcached takes whole "
                "seconds (0: never), so pass an int"
            )
            raise CommandError(msg)
        if expire == 0:
            return None
        if expire < 0:
            # memcached stores the item already expired: it replaces the old value, then misses.
            return float("-inf")
        if expire > MAX_RELATIVE_TTL:
            return float(expire)
        return self.clock() + expire

    def _live(self, encoded: bytes) -> _Entry | None:
        """The unexpired entry (now most recently used), or None. Caller holds the lock."""
        entry = self._items.get(encoded)
        if entry is None:
            return None
        if entry.expires_at is not None and self.clock() >= entry.expires_at:
            self._remove(encoded)
            return None
        self._items.move_to_end(encoded)
        return entry

    def _store(self, encoded: bytes, entry: _Entry) -> None:
        """Insert as most recently used, then evict down to the limits. Caller holds the lock."""
        if encoded in self._items:
            self._remove(encoded)
        self._cas_counter += 1
        entry.cas = self._cas_counter
        self._items[encoded] = entry
        self._bytes += len(encoded) + len(entry.data)
        while len(self._items) > 1 and (
            (self.max_items is not None and len(self._items) > self.max_items)
            or (self.max_bytes is not None and self._bytes > self.max_bytes)
        ):
            oldest = next(iter(self._items))
            self._remove(oldest)

    def _remove(self, encoded: bytes) -> None:
        entry = self._items.pop(encoded)
        self._bytes -= len(encoded) + len(entry.data)

    def _delta(
        self, key: str | bytes, delta: int, noreply: bool | None, *, incr: bool
    ) -> int | None:
        name = "incr" if incr else "decr"
        if type(delta) is not int or not 0 <= delta < _UINT64:
            msg = (
                f"{name} of memcache key {key!r} by {delta!r}: memcached takes an int from 0 to "
                f"2**64-1; use {'decr' if incr else 'incr'} to go the other way"
            )
            raise CommandError(msg)
        encoded = self._encode(key)
        with self._lock:
            entry = self._live(encoded)
            if entry is None:
                return None
            current = _parse_counter(entry.data)
            if current is None:
                msg = (
                    f"cannot {name} memcache key {key!r}: it holds {entry.data[:40]!r}, not a "
                    "decimal number; store counters as int (JsonSerde writes ints as decimals)"
                )
                raise CommandError(msg)
            result = (current + delta) % _UINT64 if incr else max(0, current - delta)
            text = str(result).encode("ascii")
            if len(text) <= len(entry.data):
                # memcached rewrites in place and pads with spaces; mirror it so raw reads match.
                text = text.ljust(len(entry.data))
            self._store(encoded, _Entry(text, entry.flags, entry.expires_at))
        return None if noreply else result


def _check_cas(key: str | bytes, cas: object) -> int:
    """The cas token as a number; pymemcache accepts int, str or bytes of digits."""
    text = cas.decode("ascii", "replace") if isinstance(cas, bytes) else cas
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text
    if isinstance(text, str) and text.isdigit():
        return int(text)
    msg = (
        f"cas of memcache key {key!r} with the token {cas!r}: a cas token is the digits gets() "
        "returned (int, str or bytes); pass the token from gets() unchanged"
    )
    raise CommandError(msg)


def _parse_counter(data: bytes) -> int | None:
    """The number memcached's incr/decr read from ``data``, or None if it refuses it.

    memcached uses strtoull: leading whitespace and a sign are allowed, the digits must end at
    whitespace or the end, and the value must fit 64 bits (a '-' that wraps below 0 is refused).
    """
    match = _COUNTER.match(data)
    if match is None:
        return None
    sign, digits = match.groups()
    value = int(digits)
    if value >= _UINT64:
        return None
    if sign == b"-":
        value = (_UINT64 - value) % _UINT64
        if value >= _UINT64 // 2:
            return None
    return value
