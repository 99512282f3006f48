"""The round loop.

One round: run every runnable task until it blocks; then flush every pending batch, of every source;
then resume exactly the tasks whose dependencies completed. Repeat until the root is done. The
number of rounds is therefore the depth of the dependency graph in batches, never more.

How it stays cheap. Runnable tasks sit on a stack (``_ready``), so execution is depth-first like
asynq's and a chain of 100,000 nested calls uses no Python recursion. A task that yields registers
itself as a waiter on every future it has to wait for and counts those beyond the first
(``_npending``, so that the common single wait writes no count); a future that completes
decrements the count of each waiter, or pushes the waiter whose count is already zero. Nothing ever
rescans the pending tree: a round costs what it resumes. Hooks (instruments) are installed objects
read once per run; with none installed the loop checks one local variable per task.

The current scheduler lives in a ``ContextVar``. A synchronous call made inside a running task runs
a nested scheduler (counted in statistics, because it splits batches).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from inspect import GEN_CREATED, getgeneratorstate
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._batch import BatchBase, BatchItemBase
from ._debug_format import note_async_chain
from ._errors import (
    AsyncTaskCancelledError,
    AsyncTaskResult,
    DeadlockError,
    DependencyCycleError,
    SyncCallInAsyncError,
    YieldTypeError,
)
from ._futures import NOT_COMPUTED, ErrorFuture, FutureBase
from ._task import AsyncTask

if TYPE_CHECKING:
    from ._contexts import ContextFrame

__all__ = [
    "Scheduler",
    "RunStats",
    "Instrument",
    "get_scheduler",
    "get_active_task",
    "run_future",
    "run_sync",
    "waiters_of",
    "instruments",
    "installed_instruments",
    "set_strict",
]

T = TypeVar("T")

_AGGREGATES: Final = (list, tuple, dict)


@dataclass(frozen=True)
class RunStats:
    """What one run (or several, when added) cost."""

    rounds: int = 0
    batches: int = 0
    items: int = 0
    tasks: int = 0
    nested_runs: int = 0

    def __add__(self, other: RunStats) -> RunStats:
        return RunStats(
            self.rounds + other.rounds,
            self.batches + other.batches,
            self.items + other.items,
            self.tasks + other.tasks,
            self.nested_runs + other.nested_runs,
        )


class Instrument:
    """Subclass and override what you need; install with :func:`batchq.debug.instrument`.

    Only overridden per-task methods cost anything per task; the rest are called once per round
    or per batch.
    """

    def run_started(self, scheduler: Scheduler) -> None: ...

    def run_finished(self, scheduler: Scheduler, stats: RunStats) -> None: ...

    def round_started(self, scheduler: Scheduler, round_index: int) -> None: ...

    def round_finished(self, scheduler: Scheduler, round_index: int) -> None: ...

    def batch_flushed(
        self, batch: BatchBase, items: Sequence[BatchItemBase[Any]], seconds: float
    ) -> None:
        """``items`` are the batch's items; read them here, not from the flushed batch, which
        may have let go of them (batchq's own batches do, so that they are freed early)."""

    def task_started(self, task: AsyncTask[Any]) -> None: ...

    def task_finished(self, task: AsyncTask[Any]) -> None: ...

    def nested_run(self, scheduler: Scheduler, caller: AsyncTask[Any] | None) -> None: ...


_instruments: ContextVar[tuple[Instrument, ...]] = ContextVar("batchq_instruments", default=())
_strict: ContextVar[bool] = ContextVar("batchq_strict", default=False)


def installed_instruments() -> tuple[Instrument, ...]:
    return _instruments.get()


class instruments:  # used like a function: `with instruments(recorder):`
    """Context manager that installs instruments for every run started inside it."""

    def __init__(self, *added: Instrument) -> None:
        self._added = added
        self._token: Any = None

    def __enter__(self) -> None:
        self._token = _instruments.set(_instruments.get() + self._added)

    def __exit__(self, *exc: object) -> None:
        _instruments.reset(self._token)


def set_strict(strict: bool) -> Any:
    """Strict mode: a synchronous call inside a running task raises instead of being counted.

    Returns a token for ``batchq.debug.reset_strict``; scoped to the current context (thread,
    asyncio task). ``batchq.debug.strict()`` is the context-manager form.
    """
    return _strict.set(strict)


def _task_hooks(insts: tuple[Instrument, ...]) -> tuple[Instrument, ...]:
    return tuple(
        i
        for i in insts
        if type(i).task_started is not Instrument.task_started
        or type(i).task_finished is not Instrument.task_finished
    )


class Scheduler:
    """Runs tasks in rounds. One per context (thread, asyncio task), created on demand."""

    __slots__ = (
        "_ready",
        "_pending",
        "_active",
        "_running",
        "_frame",
        "active_task",
        "_rounds",
        "_batches",
        "_items",
        "_tasks",
        "_nested_runs",
        "last_run",
        "caller",
        "__weakref__",
    )

    def __init__(self) -> None:
        self._ready: list[AsyncTask[Any]] = []
        # Batches to flush at the end of this round (a dict used as an ordered set).
        self._pending: dict[BatchBase, None] = {}
        # Per source, the batch new requests join (see batchq.Loader); switched on flush.
        self._active: dict[object, BatchBase] = {}
        self._running = False
        self._frame: ContextFrame | None = None
        self.active_task: AsyncTask[Any] | None = None
        self._rounds = 0
        self._batches = 0
        self._items = 0
        self._tasks = 0
        self._nested_runs = 0
        self.last_run: RunStats | None = None
        # For a nested run: the task of the enclosing run that made the synchronous call.
        self.caller: AsyncTask[Any] | None = None

    # -- public introspection -------------------------------------------------------------------

    def stats(self) -> RunStats:
        """Totals since this scheduler was created."""
        return RunStats(self._rounds, self._batches, self._items, self._tasks, self._nested_runs)

    def is_running(self) -> bool:
        return self._running

    def schedule_batch(self, batch: BatchBase) -> None:
        """Flush ``batch`` at the end of the current round (sources call this on first request)."""
        self._pending[batch] = None

    def active_batch(self, source: object) -> BatchBase | None:
        return self._active.get(source)

    def set_active_batch(self, source: object, batch: BatchBase | None) -> None:
        if batch is None:
            self._active.pop(source, None)
        else:
            self._active[source] = batch
            self._pending[batch] = None

    def __repr__(self) -> str:
        state = "running" if self._running else "idle"
        return (
            f"<Scheduler {state}: {len(self._ready)} runnable, "
            f"{len(self._pending)} pending batches,"
            f" {self._rounds} rounds so far>"
        )

    # -- running --------------------------------------------------------------------------------

    def run(self, root: FutureBase[Any]) -> None:
        """Run rounds until ``root`` is computed. Its value or error is left on ``root``."""
        if self._running:
            msg = f"{self!r} is already running; use run_future() for nested runs"
            raise RuntimeError(msg)
        insts = _instruments.get()
        before = self.stats()
        self._running = True
        try:
            if insts:
                for inst in insts:
                    inst.run_started(self)
            self._start_root(root)
            while root._value is NOT_COMPUTED:
                if self._ready:
                    self._drive(_task_hooks(insts) if insts else ())
                    continue
                if self._pending:
                    self._flush_round(insts)
                    continue
                self._unstick(root)
            # Requests nobody waited on (a write issued and not yielded) still go out before the
            # run returns: nothing requested in a run is dropped.
            while self._pending or self._ready:
                if self._ready:
                    self._drive(_task_hooks(insts) if insts else ())
                else:
                    self._flush_round(insts)
        except BaseException as interrupt_:
            note_close_errors(interrupt_, self._abort(root))
            raise
        finally:
            self._running = False
            self._switch_frame(None)
            self.active_task = None
            stats = self.stats()
            self.last_run = RunStats(
                stats.rounds - before.rounds,
                stats.batches - before.batches,
                stats.items - before.items,
                stats.tasks - before.tasks,
                stats.nested_runs - before.nested_runs,
            )
            # Also when interrupted: an instrument sees every run end, counted up to the abort.
            for inst in insts:
                inst.run_finished(self, self.last_run)

    def _start_root(self, root: FutureBase[Any]) -> None:
        if isinstance(root, AsyncTask):
            if root._sched is None:
                root._sched = self
                self._tasks += 1
                self._ready.append(root)
        elif isinstance(root, BatchItemBase):
            if root.batch._value is NOT_COMPUTED:
                self._pending[root.batch] = None
        elif root._value is NOT_COMPUTED:
            root._compute()

    def _drive(self, hooks: tuple[Instrument, ...]) -> None:
        """Run runnable tasks until every one has blocked or finished.

        The hottest code of batchq: every line runs once per resumption of every task, so the
        common cases come first and are written out rather than called (checked by the
        scheduler benchmarks; see docs/how-it-works.md).
        """
        ready = self._ready
        pop = ready.pop
        push = ready.append
        started = 0
        none = NOT_COMPUTED
        task_cls = AsyncTask
        item_cls = BatchItemBase
        future_cls = FutureBase
        aggregates = _AGGREGATES
        # Rounds only flush between drives, so this round's pending set stays the same object.
        pending = self._pending
        try:
            while ready:
                task = pop()
                gen = task._gen
                if gen is None:
                    continue  # finished meanwhile (interrupted while queued)
                if task._contexts is not self._frame:
                    self._switch_frame(task._contexts)
                self.active_task = task
                if hooks and getgeneratorstate(gen) == GEN_CREATED:
                    for h in hooks:
                        h.task_started(task)
                # The value the generator gets back for what it yielded.
                dep = task._dep
                if dep is None:
                    value = None
                    err: BaseException | None = None
                else:
                    task._dep = None
                    try:
                        err = dep._error  # a future (the common case) ...
                    except AttributeError:  # ... or a list/tuple/dict of them
                        try:
                            value = _unwrap(dep)
                            err = None
                        except BaseException as e:
                            value = None
                            err = e
                    else:
                        if err is None:
                            value = dep._value
                        else:
                            value = None
                            if type(dep) is task_cls:
                                err = _with_task_traceback(err, dep)
                while True:
                    try:
                        y = gen.send(value) if err is None else gen.throw(err)
                    except StopIteration as e:
                        task._value = e.value
                        task._gen = None
                        # Done: resume the waiters whose last dependency this was.
                        if hooks:
                            for h in hooks:
                                h.task_finished(task)
                        ws = task._waiters
                        if ws is not None:
                            task._waiters = None
                            if isinstance(ws, list):
                                for w in ws:
                                    n = w._npending
                                    if n:
                                        w._npending = n - 1
                                    elif w._sched is self:
                                        push(w)
                                    else:
                                        _push_elsewhere(w)
                            else:
                                n = ws._npending
                                if n:
                                    ws._npending = n - 1
                                elif ws._sched is self:
                                    push(ws)
                                else:
                                    _push_elsewhere(ws)
                        break
                    except AsyncTaskResult as e:
                        self._finish(task, e.result, hooks)
                        break
                    except GeneratorExit:
                        self._finish(task, None, hooks)
                        break
                    except Exception as e:
                        _fail(task, e)
                        self._finish(task, None, hooks)
                        break
                    # What did it yield? Batch items first: they are what most tasks wait on.
                    if isinstance(y, item_cls):
                        if y._value is none:
                            batch = y.batch
                            if batch._value is none:
                                pending[batch] = None
                        else:
                            value = y._value
                            err = y._error
                            continue
                    elif isinstance(y, task_cls):
                        if y._value is none:
                            if y._sched is None:
                                y._sched = self
                                y._contexts = task._contexts
                                started += 1
                                push(y)
                        else:
                            value = y._value
                            err = y._error
                            if err is not None and type(y) is task_cls:
                                err = _with_task_traceback(err, y)
                            continue
                    elif isinstance(y, future_cls):
                        if y._value is none:
                            self._compute_plain(y)
                        if y._value is not none:
                            value = y._value
                            err = y._error
                            continue
                    elif y is None:
                        value = None
                        err = None
                        continue
                    elif type(y) in aggregates:
                        n = self._register(task, y)
                        if n:
                            task._dep = y
                            task._npending = n - 1
                            break
                        try:
                            value = _unwrap(y)
                            err = None
                        except BaseException as e:
                            value = None
                            err = e
                        continue
                    else:
                        value = None
                        err = _bad_yield(task, y)
                        continue
                    # Wait on the one future it yielded. One waiter is stored bare, more in a
                    # list: most futures have one.
                    task._dep = y  # (_npending stays 0: one future pending beyond none)
                    yw = y._waiters
                    if yw is None:
                        y._waiters = task
                    elif isinstance(yw, list):
                        yw.append(task)
                    else:
                        y._waiters = [yw, task]
                    break
        finally:
            self._tasks += started
            self.active_task = None

    def _finish(self, task: AsyncTask[Any], value: Any, hooks: tuple[Instrument, ...]) -> None:
        """The end of a task other than by ``return`` (result(), close, an error); slow path."""
        if task._error is None:
            task._value = value
        task._gen = None
        if hooks:
            for h in hooks:
                h.task_finished(task)
        if task._waiters is not None:
            _wake(task)

    def _register(self, task: AsyncTask[Any], obj: Any) -> int:
        """Wait on every uncomputed future in a list/tuple/dict; return how many."""
        ready = self._ready
        start = len(ready)
        n = self._register_leaves(task, obj)
        if len(ready) - start > 1:
            # The first child yielded must be on top of the stack, to run first.
            ready[start:] = ready[: start - 1 : -1] if start else ready[::-1]
        return n

    def _register_leaves(self, task: AsyncTask[Any], obj: Any) -> int:
        # The per-leaf steps mirror _drive's single-future path, inlined there for speed.
        n = 0
        started = 0
        none = NOT_COMPUTED
        push = self._ready.append
        pending = self._pending
        contexts = task._contexts
        for x in obj.values() if type(obj) is dict else obj:
            if isinstance(x, FutureBase):
                if x._value is none:
                    if isinstance(x, AsyncTask):
                        if x._sched is None:
                            x._sched = self
                            x._contexts = contexts
                            started += 1
                            push(x)
                    elif isinstance(x, BatchItemBase):
                        if x.batch._value is none:
                            pending[x.batch] = None
                    else:
                        self._compute_plain(x)
                        if x._value is not none:
                            continue  # computed on the spot: nothing to wait for
                    n += 1
                    w = x._waiters
                    if w is None:
                        x._waiters = task
                    elif isinstance(w, list):
                        w.append(task)
                    else:
                        x._waiters = [w, task]
            elif type(x) in _AGGREGATES:
                n += self._register_leaves(task, x)
            # None and invalid leaves: _unwrap() handles (invalid ones raise YieldTypeError
            # once the valid ones are done, as asynq does).
        self._tasks += started
        return n

    def _compute_plain(self, fut: FutureBase[Any]) -> None:
        """A future that is neither a task nor a batch item computes itself (e.g. ``Future``)."""
        try:
            fut._compute()
        except Exception as e:
            if fut._value is NOT_COMPUTED:
                fut._value = None
                fut._error = e
        if fut._value is not NOT_COMPUTED and fut._waiters is not None:
            _wake(fut)

    def _flush_round(self, insts: tuple[Instrument, ...]) -> None:
        """Flush every pending batch, then resume the tasks whose waits are over."""
        # No task runs during a flush: pause every active context, as asynq pauses blocked tasks.
        if self._frame is not None:
            self._switch_frame(None)
        index = self._rounds
        self._rounds += 1
        if insts:
            # Before the round's batches are taken: an interrupt here leaves them for the abort.
            for inst in insts:
                inst.round_started(self, index)
        pending = self._pending
        self._pending = {}
        nbatches = 0
        nitems = 0
        push = self._ready.append
        for batch in pending:
            # Batches never drop items when they flush (asynq's did), so no copy is needed.
            items = batch.items
            if batch._value is NOT_COMPUTED:
                try:
                    if insts:
                        start = time.perf_counter()
                        batch.flush()
                        seconds = time.perf_counter() - start
                        for inst in insts:
                            inst.batch_flushed(batch, items, seconds)
                    else:
                        batch.flush()
                except BaseException:
                    # Interrupted mid-round: what is not flushed stays pending, so the abort
                    # cancels it.
                    for b in pending:
                        if b._value is NOT_COMPUTED:
                            self._pending[b] = None
                    raise
                nbatches += 1
                nitems += len(items)
            # Backwards, so that the first item's waiters end on top of the stack. The wake-up
            # below is _drive's, inlined on purpose: a call per waiter shows in every round.
            for item in reversed(items):
                ws = item._waiters
                if ws is not None:
                    item._waiters = None
                    if isinstance(ws, list):
                        for w in ws:
                            n = w._npending
                            if n:
                                w._npending = n - 1
                            elif w._sched is self:
                                push(w)
                            else:
                                _push_elsewhere(w)
                    else:
                        n = ws._npending
                        if n:
                            ws._npending = n - 1
                        elif ws._sched is self:
                            push(ws)
                        else:
                            _push_elsewhere(ws)
        self._batches += nbatches
        self._items += nitems
        if insts:
            for inst in insts:
                inst.round_finished(self, index)

    # -- contexts -------------------------------------------------------------------------------

    def _switch_frame(self, new: ContextFrame | None) -> None:
        old = self._frame
        if old is new:
            return
        from ._contexts import switch_frames

        self._frame = new
        switch_frames(self, old, new)

    # -- when nothing can run -------------------------------------------------------------------

    def _unstick(self, root: FutureBase[Any]) -> None:
        """Nothing runnable and nothing pending: find why, and throw an error into a waiter."""
        path = _find_cycle(root)
        if path is not None:
            chain = " -> ".join(t.call_str() for t in path)
            error: DeadlockError = DependencyCycleError(
                f"dependency cycle: {chain}; an async function cannot wait on itself, directly or "
                "through others. Compute the shared part in a separate function that both call."
            )
            interrupt(path[-2], error)
            return
        stuck = _find_stuck(root)
        if stuck is None:
            msg = (
                f"the scheduler has nothing to run and nothing pending, but {root!r} is not done;"
                " is it waiting on a future nobody will complete?"
            )
            raise DeadlockError(msg)
        task, leaf = stuck
        interrupt(
            task,
            DeadlockError(
                f"{task.call_str()} waits on {leaf!r}, which nothing in this run will complete"
                " (no pending batch holds it, and it belongs to no runnable task). A synchronous"
                " call inside an async function cannot wait on a task started outside it: yield"
                " it instead."
            ),
        )

    def _abort(self, root: FutureBase[Any]) -> list[BaseException]:
        """An interrupt (KeyboardInterrupt, cancellation...) stops the run: close everything.

        Returns what generators raised while closing, for the interrupt to carry as a note.
        """
        tasks = _reachable_tasks(root, self._ready)
        self._ready.clear()
        cancelled = AsyncTaskCancelledError("the run was interrupted before this task finished")
        failed: list[BaseException] = []
        for task in reversed(tasks):
            gen = task._gen
            task._gen = None
            task._waiters = None
            task._npending = 0
            if gen is not None:
                try:
                    gen.close()
                except BaseException as e:  # closing must reach every generator
                    failed.append(e)
            if task._value is NOT_COMPUTED:
                task._value = None
                task._error = cancelled
        for batch in [*self._pending, *self._active.values()]:
            batch.cancel()
        self._pending = {}
        self._active.clear()
        return failed


# -- helpers used by the loop (kept out of it so the hot path stays small) ------------------------


def note_close_errors(interrupt_: BaseException, failed: list[BaseException]) -> None:
    """Attach to an interrupt what generators raised while its run was closed (3.11+)."""
    if failed and hasattr(interrupt_, "add_note"):
        shown = "; ".join(repr(e) for e in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        interrupt_.add_note(
            f"batchq: closing the interrupted run, {len(failed)} task(s) raised while their "
            f"generators closed: {shown}{more}"
        )


def _push_elsewhere(task: AsyncTask[Any]) -> None:
    sched = task._sched
    if sched is not None:
        sched._ready.append(task)


def waiters_of(fut: FutureBase[Any]) -> list[AsyncTask[Any]]:
    """The tasks waiting on ``fut`` (stored bare when there is one, as a list when more)."""
    ws = fut._waiters
    if ws is None:
        return []
    return list(ws) if isinstance(ws, list) else [ws]


def _wake(fut: FutureBase[Any]) -> None:
    """Resume the waiters of a future that just completed (slow path)."""
    ws = waiters_of(fut)
    fut._waiters = None
    for w in ws:
        if w._npending:
            w._npending -= 1
        else:
            _push_elsewhere(w)


def _fail(task: AsyncTask[Any], error: BaseException) -> None:
    """Record ``error`` as the task's outcome, keeping a traceback without scheduler frames."""
    tb = error.__traceback__
    if tb is not None and tb.tb_frame.f_code is _DRIVE_CODE:
        tb = tb.tb_next
        error.__traceback__ = tb
    task._gen = None
    task._value = None
    task._error = error
    task._dep = tb


def _with_task_traceback(error: BaseException, task: AsyncTask[Any]) -> BaseException:
    """Each waiter sees the traceback the task failed with, not one grown by other waiters."""
    tb = task._dep
    if isinstance(tb, TracebackType) or tb is None:
        error.__traceback__ = tb
    return error


def _bad_yield(task: AsyncTask[Any], value: object) -> YieldTypeError:
    return YieldTypeError(
        f"{task.call_str()} yielded {value!r} of type {type(value).__name__}; an async function "
        "may yield a task (f.asynq(...)), a batch item, a future, None, or a list/tuple/dict of "
        "them. Did you call f(...) instead of f.asynq(...), or yield a plain value?"
    )


def _unwrap(obj: Any) -> Any:
    """The value a generator receives for what it yielded; raises the first error, in order."""
    if isinstance(obj, FutureBase):
        err = obj._error
        if err is not None:
            if type(obj) is AsyncTask:
                err = _with_task_traceback(err, obj)
            raise err
        value = obj._value
        if value is NOT_COMPUTED:
            msg = f"internal error: {obj!r} was unwrapped before it was computed"
            raise RuntimeError(msg)
        return value
    t = type(obj)
    if t is list or t is tuple:
        # A flat list of finished futures is the common case: no call per element for it.
        out: list[Any] = []
        append = out.append
        for x in obj:
            if isinstance(x, FutureBase) and x._error is None and x._value is not NOT_COMPUTED:
                append(x._value)
            else:
                append(_unwrap(x))
        return out if t is list else tuple(out)
    if t is dict:
        return {k: _unwrap(v) for k, v in obj.items()}
    if obj is None:
        return None
    raise YieldTypeError(
        f"cannot wait on {obj!r} of type {t.__name__} inside a yielded list/tuple/dict; "
        "only tasks, batch items, futures, None and nested lists/tuples/dicts of them are allowed"
    )


def _leaves(obj: Any) -> Generator[FutureBase[Any], None, None]:
    if isinstance(obj, FutureBase):
        yield obj
    elif type(obj) in (list, tuple):
        for x in obj:
            yield from _leaves(x)
    elif type(obj) is dict:
        for x in obj.values():
            yield from _leaves(x)


def _blocked_on(task: AsyncTask[Any]) -> list[FutureBase[Any]]:
    """What ``task`` still waits for (empty when it is not blocked)."""
    if task._gen is None or task._dep is None:
        return []
    return [leaf for leaf in _leaves(task._dep) if leaf._value is NOT_COMPUTED]


def _find_cycle(root: FutureBase[Any]) -> list[AsyncTask[Any]] | None:
    """A path of tasks ending with a repeat (the cycle), found by iterative DFS from the root."""
    if not isinstance(root, AsyncTask):
        return None
    on_path: dict[int, int] = {}
    done: set[int] = set()
    path: list[AsyncTask[Any]] = []
    stack: list[tuple[AsyncTask[Any], list[AsyncTask[Any]]]] = []

    def children(t: AsyncTask[Any]) -> list[AsyncTask[Any]]:
        return [leaf for leaf in _blocked_on(t) if isinstance(leaf, AsyncTask)]

    path.append(root)
    on_path[id(root)] = 0
    stack.append((root, children(root)))
    while stack:
        _, kids = stack[-1]
        if not kids:
            t, _ = stack.pop()
            path.pop()
            del on_path[id(t)]
            done.add(id(t))
            continue
        child = kids.pop()
        if id(child) in on_path:
            return [*path[on_path[id(child)] :], child]
        if id(child) in done:
            continue
        on_path[id(child)] = len(path)
        path.append(child)
        stack.append((child, children(child)))
    return None


def _find_stuck(root: FutureBase[Any]) -> tuple[AsyncTask[Any], FutureBase[Any]] | None:
    """The first blocked task (depth-first) waiting on something no one will complete."""
    if not isinstance(root, AsyncTask):
        return None
    seen: set[int] = set()
    stack: list[AsyncTask[Any]] = [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        for leaf in _blocked_on(t):
            if isinstance(leaf, AsyncTask) and _blocked_on(leaf):
                stack.append(leaf)
            else:
                return t, leaf
    return None


def _reachable_tasks(root: FutureBase[Any], ready: list[AsyncTask[Any]]) -> list[AsyncTask[Any]]:
    """Unfinished tasks reachable from the root and the runnable stack, parents before children."""
    out: list[AsyncTask[Any]] = []
    seen: set[int] = set()
    stack: list[FutureBase[Any]] = [root, *ready]
    while stack:
        f = stack.pop()
        if id(f) in seen or not isinstance(f, AsyncTask) or f._value is not NOT_COMPUTED:
            continue
        seen.add(id(f))
        out.append(f)
        stack.extend(_leaves(f._dep))
    return out


def interrupt(task: AsyncTask[Any], error: BaseException) -> None:
    """Stop waiting: detach ``task`` from what it waits on and throw ``error`` at its yield."""
    for leaf in _blocked_on(task):
        ws = [w for w in waiters_of(leaf) if w is not task]
        leaf._waiters = None if not ws else ws[0] if len(ws) == 1 else ws
    task._npending = 0
    task._dep = ErrorFuture(error)
    _push_elsewhere(task)


_DRIVE_CODE: Final = Scheduler._drive.__code__

# -- the current scheduler ------------------------------------------------------------------------

_current: ContextVar[Scheduler | None] = ContextVar("batchq_scheduler", default=None)


def get_scheduler() -> Scheduler:
    """The scheduler of this context (thread, asyncio task), created on first use."""
    sched = _current.get()
    if sched is None:
        sched = Scheduler()
        _current.set(sched)
    return sched


def get_active_task() -> AsyncTask[Any] | None:
    sched = _current.get()
    return None if sched is None else sched.active_task


def run_sync(fut: FutureBase[T]) -> T:
    """Compute ``fut`` and return its value, or raise its error with the async call chain noted."""
    if fut._value is NOT_COMPUTED:
        run_future(fut)
    err = fut._error
    if err is not None:
        if isinstance(fut, AsyncTask):
            _with_task_traceback(err, fut)
        note_async_chain(err)
        raise err
    return fut._value  # type: ignore[no-any-return]


def run_future(fut: FutureBase[Any]) -> None:
    """Compute ``fut`` synchronously: the entry from plain code into the scheduler."""
    sched = _current.get()
    if sched is None:
        sched = Scheduler()
        _current.set(sched)
    if not sched._running:
        sched.run(fut)
        return
    # A synchronous call inside a running task: it cannot share the outer round, so it splits
    # batches. Count it, tell instruments, and refuse it in strict mode.
    caller = sched.active_task
    sched._nested_runs += 1
    for inst in _instruments.get():
        inst.nested_run(sched, caller)
    if _strict.get():
        where = caller.call_str() if caller is not None else "a running task"
        frame = getattr(caller._gen, "gi_frame", None) if caller is not None else None
        if frame is not None:
            where += f" at {frame.f_code.co_filename}:{frame.f_lineno}"
        target = fut.call_str() if isinstance(fut, AsyncTask) else repr(fut)
        msg = (
            f"synchronous call of {target} inside {where} (strict mode): it runs a nested "
            "scheduler and splits batches. Write `yield f.asynq(...)` instead of `f(...)`."
        )
        raise SyncCallInAsyncError(msg)
    inner = Scheduler()
    inner.caller = caller
    token = _current.set(inner)
    try:
        inner.run(fut)
    finally:
        _current.reset(token)
        sched._rounds += inner._rounds
        sched._batches += inner._batches
        sched._items += inner._items
        sched._tasks += inner._tasks
        sched._nested_runs += inner._nested_runs
