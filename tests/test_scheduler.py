"""The round loop: what runs when, how many rounds, and what each waiting task receives."""

from __future__ import annotations

import gc
import sys
from collections.abc import Generator
from typing import Any

import pytest

import batchq
from batchq import AsyncTask, ConstFuture, ErrorFuture, Future, Loader, asynq, none_future


def make_loader(name: str = "src") -> tuple[Loader[Any, Any], list[list[Any]]]:
    calls: list[list[Any]] = []

    def fetch(keys: list[Any]) -> list[Any]:
        calls.append(list(keys))
        return [("v", k) for k in keys]

    return Loader(fetch, name=name), calls


def test_sync_call_runs_to_the_end() -> None:
    @asynq()
    def double(x: int) -> Generator[Any, Any, int]:
        yield None
        return x * 2

    assert double(21) == 42


def test_asynq_returns_a_lazy_task() -> None:
    ran: list[int] = []

    @asynq()
    def f(x: int) -> Generator[Any, Any, int]:
        ran.append(x)
        return x
        yield

    task = f.asynq(3)
    assert isinstance(task, AsyncTask)
    assert ran == []  # nothing runs until someone waits
    assert task.value() == 3
    assert ran == [3]


def test_yield_shapes_are_preserved() -> None:
    @asynq()
    def ident(x: Any) -> Generator[Any, Any, Any]:
        return x
        yield

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        a = yield ident.asynq(1)
        b = yield [ident.asynq(2), ident.asynq(3)]
        c = yield (ident.asynq(4), None, ConstFuture(5))
        d = yield {"x": ident.asynq(6), "y": [ident.asynq(7), (ident.asynq(8),)]}
        e = yield []
        f = yield None
        return a, b, c, d, e, f

    assert root() == (1, [2, 3], (4, None, 5), {"x": 6, "y": [7, (8,)]}, [], None)


def test_rounds_equal_dependency_depth_and_all_sources_flush_together() -> None:
    users, user_calls = make_loader("users")
    posts, post_calls = make_loader("posts")

    @asynq()
    def page(n: int) -> Generator[Any, Any, Any]:
        # Level 1: both sources at once. Level 2: both again, from different tasks.
        u, p = yield users.load.asynq(n), posts.load.asynq(n)
        more = yield [leaf.asynq(i) for i in range(3)]
        return u, p, more

    @asynq()
    def leaf(i: int) -> Generator[Any, Any, Any]:
        return (yield users.load.asynq(100 + i))

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [page.asynq(1), page.asynq(2)])

    out = root()
    assert out[0][0] == ("v", 1)
    assert batchq.get_scheduler().last_run == batchq.RunStats(
        rounds=2, batches=3, items=7, tasks=9, nested_runs=0
    )
    # Round 1 fetched both sources; round 2 fetched users only, each key once.
    assert user_calls == [[1, 2], [100, 101, 102]]
    assert post_calls == [[1, 2]]


def test_identical_keys_in_a_round_are_fetched_once() -> None:
    src, calls = make_loader()

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [src.load.asynq(k) for k in [1, 2, 1, 1, 3, 2]])

    assert root() == [("v", k) for k in [1, 2, 1, 1, 3, 2]]
    assert calls == [[1, 2, 3]]


def test_flushes_every_pending_batch_not_only_the_largest() -> None:
    loaders = [make_loader(f"s{i}") for i in range(5)]

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [ldr.load.asynq(i) for i, (ldr, _) in enumerate(loaders)])

    root()
    stats = batchq.get_scheduler().last_run
    assert stats is not None
    assert stats.rounds == 1
    assert stats.batches == 5
    assert all(len(calls) == 1 for _, calls in loaders)


def test_depth_first_order_like_asynq() -> None:
    order: list[str] = []

    @asynq()
    def child(name: str) -> Generator[Any, Any, None]:
        order.append(name)
        yield None

    @asynq()
    def root() -> Generator[Any, Any, None]:
        yield [child.asynq("a"), child.asynq("b"), child.asynq("c")]

    root()
    assert order == ["a", "b", "c"]


def test_plain_functions_can_be_decorated() -> None:
    @asynq()
    def plain(x: int) -> int:
        return x + 1

    @asynq()
    def root() -> Generator[Any, Any, int]:
        return (yield plain.asynq(1))

    assert plain(1) == 2
    assert root() == 2


def test_futures_can_be_yielded() -> None:
    provided: list[int] = []

    def provider() -> int:
        provided.append(1)
        return 7

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        a = yield Future(provider)
        b = yield none_future
        c = yield [ConstFuture(1), Future(lambda: 2)]
        return a, b, c

    assert root() == (7, None, [1, 2])
    assert provided == [1]


def test_task_shared_by_two_parents_runs_once() -> None:
    runs: list[int] = []

    @asynq()
    def shared() -> Generator[Any, Any, int]:
        runs.append(1)
        yield None
        return 5

    @asynq()
    def parent(t: AsyncTask[int]) -> Generator[Any, Any, int]:
        return (yield t)

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        t = shared.asynq()
        return (yield [parent.asynq(t), parent.asynq(t), t, t])

    assert root() == [5, 5, 5, 5]
    assert runs == [1]


def test_deep_chain_does_not_recurse() -> None:
    @asynq()
    def depth(n: int) -> Generator[Any, Any, int]:
        if n == 0:
            return 0
        return (yield depth.asynq(n - 1)) + 1

    limit = sys.getrecursionlimit()
    assert depth(100_000) == 100_000
    assert sys.getrecursionlimit() == limit


def test_deep_chain_with_a_batch_per_level_takes_one_round_per_level() -> None:
    src, calls = make_loader()

    @asynq()
    def chain(n: int) -> Generator[Any, Any, int]:
        if n == 0:
            return 0
        yield src.load.asynq(n)
        return (yield chain.asynq(n - 1)) + 1

    assert chain(300) == 300
    assert len(calls) == 300
    stats = batchq.get_scheduler().last_run
    assert stats is not None
    assert stats.rounds == 300


def test_nested_sync_call_works_and_is_counted() -> None:
    src, calls = make_loader()

    @asynq()
    def inner(k: int) -> Generator[Any, Any, Any]:
        return (yield src.load.asynq(k))

    @asynq()
    def outer() -> Generator[Any, Any, Any]:
        pending = src.load.asynq(1)  # joins this run's batch
        b = inner(2)  # synchronous call inside a running task: a nested run
        a = yield pending
        return a, b

    assert outer() == (("v", 1), ("v", 2))
    stats = batchq.get_scheduler().last_run
    assert stats is not None
    assert stats.nested_runs == 1
    assert stats.rounds == 2  # the nested run's round is counted too
    assert calls == [[2], [1]]  # one key each: the nested run split what could be one batch


def test_strict_mode_refuses_nested_sync_calls() -> None:
    from batchq._core._instruments import strict_mode as _strict

    @asynq()
    def inner() -> Generator[Any, Any, int]:
        yield None
        return 1

    @asynq()
    def outer() -> Generator[Any, Any, int]:
        yield None
        return inner()

    token = _strict.set(True)
    try:
        with pytest.raises(batchq.SyncCallInAsyncError, match=r"inner\(\).*outer\(\)"):
            outer()
    finally:
        _strict.reset(token)


def test_value_of_a_pending_loader_item_outside_a_run() -> None:
    src, calls = make_loader()
    item = src.load.asynq(9)
    assert item.value() == ("v", 9)
    assert calls == [[9]]


def test_scheduler_is_per_thread() -> None:
    import threading

    seen: dict[str, Any] = {}

    def worker() -> None:
        seen["thread"] = batchq.get_scheduler()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["thread"] is not batchq.get_scheduler()


def test_generators_are_not_leaked() -> None:
    import weakref

    refs: list[weakref.ref[Any]] = []

    @asynq()
    def child(i: int) -> Generator[Any, Any, int]:
        yield None
        return i

    @asynq()
    def root() -> Generator[Any, Any, int]:
        tasks = [child.asynq(i) for i in range(10)]
        refs.extend(weakref.ref(t._gen) for t in tasks)
        return sum((yield tasks))

    assert root() == 45
    gc.collect()
    assert all(r() is None for r in refs)


def test_error_future_yield_raises_at_the_yield() -> None:
    @asynq()
    def root() -> Generator[Any, Any, str]:
        try:
            yield ErrorFuture(KeyError("k"))
        except KeyError as e:
            return f"caught {e}"
        return "not raised"

    assert root() == "caught 'k'"


def test_requests_nobody_waits_on_are_flushed_before_the_run_returns() -> None:
    src, calls = make_loader("writes")

    @asynq()
    def fire_and_forget() -> Generator[Any, Any, str]:
        src.load.asynq("w1")  # issued, never yielded
        yield None
        return "done"

    assert fire_and_forget() == "done"
    assert calls == [["w1"]]
    sched = batchq.get_scheduler()
    assert not sched._pending
    assert sched.last_run is not None
    assert sched.last_run.rounds == 1


def test_task_states_while_a_run_is_in_progress() -> None:
    """is_blocked() and repr() tell blocked, runnable and done apart, for one wait and several."""
    seen: list[tuple[str, bool, str]] = []
    loader = Loader(lambda keys: keys)
    tasks: dict[str, AsyncTask[Any]] = {}

    @asynq()
    def one(k: int) -> Generator[Any, Any, int]:
        return (yield loader.load.asynq(k))

    @asynq()
    def several(k: int) -> Generator[Any, Any, list[int]]:
        return (yield [loader.load.asynq(k), loader.load.asynq(k + 1), one.asynq(k + 2)])

    from batchq.debug import Instrument, instrument

    class Watch(Instrument):
        def round_started(self, scheduler: Any, round_index: int) -> None:
            for name, task in tasks.items():
                seen.append((name, task.is_blocked(), repr(task)))

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        tasks["one"] = one.asynq(1)
        tasks["several"] = several.asynq(10)
        return (yield [tasks["one"], tasks["several"]])

    with instrument(Watch()):
        assert root() == [1, [10, 11, 12]]
    first_round = {name: (blocked, text) for name, blocked, text in seen[:2]}
    assert first_round["one"][0] is True
    assert "blocked on 1" in first_round["one"][1]
    assert first_round["several"][0] is True
    assert "blocked on 3" in first_round["several"][1]
    for task in tasks.values():
        assert not task.is_blocked()
        assert " done" in repr(task)


def test_a_child_runs_and_returns_to_its_parent_as_the_active_task_each_time() -> None:
    # A task started by the one running runs at once, and a task returning to its lone waiter
    # resumes it at once: each must then be the active task, in depth-first order.
    seen: list[tuple[str, str]] = []

    def note(label: str) -> None:
        active = batchq.get_active_task()
        seen.append((label, active.call_str() if active is not None else "none"))

    @asynq()
    def level(n: int) -> Generator[Any, Any, int]:
        note(f"start {n}")
        value = 0 if n == 0 else (yield level.asynq(n - 1)) + 1
        note(f"back in {n}")
        return value

    @asynq()
    def sibling() -> Generator[Any, Any, str]:
        note("sibling")
        yield None
        return "s"

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [level.asynq(2), sibling.asynq()])

    assert root() == [2, "s"]
    labels = [label for label, _ in seen]
    assert labels == [
        "start 2",
        "start 1",
        "start 0",
        "back in 0",
        "back in 1",
        "back in 2",
        "sibling",
    ]
    for label, active in seen:
        n = label.rsplit(" ", 1)[-1]
        assert active.endswith("sibling()" if label == "sibling" else f"level({n})"), label


def test_an_error_set_on_a_running_task_is_what_its_waiter_receives() -> None:
    # The waiter gets the task's outcome (what task.value() gives), even when the generator
    # returned after someone set an error on the task.
    loader = Loader(lambda keys: keys)
    tasks: list[AsyncTask[int]] = []

    @asynq()
    def slow() -> Generator[Any, Any, int]:
        return (yield loader.load.asynq(5))

    @asynq()
    def waiter() -> Generator[Any, Any, str]:
        tasks.append(slow.asynq())
        try:
            return f"got {(yield tasks[0])}"
        except ValueError as e:
            return f"error {e}"

    @asynq()
    def setter() -> Generator[Any, Any, None]:
        yield None
        tasks[0].set_error(ValueError("set while it ran"))

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [waiter.asynq(), setter.asynq()])

    assert root() == ["error set while it ran", None]
    with pytest.raises(ValueError, match="set while it ran"):
        tasks[0].value()
