"""One undecodable value fails only its own key (issue 11, finding 5).

A serde that raises its own error for one stored value must not fail the rest of the round: the
other reads and the writes of the round succeed, the bad key raises DeserializationError with the
serde's error as its ``__cause__``, and a cached function recomputes over the bad value and
overwrites it. Checked against a real memcached and against LocalClient.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from memcache_fixtures import client_for, close_clients, needs_memcached, server1

import batchq
from batchq.memcache import Cache, DeserializationError, LocalClient
from batchq.testing import MemcachedServer

__all__ = ["close_clients", "server1"]  # fixtures, imported for pytest


class PoisonError(Exception):
    """The serde's own error, not one of batchq's."""


class TextSerde:
    """Stores str as UTF-8; refuses to read back the value 'poison' with its own error."""

    def serialize(self, key: str | bytes, value: Any) -> tuple[bytes, int]:
        return str(value).encode(), 7

    def deserialize(self, key: str | bytes, data: bytes, flags: int) -> Any:
        if data == b"poison":
            raise PoisonError(f"cannot read {key!r}")
        return data.decode()


@pytest.fixture(
    params=["local", pytest.param("memcached", marks=[pytest.mark.memcached, needs_memcached])]
)
def cache(request: pytest.FixtureRequest) -> Iterator[Cache]:
    if request.param == "local":
        yield Cache(LocalClient(), serde=TextSerde())
        return
    server: MemcachedServer = request.getfixturevalue("server1")
    with Cache(client_for(server), serde=TextSerde()) as c:
        yield c


def test_one_bad_value_fails_only_its_key_and_the_round_goes_on(cache: Cache) -> None:
    assert cache.set_many({"a": "1", "bad": "poison", "b": "2"}) == []
    errors: list[BaseException] = []

    @batchq.asynq()
    def read(key: str) -> Any:
        try:
            return (yield cache.get.asynq(key))
        except DeserializationError as e:
            errors.append(e)
            return "<error>"

    @batchq.asynq()
    def page() -> Any:
        # One round: three reads and a write.
        return (yield read.asynq("a"), read.asynq("bad"), read.asynq("b"), cache.set.asynq("c", 3))

    assert page() == ("1", "<error>", "2", True)
    [error] = errors
    assert isinstance(error.__cause__, PoisonError)
    assert "'bad'" in str(error)
    assert "TextSerde" in str(error)
    assert cache.get("c") == "3"
    assert cache.stats().decode_errors == 1
    with pytest.raises(DeserializationError) as info:
        cache.get("bad")
    assert isinstance(info.value.__cause__, PoisonError)
    assert cache.get_many(["a", "b"]) == {"a": "1", "b": "2"}


def test_a_cached_function_recomputes_over_a_bad_value_and_overwrites_it(cache: Cache) -> None:
    computed: list[int] = []

    @cache.cached(key=lambda n: f"row:{n}")
    def row(n: int) -> str:
        computed.append(n)
        return f"row {n}"

    assert cache.set("row:1", "poison") is True
    assert row(1) == "row 1"
    assert computed == [1]
    assert cache.get("row:1") == "row 1"  # overwritten
    assert row(1) == "row 1"
    assert computed == [1]  # now a hit


def test_a_bad_value_written_in_this_run_fails_only_its_read(cache: Cache) -> None:
    # Read-your-writes answers from the run's own memory; a bad value there fails the same way.
    @batchq.asynq()
    def run() -> Any:
        yield cache.set.asynq("k", "poison")
        try:
            yield cache.get.asynq("k")
        except DeserializationError as e:
            return type(e.__cause__)
        return None

    assert run() is PoisonError
