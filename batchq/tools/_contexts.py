"""Contexts for async code: run one call inside a context, time a task's own work."""

from __future__ import annotations

from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from typing import Any

from qcore import utime

from .._core._contexts import AsyncContext
from .._decorators import asynq
from .._helpers import call_async

__all__ = ["call_with_context", "AsyncTimer"]


@asynq()
def call_with_context(
    context: AbstractContextManager[Any], fn: Callable[..., Any], *args: Any, **kwargs: Any
) -> Generator[Any, Any, Any]:
    """Call ``fn(*args, **kwargs)`` inside ``with context:``, next to calls outside it.

    ``yield (f.asynq(x), call_with_context.asynq(ctx, g, x))``: only ``g`` runs in ``ctx``.
    """
    with context:
        return (yield call_async(fn, *args, **kwargs))


class AsyncTimer(AsyncContext):
    """Time spent in this task inside the ``with`` block, other tasks' turns excluded.

    ``total_time`` is in microseconds (``qcore.utime``); read it after the block.
    """

    def __init__(self) -> None:
        self.total_time = 0
        self._last_start_time: int | None = None

    def resume(self) -> None:
        self._last_start_time = utime()

    def pause(self) -> None:
        if self._last_start_time is not None:
            self.total_time += utime() - self._last_start_time
            self._last_start_time = None
