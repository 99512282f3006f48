"""Every use of pymemcache's internals, in one place.

The Cache needs a few things pymemcache does not publish: which server a HashClient picks for a
key, HashClient's record of failed and dead servers, the client a RetryingClient wraps, and what a
client's serde really is. They are read here and nowhere else, and
``tests/test_memcache_pymemcache.py`` checks that each one exists in the installed pymemcache
(pinned to the major version tested in pyproject.toml). :data:`INTERNALS` lists them.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

from pymemcache import exceptions as pymemcache_exceptions
from pymemcache import serde as pymemcache_serde
from pymemcache.client.base import PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.client.retrying import RetryingClient

from ._local import LocalClient

__all__ = [
    "INTERNALS",
    "client_prefix",
    "client_serdes",
    "describe_client",
    "hash_call",
    "is_legacy_default",
    "is_legacy_pickle",
    "is_refusal",
    "compressed_inner",
    "connection_lock",
    "pipelined_add",
    "retry_call",
    "route_lock",
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
    ("HashClient", "_failed_clients"),
    ("HashClient", "_mark_failed_server"),
    ("HashClient", "_retry_dead"),
    ("HashClient", "dead_timeout"),
    ("HashClient", "retry_attempts"),
    ("HashClient", "retry_timeout"),
    ("HashClient", "ignore_exc"),
    ("HashClient", "default_kwargs"),
    ("Client", "server"),
    ("Client", "key_prefix"),
    ("Client", "serde"),
    ("Client", "_store_cmd"),
    ("PooledClient", "client_pool"),
    ("PooledClient", "client_pool.get_and_release"),
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


# -- locks ----------------------------------------------------------------------------------------
#
# pymemcache's Client owns one socket and is not thread-safe: two threads sending on it at once
# read each other's replies ("MemcacheUnknownError: b'STORED'"). HashClient's record of failed and
# dead servers is plain dicts and a list, updated in several steps. Thread-pool servers share one
# client between request threads, and the Cache's own worker threads call one HashClient's servers
# at once, so every use the Cache makes of either goes under a lock. The locks belong to the
# client, not to a Cache, so that Caches sharing a client also share its locks.

_locks_guard = threading.Lock()
_connection_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_route_locks: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()


def _lock_of(table: weakref.WeakKeyDictionary[Any, threading.Lock], owner: Any) -> threading.Lock:
    try:
        lock = table.get(owner)
        if lock is None:
            with _locks_guard:
                lock = table.setdefault(owner, threading.Lock())
    except TypeError:
        # Neither weakly referable nor hashable: a lock of its own, shared by nothing else.
        return threading.Lock()
    return lock


def connection_lock(client: Any) -> threading.Lock | None:
    """The lock that serializes use of the client's connection; None for a client that is safe
    to share between threads (PooledClient gives each thread its own connection; LocalClient
    locks itself). Any other client, pymemcache's ``Client`` included, is used one call at a
    time."""
    _, inner = unwrap_retrying(client)
    if isinstance(inner, (PooledClient, LocalClient)):
        return None
    return _lock_of(_connection_locks, inner)


def route_lock(hc: HashClient) -> threading.Lock:
    """The lock under which the Cache reads or updates a HashClient's servers and their state."""
    return _lock_of(_route_locks, hc)


def hash_call(hc: HashClient, sub: Any, func: Callable[..., Any], failed: Any, *args: Any) -> Any:
    """``func(*args)`` on the server ``sub`` with HashClient's retry and dead-server rules;
    ``failed`` comes back when it swallowed an error (ignore_exc=True) or the server is waiting
    out its retry_timeout.

    The same rules as ``HashClient._safely_run_func``, with its bookkeeping under
    :func:`route_lock` (the call itself outside it, so servers are still asked concurrently):
    unguarded, threads failing on one server at once raise ``KeyError`` and ``ValueError: No such
    node`` from inside pymemcache.
    """
    server = sub.server
    lock = route_lock(hc)
    retrying = False
    with lock:
        state = hc._failed_clients.get(server)
        if state is not None:
            if state["attempts"] < hc.retry_attempts:
                if time.time() - state["failed_time"] <= hc.retry_timeout:
                    return failed
                retrying = True
            else:
                _remove_server(hc, server)  # then tried once more, as HashClient does
    try:
        result = func(*args)
    except OSError:
        with lock:
            # A call routed before another thread marked the server dead fails late: it must
            # not start a new failure record for a server out of rotation (HashClient would
            # later try to remove it twice).
            if server not in hc._dead_clients:
                try:
                    hc._mark_failed_server(server)
                except (KeyError, ValueError):
                    pass  # changed by a use of the HashClient outside the Cache
        if hc.ignore_exc:
            return failed
        raise
    except Exception:
        if hc.ignore_exc:
            return failed
        raise
    if retrying:
        with lock:
            hc._failed_clients.pop(server, None)
    return result


def _remove_server(hc: HashClient, server: Any) -> None:
    """Mark the server dead (caller holds the route lock), tolerating it being gone already."""
    try:
        hc.remove_server(server)
    except (KeyError, ValueError):
        pass  # removed already, by a use of the HashClient outside the Cache


def route_table(hc: HashClient) -> tuple[tuple[Any, ...], Callable[[Any], Any], dict[Any, Any]]:
    """``(the live nodes, key -> node, node -> client)`` of a HashClient, after reviving the
    servers whose dead_timeout has passed (what ``HashClient._get_client`` does first). The
    caller holds :func:`route_lock` while it uses them."""
    if hc._dead_clients:
        try:
            hc._retry_dead()
        except (KeyError, ValueError, RuntimeError):
            pass  # changed under it by a use outside the Cache: the next round revives it
    hasher = hc.hasher
    return tuple(getattr(hasher, "nodes", ())), hasher.get_node, hc.clients


def dead_timeout(hc: HashClient) -> Any:
    return hc.dead_timeout


def pipelined_add(client: Any) -> Callable[[dict[bytes, bytes], int], dict[bytes, Any]] | None:
    """A function that sends one ``add`` per value in one write and reads the replies in order
    (what ``set_many`` does for ``set``), returning ``{key: stored}``; None for a client that
    cannot (then each add is sent alone). pymemcache has no public ``add_many``: this is
    ``Client._store_cmd``, on a pooled connection for a ``PooledClient``."""
    _, inner = unwrap_retrying(client)  # RetryingClient forwards any name, so ask what it wraps
    if isinstance(inner, PooledClient):
        pool = inner.client_pool

        def add_pooled(values: dict[bytes, bytes], ttl: int) -> dict[bytes, Any]:
            with pool.get_and_release(destroy_on_fail=True) as conn:
                return conn._store_cmd(b"add", values, ttl, False)  # type: ignore[no-any-return]

        return add_pooled
    store = getattr(inner, "_store_cmd", None)
    if not callable(store):
        return None

    def add(values: dict[bytes, bytes], ttl: int) -> dict[bytes, Any]:
        return store(b"add", values, ttl, False)  # type: ignore[no-any-return]

    return add


def is_refusal(error: BaseException) -> bool:
    """Whether the server answered with an error (SERVER_ERROR, CLIENT_ERROR), rather than
    failing to answer (a closed connection is a failure)."""
    return isinstance(
        error,
        (pymemcache_exceptions.MemcacheServerError, pymemcache_exceptions.MemcacheClientError),
    ) and not isinstance(error, pymemcache_exceptions.MemcacheUnexpectedCloseError)


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
