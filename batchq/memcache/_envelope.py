"""The value envelope: how the Cache stores a value so that it reads back with its exact type.

pymemcache clients drop the flags on ``get_many``, so the Cache serializes values itself and
stores ``marker + 4-byte big-endian serde flags + serde bytes``; the client only moves bytes. The
NUL first byte of the marker keeps envelopes apart from text values other writers store. For the
same reason a client's own serde must hand bytes back untouched, and must never unpickle unless the
Cache was told every writer is trusted: :func:`check_client_serdes`.
"""

from __future__ import annotations

from collections.abc import Iterable
from time import time
from typing import TYPE_CHECKING, Any, Final

from pymemcache import serde as pymemcache_serde

from . import _pymemcache
from ._errors import DeserializationError, SerializationError
from ._local import LocalClient
from ._record import HERD_MAGIC, Record, parse_record
from ._serde import JsonSerde, PickleSerde, Reader, Serde, check_value_size, readers

if TYPE_CHECKING:
    from ._batch import GetItem

__all__ = [
    "HEADER",
    "MAGIC",
    "check_client_serdes",
    "decode_reads",
    "header_readers",
    "pack",
    "unpack",
]

MAGIC: Final = b"\x00bq"
_MAGIC_LEN: Final = len(MAGIC)
HEADER: Final = _MAGIC_LEN + 4
_ABSENT: Final[Any] = object()
_NO_HEADERS: Final[dict[bytes, Reader]] = {}


def header_readers(serde: Serde) -> dict[bytes, Reader]:
    """The whole header (magic and flags, :data:`HEADER` bytes) of every envelope the serde has
    a fast reader for, mapped to the reader: one slice and one dict lookup check the envelope and
    pick the decoder, which reads the stored value from :data:`HEADER` on (no copy of it first).
    Empty for a serde without fast readers (every value takes the full path)."""
    found = readers(serde)
    if found is None:
        return _NO_HEADERS
    table = _HEADER_TABLES.get(id(found))
    if table is None:
        table = {}
        for flags, read in found.items():
            header = MAGIC + flags.to_bytes(4, "big")
            # Only ASCII headers: a reader that decodes the whole value as text (JSON) then
            # finds its start at the same index in the text as in the bytes.
            if header.isascii():
                table[header] = read
        _HEADER_TABLES[id(found)] = table
    return table


# Keyed by the id of a module-level (never freed) readers table.
_HEADER_TABLES: dict[int, dict[bytes, Reader]] = {}


def pack(serde: Serde, key: str | bytes, value: Any, max_value_size: int) -> bytes:
    """The envelope of ``value``; SerializationError or ValueTooLargeError if it cannot go."""
    try:
        data, flags = serde.serialize(key, value)
    except SerializationError:
        raise  # ours already names the key, the value and the fix
    except Exception as e:
        msg = (
            f"serde {serde!r} failed to serialize the value of type "
            f"{type(value).__name__} for key {key!r}: {type(e).__name__}: {e}; fix the serde, "
            "or convert the value to something it supports"
        )
        raise SerializationError(msg) from e
    if type(data) is not bytes or not 0 <= flags < 2**32:
        msg = (
            f"serde {serde!r} returned {type(data).__name__} data with flags {flags!r} "
            f"for key {key!r}; a serde must return (bytes, int flags from 0 to 2**32-1)"
        )
        raise SerializationError(msg)
    packed = MAGIC + flags.to_bytes(4, "big") + data
    check_value_size(key, packed, max_value_size)
    return packed


def unpack(serde: Serde, key: str | bytes, stored: Any) -> Any:
    """The value in an envelope; DeserializationError if ``stored`` is none or unreadable.

    Only for a plain envelope: a read that may find a herd record goes through
    :func:`decode_stored`.
    """
    if type(stored) is not bytes or not stored.startswith(MAGIC) or len(stored) < HEADER:
        shown = (
            repr(stored[:40]) if isinstance(stored, (bytes, str)) else f"a {type(stored).__name__}"
        )
        msg = (
            f"memcache key {key!r} holds {shown}, which no batchq Cache wrote (no envelope); "
            "another program uses this key: give this Cache a key_prefix, or delete the key"
        )
        raise DeserializationError(msg)
    flags = int.from_bytes(stored[_MAGIC_LEN:HEADER], "big")
    try:
        return serde.deserialize(key, stored[HEADER:], flags)
    except DeserializationError:
        raise
    except Exception as e:
        raise _serde_failed(serde, key, stored, e) from e


def decode_stored(
    serde: Serde, key: str | bytes, stored: Any, now: float
) -> tuple[bool, Any, Record | None]:
    """``(hit, value, record)`` of what a read found under ``key``.

    A herd-protected cached function stores a record (``_record``): a read of it, by ``get`` as
    by the function, is its value while the function would serve it (fresh, or stale within its
    ``stale_ttl``) and a miss after that; ``record`` is the parsed record (None for a plain
    value), for the cached function's own decisions.
    """
    if type(stored) is bytes and stored[:_MAGIC_LEN] == HERD_MAGIC:
        record = parse_record(key, stored, serde)
        if record.is_fresh(now) or record.may_serve_stale(now):
            return True, record.value, record
        return False, None, record
    return True, unpack(serde, key, stored), None


def _serde_failed(serde: Serde, key: str | bytes, stored: bytes, error: Exception) -> Exception:
    """The DeserializationError for a serde that raised its own error reading one value."""
    data = stored[HEADER:]
    head = repr(data[:40]) + ("..." if len(data) > 40 else "")
    msg = (
        f"memcache key {key!r} holds {len(data)} bytes ({head}) that the serde {serde!r} cannot "
        f"read: {type(error).__name__}: {error}; another writer or another version of the serde "
        "stored it: delete the key, or make the serde read it (only this key failed)"
    )
    return DeserializationError(msg)


def decode_reads(
    serde: Serde, pairs: Iterable[tuple[bytes, GetItem]], found: dict[bytes, Any], count: int
) -> tuple[int, int, int]:
    """Settle each ``(raw key, GetItem)`` of ``pairs`` (``count`` of them) from the ``found``
    values of its server; returns (hits, misses, decode errors)."""
    misses = decode_errors = 0
    get = found.get
    deserialize = serde.deserialize
    from_bytes = int.from_bytes
    headers = header_readers(serde)
    for raw, read in pairs:
        # Direct slot writes: each read of a batch is settled exactly once, here.
        stored = get(raw, _ABSENT)
        if stored is _ABSENT:
            misses += 1
            read._value = None
            continue
        if type(stored) is bytes:
            # The common case: a known header, one lookup; its reader raises on anything
            # unusual, and the full path below reads the value or explains the failure.
            reader = headers.get(stored[:HEADER])
            if reader is not None:
                try:
                    value = reader(stored, HEADER)
                except Exception:
                    pass
                else:
                    read.hit = True
                    read._value = value
                    continue
        try:
            # unpack() inlined for the envelope every value a Cache wrote has.
            if type(stored) is bytes and stored[:_MAGIC_LEN] == MAGIC and len(stored) >= HEADER:
                flags = from_bytes(stored[_MAGIC_LEN:HEADER], "big")
                value = deserialize(read.key, stored[HEADER:], flags)
            else:
                hit, value, read.record = decode_stored(serde, read.key, stored, time())
                if not hit:
                    misses += 1
                    read._value = None
                    continue
        except DeserializationError as e:
            decode_errors += 1
            read._value = None
            read._error = e
            continue
        except Exception as e:
            # The serde's own error: it fails this key only, never the rest of the round.
            decode_errors += 1
            read._value = None
            read._error = _serde_failed(serde, read.key, stored, e)
            read._error.__cause__ = e
            continue
        read.hit = True
        read._value = value
    return count - misses - decode_errors, misses, decode_errors


# -- the client's serde ---------------------------------------------------------------------------

_PROBE: Final = MAGIC + b"\x00\x00\x00\x10probe \x80\xff"


def _serde_kind(serde: Any) -> str:
    """'raw' (bytes in, bytes out), 'pickle' (may unpickle what it reads) or 'unknown'."""
    if serde is None:
        return "raw"
    if isinstance(serde, JsonSerde):
        return "raw"
    if isinstance(serde, (PickleSerde, pymemcache_serde.PickleSerde)):
        return "pickle"
    if isinstance(serde, pymemcache_serde.LegacyWrappingSerde):
        if _pymemcache.is_legacy_default(serde):
            return "raw"
        if _pymemcache.is_legacy_pickle(serde):
            return "pickle"
        return "unknown"
    if isinstance(serde, pymemcache_serde.CompressedSerde):
        inner = _serde_kind(_pymemcache.compressed_inner(serde))
        return "pickle" if inner == "pickle" else "unknown"
    return "unknown"


def check_client_serdes(client: Any, chosen: Serde | None) -> None:
    """Refuse a client whose own serde could unpickle server data, unless the user opted in."""
    if isinstance(client, LocalClient):
        serdes: list[Any] = [client.serde]
    else:
        serdes = _pymemcache.client_serdes(client)
    for serde in serdes:
        kind = _serde_kind(serde)
        if kind == "pickle" and not isinstance(chosen, PickleSerde):
            msg = (
                f"the client {client!r} is configured with {serde!r}, which unpickles what it "
                "reads: anyone who can write to the memcached server could run code here. Create "
                "the client without a serde (the Cache serializes values itself), or pass "
                "serde=batchq.memcache.PickleSerde() to the Cache to state that every writer is "
                "trusted"
            )
            raise SerializationError(msg)
        if kind == "unknown" and chosen is None:
            msg = (
                f"the client {client!r} is configured with the serde {serde!r}, which batchq "
                "cannot tell is safe (it might unpickle what it reads). Create the client without "
                "a serde (the Cache serializes values itself), or pass serde=... to the Cache "
                "explicitly to confirm the client's serde is trusted"
            )
            raise SerializationError(msg)
        if serde is not None:
            try:
                data, flags = serde.serialize(b"probe", _PROBE)
                back = serde.deserialize(b"probe", data, flags)
            except Exception as e:
                back = e
            # bytes exactly: a bytearray or memoryview compares equal, but the envelope readers
            # take bytes only, so every read would fail as "not written by a Cache".
            if type(back) is not bytes or back != _PROBE:
                msg = (
                    f"the client's serde {serde!r} does not hand back the bytes it was given "
                    f"(got a {type(back).__name__}: {back!r}); the Cache stores bytes it "
                    "serialized itself, so create the client without a serde"
                )
                raise SerializationError(msg)
