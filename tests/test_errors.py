"""Errors: every exception reaches every waiter, tracebacks show the async chain, nothing hangs."""

from __future__ import annotations

import gc
import traceback
from collections.abc import Generator
from typing import Any

import pytest

import batchq
from batchq import AsyncTask, BatchBase, BatchItemBase, Loader, asynq


class Boom(Exception):
    pass


def test_error_reaches_each_waiting_parent() -> None:
    caught: list[str] = []

    @asynq()
    def failing() -> Generator[Any, Any, None]:
        yield None
        raise Boom("deep")

    @asynq()
    def parent(name: str, t: AsyncTask[None]) -> Generator[Any, Any, None]:
        try:
            yield t
        except Boom as e:
            caught.append(f"{name}:{e}")

    @asynq()
    def root() -> Generator[Any, Any, None]:
        t = failing.asynq()
        yield [parent.asynq("a", t), parent.asynq("b", t)]

    root()
    assert caught == ["a:deep", "b:deep"]


def test_error_is_thrown_after_siblings_finish() -> None:
    finished: list[str] = []

    @asynq()
    def failing() -> Generator[Any, Any, None]:
        yield None
        raise Boom("x")

    @asynq()
    def slow(n: int) -> Generator[Any, Any, int]:
        for _ in range(n):
            yield None
        finished.append(f"slow{n}")
        return n

    @asynq()
    def root() -> Generator[Any, Any, str]:
        try:
            yield [failing.asynq(), slow.asynq(3)]
        except Boom:
            return ",".join(finished)
        return "no error"

    assert root() == "slow3"


def test_first_error_in_yield_order_wins() -> None:
    @asynq()
    def fail(msg: str) -> Generator[Any, Any, None]:
        yield None
        raise Boom(msg)

    @asynq()
    def root() -> Generator[Any, Any, None]:
        yield {"a": fail.asynq("first"), "b": fail.asynq("second")}

    with pytest.raises(Boom, match="first"):
        root()


def test_traceback_shows_each_async_frame_without_scheduler_frames() -> None:
    @asynq()
    def level3(x: int) -> Generator[Any, Any, None]:
        yield None
        raise Boom(f"at {x}")

    @asynq()
    def level2(x: int) -> Generator[Any, Any, None]:
        yield level3.asynq(x + 1)

    @asynq()
    def level1(x: int) -> Generator[Any, Any, None]:
        yield level2.asynq(x + 1)

    with pytest.raises(Boom) as info:
        level1(1)
    names = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert names.index("level1") < names.index("level2") < names.index("level3")
    assert "_drive" not in names
    notes = getattr(info.value, "__notes__", [])
    if hasattr(info.value, "add_note"):
        assert any("level1(x=1)" in n and "level3(x=3)" in n for n in notes)


def test_two_waiters_each_get_the_failing_tasks_own_traceback() -> None:
    @asynq()
    def failing() -> Generator[Any, Any, None]:
        yield None
        raise Boom("x")

    @asynq()
    def waiter_one(t: AsyncTask[None]) -> Generator[Any, Any, Any]:
        try:
            yield t
        except Boom as e:
            return [f.name for f in traceback.extract_tb(e.__traceback__)]

    @asynq()
    def waiter_two(t: AsyncTask[None]) -> Generator[Any, Any, Any]:
        try:
            yield t
        except Boom as e:
            return [f.name for f in traceback.extract_tb(e.__traceback__)]

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        t = failing.asynq()
        return (yield [waiter_one.asynq(t), waiter_two.asynq(t)])

    one, two = root()
    assert one[0] == "waiter_one"
    assert two[0] == "waiter_two"
    assert "waiter_one" not in two


def test_yielding_a_plain_value_is_a_clear_type_error() -> None:
    @asynq()
    def bad() -> Generator[Any, Any, None]:
        yield 42

    with pytest.raises(batchq.YieldTypeError, match=r"yielded 42 of type int.*f\.asynq") as info:
        bad()
    assert isinstance(info.value, TypeError)


def test_invalid_leaf_in_a_list_raises_after_valid_ones_run() -> None:
    ran: list[int] = []

    @asynq()
    def ok() -> Generator[Any, Any, int]:
        ran.append(1)
        yield None
        return 1

    @asynq()
    def bad() -> Generator[Any, Any, None]:
        yield [ok.asynq(), "nope"]

    with pytest.raises(batchq.YieldTypeError, match="'nope' of type str"):
        bad()
    assert ran == [1]


def test_calling_instead_of_yielding_a_task_is_caught() -> None:
    @asynq()
    def child() -> Generator[Any, Any, int]:
        yield None
        return 1

    @asynq()
    def parent() -> Generator[Any, Any, Any]:
        yield child.fn()  # a raw generator: a common mistake

    with pytest.raises(batchq.YieldTypeError, match="generator"):
        parent()


def test_direct_self_dependency_is_reported_not_hung() -> None:
    holder: dict[str, AsyncTask[Any]] = {}

    @asynq()
    def selfish() -> Generator[Any, Any, None]:
        yield holder["t"]

    holder["t"] = selfish.asynq()
    with pytest.raises(batchq.DependencyCycleError, match=r"selfish\(\) -> .*selfish\(\)"):
        holder["t"].value()


def test_cycle_through_others_names_the_chain() -> None:
    tasks: dict[str, AsyncTask[Any]] = {}

    @asynq()
    def node(name: str, nxt: str) -> Generator[Any, Any, None]:
        yield None
        yield tasks[nxt]

    tasks["a"] = node.asynq("a", "b")
    tasks["b"] = node.asynq("b", "c")
    tasks["c"] = node.asynq("c", "a")
    with pytest.raises(batchq.DependencyCycleError) as info:
        tasks["a"].value()
    msg = str(info.value)
    assert "node('a', 'b')" in msg
    assert "node('b', 'c')" in msg
    assert "node('c', 'a')" in msg
    assert isinstance(info.value, RuntimeError)


def test_cycle_error_can_be_caught_inside_the_cycle() -> None:
    tasks: dict[str, AsyncTask[Any]] = {}

    @asynq()
    def a() -> Generator[Any, Any, str]:
        return "a got " + (yield tasks["b"])

    @asynq()
    def b() -> Generator[Any, Any, str]:
        try:
            yield tasks["a"]
        except batchq.DependencyCycleError:
            return "fallback"
        return "unreachable"

    tasks["a"] = a.asynq()
    tasks["b"] = b.asynq()
    assert tasks["a"].value() == "a got fallback"


def test_flush_error_reaches_every_item() -> None:
    def fetch(keys: list[int]) -> list[int]:
        raise Boom(f"backend down for {keys}")

    src = Loader(fetch, name="down")
    caught: list[str] = []

    @asynq()
    def get(k: int) -> Generator[Any, Any, None]:
        try:
            yield src.load.asynq(k)
        except Boom as e:
            caught.append(str(e))

    @asynq()
    def root() -> Generator[Any, Any, None]:
        yield [get.asynq(1), get.asynq(2), get.asynq(3)]

    root()
    assert caught == ["backend down for [1, 2, 3]"] * 3


class _Batch(BatchBase):
    active: _Batch | None = None

    def __init__(self, behaviour: str) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.cancelled = False

    def _try_switch_active_batch(self) -> None:
        if _Batch.active is self:
            _Batch.active = None

    def _flush(self) -> None:
        if self.behaviour == "partial":
            self.items[0].set_value("only first")
        elif self.behaviour == "interrupt":
            raise KeyboardInterrupt

    def _cancel(self) -> None:
        self.cancelled = True


class _Item(BatchItemBase[Any]):
    pass


def test_flush_that_leaves_items_unset_fails_them_clearly() -> None:
    batch = _Batch("partial")

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [_Item(batch), _Item(batch), _Item(batch)])

    with pytest.raises(batchq.BatchingError, match="left 2 of 3 items without a value"):
        root()


def test_keyboard_interrupt_closes_generators_cancels_batches_and_leaves_scheduler_usable() -> None:
    cleaned: list[str] = []
    interrupting = _Batch("interrupt")
    other = _Batch("never flushed")
    # Flushes run in the order batches became pending: make `other` pending second.

    @asynq()
    def waits(name: str, item: Any) -> Generator[Any, Any, None]:
        try:
            yield item
        finally:
            cleaned.append(name)

    @asynq()
    def root() -> Generator[Any, Any, None]:
        try:
            yield [waits.asynq("a", _Item(interrupting)), waits.asynq("b", _Item(other))]
        finally:
            cleaned.append("root")

    with pytest.raises(KeyboardInterrupt):
        root()
    assert sorted(cleaned) == ["a", "b", "root"]
    assert other.cancelled
    assert other.is_cancelled()

    @asynq()
    def after() -> Generator[Any, Any, int]:
        yield None
        return 1

    assert after() == 1


def test_future_already_computed() -> None:
    f = batchq.ConstFuture(1)
    with pytest.raises(batchq.FutureIsAlreadyComputed, match="already computed"):
        f.set_value(2)


def test_future_used_as_bool_is_refused() -> None:
    with pytest.raises(TypeError, match="forget to yield"):
        bool(batchq.ConstFuture(1))


def test_errors_raised_while_closing_an_interrupted_run_are_not_lost() -> None:
    interrupting = _Batch("interrupt")

    @asynq()
    def messy() -> Generator[Any, Any, None]:
        try:
            yield _Item(interrupting)
        finally:
            raise ValueError("cleanup failed")

    with pytest.raises(KeyboardInterrupt) as info:
        messy()
    notes = getattr(info.value, "__notes__", None)
    if hasattr(info.value, "add_note"):
        assert notes is not None
        assert any("1 task(s) raised" in n and "cleanup failed" in n for n in notes)


# -- a future used as its value: "did you forget to yield" ---------------------------------------


@pytest.mark.parametrize(
    ("use", "how"),
    [
        (lambda t: t["name"], "indexed with ['name']"),
        (lambda t: f"hello {t}", "formatted"),
        (lambda t: list(t), "iterated over"),
        (lambda t: bool(t), "used as a bool"),
    ],
)
@pytest.mark.filterwarnings("ignore::batchq.UnyieldedTaskWarning")  # the task is dropped, too
def test_a_pending_task_used_as_a_value_says_forgot_to_yield(use: Any, how: str) -> None:
    @batchq.asynq()
    def user(uid: int) -> Generator[Any, Any, dict[str, str]]:
        yield None
        return {"name": f"user{uid}"}

    @batchq.asynq()
    def page(uid: int) -> Generator[Any, Any, Any]:
        task = user.asynq(uid)  # the missing `yield`
        return use(task)
        yield  # a generator

    with pytest.raises(TypeError, match="did you forget to yield") as info:
        page(1)
    assert how in str(info.value)
    assert "user(1)" in str(info.value)  # names the call
    del info  # its traceback holds the dropped task: free it while the filter applies
    gc.collect()


def test_a_future_still_prints_with_repr() -> None:
    task = batchq.ConstFuture(3)
    assert f"{task!r}" == repr(task)
    assert str(task) == repr(task)  # logging's %s uses str()


def test_a_computed_future_formats_as_its_repr() -> None:
    """asynq code formats computed futures in messages; only a pending one is a forgotten yield."""
    done = batchq.ConstFuture(1)
    assert f"yielded {done}" == f"yielded {done!r}"
    assert "{}".format(done) == repr(done)  # noqa: UP032


def test_endless_recursion_stops_at_the_depth_limit_with_the_calls_named() -> None:
    from batchq.compat.debug import options

    @asynq()
    def endless(n: int) -> Generator[Any, Any, Any]:
        return (yield endless.asynq(n + 1))

    @asynq()
    def caller() -> Generator[Any, Any, str]:
        try:
            yield endless.asynq(0)
        except batchq.TaskDepthError as e:
            return str(e)
        return "not stopped"

    previous = options.MAX_TASK_STACK_SIZE
    options.MAX_TASK_STACK_SIZE = 3000
    try:
        message = caller()
        with pytest.raises(RuntimeError, match=r"past the limit of 3000.*endless\(\d+\)"):
            endless(0)
    finally:
        options.MAX_TASK_STACK_SIZE = previous
    assert "endless recursion?" in message
    with pytest.raises(ValueError, match="positive int, got 0"):
        options.MAX_TASK_STACK_SIZE = 0


def test_endless_recursion_through_a_list_or_a_batch_per_level_stops_at_the_limit() -> None:
    # The guard once counted only tasks yielded alone, and only within one drive (one round):
    # `yield [f.asynq(...)]` recursed until memory ran out, and a recursion that waits on a batch
    # at every level (one task per round) never stopped.
    from batchq.compat.debug import options

    fetched: list[int] = []

    def fetch(keys: list[int]) -> list[int]:
        fetched.extend(keys)
        return list(keys)

    loader = Loader(fetch)

    @asynq()
    def via_list(n: int) -> Generator[Any, Any, Any]:
        if n > 5000:
            return "not stopped"
        (value,) = yield [via_list.asynq(n + 1)]
        return value

    @asynq()
    def via_batch(n: int) -> Generator[Any, Any, Any]:
        yield loader.load.asynq(n)
        if n > 2000:
            return "not stopped"
        return (yield via_batch.asynq(n + 1))

    @asynq()
    def via_both(n: int) -> Generator[Any, Any, Any]:
        yield loader.load.asynq(n)
        if n > 2000:
            return "not stopped"
        (value,) = yield [via_both.asynq(n + 1)]
        return value

    @asynq()
    def wide(n: int) -> Generator[Any, Any, int]:
        if n == 0:
            return 1
        parts = yield [wide.asynq(n - 1), wide.asynq(n - 1)]
        return sum(parts)  # type: ignore[no-any-return]

    previous = options.MAX_TASK_STACK_SIZE
    options.MAX_TASK_STACK_SIZE = 300
    try:
        with pytest.raises(batchq.TaskDepthError, match=r"limit of 300.*via_list\(\d+\)"):
            via_list(0)
        with pytest.raises(batchq.TaskDepthError, match=r"limit of 300.*via_batch\(\d+\)"):
            via_batch(0)
        assert len(fetched) < 400  # stopped near the limit, not at the function's own stop
        fetched.clear()
        with pytest.raises(batchq.TaskDepthError, match=r"limit of 300.*via_both\(\d+\)"):
            via_both(0)
        assert len(fetched) < 400
        assert wide(11) == 2048  # 4,095 tasks, 12 levels deep: far below the limit
    finally:
        options.MAX_TASK_STACK_SIZE = previous
    assert via_list(4990) == "not stopped"  # the default limit is far away


def test_a_deep_chain_below_the_limit_still_runs() -> None:
    @asynq()
    def down(n: int) -> Generator[Any, Any, int]:
        if n == 0:
            return 0
        return (yield down.asynq(n - 1)) + 1  # type: ignore[no-any-return]

    assert down(150_000) == 150_000
