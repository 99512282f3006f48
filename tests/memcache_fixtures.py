"""Shared helpers for the Cache tests: a counting proxy and a small page-render workload."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

import batchq
from batchq.memcache import Cache, _pylibmc, pylibmc_client
from batchq.testing import MemcachedServer, find_memcached

needs_memcached = pytest.mark.skipif(
    find_memcached() is None, reason="memcached is not installed (scripts/ensure-memcached.sh)"
)
needs_pylibmc = pytest.mark.skipif(
    not _pylibmc.available(), reason=f"pylibmc is not installed: {_pylibmc.INSTALL}"
)


class Counting:
    """Forwards every call to the real client and counts the batched ones (not a mock)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()
        self.keys: list[list[Any]] = []
        self.threads: set[str] = set()

    def get_many(self, keys: Any) -> Any:
        self.calls["get_many"] += 1
        self.keys.append(list(keys))
        self.threads.add(threading.current_thread().name)
        return self.client.get_many(keys)

    def set_many(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["set_many"] += 1
        return self.client.set_many(*args, **kwargs)

    def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        self.calls["delete_many"] += 1
        return self.client.delete_many(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class Flaky(Counting):
    """A real client that can be made to fail like a dead server."""

    def __init__(self, client: Any, error: Exception | None = None) -> None:
        super().__init__(client)
        self.error = error

    def get_many(self, keys: Any) -> Any:
        if self.error is not None:
            self.calls["failed"] += 1
            raise self.error
        return super().get_many(keys)

    def set_many(self, *args: Any, **kwargs: Any) -> Any:
        if self.error is not None:
            self.calls["failed"] += 1
            raise self.error
        return super().set_many(*args, **kwargs)

    def delete_many(self, *args: Any, **kwargs: Any) -> Any:
        if self.error is not None:
            raise self.error
        return super().delete_many(*args, **kwargs)


def count_hash_client(client: HashClient) -> dict[str, Counting]:
    """Put a counting proxy in front of every server of a HashClient."""
    proxies = {}
    for name, sub in list(client.clients.items()):
        proxy = Counting(sub)
        client.clients[name] = proxy
        proxies[name] = proxy
    return proxies


_open_clients: list[Any] = []


def track(client: Any) -> Any:
    """Close ``client`` after the test (``close_clients`` fixture): no socket is left open."""
    _open_clients.append(client)
    return client


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    while _open_clients:
        _open_clients.pop().close()


def client_for(server: MemcachedServer, timeout: float = 2.0) -> Client:
    return track(Client(server.address, connect_timeout=timeout, timeout=timeout))


def pylibmc_of(*servers: MemcachedServer, timeout: float = 2.0) -> Any:
    """A client from ``pylibmc_client`` over ``servers``, closed after the test."""
    return track(
        pylibmc_client([f"{s.address[0]}:{s.address[1]}" for s in servers], timeout=timeout)
    )


@pytest.fixture
def servers3() -> Iterator[list[MemcachedServer]]:
    running = [MemcachedServer().start() for _ in range(3)]
    yield running
    for server in running:
        server.stop(graceful=False)


@pytest.fixture
def server1() -> Iterator[MemcachedServer]:
    running = MemcachedServer().start()
    yield running
    running.stop(graceful=False)


# -- the page: question -> answer list -> answers -> author (depth 4) ----------------------------

N_QUESTIONS = 30
ANSWERS_PER_QUESTION = 5
N_AUTHORS = 40


def page_data() -> dict[str, Any]:
    data: dict[str, Any] = {}
    for q in range(N_QUESTIONS):
        data[f"q:{q}"] = {"title": f"question {q}", "answers": f"al:{q}"}
        ids = [q * ANSWERS_PER_QUESTION + i for i in range(ANSWERS_PER_QUESTION)]
        data[f"al:{q}"] = ids
        for a in ids:
            data[f"a:{a}"] = {"author": (a * 7) % N_AUTHORS, "text": f"answer {a}"}
    for u in range(N_AUTHORS):
        data[f"u:{u}"] = {"name": f"user {u}"}
    return data


def expected_page(data: dict[str, Any]) -> list[tuple[str, list[str]]]:
    out = []
    for q in range(N_QUESTIONS):
        question = data[f"q:{q}"]
        names = [data[f"u:{data[f'a:{a}']['author']}"]["name"] for a in data[question["answers"]]]
        out.append((question["title"], names))
    return out


def make_page(cache: Cache, helpers: bool = False) -> batchq.AsyncFunction[[], Any]:
    """The page render as batchq async functions; ``helpers`` adds 0-2 tasks before the author."""

    @batchq.asynq()
    def author_name(uid: int) -> Any:
        user = yield cache.get.asynq(f"u:{uid}")
        return user["name"]

    @batchq.asynq()
    def via(uid: int, hops: int) -> Any:
        if hops == 0:
            return (yield author_name.asynq(uid))
        return (yield via.asynq(uid, hops - 1))

    @batchq.asynq()
    def answer(aid: int) -> Any:
        a = yield cache.get.asynq(f"a:{aid}")
        if helpers:
            return (yield via.asynq(a["author"], aid % 3))
        return (yield author_name.asynq(a["author"]))

    @batchq.asynq()
    def question(qid: int) -> Any:
        q = yield cache.get.asynq(f"q:{qid}")
        ids = yield cache.get.asynq(q["answers"])
        names = yield [answer.asynq(a) for a in ids]
        return (q["title"], names)

    @batchq.asynq()
    def page() -> Any:
        return (yield [question.asynq(q) for q in range(N_QUESTIONS)])

    return page
