"""asyncio from batchq: ``from_asyncio`` makes asyncio work something batchq code can ``yield``.

Under an asyncio driver the awaitable runs at once as an asyncio task on the driver's loop; the
tasks waiting on it resume in the round after it finishes, while other rounds carry on meanwhile.
In a plain synchronous run, the awaitables requested in a round run together when the round
flushes, on a private event loop.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from _thread import get_ident
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from .._core._batch import BatchBase, BatchItemBase
from .._core._format import fn_name
from .._core._futures import NOT_COMPUTED, FutureBase
from .._core._loop import Scheduler, get_scheduler, run_sync
from .._core._runtime import current_scheduler
from ._work import describe, given, outcome, run_one, running_driver

if TYPE_CHECKING:
    import asyncio

__all__ = ["from_asyncio", "AsyncioFunction", "AsyncioItem", "AsyncioBatch"]

P = ParamSpec("P")
T = TypeVar("T")


class AsyncioItem(BatchItemBase[T]):
    """An awaitable waiting for its round's flush (in a synchronous run)."""

    __slots__ = ("_start",)

    def __init__(self, batch: AsyncioBatch, start: Callable[[], Any]) -> None:
        super().__init__(batch)
        self._start = start

    def __repr__(self) -> str:
        state = "pending" if self._value is NOT_COMPUTED else "done"
        return f"<AsyncioItem {describe(self._start)} {state}>"


class AsyncioBatch(BatchBase):
    """The asyncio work requested in one round of a synchronous run: it runs concurrently."""

    def __init__(self, sched: Scheduler) -> None:
        super().__init__()
        self.sched = sched

    def name(self) -> str:
        return "asyncio"

    def _try_switch_active_batch(self) -> None:
        if self.sched.active_batch(_ASYNCIO) is self:
            self.sched.set_active_batch(_ASYNCIO, None)

    def _flush(self) -> None:
        items: list[AsyncioItem[Any]] = list(self.items)  # type: ignore[arg-type]
        outcomes = _run_together([item._start for item in items])
        for item, (ok, value) in zip(items, outcomes, strict=True):
            if ok:
                item._value = value
            else:
                item._value = None
                item._error = value

    def _cancel(self) -> None:
        for item in self.items:
            start = getattr(item, "_start", None)
            if isinstance(start, functools.partial) and start.func is given:
                aw = start.args[0]
                if inspect.iscoroutine(aw) and inspect.getcoroutinestate(aw) == "CORO_CREATED":
                    aw.close()  # never started: close it, or Python warns it was never awaited


_ASYNCIO: Any = object()  # the batch source of every AsyncioItem


def _request(start: Callable[[], Any], *, may_bridge: bool = True) -> FutureBase[Any]:
    """Run ``start()``'s awaitable on the driver's loop now, or in this round's flush."""
    if may_bridge:
        driver = running_driver.get()
        if (
            driver is not None
            and driver.sched is current_scheduler()
            and driver.runner is not None
            and get_ident() == driver.thread
        ):
            return driver.start_bridged(start)
    sched = get_scheduler()
    batch = sched._active.get(_ASYNCIO)
    if batch is None:
        batch = AsyncioBatch(sched)
        sched.set_active_batch(_ASYNCIO, batch)
    return AsyncioItem(batch, start)  # type: ignore[arg-type]


def _run_together(starts: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
    """Run the awaitables concurrently to the end, from synchronous code."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_private(starts)
    # A loop runs in this thread (a synchronous batchq call made from asyncio code): it cannot
    # be re-entered, so run a private loop in a worker thread and wait for it.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="batchq-asyncio") as pool:
        return pool.submit(_run_private, starts).result()


def _run_private(starts: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
    import asyncio

    # Not asyncio.run(): it would reset this thread's event loop, which the caller may have set.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_gather(starts))
    finally:
        try:
            _cancel_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


async def _gather(starts: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
    import asyncio

    loop = asyncio.get_running_loop()
    tasks = [contextvars.Context().run(loop.create_task, run_one(s)) for s in starts]
    if tasks:
        await asyncio.wait(tasks)
    return [outcome(t, s) for t, s in zip(tasks, starts, strict=True)]


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the tasks the work left behind, so none is destroyed while pending."""
    import asyncio

    left = asyncio.all_tasks(loop)
    if not left:
        return
    for t in left:
        t.cancel()
    loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
    for t in left:
        if not t.cancelled() and t.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "a task left running by from_asyncio() work failed on cancel",
                    "exception": t.exception(),
                    "task": t,
                }
            )


class AsyncioFunction(Generic[P, T]):
    """An asyncio function batchq code can wait on: ``value = yield f.asynq(x)``.

    The calls requested in one round run concurrently. ``f(x)`` runs one call to the end from
    synchronous code; ``await f.asyncio(x)`` is plain ``await fn(x)``.
    """

    def __init__(self, fn: Callable[P, Awaitable[T]]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn

    def asynq(self, *args: P.args, **kwargs: P.kwargs) -> FutureBase[T]:
        """The future of this call, to ``yield`` from a batchq function."""
        return _request(functools.partial(self.fn, *args, **kwargs))

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        # Never bridged to a driver's loop: a synchronous wait there would block that loop.
        fut: FutureBase[T] = _request(functools.partial(self.fn, *args, **kwargs), may_bridge=False)
        return run_sync(fut)

    async def asyncio(self, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = await self.fn(*args, **kwargs)
        return result

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        return AsyncioFunction(self.fn.__get__(obj, owner))

    def is_pure_async_fn(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<from_asyncio {fn_name(self.fn)}>"


@overload
def from_asyncio(target: Callable[P, Awaitable[T]]) -> AsyncioFunction[P, T]: ...
@overload
def from_asyncio(target: Awaitable[T]) -> FutureBase[T]: ...


def from_asyncio(target: Any) -> Any:
    """Let batchq code wait on asyncio code.

    ``from_asyncio(coro)`` returns a future to ``yield``; ``@from_asyncio`` on an ``async def``
    gives a function whose ``.asynq(x)`` returns one. Everything requested in one round runs
    concurrently; errors reach the waiting task unchanged (the same exception object).
    """
    if inspect.isawaitable(target):
        return _request(functools.partial(given, target))
    if getattr(target, "asynq", None) is not None or inspect.isgeneratorfunction(target):
        msg = (
            f"from_asyncio() wraps asyncio code, but {target!r} is a batchq (generator) function;"
            " yield f.asynq(...) from batchq code, or await f.asyncio(...) from asyncio code"
        )
        raise TypeError(msg)
    if callable(target):
        return AsyncioFunction(target)
    msg = (
        f"from_asyncio() takes an awaitable, e.g. from_asyncio(fetch(key)), or an async function"
        f" (@from_asyncio over `async def`); got {target!r} of type {type(target).__name__}"
    )
    raise TypeError(msg)
