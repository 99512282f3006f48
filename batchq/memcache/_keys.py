"""Key rules: what memcached's text protocol can carry, checked before anything is sent.

A key travels inside a command line, so a space or CR/LF in it would split the command (``"k\\r\\n
flush_all"`` is an injection, not a key). Keys are therefore refused, not escaped, unless the caller
opts into hashing, which maps any key to a short, stable, valid one. Unicode whitespace and
control characters (U+0085, U+00A0, U+2028, ...) are refused too: they split no command, but they
are invisible, and a key that looks like another must not silently be a different one.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from ._errors import InvalidKeyError, KeyTypeError

__all__ = ["MAX_KEY_LENGTH", "encode_key"]

MAX_KEY_LENGTH = 250
"""memcached's limit on a key, in bytes, prefix included."""

# A hashed key is prefix + mark + hex digest; with hashing on, every key that starts with the mark
# is hashed too, so no plain key can name (read or overwrite) a hashed one.
_HASH_MARK = b"h:"
# Bytes memcached treats as separators or that no sane key contains: 0x00-0x20 and DEL.
_FORBIDDEN = frozenset([*range(0x21), 0x7F])
_FORBIDDEN_BYTES = bytes(sorted(_FORBIDDEN))
# Non-ASCII whitespace and control characters: str.isspace() or category Cc, Zs, Zl, Zp (checked
# against unicodedata by the tests). Format characters (Cf) are allowed: the zero-width joiner
# is part of ordinary emoji.
_UNICODE_FORBIDDEN = re.compile("[\x80-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


def encode_key(key: str | bytes, prefix: bytes = b"", *, hash_long_keys: bool = False) -> bytes:
    """Return ``prefix + key`` as the bytes sent to memcached, or raise :class:`InvalidKeyError`.

    ``str`` keys are UTF-8 encoded. With ``hash_long_keys``, a key that is too long or contains
    whitespace or control characters becomes ``prefix + b"h:" + sha256(key).hexdigest()`` (the
    same in every process) instead of an error, and so does every key that starts with ``h:``.
    Empty keys are always refused: they are a bug upstream.
    """
    # Typed str | bytes, but untyped callers pass ints and tuples; check what really arrived.
    arrived: object = key
    if isinstance(arrived, str):
        try:
            raw = arrived.encode("utf-8")
        except UnicodeEncodeError as exc:
            msg = (
                f"memcache key {_shorten(key)} is not valid Unicode ({exc.reason} at index "
                f"{exc.start}); it was probably decoded with errors='surrogateescape', so pass "
                "the original bytes instead"
            )
            raise InvalidKeyError(msg) from None
    elif isinstance(arrived, bytes):
        raw = arrived
    else:
        msg = (
            f"memcache key {key!r} is a {type(key).__name__}, not str or bytes; "
            "build the key explicitly, e.g. f'user:{user_id}'"
        )
        raise KeyTypeError(msg)
    if not raw:
        msg = (
            f"memcache key {key!r} is empty; it was probably built from an empty id, "
            "so check the value the key came from"
        )
        raise InvalidKeyError(msg)
    if prefix and (_has_forbidden(prefix) or len(prefix) > MAX_KEY_LENGTH):
        msg = (
            f"memcache key prefix {prefix!r} is not a valid key start: it contains whitespace or "
            f"control bytes, or is over {MAX_KEY_LENGTH} bytes; choose a short printable prefix"
        )
        raise InvalidKeyError(msg)
    full = prefix + raw
    bad_char = None if raw.isascii() else _unicode_forbidden(raw)
    if (
        len(full) <= MAX_KEY_LENGTH
        and not _has_forbidden(raw)
        and bad_char is None
        and not (hash_long_keys and raw.startswith(_HASH_MARK))
    ):
        return full
    if hash_long_keys:
        hashed = prefix + _HASH_MARK + hashlib.sha256(raw).hexdigest().encode("ascii")
        if len(hashed) > MAX_KEY_LENGTH:
            msg = (
                f"memcache key prefix {prefix!r} is {len(prefix)} bytes, too long to leave room "
                f"for a hashed key ({len(hashed)} bytes > {MAX_KEY_LENGTH}); shorten the prefix"
            )
            raise InvalidKeyError(msg)
        return hashed
    if _has_forbidden(raw):
        bad = next(byte for byte in raw if byte in _FORBIDDEN)
        msg = (
            f"memcache key {key!r} contains {bytes([bad])!r}; memcached keys cannot contain "
            "whitespace or control characters (they would split the command); remove them, "
            "or pass hash_long_keys=True to store such keys under a hash"
        )
        raise InvalidKeyError(msg)
    if bad_char is not None:
        name = unicodedata.name(bad_char, "a control character")
        msg = (
            f"memcache key {_shorten(key)} contains {bad_char!r} (U+{ord(bad_char):04X}, {name}); "
            "memcached keys cannot contain whitespace or control characters, Unicode ones "
            "included; remove it, or pass hash_long_keys=True to store such keys under a hash"
        )
        raise InvalidKeyError(msg)
    msg = (
        f"memcache key {_shorten(key)} is {len(full)} bytes"
        f"{f' with the prefix {prefix!r}' if prefix else ''}, over memcached's limit of "
        f"{MAX_KEY_LENGTH}; shorten it, or pass hash_long_keys=True to store long keys under "
        "a hash"
    )
    raise InvalidKeyError(msg)


def _unicode_forbidden(raw: bytes) -> str | None:
    """The first Unicode whitespace or control character of a key's UTF-8 text, or None (also
    for bytes keys that are not UTF-8: those are binary, checked byte by byte only)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    found = _UNICODE_FORBIDDEN.search(text)
    return found.group() if found is not None else None


def _has_forbidden(raw: bytes) -> bool:
    # translate() deletes the forbidden bytes in C; a length change means one was there.
    return len(raw.translate(None, _FORBIDDEN_BYTES)) != len(raw)


def _shorten(key: str | bytes) -> str:
    text = repr(key)
    return text if len(text) <= 80 else f"{text[:60]}...{text[-15:]}"
