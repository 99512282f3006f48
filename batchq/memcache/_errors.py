"""The memcache error tree.

Every error subclasses :class:`MemcacheError` (itself a ``BatchqError``) and the built-in that fits,
so callers can catch either the library's family or the ordinary Python category.
"""

from __future__ import annotations

from batchq._core._errors import BatchqError


class MemcacheError(BatchqError):
    """Base of every error raised by batchq's memcache layer."""


class InvalidKeyError(MemcacheError, ValueError):
    """A key memcached would reject or misread: whitespace, control bytes, empty, over 250 bytes.

    Raised before anything is sent: a key like ``"k\\r\\nflush_all"`` would otherwise inject a
    command.
    """


class KeyTypeError(InvalidKeyError, TypeError):
    """A key that is neither ``str`` nor ``bytes``; usually an int or a tuple passed by mistake."""


class ValueTooLargeError(MemcacheError, ValueError):
    """A serialized value over the item size limit; refused before sending."""


class SerializationError(MemcacheError, TypeError):
    """A value the chosen serde cannot store so that it reads back equal."""


class DeserializationError(SerializationError, ValueError):
    """Stored bytes the serde cannot read: an unknown flag (another writer) or corrupt data."""


class CommandError(MemcacheError, ValueError):
    """The server (or the local stand-in) refused a command, e.g. ``incr`` of a non-number."""


class ServerError(MemcacheError, ConnectionError):
    """A memcached server could not be reached or answered badly; the message names its address."""
