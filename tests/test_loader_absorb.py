"""A key's lone waiting task held in its item's place (KeyedBatch's absorption).

A task that yields ``loader.load.asynq(key)`` and keeps no reference to the item is stored by the
loader's batch in the item's place, and the item is freed: a pending key costs no object of its
own. Everything that looks (items, debug views, instruments, a second request of the key,
failures, cancellation) must see what it would see without the absorption.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Generator
from typing import Any

import pytest

import batchq
from batchq import Loader, asynq
from batchq._core._batch import KeyedItem
from batchq._core._task import ABSORBED, AsyncTask, blocked_on
from batchq._loader import LoaderItem


def live_items() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is KeyedItem)


class Probe:
    """A fetch that records its keys and, while it runs, what the batch holds."""

    def __init__(self, value: Any = None) -> None:
        self.calls: list[list[Any]] = []
        self.items_during_fetch: list[int] = []
        self.value = value

    def __call__(self, keys: list[Any]) -> Any:
        self.calls.append(list(keys))
        self.items_during_fetch.append(live_items())
        if self.value is not None:
            return self.value(keys)
        return [f"v{k}" for k in keys]


@asynq()
def child(loader: Loader[int, str], key: int) -> Generator[Any, Any, str]:
    return (yield loader.load.asynq(key))


@asynq()
def fan(loader: Loader[int, str], keys: list[int]) -> Generator[Any, Any, list[str]]:
    return (yield [child.asynq(loader, k) for k in keys])


def test_pending_keys_hold_no_item_while_their_round_waits() -> None:
    probe = Probe()
    loader = Loader(probe)
    gc.collect()
    before = live_items()
    assert fan(loader, list(range(200))) == [f"v{k}" for k in range(200)]
    assert probe.calls == [list(range(200))]
    # Only the round's first key keeps its item (the batch's one-key fast path holds it).
    assert probe.items_during_fetch == [before + 1]


def test_an_item_the_task_keeps_is_not_absorbed_and_is_settled() -> None:
    probe = Probe()
    loader = Loader(probe)
    kept: list[Any] = []

    @asynq()
    def keeper(key: int) -> Generator[Any, Any, str]:
        item = loader.load.asynq(key)
        kept.append(item)
        value = yield item
        assert item.value() == value
        return value

    @asynq()
    def root() -> Generator[Any, Any, list[str]]:
        return (yield [child.asynq(loader, 0), keeper.asynq(1), child.asynq(loader, 2)])

    assert root() == ["v0", "v1", "v2"]
    assert [i.value() for i in kept] == ["v1"]
    assert probe.calls == [[0, 1, 2]]


def test_a_second_request_of_an_absorbed_key_shares_one_fetch() -> None:
    probe = Probe()
    loader = Loader(probe)
    seen: list[Any] = []

    @asynq()
    def shout(key: int) -> Generator[Any, Any, str]:
        return (yield loader.load.asynq(key)) + "!"

    @asynq()
    def late(key: int) -> Generator[Any, Any, str]:
        item = loader.load.asynq(key)
        seen.append(item)
        return (yield item)

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        # In the order listed: key 4's item is the round's first, key 5's task is absorbed,
        # then the late requests of key 5 come.
        return (yield [child.asynq(loader, 4), shout.asynq(5), late.asynq(5), late.asynq(5)])

    assert root() == ["v4", "v5!", "v5", "v5"]
    assert probe.calls == [[4, 5]]
    assert type(seen[0]) is LoaderItem
    assert seen[0] is seen[1]  # one item per key per round, as without the absorption


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (lambda keys: [KeyError(k) if k % 2 else f"v{k}" for k in keys], KeyError),
        (lambda keys: {k: f"v{k}" for k in keys if k % 2 == 0}, batchq.FetchResultError),
        (lambda keys: [f"v{k}" for k in keys[:-1]], batchq.FetchResultError),
    ],
    ids=["error values", "mapping missing keys", "wrong count"],
)
def test_absorbed_tasks_get_their_keys_errors(result: Any, expected: type) -> None:
    loader = Loader(Probe(result))

    @asynq()
    def guarded(key: int) -> Generator[Any, Any, Any]:
        try:
            return (yield loader.load.asynq(key))
        except expected as e:
            return type(e)

    @asynq()
    def root() -> Generator[Any, Any, list[Any]]:
        return (yield [guarded.asynq(k) for k in range(6)])

    got = root()
    for k, value in enumerate(got):
        if value is not expected:
            assert value == f"v{k}"
    assert expected in got[1:]  # some absorbed task (not the first key's) got it


def test_a_fetch_that_raises_reaches_every_absorbed_task() -> None:
    def fetch(keys: list[int]) -> Any:
        raise ConnectionError(f"down for {keys}")

    loader = Loader(fetch)

    @asynq()
    def guarded(key: int) -> Generator[Any, Any, str]:
        try:
            yield loader.load.asynq(key)
        except ConnectionError as e:
            return f"{key}: {e}"
        return "no error"

    @asynq()
    def root() -> Generator[Any, Any, list[str]]:
        return (yield [guarded.asynq(k) for k in range(5)])

    assert root() == [f"{k}: down for [0, 1, 2, 3, 4]" for k in range(5)]


def test_chunks_keep_keys_and_values_together() -> None:
    probe = Probe(lambda keys: [k * 10 for k in keys])
    loader = Loader(probe, max_batch_size=3)
    keys = [9, 3, 7, 1, 8, 2, 6]
    assert fan(loader, keys) == [k * 10 for k in keys]
    assert probe.calls == [[9, 3, 7], [1, 8, 2], [6]]


def test_debug_views_see_the_item_an_absorbed_task_waits_on() -> None:
    loader = Loader(Probe(), name="users")
    views: list[Any] = []
    tasks: list[AsyncTask[Any]] = []

    @asynq()
    def first() -> Generator[Any, Any, Any]:
        return (yield loader.load.asynq(100))

    @asynq()
    def look() -> Generator[Any, Any, None]:
        if False:
            yield
        # The task of key 2 is absorbed by now.
        task = tasks[0]
        npending = task._npending
        shown, blocked = repr(task), task.is_blocked()
        still_absorbed = task._npending == ABSORBED  # repr and is_blocked only read
        found = blocked_on(task)
        views.append((npending, shown, blocked, still_absorbed, found, repr(found[0])))

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        t = child.asynq(loader, 2)
        tasks.append(t)
        # Children run in the order listed: ``look`` runs once the others wait.
        return (yield [first.asynq(), t, look.asynq()])

    assert root() == ["v100", "v2", None]
    [(npending, shown, blocked, still_absorbed, found, item_shown)] = views
    assert npending == ABSORBED
    assert still_absorbed
    assert "blocked on 1" in shown
    assert blocked is True
    assert [type(f) for f in found] == [KeyedItem]
    assert found[0].key == 2
    assert "users[2] pending" in item_shown


def test_instruments_see_every_key_of_a_round() -> None:
    loader = Loader(Probe(), name="users")
    with batchq.testing.count_rounds() as rounds:
        assert fan(loader, [1, 2, 3]) == ["v1", "v2", "v3"]
    assert rounds.rounds == [[batchq.testing.BatchRecord("users", (1, 2, 3))]]
    assert rounds.stats.items == 3


def test_an_interrupted_run_closes_absorbed_tasks() -> None:
    closed: list[int] = []
    loader = Loader(Probe())

    @asynq()
    def waiter(key: int) -> Generator[Any, Any, str]:
        try:
            return (yield loader.load.asynq(key))
        finally:
            closed.append(key)

    @asynq()
    def boom() -> Generator[Any, Any, None]:
        yield None  # after the waiters are absorbed
        raise KeyboardInterrupt

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [waiter.asynq(k) for k in range(4)] + [boom.asynq()])

    with pytest.raises(KeyboardInterrupt):
        root()
    assert sorted(closed) == [0, 1, 2, 3]


def test_threads_with_copied_contexts_each_get_their_own_values() -> None:
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    probe = Probe(lambda keys: [(threading.get_ident(), k) for k in keys])
    loader = Loader(probe)

    def request(base: int) -> list[Any]:
        keys = list(range(base, base + 50))
        values = fan(loader, keys)
        assert [k for _, k in values] == keys
        assert len({tid for tid, _ in values}) == 1
        return values

    with ThreadPoolExecutor(4) as pool:
        ctx = contextvars.copy_context()
        futures = [pool.submit(ctx.copy().run, request, b * 100) for b in range(16)]
        results = [f.result() for f in futures]
    assert len(results) == 16


def test_a_batch_flushed_by_a_task_wakes_every_waiter() -> None:
    """``item.batch.flush()`` inside a task (asynq style) flushes the round's batch early: every
    task waiting on one of its keys, absorbed or not, resumes with its value."""
    probe = Probe()
    loader = Loader(probe)

    @asynq()
    def flusher() -> Generator[Any, Any, str]:
        item = loader.load.asynq(99)
        item.batch.flush()
        return item.value()
        yield

    @asynq()
    def root() -> Generator[Any, Any, list[str]]:
        return (yield [child.asynq(loader, k) for k in (1, 2, 3)] + [flusher.asynq()])

    assert root() == ["v1", "v2", "v3", "v99"]
    assert probe.calls == [[1, 2, 3, 99]]


def test_a_key_whose_hash_fails_later_still_gets_its_value() -> None:
    """The absorption stores the task under the key again: a key whose hash raises by then makes
    the task wait as an item (the key was hashed fine when it was requested)."""

    class Flaky:
        def __init__(self, name: str) -> None:
            self.name = name
            self.hashes = 0

        def __hash__(self) -> int:
            self.hashes += 1
            if self.hashes > 2:  # Loader.request hashes a new key twice
                raise RuntimeError(f"{self.name} cannot be hashed again")
            return hash(self.name)

        def __repr__(self) -> str:
            return self.name

    loader: Loader[Any, str] = Loader(lambda keys: [repr(k) for k in keys])
    keys = [Flaky("a"), Flaky("b"), Flaky("c")]
    assert fan(loader, keys) == ["a", "b", "c"]  # type: ignore[arg-type]
