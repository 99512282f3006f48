"""Tasks that report being dropped without ever being yielded: the forgotten ``yield``.

``value = f.asynq(x)`` without ``yield`` makes a task nobody runs; the call silently does nothing
and ``value`` is a task, not a value. asyncio reports the same mistake ("coroutine ... was never
awaited") from C at no cost. Here a report needs a finalizer on every task, about 85 ns a task,
so it is switched on where mistakes are made rather than in production: under pytest (batchq's
plugin), in Python's development mode (``-X dev``), with ``BATCHQ_DEBUG=1``, or by
``batchq.debug.warn_unyielded()``. Then task makers build :class:`CheckedTask` instead of
:class:`AsyncTask`; nothing else changes.

A dropped task warns (:class:`UnyieldedTaskWarning`, naming the call and where it was made); in
strict mode it also fails the run that made it (:class:`UnyieldedTaskError`), if that run is
still going: never an unrelated run that happens to be current when the collector frees it.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from ._errors import UnyieldedTaskWarning
from ._instruments import strict_mode
from ._runtime import Run, current_run, current_scheduler, peek_run
from ._task import AsyncTask

__all__ = ["CheckedTask", "new_checked_task"]


class CheckedTask(AsyncTask[Any]):
    """An :class:`AsyncTask` that reports, when it is freed, that it never ran."""

    __slots__ = ("_origin", "_strict_run")

    _origin: str
    # The strict run the task was made in, if it was made in one: the run a drop fails. Not the
    # run current when it is freed: a task in a reference cycle is freed whenever the garbage
    # collector runs, perhaps in an unrelated request. (A strong reference: the collector clears
    # a weak one that is garbage itself before it finalizes the task. A run lets go of its
    # memory when it ends, so a task kept longer keeps only the small Run object.)
    _strict_run: Run | None

    def __del__(self) -> None:
        try:
            if self._sched is not None or self._gen is None:
                return  # it ran (or was closed): the common case costs these two checks
        except AttributeError:
            return  # never finished building: the maker's call raised (bad arguments)
        try:
            message = (
                f"{self.call_str()} was made by .asynq() at {self._origin} but never yielded or "
                "run, so it did nothing: did you forget to yield it? Write "
                "`value = yield f.asynq(...)`."
            )
            gen = self._gen
            self._gen = None
            gen.close()
            run = self._strict_run
            if run is not None:
                self._strict_run = None
                run.forgotten.append(message)
        except Exception:  # describing the task failed: report it plainly
            message = f"a task made by .asynq() at {self._origin} was never yielded or run"
        # Outside the try: under `-W error` the warning is raised here, and Python reports it as
        # an exception ignored in __del__ (pytest turns that into a failure), as asyncio does for
        # a coroutine never awaited.
        warnings.warn(message, UnyieldedTaskWarning, stacklevel=2)


def new_checked_task(cls: type[Any]) -> Any:
    """Stands in for ``object.__new__`` in task makers while reporting is on."""
    if cls is not AsyncTask:
        return object.__new__(cls)  # a custom task class (asynq(cls=...)): not checked
    task: CheckedTask = object.__new__(CheckedTask)
    # The caller of f.asynq(...): the first frame outside batchq (bound methods, helpers and
    # proxies add frames of their own between it and the generated maker).
    frame = sys._getframe(2)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    task._origin = f"{frame.f_code.co_filename}:{frame.f_lineno}"
    task._strict_run = _strict_run()
    return task


def _strict_run() -> Run | None:
    """The run a task made now belongs to, if that run is strict; None otherwise.

    Looks without making: a synchronous run makes its ``Run`` only when asked for it, and only
    a strict one needs to be kept by the tasks it makes.
    """
    sched = current_scheduler()
    if sched is None:
        return None
    run = peek_run(sched)
    if run is not None:
        return run if run.strict or strict_mode.get() else None
    return current_run() if strict_mode.get() else None


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
