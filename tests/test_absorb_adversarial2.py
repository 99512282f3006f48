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
import sys
import threading
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from test_absorb_adversarial import absorption_off, both_ways

import batchq
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
def test_a_fetch_that_flushes_its_own_batch_at_a_later_chunk_wakes_keys_settled_before(
    flush_at: int, value: str
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

        loader, calls, holder = absorbing_loader(hook, max_batch_size=2, value=values[value])
        return keeper_and_children(loader, holder, range(1, 6)).value(), calls

    got, calls = both_ways(scenario)[1]
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
