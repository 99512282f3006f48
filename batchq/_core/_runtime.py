"""Which scheduler and which run are current.

A scheduler belongs to one thread *and* one context. The ``ContextVar`` alone is not enough: a
context copied into another thread (``asyncio.to_thread``, anyio and Starlette thread pools,
``contextvars.copy_context().run``) would carry the parent's scheduler with it, and two threads
would then drive one scheduler. So a scheduler found in the context but made by another thread
does not count: that thread gets its own.

A *run* is the unit of isolation: one synchronous ``f(x)``, or one ``await f.asyncio(x)``.
Integrations keep per-run memory in :attr:`Run.state` (the memcache Cache keeps its
read-your-writes memory and its in-flight cached calls there), so nothing outlives the request
that made it, while concurrent requests still share rounds.
"""

from __future__ import annotations

from _thread import get_ident
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._futures import FutureBase
    from ._loop import Scheduler
    from ._task import AsyncTask

__all__ = [
    "Run",
    "current_scheduler",
    "current_run",
    "run_of",
    "peek_run",
    "scheduler_var",
    "get_active_task",
    "set_current",
    "reset_current",
    "run_future",
    "install_entry",
]


class Run:
    """One synchronous call or one asyncio request: its root and its per-run memory."""

    __slots__ = ("root", "state", "flush_round", "_shared", "forgotten", "strict", "__weakref__")

    def __init__(
        self, root: FutureBase[Any] | None = None, parent: Run | None = None, strict: bool = False
    ) -> None:
        self.root = root
        # Strict mode is the caller's: under the asyncio driver, concurrent requests share the
        # runner's context, so one strict request must not make the others strict.
        self.strict: bool = strict or (parent is not None and parent.strict)
        # Per-run memory of integrations, keyed by their own object (e.g. a Cache). A nested
        # synchronous run (f(x) inside a task) is part of its caller's request: it shares it.
        self.state: dict[object, Any] = parent.state if parent is not None else {}
        self._shared = parent is not None
        # Strict mode: tasks of this run dropped without being yielded (see _unyielded).
        self.forgotten: list[str] = parent.forgotten if parent is not None else []
        # Set when the root finished while requests were still pending: the run ends after the
        # round with this index has flushed them (writes nobody waited on included).
        self.flush_round = -1

    def end(self) -> None:
        """The run is over: let go of its memory now, whoever still holds the run."""
        if not self._shared:
            self.state = {}

    def __repr__(self) -> str:
        return f"<Run of {self.root!r}>"


_current: ContextVar[Scheduler | None] = ContextVar("batchq_scheduler", default=None)
# For hot paths that inline current_scheduler() and run_of() (they say so, to be kept in sync).
scheduler_var = _current


def current_scheduler() -> Scheduler | None:
    """The scheduler of this thread and context, or None if there is none yet."""
    sched = _current.get()
    if sched is not None and sched._thread != get_ident():
        return None  # inherited through a context copied into another thread
    return sched


def set_current(sched: Scheduler) -> Token[Scheduler | None]:
    return _current.set(sched)


def reset_current(token: Token[Scheduler | None]) -> None:
    _current.reset(token)


def get_active_task() -> AsyncTask[Any] | None:
    """The task running right now in this thread and context, if any."""
    sched = current_scheduler()
    return None if sched is None else sched.active_task


def current_run() -> Run | None:
    """The run the running code belongs to; None outside any run."""
    sched = current_scheduler()
    return None if sched is None else run_of(sched)


def run_of(sched: Scheduler) -> Run | None:
    """The run of the code ``sched`` is running now (its task's, else the one it is starting).

    A synchronous run makes its ``Run`` here, on first use: most runs never ask for one.
    """
    run = peek_run(sched)
    if run is None and sched._running and not sched._runs:
        run = sched.ambient_run = Run(None, sched.parent_run)
    return run


def peek_run(sched: Scheduler) -> Run | None:
    """:func:`run_of` without making one: None for a synchronous run that has not made its own."""
    # While a task runs, the scheduler's frame is that task's (the loop switches it).
    frame = sched._frame
    if frame is not None:
        run = frame.run
        if run is not None:
            return run
    return sched.ambient_run


def _no_entry(fut: FutureBase[Any]) -> None:
    msg = "internal error: batchq._core._loop was not imported, so nothing can run futures"
    raise RuntimeError(msg)


_entry: list[Callable[[FutureBase[Any]], None]] = [_no_entry]


def run_future(fut: FutureBase[Any]) -> None:
    """Compute ``fut`` synchronously (``task.value()``): the loop module installs the entry.

    Futures and tasks call this instead of importing the loop, which imports them: the core has
    no import cycle.
    """
    _entry[0](fut)


def install_entry(entry: Callable[[FutureBase[Any]], None]) -> None:
    _entry[0] = entry
