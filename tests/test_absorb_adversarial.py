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
    names = drive.__code__.co_varnames[1 : 1 + drive.__code__.co_argcount]
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
