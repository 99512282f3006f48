"""A task drives one generator: not started, blocked (waiting on what it yielded), or done."""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from inspect import CO_VARARGS, CO_VARKEYWORDS
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._errors import AsyncTaskResult, UsageError
from ._format import format_call
from ._futures import NOT_COMPUTED, FutureBase
from ._runtime import run_future

if TYPE_CHECKING:
    from ._contexts import ContextFrame
    from ._loop import Scheduler

__all__ = ["AsyncTask", "result", "leaves", "blocked_on"]

# ``_npending`` below zero: the task is not waiting on the futures in ``_dep`` (see KeyedBatch).
# ABSORBED: blocked, ``_dep`` is the KeyedBatch that holds the task in its key's item's place.
# DELIVERED_VALUE / DELIVERED_ERROR: that batch was flushed, and ``_dep`` is the value or the
# error the generator gets back (the task is runnable).
DELIVERED_VALUE: Final = -1
DELIVERED_ERROR: Final = -2
ABSORBED: Final = -3

T_co = TypeVar("T_co", covariant=True)


class AsyncTask(FutureBase[T_co]):
    """The future of one call of an async function.

    Created by ``f.asynq(...)``; nothing runs until a scheduler starts it, either because another
    task yielded it or because ``value()`` was called.
    """

    __slots__ = ("_gen", "_dep", "_npending", "_sched", "_contexts", "_call")

    _gen: Generator[Any, Any, Any] | None
    # While blocked: what the generator yielded (the shape of the value it will receive).
    # When done with an error: the traceback of that error at the moment the task failed.
    _dep: Any
    # While blocked: how many of the futures it waits on are pending beyond the first (so 0 for
    # the common single wait); 0 whenever it is not blocked. Below zero when a keyed batch holds
    # the task in place of an item (ABSORBED and DELIVERED_* above).
    _npending: int
    _sched: Scheduler | None
    _contexts: ContextFrame | None

    def __init__(
        self,
        generator: Generator[Any, Any, Any],
        fn: Any = None,
        args: tuple[Any, ...] | None = None,
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._value = NOT_COMPUTED
        self._error = None
        self._waiters = None
        self._gen = generator
        self._dep = None
        self._npending = 0
        self._sched = None
        self._contexts = None
        # The function alone, or a _Call with the arguments when they were given. The hot path
        # (the generated task makers) stores the function alone: a slot and an object per task
        # cost time and memory, and the arguments are read back from the generator when asked.
        self._call: Any = fn if args is None and not kwargs else _Call(fn, args, kwargs or None)

    @property
    def fn(self) -> Any:
        """The function this task calls (None if it was made from a bare generator)."""
        call = self._call
        return call.fn if type(call) is _Call else call

    @fn.setter
    def fn(self, fn: Any) -> None:
        call = self._call
        if type(call) is _Call:
            call.fn = fn
        else:
            self._call = fn

    def _arguments(self) -> tuple[tuple[Any, ...], Mapping[str, Any] | None]:
        call = self._call
        if type(call) is _Call:
            if call.args is not None:
                return call.args, call.kwargs
            fn, kwargs = call.fn, call.kwargs
        else:
            fn, kwargs = call, None
        args, kwargs = _arguments_from_frame(self._gen, kwargs)
        self._call = _Call(fn, args, kwargs)
        return args, kwargs

    @property
    def args(self) -> tuple[Any, ...]:
        """The call's positional arguments (from the generator's frame if not stored)."""
        return self._arguments()[0]

    @property
    def kwargs(self) -> Mapping[str, Any]:
        return self._arguments()[1] or {}

    def _compute(self) -> None:
        run_future(self)

    def is_started(self) -> bool:
        return self._sched is not None

    def is_blocked(self) -> bool:
        """Waiting on something not yet computed (a slow check: for debugging and tests)."""
        return _waiting_count(self) > 0

    def can_continue(self) -> bool:
        return self._gen is not None

    def call_str(self) -> str:
        """``module.fn(args)`` for messages and async stacks."""
        return format_call(self)

    def __repr__(self) -> str:
        if self._value is not NOT_COMPUTED:
            state = "error" if self._error is not None else "done"
        elif self._sched is None:
            state = "not started"
        else:
            n = _waiting_count(self)
            state = f"blocked on {n}" if n else "runnable"
        return f"<AsyncTask {self.call_str()} {state}>"


class _Call:
    """A task's function with the arguments it was called with (when they are known)."""

    __slots__ = ("fn", "args", "kwargs")

    def __init__(
        self, fn: Any, args: tuple[Any, ...] | None, kwargs: Mapping[str, Any] | None
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs


def _arguments_from_frame(
    gen: Generator[Any, Any, Any] | None, kwargs: Mapping[str, Any] | None
) -> tuple[tuple[Any, ...], Mapping[str, Any] | None]:
    frame = getattr(gen, "gi_frame", None)
    if frame is None:
        return (), kwargs
    code = frame.f_code
    local = frame.f_locals
    names = code.co_varnames
    nargs = code.co_argcount
    after = nargs + code.co_kwonlyargcount  # where *args, then **kwargs, are named
    args = tuple(local[n] for n in names[:nargs] if n in local)
    found = {n: local[n] for n in names[nargs:after] if n in local}
    if code.co_flags & CO_VARARGS:
        rest = local.get(names[after])
        if type(rest) is tuple:  # (unless the body rebound it)
            args += rest
        after += 1
    if code.co_flags & CO_VARKEYWORDS:
        extra = local.get(names[after])
        if type(extra) is dict:
            found.update(extra)
    return args, (found or kwargs)


def result(value: object) -> None:
    """Return ``value`` from the calling generator (asynq compatibility; prefer ``return``)."""
    if isinstance(value, FutureBase):
        msg = (
            f"result() got the future {value!r}, not a value: yield it first, "
            "`result((yield fut))`, or return it from a pure function"
        )
        raise UsageError(msg)
    raise AsyncTaskResult(value)


def leaves(obj: Any) -> Iterator[FutureBase[Any]]:
    """The futures in something a task yielded (a future, or nested lists/tuples/dicts)."""
    if isinstance(obj, FutureBase):
        yield obj
    elif type(obj) in (list, tuple):
        for x in obj:
            yield from leaves(x)
    elif type(obj) is dict:
        for x in obj.values():
            yield from leaves(x)


def _waiting_count(task: AsyncTask[Any]) -> int:
    """How many futures ``task`` waits on, only read: for ``repr()`` and ``is_blocked()``, which
    may run on another thread (a log line on the event loop while a worker thread flushes).

    Unlike :func:`blocked_on`, an absorbed task's batch keeps its keys as they are (it waits on
    its key: 1). Each field is read once, ``_dep`` before ``_npending``: the scheduler's thread
    writes them in that order (``_drive``, a keyed batch's settling), so a task absorbed
    meanwhile is read as waiting on its batch, never as a call to ``_unabsorb()``.
    """
    if task._gen is None:
        return 0
    dep = task._dep
    n = task._npending
    if n < 0:
        return 1 if n == ABSORBED else 0  # its key; or a value delivered, to resume with
    if dep is None:
        return 0
    return sum(1 for leaf in leaves(dep) if leaf._value is NOT_COMPUTED)


def blocked_on(task: AsyncTask[Any]) -> list[FutureBase[Any]]:
    """What ``task`` still waits for (empty when it is not blocked)."""
    if task._gen is None or task._dep is None:
        return []
    n = task._npending
    if n < 0:
        if n != ABSORBED:
            return []  # delivered: it resumes with that value next
        # Held by its keyed batch in its item's place: the item comes back, so that whoever asks
        # (a debug view, a detach) sees and edits what it would have without the absorption.
        task._dep._unabsorb()
    return [leaf for leaf in leaves(task._dep) if leaf._value is NOT_COMPUTED]
