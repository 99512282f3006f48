"""Adversarial checks of KeyedBatch's absorption: every scenario must give the same result with
the absorption on and off (``no_absorb`` turns it off by making the reference count check fail).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import pytest

import batchq
from batchq import AsyncContext, Loader, asynq
from batchq._core import _loop
from batchq._core._task import ABSORBED, DELIVERED_VALUE, AsyncTask


@pytest.fixture(params=["absorb", "no_absorb"])
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test runs twice: with the absorption, and with it off (``_drive``'s ``held``
    default can never equal a reference count)."""
    if request.param == "absorb":
        yield request.param
        return
    drive = _loop.Scheduler._drive
    defaults = drive.__defaults__
    assert defaults is not None
    names = drive.__code__.co_varnames[: drive.__code__.co_argcount]
    index = list(names[-len(defaults) :]).index("held")
    patched = list(defaults)
    patched[index] = -12345
    drive.__defaults__ = tuple(patched)
    try:
        yield request.param
    finally:
        drive.__defaults__ = defaults


def values(keys: list[Any]) -> list[str]:
    return [f"v{k}" for k in keys]


@asynq()
def child(loader: Loader[Any, Any], key: Any) -> Generator[Any, Any, Any]:
    return (yield loader.load.asynq(key))


# -- contexts ---------------------------------------------------------------------------------


def test_a_context_failing_to_resume_a_delivered_task_fails_it_at_its_yield(mode: str) -> None:
    """The task of key 2 is absorbed; the flush delivers its value; when the scheduler switches
    to its frame, its context fails to resume. The task must get that error at its yield."""
    loader = Loader(values)
    states: list[int] = []

    class Fragile(AsyncContext):
        resumes = 0

        def resume(self) -> None:
            self.resumes += 1
            if self.resumes == 2:
                raise ValueError("cannot resume")

        def pause(self) -> None:
            pass

    @asynq()
    def fragile(key: int) -> Generator[Any, Any, Any]:
        try:
            with Fragile():
                got = yield loader.load.asynq(key)
        except ValueError as e:
            return f"caught: {e}"
        return f"no error, got {got!r}"

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        t = fragile.asynq(2)
        result = yield [child.asynq(loader, 1), t, probe.asynq(t)]
        return result

    @asynq()
    def probe(t: AsyncTask[Any]) -> Generator[Any, Any, None]:
        states.append(t._npending)
        return None
        yield

    assert root() == ["v1", "caught: cannot resume", None]
    assert states == ([ABSORBED] if mode == "absorb" else [0])


def test_a_context_failing_to_resume_a_task_delivered_an_error_fails_it_with_that_context_error(
    mode: str,
) -> None:
    """As above, with an error delivered for the key: the context's error wins, as it does on
    any switch (the generator gets one error thrown, not a TypeError from throwing a future)."""

    def fetch(keys: list[int]) -> list[Any]:
        return [LookupError(f"no {k}") if k == 2 else f"v{k}" for k in keys]

    loader = Loader(fetch)

    class Fragile(AsyncContext):
        resumes = 0

        def resume(self) -> None:
            self.resumes += 1
            if self.resumes == 2:
                raise ValueError("cannot resume")

        def pause(self) -> None:
            pass

    @asynq()
    def fragile(key: int) -> Generator[Any, Any, Any]:
        try:
            with Fragile():
                got = yield loader.load.asynq(key)
        except Exception as e:
            return f"caught {type(e).__name__}: {e}"
        return f"no error, got {got!r}"

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [child.asynq(loader, 1), fragile.asynq(2)])

    assert root() == ["v1", "caught ValueError: cannot resume"]


# -- interrupts -------------------------------------------------------------------------------


def test_an_interrupt_after_a_delivery_closes_the_run_whatever_the_value_holds(mode: str) -> None:
    """Loader ``a`` flushes first and delivers to the absorbed task of key 2 a value that is a
    list containing itself; then loader ``b``'s fetch is interrupted. The abort walks what every
    task waits on: a delivered value is not something it waits on."""
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    a = Loader(lambda keys: [cyclic for _ in keys], name="a")

    def interrupted(keys: list[int]) -> list[int]:
        raise KeyboardInterrupt

    b = Loader(interrupted, name="b")
    closed: list[int] = []

    @asynq()
    def waiter(key: int) -> Generator[Any, Any, Any]:
        try:
            return (yield a.load.asynq(key))
        finally:
            closed.append(key)

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [waiter.asynq(1), waiter.asynq(2), child.asynq(b, 3)])

    with pytest.raises(KeyboardInterrupt):
        root()
    assert sorted(closed) == [1, 2]


def test_an_interrupt_after_a_delivery_does_not_close_tasks_found_in_the_value(mode: str) -> None:
    """The delivered value holds a task that belongs to nobody in the run (a loader of lazily
    computed values): the abort must not close it."""

    @asynq()
    def lazy(k: int) -> Generator[Any, Any, int]:
        return k * 10
        yield

    made: list[AsyncTask[Any]] = []

    def fetch(keys: list[int]) -> list[Any]:
        out = [[lazy.asynq(k)] for k in keys]
        made.extend(t for [t] in out)
        return out

    a = Loader(fetch, name="a")

    def interrupted(keys: list[int]) -> list[int]:
        raise KeyboardInterrupt

    b = Loader(interrupted, name="b")

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [child.asynq(a, 1), child.asynq(a, 2), child.asynq(b, 3)])

    with pytest.raises(KeyboardInterrupt):
        root()
    # The tasks made by the fetch never started: they are still runnable, later, by whoever
    # gets them.
    assert [t.is_computed() for t in made] == [False, False]
    assert [t.value() for t in made] == [10, 20]
