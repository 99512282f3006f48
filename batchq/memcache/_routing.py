"""Server routing and worker threads: which server each key of a round goes to, and asking them.

A round becomes one :class:`_Job` per server: its writes (one ``set_many`` per TTL, one
``delete_many``), then its reads (one ``get_many``), in chunks of ``max_batch_size`` keys. With a
``HashClient`` the keys are grouped by the server its hashing picks and the jobs run concurrently,
the calling thread taking one and a small pool owned by the Cache the others, so a round costs the
slowest server, not the sum. Each job decodes its values in its own thread as soon as they arrive.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from pymemcache.client.hash import HashClient
from pymemcache.client.retrying import RetryingClient
from pymemcache.exceptions import MemcacheError as PymemcacheError

from . import _pylibmc, _pymemcache
from ._errors import ServerError

__all__ = ["OneRoute", "Servers"]

_FAILED: Final[Any] = object()  # what HashClient returns for a server it failed or is backing off
_ROUTE_MEMO_SIZE: Final = 100_000
# A server fault as each supported client raises it; anything else is a bug and is never a miss.
_FAULTS: Final = (OSError, PymemcacheError, *_pylibmc.FAULTS)


class _Node:
    """One server as the Cache talks to it (plain client, or one server of a HashClient)."""

    __slots__ = ("name", "client", "hash_client", "retrying", "lock")

    def __init__(
        self,
        name: str,
        client: Any,
        hash_client: HashClient | None = None,
        retrying: RetryingClient | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.hash_client = hash_client
        self.retrying = retrying
        # One call at a time on a connection that is not safe to share between threads (a
        # PylibmcPool, like a PooledClient, gives each thread a connection of its own).
        self.lock = (
            None
            if client is None or _pylibmc.is_pool(client)
            else _pymemcache.connection_lock(client)
        )

    def _call(self, op: str, *args: Any) -> Any:
        return self._run(op, getattr(self.client, op), *args)

    def _run(self, op: str, func: Callable[..., Any], *args: Any) -> Any:
        """``func(*args)`` on this server, as the client command ``op`` (its locks, HashClient's
        failure bookkeeping, RetryingClient's rules)."""
        lock = self.lock
        if lock is not None:
            unlocked = func

            def func(*a: Any) -> Any:
                with lock:
                    return unlocked(*a)

        hc = self.hash_client
        if hc is not None:
            # Through HashClient's own bookkeeping, so its retry and dead-server handling stay
            # in charge of routing; _FAILED tells us it swallowed an error (ignore_exc=True).
            def call(*a: Any) -> Any:
                return _pymemcache.hash_call(hc, self.client, func, _FAILED, *a)

        else:
            call = func
        retrying = self.retrying
        result = (
            call(*args) if retrying is None else _pymemcache.retry_call(retrying, op, call, *args)
        )
        if result is _FAILED:
            msg = (
                f"memcached server {self.name} failed during {op}: HashClient(ignore_exc=True) "
                "hid the error, or the server is in its retry_timeout after an earlier failure"
            )
            raise ServerError(msg)
        return result

    def get_many(self, keys: list[bytes]) -> dict[bytes, Any]:
        result = self._call("get_many", keys)
        return result  # type: ignore[no-any-return]

    def set_many(self, values: dict[bytes, bytes], ttl: int) -> list[bytes]:
        failed = self._call("set_many", values, ttl, False)
        return list(failed) if failed else []

    def delete_many(self, keys: list[bytes]) -> None:
        self._call("delete_many", keys, False)

    def add_many(self, values: dict[bytes, bytes], ttl: int) -> dict[bytes, bool]:
        """``add`` each value (atomic per key on the server); which were stored. One write for
        all where the client can pipeline them, else one command per key."""
        pipelined = _pylibmc.pipelined_add(self.client) or _pymemcache.pipelined_add(self.client)
        if pipelined is None:
            return {
                raw: bool(self._call("add", raw, data, ttl, False)) for raw, data in values.items()
            }
        stored = self._run("add", pipelined, values, ttl)
        return {raw: bool(stored.get(raw)) for raw in values}


class _NoServer(_Node):
    """Where HashClient routes keys when every server is marked dead."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        super().__init__("(no live server)", None)
        self.error = error

    def _call(self, op: str, *args: Any) -> Any:
        raise ServerError(f"no memcached server for {op}: {self.error}")


class _Job:
    """One server's share of a round, run in one thread: writes first, then reads, in chunks."""

    __slots__ = (
        "node",
        "sets",
        "deletes",
        "reads",
        "found",
        "set_failed",
        "error",
        "settle",
        "settled",
    )

    def __init__(self, node: _Node) -> None:
        self.node = node
        # Settles this server's reads in the job's own thread as soon as they arrive, so that the
        # decoding of a fast server's values overlaps the wait for a slow one. Returns the
        # (hits, misses, decode errors) counts; None once run, or when the job failed.
        self.settle: Callable[[_Job], tuple[int, int, int]] | None = None
        self.settled: tuple[int, int, int] | None = None
        self.sets: dict[int, dict[bytes, bytes]] = {}
        self.deletes: list[bytes] = []
        self.reads: list[bytes] = []
        self.found: dict[bytes, Any] = {}
        self.set_failed: set[bytes] = set()
        # The first failure; later requests to the same server are not tried in this round, so a
        # dead server costs one timeout per round, not one per chunk.
        self.error: BaseException | None = None

    def run(self, size: int, counts: list[int], miss: bool) -> None:
        node = self.node
        try:
            for ttl, values in self.sets.items():
                items = list(values.items())
                for start in range(0, len(items), size):
                    counts[2] += 1
                    self.set_failed.update(node.set_many(dict(items[start : start + size]), ttl))
            for start in range(0, len(self.deletes), size):
                counts[3] += 1
                node.delete_many(self.deletes[start : start + size])
            reads = self.reads
            if 0 < len(reads) <= size:
                # The common round: one request, and its answer is the found dict (no copies).
                counts[0] += 1
                counts[1] += len(reads)
                self.found = node.get_many(reads)
            else:
                for start in range(0, len(reads), size):
                    chunk = reads[start : start + size]
                    counts[0] += 1
                    counts[1] += len(chunk)
                    self.found.update(node.get_many(chunk))
        except Exception as e:
            counts[4] += 1
            self.error = as_server_error(node, e, miss)
            return
        if self.settle is not None and self.reads:
            self.settled = self.settle(self)


class OneRoute:
    """The routes of a round on a single server: every key goes to its one job (no dict of every
    key of the round, as :meth:`Servers.route` makes for several servers)."""

    __slots__ = ("job",)

    def __init__(self, job: _Job) -> None:
        self.job = job

    def __getitem__(self, raw: bytes) -> _Job:
        return self.job


def as_server_error(node: _Node, error: Exception, miss: bool) -> BaseException:
    """A fault of the server as a ServerError naming it; anything else (a bug) unchanged.

    ``miss``: the Cache has on_error="miss", so the message (logged, not raised) says what
    happened to the keys instead of advising the setting already in use.
    """
    if isinstance(error, ServerError):
        return error
    if isinstance(error, _FAULTS):
        then = (
            "its reads are misses and its writes failed in this round (on_error='miss'); "
            "check the server"
            if miss
            else "check the server; with on_error='miss' its keys would count as misses instead"
        )
        if _pymemcache.is_refusal(error) or _pylibmc.is_refusal(error):
            why = (
                "it answered the command with an error (an item over its size limit, "
                "memcached -I, is refused so: set the Cache's max_value_size below it)"
            )
        else:
            why = "it is down, refusing connections or slower than the client's timeout"
        msg = f"memcached server {node.name} failed: {type(error).__name__}: {error}; {why}: {then}"
        wrapped = ServerError(msg)
        wrapped.__cause__ = error
        return wrapped
    return error  # a bug, not a fault: never turned into a miss


def _route_key(raw: bytes) -> str | bytes:
    """The key as pymemcache users pass it (str), so both pick the same server for it."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


class Servers:
    """The servers behind one Cache: routes a round's keys to jobs and runs the jobs."""

    def __init__(self, client: Any, max_batch_size: int, miss: bool) -> None:
        self.client = client
        self.max_batch_size = max_batch_size
        self.miss = miss  # on_error="miss"
        self._nodes: dict[int, _Node] = {}
        # HashClient routing is pure-Python murmur3 per key and server: remember it while the
        # set of live servers stays the same.
        self._route_memo: dict[bytes, Any] = {}
        self._route_version: tuple[Any, ...] = ()
        self.single = self._single_node(client)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._finalizer: weakref.finalize[..., Any] | None = None

    def close(self) -> None:
        """Stop the thread pool (a later round starts a new one)."""
        finalizer, self._finalizer = self._finalizer, None
        self._pool = None
        if finalizer is not None:
            finalizer()

    @staticmethod
    def _single_node(client: Any) -> _Node | None:
        _, inner = _pymemcache.unwrap_retrying(client)
        if isinstance(inner, HashClient):
            return None
        return _Node(_pymemcache.server_name(inner), client)

    def route(self, raws: Iterable[bytes], jobs: dict[int, _Job]) -> dict[bytes, _Job]:
        """The job (server) of every key, creating jobs as needed."""
        single = self.single
        if single is not None:
            job = jobs.get(0)
            if job is None:
                job = jobs[0] = _Job(single)
            return dict.fromkeys(raws, job)
        retrying, hc = _pymemcache.unwrap_retrying(self.client)
        with _pymemcache.route_lock(hc):
            return self._route_hashed(raws, jobs, retrying, hc)

    def _route_hashed(
        self,
        raws: Iterable[bytes],
        jobs: dict[int, _Job],
        retrying: RetryingClient | None,
        hc: HashClient,
    ) -> dict[bytes, _Job]:
        out: dict[bytes, _Job] = {}
        version, get_node, clients = _pymemcache.route_table(hc)
        if version != self._route_version or len(self._route_memo) > _ROUTE_MEMO_SIZE:
            self._route_memo = {}
            self._route_version = version
        memo = self._route_memo
        for raw in raws:
            server = memo.get(raw)
            if server is None:
                server = get_node(_route_key(raw))
                if server is not None:
                    memo[raw] = server
            sub = clients.get(server) if server is not None else None
            if sub is None:
                ident = -1
                node: _Node = _NoServer(
                    "every server of the HashClient is marked dead (it retries them after "
                    f"dead_timeout={_pymemcache.dead_timeout(hc)}s)"
                )
            else:
                ident = id(sub)
                found = self._nodes.get(ident)
                if found is None or found.client is not sub:
                    found = self._nodes[ident] = _Node(
                        _pymemcache.server_name(sub), sub, hc, retrying
                    )
                node = found
            job = jobs.get(ident)
            if job is None:
                job = jobs[ident] = _Job(node)
            out[raw] = job
        return out

    def run(self, jobs: dict[int, _Job], counts: dict[int, list[int]]) -> None:
        """Run every job: the calling thread takes one, the pool the others."""
        size = self.max_batch_size
        miss = self.miss
        if len(jobs) == 1:
            for ident, job in jobs.items():
                job.run(size, counts[ident], miss)
            return
        pool = self._thread_pool()
        running: list[ThreadFuture[None]] = []
        items = list(jobs.items())
        # The calling thread takes one server itself instead of waiting idle.
        for ident, job in items[1:]:
            running.append(pool.submit(job.run, size, counts[ident], miss))
        first_ident, first = items[0]
        first.run(size, counts[first_ident], miss)
        for fut in running:
            fut.result()  # job.run catches everything; this only waits

    def _thread_pool(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._pool_lock:
                pool = self._pool
                if pool is None:
                    pool = ThreadPoolExecutor(32, thread_name_prefix="batchq-memcache")
                    self._finalizer = weakref.finalize(self, pool.shutdown, wait=False)
                    self._pool = pool
        return pool
