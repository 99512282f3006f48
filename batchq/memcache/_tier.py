"""The bounded in-process tier of a cached function: hot values without a round trip.

A cached function made with ``cached(local_ttl=..., local_max=...)`` keeps up to ``local_max`` of
its values in this process for ``local_ttl`` seconds, least recently used first out. A hit costs
no round and no request. Values are kept in the Cache's envelope (bytes) and decoded on every hit,
so two requests never share one mutable object.

``invalidate``, ``delete``, ``set`` and a write-back through the same Cache in this process drop
the key from every tier of that Cache at once; another process's write reaches this tier only
when the entry ages out, so ``local_ttl`` is the staleness bound across processes.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

__all__ = ["LocalTier", "discard", "has_tiers", "register"]


class LocalTier:
    """At most ``max_entries`` values, each for at most ``ttl`` seconds; thread-safe."""

    __slots__ = ("max_entries", "ttl", "clock", "_entries", "_lock", "__weakref__")

    def __init__(
        self, max_entries: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, raw: bytes) -> bytes | None:
        """The enveloped value of ``raw`` if present and young enough, else None."""
        with self._lock:
            found = self._entries.get(raw)
            if found is None:
                return None
            if self.clock() >= found[0]:
                del self._entries[raw]
                return None
            self._entries.move_to_end(raw)
            return found[1]

    def put(self, raw: bytes, inner: bytes) -> None:
        with self._lock:
            entries = self._entries
            entries[raw] = (self.clock() + self.ttl, inner)
            entries.move_to_end(raw)
            while len(entries) > self.max_entries:
                entries.popitem(last=False)

    def discard(self, raw: bytes) -> None:
        with self._lock:
            self._entries.pop(raw, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


# Every tier of every Cache, so that a write through the Cache drops the key from all of them.
_tiers: weakref.WeakKeyDictionary[Any, weakref.WeakSet[LocalTier]] = weakref.WeakKeyDictionary()
_tiers_lock = threading.Lock()


def register(cache: Any, tier: LocalTier) -> None:
    with _tiers_lock:
        found = _tiers.get(cache)
        if found is None:
            found = _tiers[cache] = weakref.WeakSet()
        found.add(tier)


def has_tiers() -> bool:
    """True once any cached function anywhere has a tier (a write checks this first)."""
    return bool(_tiers)


def discard(cache: Any, raw: bytes) -> None:
    """Drop ``raw`` from every tier of ``cache`` in this process."""
    found = _tiers.get(cache)
    if found is None:
        return
    for tier in list(found):
        tier.discard(raw)
