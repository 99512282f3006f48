"""Every use of pylibmc (the C client over libmemcached), in one place.

pylibmc is optional (``pip install 'batchq[pylibmc]'``). Its ``Client`` deserializes what it reads
by the stored flags and unpickles values stored with its pickle flag, so whoever can write to the
server could run code in the reader. The Cache therefore never takes a plain ``pylibmc.Client``:
:func:`pylibmc_client` builds a subclass that hands back the stored bytes whatever their flags, and
stores only bytes (the Cache serializes values itself, into its envelope). It also speaks the
pymemcache names the Cache calls (``get_many``, ``set_many``, ``delete_many``, and for
``cached(herd=True)`` ``add``, ``gets_many`` and ``cas``, with libmemcached's ``cas`` behavior on).

Routing: with several servers, one ``get_multi`` goes to libmemcached, which sends one request per
server and reads the replies together. libmemcached fails the whole call when any server fails,
so with a pylibmc client a dead server fails the round of every server, where pymemcache's
``HashClient`` fails only its own keys (docs/memcache.md says which client to pick).

Threads: a pylibmc ``Client`` owns its connections and is not thread-safe, so the Cache calls it
under a lock, as it does a pymemcache ``Client``. A :class:`PylibmcPool` lends each of its clients
to one thread at a time, and the Cache calls it without a lock.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

try:
    import pylibmc
except ImportError:  # the optional extra is not installed
    pylibmc = None

__all__ = [
    "FAULTS",
    "INSTALL",
    "PylibmcPool",
    "available",
    "check_client",
    "is_pool",
    "is_refusal",
    "pipelined_add",
    "pylibmc_client",
]

INSTALL: Final = (
    "pip install 'batchq[pylibmc]' (pylibmc builds against libmemcached: on Debian or Ubuntu "
    "first 'apt-get install libmemcached-dev zlib1g-dev')"
)
"""How to install what this module needs; every 'not installed' message names it."""

FAULTS: Final[tuple[type[BaseException], ...]] = (pylibmc.Error,) if pylibmc is not None else ()
"""pylibmc's errors: a server fault, like pymemcache's MemcacheError (the Cache's on_error)."""


def available() -> bool:
    """Whether pylibmc is installed."""
    return pylibmc is not None


def _bytes_only(value: Any) -> tuple[bytes, int]:
    # Stored with flags 0 (pylibmc's "plain bytes"), whatever reads it back.
    if type(value) is not bytes:
        msg = (
            f"this pylibmc client (made by batchq.memcache.pylibmc_client) stores bytes only, got "
            f"{type(value).__name__} {value!r:.80}; store values through batchq.memcache.Cache, "
            "which serializes them, or encode them to bytes yourself"
        )
        raise TypeError(msg)
    return value, 0


def _raw(data: bytes, flags: int) -> bytes:
    # Never unpickles, never converts: the stored bytes, whatever flags another writer set.
    return data


def _reconnecting(call: Any) -> Any:
    """``call`` as a method that, when libmemcached fails, drops the client's connections, and
    with them libmemcached's record of failed servers, before raising. Without it, a server that
    failed stays disabled while calls keep coming sooner than its ``retry_timeout``: under steady
    traffic a restarted server would never be used again. pymemcache, too, simply tries again on
    the next call. A refusal of the command (a missing key for ``cas``, an item too large) is an
    answer, not a failure, and keeps the connections."""

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(self, *args, **kwargs)
        except pylibmc.Error as e:
            if not isinstance(e, (pylibmc.NotFound, pylibmc.DataExists, pylibmc.TooBig)):
                self.disconnect_all()
            raise

    method.__name__ = getattr(call, "__name__", "method")
    method.__doc__ = call.__doc__
    return method


_client_class: type[Any] | None = None


def _safe_class() -> type[Any]:
    """The pylibmc.Client subclass the Cache accepts (made on first use: pylibmc is optional)."""
    global _client_class
    if _client_class is None:
        if pylibmc is None:
            msg = f"pylibmc is not installed: {INSTALL}"
            raise ImportError(msg)

        class PylibmcClient(pylibmc.Client):  # type: ignore[misc]
            """A pylibmc Client that moves bytes only and never unpickles."""

            # pylibmc calls these for every value it stores or reads. A staticmethod skips
            # binding: the stored bytes come back with one Python call and no other work.
            serialize = staticmethod(_bytes_only)
            deserialize = staticmethod(_raw)

            @_reconnecting
            def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
                return self.get_multi(keys)  # type: ignore[no-any-return]

            close = pylibmc.Client.disconnect_all  # pymemcache's name, for the same cleanup code

            @property
            def server(self) -> str:
                # Named like a pymemcache client's server, for the Cache's name and messages.
                return ", ".join(map(str, self.addresses))

            @_reconnecting
            def set_many(
                self, values: Mapping[bytes, bytes], expire: int = 0, noreply: object = None
            ) -> list[bytes]:
                """The keys not stored (pymemcache's ``set_many``)."""
                failed = self.set_multi(values, time=expire)
                return list(failed) if failed else []

            @_reconnecting
            def delete_many(self, keys: Iterable[bytes], noreply: object = None) -> bool:
                """Delete the keys (missing ones included: pymemcache's ``delete_many``)."""
                self.delete_multi(list(keys))
                return True

            # What cached(herd=True) and stale_ttl need: leases (add), cas tokens, and cas
            # write-backs, with pymemcache's names and results.

            @_reconnecting
            def add(
                self, key: bytes, value: bytes, expire: int = 0, noreply: object = None
            ) -> bool:
                """Store only if the key is absent; whether it was stored."""
                return bool(pylibmc.Client.add(self, key, value, time=expire))

            @_reconnecting
            def add_many(self, values: Mapping[bytes, bytes], expire: int = 0) -> dict[bytes, bool]:
                """``add`` each value in one call; which were stored."""
                failed = set(self.add_multi(values, time=expire) or ())
                return {key: key not in failed for key in values}

            @_reconnecting
            def gets_many(self, keys: Iterable[bytes]) -> dict[bytes, tuple[bytes, int]]:
                """``{key: (value, cas token)}`` of the keys found. pylibmc has no multi-key
                gets: one ``get_multi`` finds the keys, then each found key's token is read
                alone. Leases are mostly taken on missing keys, which cost nothing more."""
                if not self.behaviors.get("cas"):
                    msg = (
                        f"the pylibmc client {self!r} has memcached's cas tokens turned off "
                        "(behaviors={'cas': False}), and cached(herd=True) or stale_ttl needs "
                        "them: leave the 'cas' behavior of pylibmc_client on"
                    )
                    raise ValueError(msg)
                gets = pylibmc.Client.gets
                found: dict[bytes, tuple[bytes, int]] = {}
                for key in self.get_multi(list(keys)):
                    value, token = gets(self, key)
                    if token is not None:  # gone since: read as missing
                        found[key] = (value, token)
                return found

            @_reconnecting
            def cas(
                self, key: bytes, value: bytes, cas: int, expire: int = 0, noreply: object = None
            ) -> bool | None:
                """Store if the key's cas token is still ``cas``: True stored, False changed
                since, None gone (pymemcache's results)."""
                try:
                    return bool(pylibmc.Client.cas(self, key, value, cas, time=expire))
                except pylibmc.NotFound:
                    return None

        _client_class = PylibmcClient
    return _client_class


def pylibmc_client(
    servers: Sequence[str],
    *,
    binary: bool = True,
    connect_timeout: float = 2.0,
    timeout: float = 5.0,
    behaviors: Mapping[str, Any] | None = None,
    pool_size: int = 1,
) -> Any:
    """A pylibmc client for :class:`~batchq.memcache.Cache`: bytes in, bytes out, never unpickles.

    ``servers`` as pylibmc takes them (``["127.0.0.1:11211", ...]``). ``binary``: memcached's
    binary protocol, the default because with it libmemcached reports a server that failed during
    a multi-get; over the text protocol that read silently returns fewer values (measured with
    the libmemcached 1.0 of pylibmc's wheel). ``connect_timeout`` and
    ``timeout`` (each read or write) in seconds, like pymemcache's; ``behaviors`` are passed to
    libmemcached after them, and win. ``pool_size``: with 1, one client, which the Cache uses
    one call at a time; with more, a :class:`PylibmcPool` of that many clients with their own
    connections, so that threads' rounds go out concurrently (for thread-pool servers).
    ImportError naming the install command without pylibmc.
    """
    if isinstance(servers, (str, bytes)):
        msg = f"pylibmc_client takes a list of servers, got the single {servers!r}: [{servers!r}]"
        raise TypeError(msg)
    for seconds, name in ((connect_timeout, "connect_timeout"), (timeout, "timeout")):
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
            msg = f"{name} must be a positive number of seconds, got {seconds!r}"
            raise ValueError(msg)
    if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
        msg = (
            f"pool_size is how many clients threads may use at once (1: one, used one call at a "
            f"time), an int >= 1, got {pool_size!r}"
        )
        raise ValueError(msg)
    cls = _safe_class()
    chosen: dict[str, Any] = {
        "tcp_nodelay": True,
        "cas": True,  # cas tokens, for cached(herd=True) (free over the binary protocol)
        "connect_timeout": max(1, round(connect_timeout * 1000)),  # milliseconds
        "send_timeout": max(1, round(timeout * 1_000_000)),  # microseconds
        "receive_timeout": max(1, round(timeout * 1_000_000)),
        "_poll_timeout": max(1, round(timeout * 1000)),  # milliseconds
        # Never mark a server dead for good: after failure_limit (5) failures in a row,
        # libmemcached disables it until retry_timeout passes without calls, which under
        # steady traffic is never. With _reconnecting, each call tries again, as pymemcache.
        "failure_limit": 2**31 - 1,
    }
    chosen.update(behaviors or {})
    client = cls(list(servers), binary=binary, behaviors=chosen)
    return client if pool_size == 1 else PylibmcPool(client, pool_size)


class PylibmcPool:
    """Clients from :func:`pylibmc_client` that threads share, each used by one thread at a time.

    A call takes an idle client (the one used last: its connections are warm), or waits for one;
    the clients are clones of the first, made up front (libmemcached connects on first use). The
    Cache calls it without a lock of its own. Each client recovers from a failed server on its
    own (see ``_reconnecting``). ``close()`` leaves a client that a thread is using to that
    thread, which disconnects it when it gives it back.
    """

    def __init__(self, client: Any, size: int) -> None:
        check_client(client)  # a plain pylibmc.Client would unpickle what it reads
        if pylibmc is None or not isinstance(client, _safe_class()):
            msg = (
                f"PylibmcPool takes a client made by batchq.memcache.pylibmc_client(servers), "
                f"got {client!r}; pylibmc_client(servers, pool_size=n) makes the pool itself"
            )
            raise TypeError(msg)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            msg = f"PylibmcPool(client, size): size is how many clients, an int >= 1, got {size!r}"
            raise ValueError(msg)
        self.clients: list[Any] = [client] + [client.clone() for _ in range(size - 1)]
        self._idle = list(self.clients)
        self._ready = threading.Condition(threading.Lock())
        # Clients that were lent out when close() was called: each is disconnected by the thread
        # that gives it back (libmemcached crashes when a thread disconnects a client in use).
        self._to_close: set[int] = set()

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        ready = self._ready
        with ready:
            while not self._idle:
                ready.wait()
            client = self._idle.pop()
        try:
            return getattr(client, name)(*args, **kwargs)
        finally:
            with ready:
                closing = id(client) in self._to_close
                if not closing:
                    self._idle.append(client)
                    ready.notify()
            if closing:
                self._close_returned(client)

    def _close_returned(self, client: Any) -> None:
        ready = self._ready
        try:
            client.disconnect_all()  # still lent to this thread alone
        finally:
            with ready:
                self._to_close.discard(id(client))
                self._idle.append(client)
                ready.notify()

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        return self._call("get_many", keys)  # type: ignore[no-any-return]

    def set_many(
        self, values: Mapping[bytes, bytes], expire: int = 0, noreply: object = None
    ) -> list[bytes]:
        return self._call("set_many", values, expire)  # type: ignore[no-any-return]

    def delete_many(self, keys: Iterable[bytes], noreply: object = None) -> bool:
        return self._call("delete_many", keys)  # type: ignore[no-any-return]

    def add(self, key: bytes, value: bytes, expire: int = 0, noreply: object = None) -> bool:
        return self._call("add", key, value, expire)  # type: ignore[no-any-return]

    def add_many(self, values: Mapping[bytes, bytes], expire: int = 0) -> dict[bytes, bool]:
        return self._call("add_many", values, expire)  # type: ignore[no-any-return]

    def gets_many(self, keys: Iterable[bytes]) -> dict[bytes, tuple[bytes, int]]:
        return self._call("gets_many", keys)  # type: ignore[no-any-return]

    def cas(
        self, key: bytes, value: bytes, cas: int, expire: int = 0, noreply: object = None
    ) -> bool | None:
        return self._call("cas", key, value, cas, expire)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        # Any other pylibmc method (get_stats, flush_all, touch, incr, ...) on a lent client.
        # (Read through __dict__: on a pool not yet initialized, "clients" itself is missing.)
        clients = self.__dict__.get("clients")
        if name.startswith("_") or not clients or not callable(getattr(clients[0], name, None)):
            msg = f"{type(self).__name__!r} object has no attribute {name!r}"
            raise AttributeError(msg)
        return functools.partial(self._call, name)

    @property
    def behaviors(self) -> Any:
        return self.clients[0].behaviors

    @property
    def server(self) -> str:
        return str(self.clients[0].server)

    def close(self) -> None:
        """Disconnect every client (each reconnects if used again). A client that a thread is
        using is disconnected when that thread gives it back, never under it."""
        ready = self._ready
        with ready:
            idle, self._idle = self._idle, []
            self._to_close.update(id(c) for c in self.clients)
            self._to_close.difference_update(id(c) for c in idle)
        try:
            for client in idle:
                client.disconnect_all()
        finally:
            with ready:
                self._idle.extend(idle)
                ready.notify_all()

    def __repr__(self) -> str:
        return f"<PylibmcPool of {len(self.clients)} clients for {self.server}>"


def pipelined_add(client: Any) -> Any:
    """The client's ``add_many`` (all of a round's adds in one call) if it is a pylibmc client
    or pool from :func:`pylibmc_client`, else None."""
    if isinstance(client, PylibmcPool) or (
        _client_class is not None and isinstance(client, _client_class)
    ):
        return client.add_many
    return None


def is_refusal(error: BaseException) -> bool:
    """Whether libmemcached's error is the server's answer (an item too large), not a failure."""
    return pylibmc is not None and isinstance(error, pylibmc.TooBig)


def is_pool(client: Any) -> bool:
    """Whether ``client`` is a :class:`PylibmcPool` (safe to call from several threads)."""
    return isinstance(client, PylibmcPool)


def check_client(client: Any) -> None:
    """Refuse a pylibmc client that would unpickle what it reads (any not from pylibmc_client)."""
    if pylibmc is None or not isinstance(client, pylibmc.Client):
        return
    cls = _safe_class()
    kind = type(client)
    if isinstance(client, cls) and kind.deserialize is cls.deserialize:
        return
    msg = (
        f"the pylibmc client {client!r} deserializes what it reads by its flags, and unpickles "
        "values stored with its pickle flag: anyone who can write to the memcached server could "
        "run code here. Create it with batchq.memcache.pylibmc_client(servers, ...), which hands "
        "the Cache the stored bytes untouched"
    )
    raise TypeError(msg)
