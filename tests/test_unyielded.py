"""A task made by f.asynq(...) and dropped without being yielded: the forgotten yield."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

import batchq
from batchq import UnyieldedTaskError, UnyieldedTaskWarning, asynq
from batchq import debug as bq_debug

THIS_FILE = __file__
FORGETS_LINE = next(
    n
    for n, text in enumerate(Path(__file__).read_text().splitlines(), 1)
    if text.endswith("# the forgotten yield: nothing runs")
)


@pytest.fixture(autouse=True)
def reporting_on() -> Iterator[None]:
    previous = bq_debug.warn_unyielded(True)
    try:
        yield
    finally:
        bq_debug.warn_unyielded(previous)


def run_and_collect(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    finally:
        gc.collect()


@asynq()
def user(uid: int) -> Generator[Any, Any, dict[str, Any]]:
    yield None
    return {"uid": uid}


@asynq()
def forgets(uid: int) -> Generator[Any, Any, str]:
    user.asynq(uid)  # the forgotten yield: nothing runs
    yield None
    return "done"


def test_a_dropped_task_warns_naming_the_call_and_the_line() -> None:
    with pytest.warns(UnyieldedTaskWarning) as seen:
        result = run_and_collect(forgets, 7)
    assert result == "done"
    message = str(seen[0].message)
    assert "test_unyielded.user(7)" in message
    line = FORGETS_LINE  # the line of `user.asynq(uid)` in forgets()
    assert f"{THIS_FILE}:{line}" in message
    assert "did you forget to yield" in message


def test_a_bound_method_names_the_callers_line_not_batchqs() -> None:
    class Model:
        @asynq()
        def load(self, x: int) -> Generator[Any, Any, int]:
            yield None
            return x

    def drop(model: Model) -> None:
        model.load.asynq(1)

    with pytest.warns(UnyieldedTaskWarning, match=r"test_unyielded\.py:\d+") as seen:
        run_and_collect(drop, Model())
    assert "batchq/" not in str(seen[0].message).split(" at ")[1].split(" ")[0]


def test_a_pure_method_call_never_yielded_is_reported_like_a_pure_functions() -> None:
    # obj.m(x) of a pure method makes its task with a generated maker, as f(x) does: dropped, it
    # warns with the caller's line; yielded or run, it does not.
    class Model:
        @asynq(pure=True)
        def load(self, x: int) -> Generator[Any, Any, int]:
            yield None
            return x

    def drop(model: Model) -> None:
        model.load(1)

    model = Model()
    for _ in range(2):  # the first call makes the maker, the second uses it as kept
        with pytest.warns(UnyieldedTaskWarning, match=r"test_unyielded\.py:\d+") as seen:
            run_and_collect(drop, model)
        assert "Model.load(" in str(seen[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnyieldedTaskWarning)
        assert model.load(2).value() == 2
        gc.collect()


def test_yielded_run_and_value_tasks_do_not_warn() -> None:
    @asynq()
    def fine(uid: int) -> Generator[Any, Any, Any]:
        a = yield user.asynq(uid)
        b = user.asynq(uid + 1)
        c = yield b
        return a, c

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnyieldedTaskWarning)
        assert fine(1) == ({"uid": 1}, {"uid": 2})
        assert user.asynq(3).value() == {"uid": 3}
        assert asyncio.run(user.asyncio(4)) == {"uid": 4}
        gc.collect()


def test_strict_mode_fails_the_run_that_dropped_it() -> None:
    with (
        bq_debug.strict(),
        pytest.warns(UnyieldedTaskWarning),
        pytest.raises(UnyieldedTaskError, match=r"user\(5\) was made by"),
    ):
        forgets(5)


def test_strict_mode_fails_the_asyncio_request_that_dropped_it() -> None:
    async def main() -> None:
        with bq_debug.strict():
            await forgets.asyncio(6)

    with pytest.warns(UnyieldedTaskWarning), pytest.raises(UnyieldedTaskError):
        asyncio.run(main())


def test_off_nothing_is_reported_and_tasks_are_plain() -> None:
    bq_debug.warn_unyielded(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task = user.asynq(1)
        assert type(task) is batchq.AsyncTask
        del task
        gc.collect()


def test_warn_unyielded_refuses_a_non_bool() -> None:
    with pytest.raises(TypeError, match="takes True or False, got 'yes'"):
        bq_debug.warn_unyielded("yes")  # type: ignore[arg-type]


# The returned task is dropped too, when the error's traceback goes: that warning is not the point.
@pytest.mark.filterwarnings("ignore::batchq.UnyieldedTaskWarning")
def test_a_non_generator_async_function_returning_a_task_says_forgot_to_yield() -> None:
    @asynq()
    def returns_task(uid: int) -> Any:
        return user.asynq(uid)

    @asynq()
    def caller() -> Generator[Any, Any, Any]:
        return (yield returns_task.asynq(1))

    with pytest.raises(batchq.YieldTypeError, match="did you forget to yield it") as info:
        caller()
    del info  # its traceback holds the returned task: free it while the filter applies
    gc.collect()


@pytest.mark.parametrize(
    ("flag", "expected"), [("-X dev", "True"), ("", "False"), ("BATCHQ_DEBUG=1", "True")]
)
def test_on_by_default_in_development_mode_and_with_batchq_debug(flag: str, expected: str) -> None:
    code = "import batchq._decorators as d; print(d.checked_tasks())"
    args = [sys.executable, *flag.split()] if flag.startswith("-X") else [sys.executable]
    env = {"PATH": "/usr/bin:/bin"}
    if flag.startswith("BATCHQ_DEBUG"):
        env["BATCHQ_DEBUG"] = "1"
    done = subprocess.run([*args, "-c", code], capture_output=True, text=True, env=env)
    assert done.stdout.strip() == expected, done.stderr


def test_a_synchronous_call_refused_in_strict_mode_is_not_also_unyielded() -> None:
    # f(x) makes its task with the same maker as f.asynq(x); when strict mode refuses the
    # synchronous call inside a task, the caller gets SyncCallInAsyncError and nothing else.
    @asynq()
    def calls_synchronously() -> Generator[Any, Any, None]:
        yield None
        user(1)

    with warnings.catch_warnings():
        warnings.simplefilter("error", UnyieldedTaskWarning)
        with batchq.debug.strict(), pytest.raises(batchq.SyncCallInAsyncError):
            run_and_collect(calls_synchronously)
        gc.collect()


class _Holder:
    """Keeps a task in a reference cycle, so only the garbage collector frees it."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.me = self


def test_a_task_freed_by_the_collector_fails_only_the_run_that_dropped_it() -> None:
    # Dropped in a run that is not strict, inside a reference cycle: the collector frees it
    # later, here during an unrelated strict run, which must not fail for it.
    @asynq()
    def drops_in_a_cycle() -> Generator[Any, Any, None]:
        _Holder(user.asynq(1))
        yield None

    @asynq()
    def collects() -> Generator[Any, Any, str]:
        yield None
        gc.collect()
        return "done"

    gc.collect()
    gc.disable()
    try:
        drops_in_a_cycle()
        with pytest.warns(UnyieldedTaskWarning), bq_debug.strict():
            assert collects() == "done"
    finally:
        gc.enable()


def test_a_task_freed_by_the_collector_still_fails_its_own_strict_run() -> None:
    @asynq()
    def drops_in_a_cycle() -> Generator[Any, Any, str]:
        _Holder(user.asynq(1))
        yield None
        gc.collect()
        return "done"

    with (
        pytest.warns(UnyieldedTaskWarning),
        bq_debug.strict(),
        pytest.raises(UnyieldedTaskError, match="user"),
    ):
        drops_in_a_cycle()


def test_reporting_makes_no_run_object_outside_strict_mode() -> None:
    # A synchronous run makes its Run only when something asks for it; a checked task asks only
    # in strict mode, where it must know the run to fail.
    from batchq._core._runtime import current_scheduler

    @asynq()
    def outer() -> Generator[Any, Any, object]:
        yield user.asynq(1)
        sched = current_scheduler()
        assert sched is not None
        return sched.ambient_run

    assert outer() is None
    with bq_debug.strict():
        assert outer() is not None
