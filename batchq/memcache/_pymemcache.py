"""Every use of pymemcache's internals, in one place.

The Cache needs a few things pymemcache does not publish: which server a HashClient picks for a
key, HashClient's record of failed and dead servers, the client a RetryingClient wraps, and what a
client's serde really is. They are read here and nowhere else, and
``tests/test_memcache_pymemcache.py`` checks that each one exists in the installed pymemcache
(pinned to the major version tested in pyproject.toml). :data:`INTERNALS` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from pymemcache import serde as pymemcache_serde
from pymemcache.client.hash import HashClient
from pymemcache.client.retrying import RetryingClient

__all__ = [
    "INTERNALS",
    "client_prefix",
    "client_serdes",
    "describe_client",
    "hash_call",
    "is_legacy_default",
    "is_legacy_pickle",
    "compressed_inner",
    "retry_call",
    "route_table",
    "server_name",
    "unwrap_retrying",
]

INTERNALS: Final = (
    ("RetryingClient", "_client"),
    ("RetryingClient", "_retry"),
    ("HashClient", "clients"),
    ("HashClient", "hasher"),
    ("HashClient", "hasher.get_node"),
    ("HashClient", "hasher.nodes"),
    ("HashClient", "_dead_clients"),
    ("HashClient", "_retry_dead"),
    ("HashClient", "_safely_run_func"),
    ("HashClient", "dead_timeout"),
    ("HashClient", "default_kwargs"),
    ("Client", "server"),
    ("Client", "key_prefix"),
    ("Client", "serde"),
    ("LegacyWrappingSerde", "_default_deserialize"),
    ("CompressedSerde", "_serde"),
)
"""(class, attribute path) of every pymemcache internal this module reads."""


def unwrap_retrying(client: Any) -> tuple[RetryingClient | None, Any]:
    """``(the RetryingClient or None, the client it wraps or the client itself)``."""
    if isinstance(client, RetryingClient):
        return client, client._client
    return None, client


def retry_call(retrying: RetryingClient, op: str, call: Callable[..., Any], *args: Any) -> Any:
    """``call(*args)`` under the RetryingClient's rules, as it would run the command ``op``."""
    return retrying._retry(op, call, *args)


def hash_call(hc: HashClient, sub: Any, func: Callable[..., Any], failed: Any, *args: Any) -> Any:
    """``func(*args)`` on the server ``sub`` through HashClient's failure bookkeeping (retry and
    dead-server handling); ``failed`` comes back when it swallowed an error (ignore_exc=True) or
    the server is waiting out its retry_timeout."""
    return hc._safely_run_func(sub, func, failed, *args)


def route_table(hc: HashClient) -> tuple[tuple[Any, ...], Callable[[Any], Any], dict[Any, Any]]:
    """``(the live nodes, key -> node, node -> client)`` of a HashClient, after reviving the
    servers whose dead_timeout has passed (what ``HashClient._get_client`` does first)."""
    if hc._dead_clients:
        hc._retry_dead()
    hasher = hc.hasher
    return tuple(getattr(hasher, "nodes", ())), hasher.get_node, hc.clients


def dead_timeout(hc: HashClient) -> Any:
    return hc.dead_timeout


def server_name(client: Any) -> str:
    """``host:port`` (or the socket path) of a single-server client."""
    server = getattr(client, "server", None)
    if isinstance(server, tuple) and len(server) == 2:
        return f"{server[0]}:{server[1]}"
    if isinstance(server, str):
        return server
    return type(client).__name__


def client_prefix(client: Any) -> bytes:
    """The key prefix the client adds to every key itself."""
    _, inner = unwrap_retrying(client)
    prefix = getattr(inner, "key_prefix", b"")
    if isinstance(prefix, str):
        prefix = prefix.encode("utf-8")
    return prefix if isinstance(prefix, bytes) else b""


def describe_client(client: Any) -> str:
    if isinstance(client, RetryingClient):
        return f"RetryingClient({describe_client(client._client)})"
    if isinstance(client, HashClient):
        return f"HashClient({len(client.clients)} servers)"
    return f"{type(client).__name__} {server_name(client)}"


def client_serdes(client: Any) -> list[Any]:
    """The serde of every connection the client makes (None: bytes in, bytes out)."""
    _, inner = unwrap_retrying(client)
    if isinstance(inner, HashClient):
        found = [c.serde for c in inner.clients.values() if hasattr(c, "serde")]
        return found or [inner.default_kwargs.get("serde")]
    return [getattr(inner, "serde", None)]


def is_legacy_default(serde: pymemcache_serde.LegacyWrappingSerde) -> bool:
    """Whether a LegacyWrappingSerde deserializes with its default (bytes as they are)."""
    des = getattr(serde.deserialize, "__func__", serde.deserialize)
    return des is pymemcache_serde.LegacyWrappingSerde._default_deserialize


def is_legacy_pickle(serde: pymemcache_serde.LegacyWrappingSerde) -> bool:
    """Whether a LegacyWrappingSerde deserializes with python-memcache's unpickling reader."""
    des = getattr(serde.deserialize, "__func__", serde.deserialize)
    return des is pymemcache_serde.python_memcache_deserializer


def compressed_inner(serde: pymemcache_serde.CompressedSerde) -> Any:
    """The serde a CompressedSerde wraps."""
    return getattr(serde, "_serde", None)
