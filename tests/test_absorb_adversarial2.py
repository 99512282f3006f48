"""Adversarial checks, second round, of KeyedBatch's absorption: a delivered None as a plain
resumption, a fetch that flushes (or cancels) its own batch, ``LoaderBatch.flush()`` called by
user code, ``repr()``/``is_blocked()`` from other threads, and the drive's ``keyed`` shortcut
across batches of other kinds. Most scenarios must give the same result with the absorption on
and off (``both_ways``, from the first round's file).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import random
import re
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from test_absorb_adversarial import FailsOnSecondResume, both_ways, logged_loader

import batchq
import batchq.debug
from batchq import AsyncContext, BatchBase, BatchItemBase, Loader, asynq
from batchq._core import _task
from batchq._core._batch import KeyedBatch
from batchq._core._task import ABSORBED, AsyncTask, blocked_on


@asynq()
def child(loader: Loader[Any, Any], key: Any) -> Generator[Any, Any, Any]:
    return (yield loader.load.asynq(key))


@asynq()
def guarded(loader: Loader[Any, Any], key: Any) -> Generator[Any, Any, Any]:
    """The key's value, or the name of the error it got."""
    try:
        return (yield loader.load.asynq(key))
    except Exception as e:
        return type(e).__name__


def absorbing_loader(
    fetch_hook: Callable[[int, list[Any], Any], None],
    *,
    max_batch_size: int | None = None,
    value: Callable[[Any], Any] = lambda k: f"v{k}",
) -> tuple[Loader[Any, Any], list[list[Any]], dict[str, Any]]:
    """A loader whose fetch calls ``fetch_hook(call_number, keys, held_item)`` before answering;
    ``held_item`` is key 0's item, which the root's first task keeps (so ``.batch`` is at hand).
    Returns the loader, the log of fetched keys, and the holder of that item."""
    calls: list[list[Any]] = []
    holder: dict[str, Any] = {}

    def fetch(keys: list[Any]) -> list[Any]:
        calls.append(list(keys))
        fetch_hook(len(calls), keys, holder.get("item"))
        return [value(k) for k in keys]

    return Loader(fetch, max_batch_size=max_batch_size), calls, holder


def keeper_and_children(
    loader: Loader[Any, Any],
    holder: dict[str, Any],
    keys: range,
    tasks: list[AsyncTask[Any]] | None = None,
) -> AsyncTask[Any]:
    """A root waiting on a task that keeps key 0's item (in ``holder``), and on one absorbable
    task per key of ``keys`` (appended to ``tasks``)."""

    @asynq()
    def keeper() -> Generator[Any, Any, Any]:
        item = loader.load.asynq(0)
        holder["item"] = item
        try:
            return (yield item)
        except Exception as e:
            return type(e).__name__

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        children = [guarded.asynq(loader, k) for k in keys]
        if tasks is not None:
            tasks.extend(children)
        return (yield [keeper.asynq(), *children])

    return root.asynq()


# -- a fetch that flushes or cancels its own batch ------------------------------------------------


@pytest.mark.parametrize("flush_at", [2, 3])
@pytest.mark.parametrize("value", ["strings", "None", "errors"])
@pytest.mark.parametrize("then_raise", [False, True])
def test_a_fetch_that_flushes_its_own_batch_at_a_later_chunk_wakes_keys_settled_before(
    flush_at: int, value: str, then_raise: bool
) -> None:
    """``max_batch_size=2``: chunk 1 delivers its keys' values to their absorbed tasks; the fetch
    of a later chunk calls ``item.batch.flush()`` (asynq style). That flush gives every key its
    item back and wakes the items' waiters; the tasks delivered before must be among them (the
    outer flush returns nothing to wake once its batch is flushed)."""
    values: dict[str, Callable[[Any], Any]] = {
        "strings": lambda k: f"v{k}",
        "None": lambda k: None,
        "errors": lambda k: KeyError(k),
    }

    def scenario() -> Any:
        def hook(n: int, keys: list[Any], item: Any) -> None:
            if n == flush_at:
                item.batch.flush()
                if then_raise:
                    raise ConnectionError("after the flush")

        loader, calls, holder = absorbing_loader(hook, max_batch_size=2, value=values[value])
        got = keeper_and_children(loader, holder, range(1, 6)).value()
        return got, calls, repr(holder["item"].batch)

    got, calls, batch_repr = both_ways(scenario)[1]
    # The error of a fetch that flushed its own batch stays on the batch: the keys have values.
    assert ("failed" in batch_repr) == then_raise
    expected = {"strings": [f"v{k}" for k in range(6)], "None": [None] * 6, "errors": None}
    assert got == (expected[value] or ["KeyError"] * 6)
    assert calls[:flush_at] == [[0, 1], [2, 3], [4, 5]][:flush_at]


@pytest.mark.parametrize(("max_batch_size", "cancel_at"), [(None, 1), (2, 1), (2, 2)])
@pytest.mark.parametrize("then_raise", [False, True])
def test_a_fetch_that_cancels_its_own_batch_fails_the_keys_it_did_not_settle(
    max_batch_size: int | None, cancel_at: int, then_raise: bool
) -> None:
    """The fetch calls ``item.batch.cancel()`` on its own batch (and may then raise): every key
    not settled yet gets BatchCancelledError, the keys of earlier chunks keep their values, and
    every waiter is woken. Nobody else wakes them: ``cancel()`` fails items without waking, and
    the round's flush takes the batch as flushed by its fetch."""

    def scenario() -> Any:
        def hook(n: int, keys: list[Any], item: Any) -> None:
            if n == cancel_at:
                item.batch.cancel()
                if then_raise:
                    raise ConnectionError("after the cancel")

        loader, _, holder = absorbing_loader(hook, max_batch_size=max_batch_size)
        root = keeper_and_children(loader, holder, range(1, 6))
        return root.value(), repr(holder["item"].batch)

    got, batch_repr = both_ways(scenario)[1]
    settled = 0 if cancel_at == 1 else 2
    assert got == [f"v{k}" for k in range(settled)] + ["BatchCancelledError"] * (6 - settled)
    assert "cancelled" in batch_repr


@pytest.mark.parametrize("flush_at", [2, 3, None])
@pytest.mark.parametrize("look", ["items", "blocked_on"])
def test_items_given_back_during_a_fetch_are_settled_and_woken(
    flush_at: int | None, look: str
) -> None:
    """The first chunk's fetch gives every absorbed key its item back (``batch.items``, or
    ``blocked_on()`` of a waiting task, as a debug view does) and keeps the items. Each must be
    settled with its key's value, as without the absorption; and a later flush of the batch by
    its own fetch must wake every task once (a task settled directly while its item waited on
    the side would be counted down instead of woken)."""

    def scenario() -> Any:
        kept: list[Any] = []
        tasks: list[AsyncTask[Any]] = []

        def hook(n: int, keys: list[Any], item: Any) -> None:
            if n == 1:
                if look == "items":
                    kept.extend(item.batch.items)
                else:
                    for t in tasks:
                        blocked_on(t)
                    kept.extend(item.batch.items)
            if n == flush_at:
                item.batch.flush()

        loader, calls, holder = absorbing_loader(hook, max_batch_size=2)
        got = keeper_and_children(loader, holder, range(1, 6), tasks).value()
        return got, [(i.key, i.value() if i.is_computed() else "pending") for i in kept], calls

    got, items, _ = both_ways(scenario)[1]
    assert got == [f"v{k}" for k in range(6)]
    assert items == [(k, f"v{k}") for k in range(6)]


class LookingMapping(collections.abc.Mapping[Any, str]):
    """A fetch result whose ``__getitem__`` calls ``look()`` once, the first time it is read."""

    def __init__(self, keys: list[Any], look: Callable[[], None] | None) -> None:
        self.keys_ = keys
        self.look = look

    def __getitem__(self, key: Any) -> str:
        look, self.look = self.look, None
        if look is not None:
            look()
        return f"v{key}"

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys_)

    def __len__(self) -> int:
        return len(self.keys_)


@pytest.mark.parametrize(("max_batch_size", "look_at"), [(None, 1), (2, 1), (2, 2), (2, 3)])
def test_items_given_back_while_a_chunk_is_settled_are_settled_and_woken(
    max_batch_size: int | None, look_at: int
) -> None:
    """As above, from the fetch result's own code: a mapping whose first read gives every key
    its item back, in the middle of settling a chunk. The keys of that chunk not settled yet
    must be settled through their items, and each task woken once."""

    def scenario() -> Any:
        kept: list[Any] = []
        holder: dict[str, Any] = {}
        calls: list[list[Any]] = []

        def fetch(keys: list[Any]) -> LookingMapping:
            calls.append(list(keys))
            look = None
            if len(calls) == look_at:

                def look() -> None:
                    kept.extend(holder["item"].batch.items)

            return LookingMapping(keys, look)

        loader: Loader[int, str] = Loader(fetch, max_batch_size=max_batch_size)
        got = keeper_and_children(loader, holder, range(1, 6)).value()
        return got, [(i.key, i.value() if i.is_computed() else "pending") for i in kept]

    got, items = both_ways(scenario)[1]
    assert got == [f"v{k}" for k in range(6)]
    assert items == [(k, f"v{k}") for k in range(6)]


# -- repr() and is_blocked() from another thread ---------------------------------------------------


@pytest.mark.parametrize("look", ["repr", "is_blocked"])
def test_a_look_from_another_thread_never_gives_keys_their_items_back(
    monkeypatch: pytest.MonkeyPatch, look: str
) -> None:
    """Another thread (a log line on the event loop while a worker thread flushes) looks at a
    task waiting on a task, which finishes meanwhile: the looked-at task resumes and is absorbed
    before the look ends. The look must still only read: giving the batch's keys their items
    back from that thread would edit ``by_key`` under the scheduler's feet.

    The interleaving is forced: the watcher pauses where the look reads what the task waits on
    (``blocked_on`` or ``leaves``), until the scheduler's thread has absorbed the task."""
    loader: Loader[int, str] = Loader(lambda keys: [f"v{k}" for k in keys])
    at_look = threading.Event()
    absorbed = threading.Event()
    foreign: list[str] = []
    looks: list[Any] = []
    target: list[AsyncTask[Any]] = []
    unabsorb = KeyedBatch._unabsorb

    def spy_unabsorb(self: KeyedBatch) -> None:
        if threading.current_thread() is not threading.main_thread():
            foreign.append(repr(self))
        unabsorb(self)

    def paused(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                at_look.set()
                assert absorbed.wait(5)
            return fn(*args)

        return wrapper

    monkeypatch.setattr(KeyedBatch, "_unabsorb", spy_unabsorb)
    monkeypatch.setattr(_task, "blocked_on", paused(_task.blocked_on))
    monkeypatch.setattr(_task, "leaves", paused(_task.leaves))

    def watch() -> None:
        t = target[0]
        looks.append(repr(t) if look == "repr" else t.is_blocked())

    watcher = threading.Thread(target=watch)

    @asynq()
    def opener() -> Generator[Any, Any, None]:
        return None
        yield

    @asynq()
    def gate(t: AsyncTask[Any]) -> Generator[Any, Any, None]:
        yield t  # started, not run yet: waits on it

    @asynq()
    def gated(g: AsyncTask[Any]) -> Generator[Any, Any, Any]:
        yield g
        return (yield loader.load.asynq(2))  # absorbed: key 1 is the batch's first of the drive

    @asynq()
    def start_watcher() -> Generator[Any, Any, None]:
        watcher.start()  # looks at the target, which waits on the gate
        assert at_look.wait(5)
        return None
        yield

    @asynq()
    def release_watcher(t: AsyncTask[Any]) -> Generator[Any, Any, int]:
        state = t._npending  # the opener ran: the gate opened, the target waits on its key
        absorbed.set()
        watcher.join(5)
        return state
        yield

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        o = opener.asynq()
        g = gate.asynq(o)
        t = gated.asynq(g)
        target.append(t)
        return (
            yield [child.asynq(loader, 1), g, t, start_watcher.asynq(), o, release_watcher.asynq(t)]
        )

    got = root()
    assert got[2] == "v2"
    assert got[5] == ABSORBED  # the target was absorbed while the watcher looked
    shown = f"<AsyncTask {target[0].call_str()} "
    assert looks in ([shown + "runnable>"], [shown + "blocked on 1>"], [False], [True])
    assert foreign == []


# -- the drive's keyed shortcut, across batches of other kinds -----------------------------------


class KVBatch(BatchBase):
    """An asynq-style batch (not keyed): a class-level active batch, switched on flush."""

    active: KVBatch | None = None
    flushed: list[list[str]] = []  # noqa: RUF012 (reset by each scenario)

    def _try_switch_active_batch(self) -> None:
        if KVBatch.active is self:
            KVBatch.active = None

    def _flush(self) -> None:
        KVBatch.flushed.append([item.key for item in self.items])  # type: ignore[attr-defined]
        for item in self.items:
            item.set_value(item.key.upper())  # type: ignore[attr-defined]


class KVItem(BatchItemBase[str]):
    def __init__(self, key: str) -> None:
        if KVBatch.active is None:
            KVBatch.active = KVBatch()
        super().__init__(KVBatch.active)
        self.key = key


@pytest.mark.parametrize("pattern", ["LLKKLL", "LKLKLK", "KLLKLL", "LLKLLK"])
def test_items_of_a_keyed_and_an_asynq_style_batch_interleaved_in_one_drive(pattern: str) -> None:
    """Tasks yield, in the order of ``pattern``, a loader's key (L) or an asynq-style batch's
    item (K): the drive's current batch flips between them, and with it whether absorption is
    checked. Every task gets its own value, in two rounds of each kind."""

    def scenario() -> Any:
        KVBatch.active = None
        KVBatch.flushed = []
        loader, calls = logged_loader()

        @asynq()
        def two_rounds(kind: str, k: int) -> Generator[Any, Any, Any]:
            if kind == "L":
                first = yield loader.load.asynq(k)
                return first, (yield loader.load.asynq(k + 100))
            first = yield KVItem(f"k{k}")
            return first, (yield KVItem(f"k{k + 100}"))

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [two_rounds.asynq(kind, k) for k, kind in enumerate(pattern)])

        return root(), calls, KVBatch.flushed

    got, calls, flushed = both_ways(scenario)[1]
    for k, kind in enumerate(pattern):
        expected = (f"v{k}", f"v{k + 100}") if kind == "L" else (f"K{k}", f"K{k + 100}")
        assert got[k] == expected
    assert len(calls) == 2
    assert len(flushed) == 2


def test_a_key_absorbed_then_requested_and_yielded_by_another_task() -> None:
    """The first task's key is absorbed; a second task asks for the same key and waits on the
    item it gets (given back by the request); a third asks again in the next drive. One fetch,
    every task its value, the first one woken through the item."""

    def scenario() -> Any:
        loader, calls = logged_loader()

        @asynq()
        def late(k: int) -> Generator[Any, Any, Any]:
            yield None
            return (yield loader.load.asynq(k))

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (
                yield [
                    child.asynq(loader, 1),
                    child.asynq(loader, 2),
                    child.asynq(loader, 2),
                    late.asynq(2),
                    child.asynq(loader, 3),
                ]
            )

        return root(), calls

    assert both_ways(scenario) == ("returned", (["v1", "v2", "v2", "v2", "v3"], [[1, 2, 3]]))


# -- LoaderBatch.flush() called by user code -----------------------------------------------------


@pytest.mark.parametrize("where", ["task", "twice", "other loader's fetch", "value"])
def test_user_code_flushing_a_batch_with_absorbed_tasks(where: str) -> None:
    """``item.batch.flush()`` (asynq style) from a task of the same round, twice, from the fetch
    of another loader flushed first, or ``batch.value()``: the absorbed tasks of that batch get
    their values once, and the round's flush finds the batch flushed."""

    def scenario() -> Any:
        calls: list[Any] = []
        holder: dict[str, Any] = {}

        def fetch_a(keys: list[int]) -> list[str]:
            calls.append(("a", list(keys)))
            return [f"a{k}" for k in keys]

        def fetch_b(keys: list[int]) -> list[str]:
            calls.append(("b", list(keys)))
            if where == "other loader's fetch":
                holder["item"].batch.flush()
            return [f"b{k}" for k in keys]

        a: Loader[int, str] = Loader(fetch_a)
        b: Loader[int, str] = Loader(fetch_b)

        @asynq()
        def flusher() -> Generator[Any, Any, Any]:
            yield None  # the others wait first
            batch = holder["item"].batch
            errors = []
            if where in ("task", "twice"):
                batch.flush()
            if where == "twice":
                try:
                    batch.flush()
                except batchq.BatchingError as e:
                    errors.append(type(e).__name__)
            if where == "value":
                batch.value()
            return errors, (yield holder["item"])

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            b_first = b.load.asynq(9)  # b's batch is pending before a's: flushed first
            holder["item"] = a.load.asynq(0)
            return (
                yield [
                    b_first,
                    child.asynq(a, 1),
                    child.asynq(a, 2),
                    child.asynq(a, 3),
                    flusher.asynq(),
                ]
            )

        return root(), calls

    got, calls = both_ways(scenario)[1]
    assert got[:4] == ["b9", "a1", "a2", "a3"]
    assert got[4] == (["BatchingError"] if where == "twice" else [], "a0")
    assert sorted(c for c in calls if c[0] == "a") == [("a", [0, 1, 2, 3])]


def test_a_delivered_none_then_a_context_failing_to_resume() -> None:
    """The key's value is None (delivered as a plain resumption); the task's context fails to
    resume when it is switched back in: the task gets the context's error at its yield."""

    def scenario() -> Any:
        loader: Loader[int, Any] = Loader(lambda keys: [None for _ in keys])

        @asynq()
        def fragile(key: int) -> Generator[Any, Any, Any]:
            try:
                with FailsOnSecondResume():
                    got = yield loader.load.asynq(key)
            except ValueError as e:
                return f"caught: {e}"
            return f"got {got!r}"

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [child.asynq(loader, 1), fragile.asynq(2), child.asynq(loader, 3)])

        return root()

    assert both_ways(scenario) == ("returned", [None, "caught: cannot resume", None])


# -- threads and asyncio under load ------------------------------------------------------------


def test_threads_with_copied_contexts_sharing_a_loader_each_get_their_own_values() -> None:
    """Eight threads (each a copied context, so each its own scheduler) run rounds of the same
    loader at once, with a watcher thread reading repr()/is_blocked() of every live task: each
    run gets its own keys' values, and no fetch mixes threads."""
    # The owners of each fetch's keys. (Per fetch, not per thread: the executor may run two
    # owners' work one after the other on one thread.)
    fetched: list[set[int]] = []
    lock = threading.Lock()

    def fetch(keys: list[tuple[int, int]]) -> list[int]:
        with lock:
            fetched.append({k[0] for k in keys})
        return [owner * 1000 + n for owner, n in keys]

    loader: Loader[tuple[int, int], int] = Loader(fetch, max_batch_size=7)
    live: list[AsyncTask[Any]] = []
    stop = threading.Event()

    @asynq()
    def pair(owner: int, n: int) -> Generator[Any, Any, Any]:
        a = yield loader.load.asynq((owner, n))
        b = yield loader.load.asynq((owner, n + 500))
        return a + b

    @asynq()
    def root(owner: int) -> Generator[Any, Any, Any]:
        tasks = [pair.asynq(owner, n) for n in range(40)]
        live.extend(tasks)
        return (yield tasks)

    seen_absorbed = [0]
    odd: list[str] = []
    state = re.compile(r" (not started|runnable|blocked on [0-9]+|done|error)>$")

    def watch() -> None:
        while not stop.is_set():
            for t in list(live[-200:]):
                shown = repr(t)
                t.is_blocked()
                if t._npending == ABSORBED:
                    seen_absorbed[0] += 1
                if not state.search(shown):
                    odd.append(shown)

    def work(owner: int) -> bool:
        rng = random.Random(owner)
        for _ in range(30):
            got = root(owner)
            want = [owner * 2000 + 2 * n + 500 for n in range(40)]
            if got != want:
                return False
            if rng.random() < 0.3:
                del live[:]
        return True

    watcher = threading.Thread(target=watch)
    watcher.start()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda o: contextvars.copy_context().run(work, o), range(8)))
    finally:
        sys.setswitchinterval(old)
        stop.set()
        watcher.join()
    assert results == [True] * 8
    assert [owners for owners in fetched if len(owners) != 1] == []
    assert set().union(*fetched) == set(range(8))
    assert seen_absorbed[0] > 0  # the watcher did look at absorbed tasks
    assert odd == []


async def call_and_cancel_some(fan: Any, n: int, doomed: int, rng: random.Random) -> list[Any]:
    """``fan.asyncio(b)`` for each ``b`` in ``range(n)``, all started at once; ``doomed`` of them
    (chosen by ``rng``) are cancelled, each after 0 to 5 more loop turns. Each result in order,
    or "cancelled"."""
    calls = [asyncio.ensure_future(fan.asyncio(b)) for b in range(n)]
    for b in rng.sample(range(n), doomed):
        for _ in range(rng.randrange(6)):
            await asyncio.sleep(0)
        calls[b].cancel()
    out: list[Any] = []
    for c in calls:
        try:
            out.append(await c)
        except asyncio.CancelledError:
            out.append("cancelled")
    return out


@pytest.mark.parametrize("seed", range(4))
def test_asyncio_callers_cancelled_at_random_under_load(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """Forty asyncio callers share rounds of one loader (absorbed keys, chunks of 5, None values
    among them); a random third are cancelled at random moments. Every caller not cancelled gets
    its own values, and every task closed or finished ran its ``finally``."""
    from aio_support import run

    rng = random.Random(seed)
    finished: list[int] = []

    def fetch(keys: list[int]) -> list[Any]:
        return [None if k % 7 == 0 else k * 3 for k in keys]

    loader: Loader[int, Any] = Loader(fetch, max_batch_size=5)
    delivered = [0]  # tasks given their values in their keys' places
    settle = Loader._settle_chunk

    def counting_settle(self: Any, result: Any, keys: Any, items: list[Any]) -> None:
        delivered[0] += sum(1 for i in items if isinstance(i, AsyncTask))
        settle(self, result, keys, items)

    monkeypatch.setattr(Loader, "_settle_chunk", counting_settle)

    @asynq()
    def get(k: int) -> Generator[Any, Any, Any]:
        try:
            first = yield loader.load.asynq(k)
            second = yield loader.load.asynq(k + 10_000)
            return first, second
        finally:
            finished.append(k)

    @asynq()
    def fan(base: int) -> Generator[Any, Any, Any]:
        return (yield [get.asynq(base * 100 + i) for i in range(6)])

    def want(base: int) -> list[Any]:
        ks = [base * 100 + i for i in range(6)]
        return [
            (None if k % 7 == 0 else k * 3, (k + 10_000) * 3 if (k + 10_000) % 7 else None)
            for k in ks
        ]

    got = run(lambda: call_and_cancel_some(fan, 40, 13, rng))
    for b, g in enumerate(got):
        assert g == "cancelled" or g == want(b), (b, g)
    assert delivered[0] > 0
    # Every task ran its finally once: the callers not cancelled' all of them.
    assert len(finished) == len(set(finished))
    for b, g in enumerate(got):
        if g != "cancelled":
            assert {b * 100 + i for i in range(6)} <= set(finished)


@pytest.mark.parametrize("key", [2, 7])
def test_another_loaders_fetch_loads_a_key_of_a_batch_with_absorbed_tasks(key: int) -> None:
    """Loader b's batch flushes first; its fetch loads, synchronously, a key of loader a's batch
    of the same round (absorbed: 2; new: 7). That nested run flushes a's batch, absorbed tasks
    and all; the round then finds it flushed, and every task gets its value once."""

    def scenario() -> Any:
        calls: list[Any] = []
        a: Loader[int, str]

        def fetch_a(keys: list[int]) -> list[str]:
            calls.append(("a", list(keys)))
            return [f"a{k}" for k in keys]

        def fetch_b(keys: list[int]) -> list[str]:
            calls.append(("b", list(keys)))
            inner = a.load(key)
            return [f"b{k}+{inner}" for k in keys]

        a = Loader(fetch_a)
        b: Loader[int, str] = Loader(fetch_b)
        resumed: list[int] = []

        @asynq()
        def counted(k: int) -> Generator[Any, Any, Any]:
            got = yield a.load.asynq(k)
            resumed.append(k)
            return got

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            b_first = b.load.asynq(9)  # b's batch is pending first: flushed first
            return (yield [b_first, *(counted.asynq(k) for k in range(1, 5))])

        return root(), sorted(resumed), calls

    got, resumed, calls = both_ways(scenario)[1]
    assert got == [f"b9+a{key}", "a1", "a2", "a3", "a4"]
    assert resumed == [1, 2, 3, 4]
    assert calls == [("b", [9]), ("a", [1, 2, 3, 4] + ([7] if key == 7 else []))]


# -- random programs, absorption on and off ------------------------------------------------------


def random_program(seed: int) -> Callable[[], Any]:
    """A scenario for ``both_ways``: tasks that wait on keys of two loaders in random ways (kept
    items, lists, nested tasks, synchronous loads, ``flush()`` of a batch by a task), with None
    and error values, random chunk sizes, and fetches that flush or cancel their own batch. The
    plan is drawn before anything runs, so both runs follow it alike."""
    rng = random.Random(seed)
    sizes = [rng.choice([None, 2, 3]) for _ in range(2)]
    own = [
        {rng.randrange(1, 4): rng.choice(["flush", "cancel", "look"])} if rng.random() < 0.7 else {}
        for _ in range(2)
    ]
    kinds = ["key", "key", "key", "key", "kept", "kept", "list", "task", "none", "sync", "flush"]
    kinds += ["kv", "look", "context"]
    instrumented = rng.random() < 0.3
    plans = [
        [
            (rng.choice(kinds), rng.randrange(2), rng.randrange(12))
            for _ in range(rng.randrange(1, 4))
        ]
        for _ in range(rng.randrange(4, 12))
    ]

    def scenario() -> Any:
        calls: list[Any] = []
        held: list[Any] = []
        looked: list[int] = []
        switches: list[tuple[str, int]] = []
        loaders: list[Loader[int, Any]] = []

        class Logged(AsyncContext):
            def __init__(self, k: int) -> None:
                self.k = k

            def resume(self) -> None:
                switches.append(("resume", self.k))

            def pause(self) -> None:
                switches.append(("pause", self.k))

        KVBatch.active = None
        KVBatch.flushed = []

        def make_fetch(which: int) -> Callable[[list[int]], list[Any]]:
            def fetch(keys: list[int]) -> list[Any]:
                calls.append((which, list(keys)))
                action = own[which].get(len([c for c in calls if c[0] == which]))
                mine = [i for i in held if i.batch.loader is loaders[which]]
                if action == "look" and mine:
                    looked.append(len(mine[-1].batch.items))
                elif action and mine and not mine[-1].batch.is_flushed():
                    getattr(mine[-1].batch, action)()
                return [None if k % 5 == 0 else KeyError(k) if k % 7 == 0 else k for k in keys]

            return fetch

        loaders.extend(Loader(make_fetch(i), max_batch_size=sizes[i], name=f"L{i}") for i in (0, 1))

        @asynq()
        def leaf(which: int, k: int) -> Generator[Any, Any, Any]:
            return (yield loaders[which].load.asynq(k))

        @asynq()
        def run_plan(plan: list[tuple[str, int, int]]) -> Generator[Any, Any, Any]:
            out: list[Any] = []
            for kind, which, k in plan:
                loader = loaders[which]
                try:
                    if kind == "key":
                        out.append((yield loader.load.asynq(k)))
                    elif kind == "kept":
                        item = loader.load.asynq(k)
                        held.append(item)
                        out.append((yield item))
                    elif kind == "list":
                        out.append((yield [loader.load.asynq(k), loader.load.asynq(k + 1)]))
                    elif kind == "task":
                        out.append((yield leaf.asynq(which, k)))
                    elif kind == "none":
                        out.append((yield None))
                    elif kind == "sync":
                        out.append(loader.load(k))
                    elif kind == "kv":
                        out.append((yield KVItem(f"k{k}")))
                    elif kind == "context":
                        with Logged(k):
                            out.append((yield loader.load.asynq(k)))
                    elif kind == "look":
                        out.append(len(held[-1].batch.items) if held else None)
                    else:
                        mine = [i for i in held if i.batch.loader is loader]
                        if mine and not mine[-1].batch.is_flushed():
                            mine[-1].batch.flush()
                            out.append("flushed")
                except Exception as e:
                    out.append(type(e).__name__)
            return out

        @asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [run_plan.asynq(plan) for plan in plans])

        if instrumented:
            with batchq.debug.instrument(batchq.debug.TraceRecorder(tasks=True)):
                return root(), calls, looked, KVBatch.flushed, switches
        return root(), calls, looked, KVBatch.flushed, switches

    return scenario


def test_random_programs_behave_the_same_with_and_without_absorption() -> None:
    """Also without a deadlock: every wait is on a key of a loader, which some flush settles."""
    absorbed = 0
    for seed in range(400):
        try:
            outcome = both_ways(random_program(seed))
        except AssertionError as e:
            if "absorbed no task" not in str(e):
                raise AssertionError(f"seed {seed}: {e}") from None
            outcome = both_ways(random_program(seed), absorbs=False)
        else:
            absorbed += 1
        assert outcome[0] == "returned", (seed, outcome)
        assert "DeadlockError" not in repr(outcome), (seed, outcome)
    assert absorbed > 200  # most programs absorbed tasks: they tested something


def test_asyncio_fetches_that_flush_or_cancel_their_own_batch_among_cancelled_callers() -> None:
    """Twenty asyncio callers share rounds (the fetch runs in the driver's worker thread); some
    fetches flush or cancel their own batch through an item a task keeps; a quarter of the
    callers are cancelled at random moments. No call hangs or ends in a deadlock, and every
    caller not cancelled gets, per key, its value, or BatchCancelledError for a cancelled one."""
    from aio_support import run

    for seed in range(15):
        rng = random.Random(seed)
        held: list[Any] = []
        actions = {n: rng.choice(["flush", "cancel", None]) for n in range(1, 30)}
        calls: list[list[int]] = []

        def fetch(
            keys: list[int], held: list[Any] = held, actions: Any = actions, calls: Any = calls
        ) -> list[Any]:
            calls.append(list(keys))
            action = actions.get(len(calls))
            mine = [i for i in held if not i.batch.is_flushed()]
            if action and mine:
                getattr(mine[-1].batch, action)()
            return [None if k % 7 == 0 else k * 3 for k in keys]

        loader: Loader[int, Any] = Loader(fetch, max_batch_size=rng.choice([None, 3, 5]))

        @asynq()
        def get(
            k: int, keep: bool, loader: Loader[int, Any] = loader, held: list[Any] = held
        ) -> Generator[Any, Any, Any]:
            try:
                if keep:
                    item = loader.load.asynq(k)
                    held.append(item)
                    first = yield item
                else:
                    first = yield loader.load.asynq(k)
                return first, (yield loader.load.asynq(k + 10_000))
            except Exception as e:
                return type(e).__name__

        @asynq()
        def fan(base: int, get: Any = get) -> Generator[Any, Any, Any]:
            return (yield [get.asynq(base * 100 + i, i == 0) for i in range(6)])

        got = run(lambda fan=fan, rng=rng: call_and_cancel_some(fan, 20, 5, rng))
        for b, per_key in enumerate(got):
            if per_key == "cancelled":
                continue
            for i, g in enumerate(per_key):
                k = b * 100 + i
                want = (None if k % 7 == 0 else k * 3, (k + 10_000) * 3)
                if (k + 10_000) % 7 == 0:
                    want = (want[0], None)
                assert g in (want, "BatchCancelledError"), (seed, b, i, g)
