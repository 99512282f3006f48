"""AsyncContext follows its task: paused when the task is switched out, resumed when back."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import batchq
from batchq import AsyncContext, Loader, NonAsyncContext, asynq

log: list[str] = []


class Ctx(AsyncContext):
    def __init__(self, name: str) -> None:
        self.name = name

    def resume(self) -> None:
        log.append(f"+{self.name}")

    def pause(self) -> None:
        log.append(f"-{self.name}")


@pytest.fixture(autouse=True)
def _clear_log() -> None:
    log.clear()


src = Loader(lambda keys: keys, name="src")


def test_context_without_yield_enters_and_exits() -> None:
    @asynq()
    def f() -> Generator[Any, Any, None]:
        with Ctx("a"):
            log.append("body")
        yield None

    f()
    assert log == ["+a", "body", "-a"]


def test_context_is_paused_across_a_flush_and_resumed_after() -> None:
    @asynq()
    def f() -> Generator[Any, Any, None]:
        with Ctx("a"):
            log.append("before")
            yield src.load.asynq(1)
            log.append("after")

    f()
    assert log == ["+a", "before", "-a", "+a", "after", "-a"]


def test_children_run_inside_the_parents_context() -> None:
    @asynq()
    def child() -> Generator[Any, Any, None]:
        log.append("child")
        yield None

    @asynq()
    def parent() -> Generator[Any, Any, None]:
        with Ctx("p"):
            yield child.asynq()
        log.append("parent done")

    parent()
    # The parent's context stays active while its child runs (no pause in between).
    assert log == ["+p", "child", "-p", "parent done"]


def test_unrelated_task_does_not_see_another_tasks_context() -> None:
    @asynq()
    def with_ctx() -> Generator[Any, Any, None]:
        with Ctx("a"):
            yield src.load.asynq(1)
            log.append("a after")

    @asynq()
    def without() -> Generator[Any, Any, None]:
        yield None
        log.append("plain")

    @asynq()
    def root() -> Generator[Any, Any, None]:
        yield [with_ctx.asynq(), without.asynq()]

    root()
    # "plain" runs while with_ctx is blocked: its context must be paused then.
    assert log.index("-a") < log.index("plain")
    assert log[-2:] == ["a after", "-a"]


def test_context_raising_on_resume_fails_its_task_at_the_yield() -> None:
    class Fragile(AsyncContext):
        resumes = 0

        def resume(self) -> None:
            self.resumes += 1
            if self.resumes == 2:
                raise ValueError("cannot resume")

        def pause(self) -> None:
            pass

    @asynq()
    def f() -> Generator[Any, Any, str]:
        try:
            with Fragile():
                yield src.load.asynq(1)
        except ValueError as e:
            return f"caught: {e}"
        return "no error"

    assert f() == "caught: cannot resume"


def test_non_async_context_refuses_a_waiting_yield() -> None:
    @asynq()
    def f() -> Generator[Any, Any, None]:
        with NonAsyncContext():
            yield src.load.asynq(1)

    with pytest.raises(batchq.YieldInNonAsyncContextError, match="NonAsyncContext") as info:
        f()
    assert isinstance(info.value, AssertionError)


def test_non_async_context_allows_code_without_waiting() -> None:
    @asynq()
    def f() -> Generator[Any, Any, int]:
        with NonAsyncContext():
            x = 1
        return x + (yield src.load.asynq(1))

    assert f() == 2


def test_contexts_outside_tasks_just_enter_and_exit() -> None:
    with Ctx("outside"):
        log.append("body")
    assert log == ["+outside", "body", "-outside"]


def test_context_failing_to_resume_fails_a_waiter_resumed_by_a_task_it_did_not_start() -> None:
    # `b` waits on a task `a` started inside another context: when that task returns, the
    # scheduler switches from a's frame to b's, and b's context fails to resume. b must get that
    # error at its yield (as on any switch), not the task's value with the error dropped.
    class FailsFirstPause(AsyncContext):
        pauses = 0

        def resume(self) -> None:
            log.append("+a")

        def pause(self) -> None:
            log.append("-a")
            self.pauses += 1
            if self.pauses == 1:
                raise ValueError("cannot pause a")

    class FailsSecondResume(AsyncContext):
        resumes = 0

        def resume(self) -> None:
            log.append("+b")
            self.resumes += 1
            if self.resumes == 2:
                raise KeyError("cannot resume b")

        def pause(self) -> None:
            log.append("-b")

    @asynq()
    def shared() -> Generator[Any, Any, int]:
        value = yield src.load.asynq(5)
        log.append("shared returns")
        return value

    started: list[batchq.AsyncTask[int]] = []

    @asynq()
    def a() -> Generator[Any, Any, str]:
        try:
            with FailsFirstPause():
                started.append(shared.asynq())
                yield started[0]
        except ValueError as e:
            # Switched out while waiting: the failed pause stops a's wait on `shared`.
            return f"a: {e}"
        return "a: no error"

    @asynq()
    def b() -> Generator[Any, Any, str]:
        try:
            with FailsSecondResume():
                value = yield started[0]  # now its only waiter
        except KeyError as e:
            return f"b: {e}"
        return f"b: got {value}"

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [a.asynq(), b.asynq()])

    assert root() == ["a: cannot pause a", "b: 'cannot resume b'"]
    assert log[-4:] == ["-a", "shared returns", "+b", "-b"]


def test_each_task_sees_its_own_contexts_when_a_child_returns_to_it() -> None:
    @asynq()
    def child(n: int) -> Generator[Any, Any, int]:
        with Ctx(f"c{n}"):
            log.append(f"child {n}")
        return n
        yield

    @asynq()
    def parent() -> Generator[Any, Any, list[int]]:
        with Ctx("p"):
            a = yield child.asynq(1)
            log.append("parent got 1")
        b = yield child.asynq(2)
        log.append("parent got 2")
        return [a, b]

    assert parent() == [1, 2]
    assert log == [
        "+p",
        "+c1",
        "child 1",
        "-c1",
        "parent got 1",
        "-p",
        "+c2",
        "child 2",
        "-c2",
        "parent got 2",
    ]
