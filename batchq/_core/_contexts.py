"""Contexts that follow a task as the scheduler switches it out and back in.

A task that enters an ``AsyncContext`` gets a frame listing its contexts; tasks it starts inherit
that frame, so a parent's contexts stay active while its children run (as in asynq). When the
scheduler switches to a task outside the frame, and before every flush, the frame's contexts are
paused (innermost first); switching back resumes them (outermost first). A task without contexts
costs one pointer comparison per switch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import BatchqError
from ._futures import ErrorFuture
from ._graph import interrupt
from ._runtime import current_scheduler
from ._task import blocked_on

if TYPE_CHECKING:
    from types import TracebackType

    from ._loop import Scheduler
    from ._runtime import Run
    from ._task import AsyncTask

__all__ = [
    "AsyncContext",
    "NonAsyncContext",
    "ContextFrame",
    "YieldInNonAsyncContextError",
    "enter_context",
    "leave_context",
]


class YieldInNonAsyncContextError(BatchqError, AssertionError):
    """A task waited on something while a NonAsyncContext was active."""


class ContextFrame:
    """The contexts one task entered, chained to the frame it inherited.

    The outermost frame of an asyncio request's tasks belongs to no task: it carries the request's
    :class:`Run`, which every frame below it repeats, so that the run of any task is one lookup.
    """

    __slots__ = ("task", "own", "parent", "run")

    def __init__(
        self, task: AsyncTask[Any] | None, parent: ContextFrame | None, run: Run | None = None
    ) -> None:
        self.task = task
        self.own: list[AsyncContext | NonAsyncContext] = []
        self.parent = parent
        self.run: Run | None = parent.run if parent is not None else run


def _chain(frame: ContextFrame | None) -> list[ContextFrame]:
    out = []
    while frame is not None:
        out.append(frame)
        frame = frame.parent
    return out


def switch_frames(sched: Scheduler, old: ContextFrame | None, new: ContextFrame | None) -> None:
    """Pause what ``old`` has and ``new`` lacks; resume what ``new`` has and ``old`` lacks."""
    keep = {id(f) for f in _chain(new)}
    failures: list[tuple[AsyncTask[Any] | None, BaseException]] = []
    frame = old
    while frame is not None and id(frame) not in keep:
        for ctx in reversed(frame.own):
            try:
                ctx.pause()
            except Exception as e:
                failures.append((frame.task, e))
        frame = frame.parent
    common = frame
    path = []
    frame = new
    while frame is not common and frame is not None:
        path.append(frame)
        frame = frame.parent
    for frame in reversed(path):
        for ctx in frame.own:
            try:
                ctx.resume()
            except Exception as e:
                failures.append((frame.task, e))
    # A context that fails to pause or resume fails its task, at the task's current yield.
    for task, error in failures:
        if task is None or task._gen is None:
            continue
        if blocked_on(task):
            interrupt(task, error)
        else:
            # Runnable: the error replaces what it would have resumed with, a value its keyed
            # batch delivered included (``_npending`` below zero: see KeyedBatch).
            task._dep = ErrorFuture(error)
            task._npending = 0


def enter_context(context: AsyncContext | NonAsyncContext) -> AsyncTask[Any] | None:
    """Register ``context`` with the running task, if any; returns that task."""
    sched = current_scheduler()
    task = None if sched is None else sched.active_task
    if task is None or sched is None:
        return None
    frame = task._contexts
    if frame is None or frame.task is not task:
        frame = ContextFrame(task, frame)
        task._contexts = frame
        sched._frame = frame
    frame.own.append(context)
    return task


def leave_context(context: AsyncContext | NonAsyncContext, task: AsyncTask[Any] | None) -> None:
    if task is None:
        return
    frame = task._contexts
    if frame is None or frame.task is not task:
        return
    try:
        frame.own.remove(context)
    except ValueError:
        return
    if not frame.own:
        task._contexts = frame.parent
        sched = task._sched
        if sched is not None and sched._frame is frame:
            sched._frame = frame.parent


class AsyncContext:
    """A context whose ``pause()``/``resume()`` run whenever its task is switched out and back in.

    Subclasses implement ``pause`` and ``resume``; ``__enter__`` resumes and ``__exit__`` pauses.
    """

    _active_task: AsyncTask[Any] | None

    def __enter__(self) -> Any:
        self._active_task = enter_context(self)
        self.resume()
        return self

    def __exit__(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        leave_context(self, self._active_task)
        self.pause()
        self._active_task = None

    def resume(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement resume()")

    def pause(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement pause()")


class NonAsyncContext:
    """A context inside which a task must not wait: a yield that suspends the task raises.

    Use it around code that must run without interleaving other tasks (e.g. holding a lock).
    """

    _active_task: AsyncTask[Any] | None

    def __enter__(self) -> Any:
        self._active_task = enter_context(self)
        return self

    def __exit__(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        leave_context(self, self._active_task)
        self._active_task = None

    def _refuse(self) -> None:
        task = self._active_task
        where = task.call_str() if task is not None else "a task"
        msg = (
            f"{where} yielded and had to wait while {type(self).__name__} was active; "
            "a NonAsyncContext must not contain a yield that waits. Move the yield out of the "
            "`with` block."
        )
        raise YieldInNonAsyncContextError(msg)

    def pause(self) -> None:
        self._refuse()

    def resume(self) -> None:
        self._refuse()
