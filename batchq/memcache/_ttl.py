"""Expiry rules: what memcached's expiry field can carry, checked before anything is sent.

memcached reads an expiry of up to 30 days as a number of seconds from now, and a larger one as
the unix time at which the item expires; one above 2**31 - 1 the clients disagree about
(pymemcache's text command stores it already expired, pylibmc's binary field as a time in 2038).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["MAX_RELATIVE_TTL", "MAX_TTL", "check_duration", "check_ttl"]

MAX_RELATIVE_TTL: Final = 60 * 60 * 24 * 30
"""The largest expiry memcached reads as seconds from now (30 days); above, a unix time."""

MAX_TTL: Final = 2**31 - 1
"""The largest expiry every client carries alike (a unix time in 2038)."""


def check_ttl(ttl: Any) -> int:
    """A Cache write's ttl: seconds (0: no expiry), or a unix time above 30 days."""
    if ttl is None:
        return 0
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        msg = f"ttl must be a whole number of seconds (0: no expiry), got {ttl!r}"
        raise TypeError(msg)
    if ttl < 0:
        msg = f"ttl must be 0 (no expiry) or a positive number of seconds, got {ttl!r}"
        raise ValueError(msg)
    if ttl > MAX_TTL:
        msg = (
            f"ttl must be at most {MAX_TTL} (memcached's largest expiry: a ttl over 30 days, "
            f"{MAX_RELATIVE_TTL} s, is the unix time at which the key expires), got {ttl!r}"
        )
        raise ValueError(msg)
    return ttl


def check_duration(name: str, value: Any) -> int:
    """A ``cached()`` option that is a number of seconds from now: 0 to 30 days."""
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"cached({name}=...) takes a whole number of seconds, got {value!r}"
        raise TypeError(msg)
    if value < 0:
        msg = f"cached({name}=...) takes a number of seconds >= 0, got {value!r}"
        raise ValueError(msg)
    if value > MAX_RELATIVE_TTL:
        msg = (
            f"cached({name}=...) takes at most {MAX_RELATIVE_TTL} seconds (30 days: memcached "
            f"reads a longer expiry as a unix time), got {value!r}"
        )
        raise ValueError(msg)
    return value
