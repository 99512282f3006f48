"""asyncio work that batchq code waits on: its future, how it starts, how its outcome reads."""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .._core._errors import BatchCancelledError, BatchingError, DeadlockError
from .._core._format import fn_name, format_args
from .._core._futures import NOT_COMPUTED, FutureBase

if TYPE_CHECKING:
    import asyncio

    from ._driver import Driver

__all__ = [
    "AsyncioFuture",
    "running_driver",
    "given",
    "run_one",
    "outcome",
    "describe",
    "report",
]

T = TypeVar("T")

# The driver whose runner owns the current context (set in runner contexts only).
running_driver: contextvars.ContextVar[Driver | None] = contextvars.ContextVar(
    "batchq_asyncio_driver", default=None
)


class AsyncioFuture(FutureBase[T]):
    """asyncio work running on a driver's loop; the driver resumes its waiters when it ends."""

    __slots__ = ("_start", "_task", "watchers")

    def __init__(self, start: Callable[[], Any]) -> None:
        super().__init__()
        self._start = start
        self._task: asyncio.Task[Any] | None = None
        # The driver's calls last found waiting on this work: looked at again when it ends.
        self.watchers: dict[Any, None] | None = None

    def _compute(self) -> None:
        """Nothing to do here: the driver sets the outcome when the asyncio task ends."""

    def value(self) -> T:
        if self._value is NOT_COMPUTED:
            msg = (
                f"{describe(self._start)} is asyncio work still running on the event loop; "
                "waiting for it synchronously would block that loop for good. Yield it from an "
                "async function (`value = yield ...`) instead of calling .value()."
            )
            raise DeadlockError(msg)
        return super().value()

    __call__ = value

    def __repr__(self) -> str:
        state = "running" if self._value is NOT_COMPUTED else "done"
        return f"<AsyncioFuture {describe(self._start)} {state}>"


def given(awaitable: Any) -> Any:
    return awaitable


async def run_one(start: Callable[[], Any]) -> Any:
    awaitable = start()
    if not inspect.isawaitable(awaitable):
        msg = (
            f"{describe(start)} returned {awaitable!r}, which is not awaitable; from_asyncio() "
            "wraps an async function (async def) or an awaitable such as a coroutine"
        )
        raise TypeError(msg)
    return await awaitable


def outcome(task: asyncio.Task[Any], start: Callable[[], Any]) -> tuple[bool, Any]:
    """(True, value) or (False, the error a waiting batchq task receives)."""
    if task.cancelled():
        return False, BatchCancelledError(f"{describe(start)} was cancelled before it finished")
    err = task.exception()
    if err is None:
        return True, task.result()
    if isinstance(err, Exception):
        return False, err
    wrapped = BatchingError(
        f"{describe(start)} raised {err!r}, which is not an Exception; a batchq task can only "
        "receive an Exception"
    )
    wrapped.__cause__ = err
    return False, wrapped


def describe(start: Callable[[], Any]) -> str:
    if isinstance(start, functools.partial):
        if start.func is given:
            aw = start.args[0]
            name = getattr(aw, "__qualname__", None)
            return f"from_asyncio({name}(...))" if name else f"from_asyncio({aw!r})"
        return f"{fn_name(start.func)}({format_args(start.args, start.keywords)})"
    return fn_name(start)


def report(error: BaseException, message: str) -> None:
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    loop.call_exception_handler({"message": message, "exception": error})
