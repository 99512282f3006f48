"""What a Cache counts: hits, misses, faults and the requests each server was sent."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["CacheStats", "ServerStats"]


@dataclass(frozen=True)
class ServerStats:
    """What one server cost and how often it failed."""

    get_many_calls: int = 0
    keys_fetched: int = 0
    set_many_calls: int = 0
    delete_many_calls: int = 0
    errors: int = 0


@dataclass(frozen=True)
class CacheStats:
    """Totals since the Cache was created (or since :meth:`Cache.reset_stats`)."""

    hits: int = 0
    misses: int = 0
    overlay_hits: int = 0
    errors: int = 0
    decode_errors: int = 0
    get_many_calls: int = 0
    keys_fetched: int = 0
    sets: int = 0
    deletes: int = 0
    write_failures: int = 0
    servers: Mapping[str, ServerStats] = field(default_factory=dict)


class _Counters:
    """The mutable counters behind :class:`CacheStats`; updated under the Cache's stats lock."""

    __slots__ = (
        "hits",
        "misses",
        "overlay_hits",
        "errors",
        "decode_errors",
        "get_many_calls",
        "keys_fetched",
        "sets",
        "deletes",
        "write_failures",
        "servers",
    )

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.overlay_hits = 0
        self.errors = 0
        self.decode_errors = 0
        self.get_many_calls = 0
        self.keys_fetched = 0
        self.sets = 0
        self.deletes = 0
        self.write_failures = 0
        # Per server: [get_many calls, keys fetched, set_many calls, delete_many calls, errors],
        # in ServerStats' field order.
        self.servers: dict[str, list[int]] = {}

    def server(self, name: str) -> list[int]:
        counts = self.servers.get(name)
        if counts is None:
            counts = self.servers[name] = [0, 0, 0, 0, 0]
        return counts

    def snapshot(self) -> CacheStats:
        servers = {name: ServerStats(*counts) for name, counts in sorted(self.servers.items())}
        return CacheStats(
            self.hits,
            self.misses,
            self.overlay_hits,
            self.errors,
            self.decode_errors,
            self.get_many_calls,
            self.keys_fetched,
            self.sets,
            self.deletes,
            self.write_failures,
            servers,
        )
