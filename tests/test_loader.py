"""Loader: one fetch per round per source, each key once, chunks, clear errors for bad fetches."""

from __future__ import annotations

import collections
from collections.abc import Generator
from typing import Any

import pytest

import batchq
from batchq import Loader, asynq


def counting(result: Any = None) -> tuple[list[list[Any]], Any]:
    calls: list[list[Any]] = []

    def fetch(keys: list[Any]) -> Any:
        calls.append(list(keys))
        if result is not None:
            return result(keys)
        return {k: f"value-{k}" for k in keys}

    return calls, fetch


def test_load_sync_and_load_many() -> None:
    calls, fetch = counting()
    users = Loader(fetch, name="users")
    assert users.load(1) == "value-1"
    assert users.load_many([3, 2, 3]) == ["value-3", "value-2", "value-3"]
    assert calls == [[1], [3, 2]]


def test_sequence_results_in_key_order() -> None:
    calls, fetch = counting(lambda keys: [k * 2 for k in keys])
    doubles = Loader(fetch)

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [doubles.load.asynq(k) for k in (5, 1, 5)])

    assert root() == [10, 2, 10]
    assert calls == [[5, 1]]


def test_max_batch_size_splits_a_round_into_chunks() -> None:
    calls, fetch = counting()
    src = Loader(fetch, max_batch_size=3)
    assert src.load_many(range(8)) == [f"value-{k}" for k in range(8)]
    assert calls == [[0, 1, 2], [3, 4, 5], [6, 7]]
    stats = batchq.get_scheduler().last_run
    assert stats is not None
    assert stats.rounds == 1


def test_wrong_number_of_values_fails_every_waiting_task() -> None:
    _, fetch = counting(lambda keys: [1])
    src = Loader(fetch, name="short")
    errors: list[str] = []

    @asynq()
    def get(k: int) -> Generator[Any, Any, None]:
        try:
            yield src.load.asynq(k)
        except batchq.FetchResultError as e:
            errors.append(str(e))

    @asynq()
    def root() -> Generator[Any, Any, None]:
        yield [get.asynq(1), get.asynq(2), get.asynq(3)]

    root()
    assert len(errors) == 3
    assert "fetch of Loader 'short' returned 1 values for 3 keys" in errors[0]


def test_missing_key_in_mapping_fails_that_key_clearly() -> None:
    _, fetch = counting(lambda keys: {k: k for k in keys if k != 2})
    src = Loader(fetch, name="sparse")

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        a = yield src.load.asynq(1)
        try:
            yield src.load.asynq(2)
        except batchq.FetchResultError as e:
            return a, str(e)
        return a, "no error"

    a, message = root()
    assert a == 1
    assert "no value for 1 of 1 keys (2)" in message
    assert isinstance(batchq.FetchResultError("x"), ValueError)


def test_exception_value_fails_only_its_key() -> None:
    _, fetch = counting(lambda keys: [KeyError(k) if k == "bad" else k for k in keys])
    src = Loader(fetch)

    @asynq()
    def safe(k: str) -> Generator[Any, Any, Any]:
        try:
            return (yield src.load.asynq(k))
        except KeyError:
            return "missing"

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [safe.asynq("a"), safe.asynq("bad"), safe.asynq("b")])

    assert root() == ["a", "missing", "b"]


def test_fetch_returning_nonsense_is_explained() -> None:
    src = Loader(lambda keys: 42, name="odd")
    with pytest.raises(batchq.FetchResultError, match="returned 42 of type int"):
        src.load(1)


def test_unhashable_key_is_refused_with_the_fix() -> None:
    src = Loader(lambda keys: keys)
    with pytest.raises(TypeError, match=r"unhashable key \[1, 2\].*tuple"):
        src.load.asynq([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_max_batch_size(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_batch_size must be a positive int"):
        Loader(lambda keys: keys, max_batch_size=bad)


def test_fetch_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callable fetch"):
        Loader(42)  # type: ignore[arg-type]


def test_two_threads_never_mix_batches() -> None:
    import threading

    calls: list[tuple[str, list[Any]]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def fetch(keys: list[Any]) -> list[Any]:
        with lock:
            calls.append((threading.current_thread().name, list(keys)))
        return [(threading.current_thread().name, k) for k in keys]

    src = Loader(fetch)
    results: dict[str, Any] = {}

    @asynq()
    def page(prefix: str) -> Generator[Any, Any, Any]:
        barrier.wait()
        return (yield [src.load.asynq(f"{prefix}{i}") for i in range(50)])

    def run(name: str) -> None:
        results[name] = page(name)

    threads = [threading.Thread(target=run, args=(n,), name=n) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("A", "B"):
        assert results[name] == [(name, f"{name}{i}") for i in range(50)]
    assert sorted(calls) == [
        ("A", [f"A{i}" for i in range(50)]),
        ("B", [f"B{i}" for i in range(50)]),
    ]


def test_a_runs_items_are_freed_by_reference_counting_not_left_in_cycles() -> None:
    import gc

    from batchq._loader import LoaderBatch, LoaderItem

    calls, fetch = counting()
    loader = Loader(fetch)

    @asynq()
    def child(i: int) -> Generator[Any, Any, str]:
        first = yield loader.load.asynq(i)
        second = yield loader.load.asynq(i + 1000)
        return first + second

    @asynq()
    def parent() -> Generator[Any, Any, list[str]]:
        return (yield [child.asynq(i) for i in range(50)])

    gc.collect()
    gc.disable()
    try:
        assert parent()[3] == "value-3value-1003"
        # Without the collector, only reference counting could have freed them.
        left = [o for o in gc.get_objects() if type(o) in (LoaderItem, LoaderBatch)]
    finally:
        gc.enable()
    assert left == []
    assert len(calls) == 2


# A round of one key is flushed by LoaderBatch._round_flush's own copy of the settle step (the
# round of a deep chain); rounds of more keys by Loader._settle_chunk. Both must agree.
ONE_KEY_RESULTS: dict[str, tuple[Any, tuple[str, Any]]] = {
    "list": (lambda keys: [f"v{k}" for k in keys], ("value", "v1")),
    "tuple": (lambda keys: tuple(f"v{k}" for k in keys), ("value", "v1")),
    "exception values": (lambda keys: [KeyError(f"no {k}") for k in keys], ("error", KeyError)),
    "mapping": (lambda keys: {k: f"v{k}" for k in keys}, ("value", "v1")),
    "mapping missing keys": (lambda keys: {}, ("error", batchq.FetchResultError)),
    "other sequence": (
        lambda keys: collections.deque(f"v{k}" for k in keys),
        ("value", "v1"),
    ),
    "too few values": (lambda keys: [], ("error", batchq.FetchResultError)),
    "too many values": (lambda keys: ["x"] * (len(keys) + 1), ("error", batchq.FetchResultError)),
    "not a result": (lambda keys: 42, ("error", batchq.FetchResultError)),
    "str": (lambda keys: "x" * len(keys), ("error", batchq.FetchResultError)),
    "raises": (lambda keys: {}["boom"], ("error", KeyError)),
}


@asynq()
def _outcome(src: Loader[int, Any], k: int) -> Generator[Any, Any, tuple[str, Any]]:
    """The value, or the error's type (messages name the key counts, which differ)."""
    try:
        return ("value", (yield src.load.asynq(k)))
    except Exception as e:
        return ("error", type(e))


@asynq()
def _outcomes_of_two(src: Loader[int, Any]) -> Generator[Any, Any, list[tuple[str, Any]]]:
    return (yield [_outcome.asynq(src, 1), _outcome.asynq(src, 2)])


@pytest.mark.parametrize("shape", sorted(ONE_KEY_RESULTS))
def test_a_one_key_round_settles_like_a_round_of_many_keys(shape: str) -> None:
    result, expected = ONE_KEY_RESULTS[shape]
    calls, fetch = counting(result)
    alone = _outcome(Loader(fetch), 1)
    first_of_two = _outcomes_of_two(Loader(fetch))[0]
    assert calls == [[1], [1, 2]]
    assert alone == first_of_two == expected


def test_instruments_hear_each_loader_flush_with_its_items() -> None:
    from batchq.debug import Instrument, instrument

    heard: list[tuple[str, list[Any], list[Any]]] = []

    class Watch(Instrument):
        def batch_flushed(self, batch: Any, items: Any, seconds: float) -> None:
            heard.append((batch.name(), [i.key for i in items], [i._value for i in items]))

    _, fetch = counting()
    src = Loader(fetch, name="src")

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        one = yield src.load.asynq(1)
        two = yield src.load_many.asynq([2, 3])
        return one, two

    with instrument(Watch()):
        assert root() == ("value-1", ["value-2", "value-3"])
    assert heard == [
        ("src", [1], ["value-1"]),
        ("src", [2, 3], ["value-2", "value-3"]),
    ]
    stats = batchq.get_scheduler().last_run
    assert stats is not None
    assert (stats.rounds, stats.batches, stats.items) == (2, 2, 3)


@pytest.mark.parametrize("keys", [[1], [1, 2, 3]])
def test_a_failing_fetch_fails_every_key_and_the_batch_lets_go_of_them(keys: list[int]) -> None:
    def fetch(keys: list[int]) -> list[int]:
        raise ConnectionError(f"down for {keys}")

    src = Loader(fetch)
    batches: list[Any] = []

    @asynq()
    def get(k: int) -> Generator[Any, Any, str]:
        item = src.load.asynq(k)
        batches.append(item.batch)
        try:
            yield item
        except ConnectionError as e:
            return str(e)
        return "no error"

    @asynq()
    def root() -> Generator[Any, Any, list[str]]:
        return (yield [get.asynq(k) for k in keys])

    assert root() == [f"down for {keys}"] * len(keys)
    batch = batches[0]
    assert all(b is batch for b in batches)
    assert isinstance(batch.error(), ConnectionError)
    # (A traceback's frames reach the batch: only the garbage collector frees a failed one.)
    assert (batch.by_key, batch.first, batch.items) == ({}, None, [])


def test_a_loader_batch_flushed_by_hand_cannot_flush_again() -> None:
    _, fetch = counting()
    src = Loader(fetch)
    item = src.load.asynq(1)
    batch = item.batch
    batch.flush()
    assert item.value() == "value-1"
    assert batch.is_flushed()
    assert batchq.get_scheduler().active_batch(src) is None
    with pytest.raises(batchq.BatchingError, match="already flushed"):
        batch.flush()
    batchq.get_scheduler()._pending.clear()


def test_an_interrupted_round_counts_the_batches_it_flushed() -> None:
    first_calls, first_fetch = counting()
    first = Loader(first_fetch, name="first")

    def interrupting(keys: list[int]) -> list[int]:
        raise KeyboardInterrupt

    second = Loader(interrupting, name="second")

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [first.load.asynq(1), first.load.asynq(2), second.load.asynq(3)])

    with pytest.raises(KeyboardInterrupt):
        root()
    assert first_calls == [[1, 2]]
    stats = batchq.get_scheduler().last_run
    assert stats is not None
    assert (stats.rounds, stats.batches, stats.items) == (1, 1, 2)
