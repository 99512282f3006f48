"""The stored record of a herd-protected cached function: a value with a soft expiry.

memcached expires an item at its hard ttl (``ttl + stale_ttl``); the record inside says until when
the value is *fresh* (``fresh_until``) and for how long after that it may still be served *stale*
(``stale_span``) while one caller recomputes it. An invalidated record keeps its value (to serve
stale) but is never fresh again; a *tombstone* is an invalidated record with no value, left where
nothing was stored, so that a write-back racing the invalidation fails its ``add``.

Layout: ``b"\\x00bh"``, one flags byte (bit 0: invalidated, bit 1: has a value), the two times as
big-endian doubles (unix seconds and seconds; ``inf`` for no expiry; an invalidated record's
``fresh_until`` is the time of the invalidation), then the value in the Cache's own
envelope. It never starts with the plain envelope's marker, so a Cache reads it through
``Cache._unpack``, off the hot path of plain values.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from ._errors import DeserializationError
from ._serde import Serde

__all__ = ["HERD_MAGIC", "Record", "pack_record", "parse_record"]

HERD_MAGIC: Final = b"\x00bh"
_TIMES: Final = struct.Struct(">dd")
_HEAD: Final = len(HERD_MAGIC) + 1 + _TIMES.size
_INVALIDATED: Final = 1
_HAS_VALUE: Final = 2
# The Cache's plain envelope around the value: same as _cache._MAGIC and _HEADER, keep in sync
# (tests/test_memcache_herd.py checks they agree).
ENVELOPE_MAGIC: Final = b"\x00bq"
_ENVELOPE_HEADER: Final = len(ENVELOPE_MAGIC) + 4
_NO_VALUE: Final[Any] = None
# The whole head of a fresh record with a value, for one unpack_from on the warm path.
_FULL: Final = struct.Struct(">3sBdd3sI")
_FULL_HEAD: Final = _FULL.size


class Record:
    """A parsed record: ``value``, decoded, and ``inner``, the value in the Cache's envelope
    (``b""``: no value, a tombstone)."""

    __slots__ = ("invalidated", "fresh_until", "stale_span", "inner", "value")

    def __init__(
        self,
        invalidated: bool,
        fresh_until: float,
        stale_span: float,
        inner: bytes,
        value: Any = _NO_VALUE,
    ) -> None:
        self.invalidated = invalidated
        self.fresh_until = fresh_until
        self.stale_span = stale_span
        self.inner = inner
        self.value = value

    @property
    def stale_until(self) -> float:
        return self.fresh_until + self.stale_span

    def is_fresh(self, now: float) -> bool:
        # Never-invalidated records always carry a value (a tombstone is invalidated).
        return not self.invalidated and now < self.fresh_until

    def may_serve_stale(self, now: float) -> bool:
        return bool(self.inner) and now < self.stale_until

    def __repr__(self) -> str:
        state = "invalidated" if self.invalidated else f"fresh until {self.fresh_until:.3f}"
        kind = f"{len(self.inner)}-byte value" if self.inner else "no value (tombstone)"
        return f"<cached-function record: {kind}, {state}, stale until {self.stale_until:.3f}>"


def pack_record(inner: bytes, fresh_until: float, stale_span: float, invalidated: bool) -> bytes:
    flags = (_INVALIDATED if invalidated else 0) | (_HAS_VALUE if inner else 0)
    return HERD_MAGIC + bytes([flags]) + _TIMES.pack(fresh_until, stale_span) + inner


def parse_record(key: str | bytes, stored: bytes, serde: Serde | None = None) -> Record:
    """The record in ``stored`` (which starts with :data:`HERD_MAGIC`), or a clear error.

    With ``serde`` (the Cache's), the value is decoded too: a warm read parses once. This runs
    for every warm read of a herd-protected function, so the common record (a value in the
    envelope) is read with one ``unpack_from``.
    """
    if len(stored) >= _FULL_HEAD:
        _, flags, fresh_until, stale_span, envelope, value_flags = _FULL.unpack_from(stored)
        if flags == _HAS_VALUE and envelope == ENVELOPE_MAGIC and serde is not None:
            value = serde.deserialize(key, stored[_FULL_HEAD:], value_flags)
            return Record(False, fresh_until, stale_span, stored[_HEAD:], value)
    if len(stored) < _HEAD:
        msg = (
            f"memcache key {key!r} holds {stored[:40]!r}: a cached-function record cut short "
            f"({len(stored)} bytes, the header alone is {_HEAD}); another program wrote it, or "
            "it was truncated: delete the key"
        )
        raise DeserializationError(msg)
    flags = stored[len(HERD_MAGIC)]
    fresh_until, stale_span = _TIMES.unpack_from(stored, len(HERD_MAGIC) + 1)
    inner = stored[_HEAD:]
    if bool(flags & _HAS_VALUE) != bool(inner):
        msg = (
            f"memcache key {key!r} holds a cached-function record whose flags ({flags}) do not "
            f"match its {len(inner)}-byte value; it is corrupt: delete the key"
        )
        raise DeserializationError(msg)
    value = _NO_VALUE
    if serde is not None and inner:
        if inner[: len(ENVELOPE_MAGIC)] != ENVELOPE_MAGIC or len(inner) < _ENVELOPE_HEADER:
            msg = (
                f"memcache key {key!r} holds a cached-function record whose value is not in the "
                f"Cache's envelope ({inner[:20]!r}...); it is corrupt: delete the key"
            )
            raise DeserializationError(msg)
        value_flags = int.from_bytes(inner[len(ENVELOPE_MAGIC) : _ENVELOPE_HEADER], "big")
        value = serde.deserialize(key, inner[_ENVELOPE_HEADER:], value_flags)
    return Record(bool(flags & _INVALIDATED), fresh_until, stale_span, inner, value)
