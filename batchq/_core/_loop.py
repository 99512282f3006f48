"""The round loop, written once.

One round: run every runnable task until it blocks; then flush every pending batch, of every
source; then resume exactly the tasks whose requests completed. Repeat until nothing is left. The
number of rounds is therefore the depth of the dependency graph in batches, never more.

:meth:`Scheduler.advance` is that loop. It is a step function that runs until a driver has to
act: it returns ``FLUSH`` when the round's batches are due (unless the driver handed it a ``flush``
to call inline), ``IDLE`` when a run is unfinished but nothing can run and nothing is pending, and
``DONE`` when nothing is left. The synchronous driver (:meth:`Scheduler.run`) flushes inline and
diagnoses an unfinished root as a deadlock; the asyncio driver (``batchq._asyncio``) flushes in a
worker thread and waits on the event loop while asyncio work is outstanding. Neither repeats the
loop's bookkeeping.

A *run* (:class:`~batchq._core._runtime.Run`) is one synchronous call or one asyncio request. A
scheduler may carry several runs at once (the asyncio driver does), which then share rounds; a
run ends when its root is computed and every request made before that has been flushed, so a
write nobody waited on is sent before its caller gets the result.

How it stays cheap. Runnable tasks sit on a stack (``_ready``), so execution is depth-first like
asynq's and a chain of 100,000 nested calls uses no Python recursion. A task that yields registers
itself as a waiter on every future it has to wait for and counts those beyond the first
(``_npending``, so that the common single wait writes no count); a future that completes
decrements the count of each waiter, or pushes the waiter whose count is already zero. Nothing ever
rescans the pending tree: a round costs what it resumes. Instruments are installed objects read
once per drive; with none installed the loop checks one local variable per task.
"""

from __future__ import annotations

import sys
import time
from _thread import get_ident
from collections.abc import Callable, Sequence
from inspect import GEN_CREATED, getgeneratorstate
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from ._batch import BatchBase, BatchItemBase, EntryList, KeyedBatch, KeyedItem
from ._contexts import switch_frames
from ._errors import (
    AsyncTaskCancelledError,
    AsyncTaskResult,
    DeadlockError,
    DependencyCycleError,
    SyncCallInAsyncError,
    TaskDepthError,
    UnyieldedTaskError,
    YieldTypeError,
)
from ._format import note_async_chain
from ._futures import NOT_COMPUTED, FutureBase
from ._graph import (
    detach_all,
    find_cycle,
    find_stuck,
    interrupt,
    push_elsewhere,
    reachable_tasks,
    wake,
)
from ._instruments import (
    Instrument,
    RunStats,
    installed_instruments,
    strict_mode,
    task_hooks,
)
from ._instruments import _instruments as _instruments_var
from ._runtime import (
    Run,
    current_scheduler,
    install_entry,
    reset_current,
    run_of,
    scheduler_var,
    set_current,
)
from ._task import ABSORBED, DELIVERED_VALUE, AsyncTask, leaves

if TYPE_CHECKING:
    from ._contexts import ContextFrame

__all__ = [
    "Scheduler",
    "DONE",
    "FLUSH",
    "IDLE",
    "get_scheduler",
    "run_future",
    "run_sync",
    "note_close_errors",
    "unyielded_error",
    "limits",
    "with_task_traceback",
]

T = TypeVar("T")

_AGGREGATES: Final = (list, tuple, dict)

# What the round loop asks its driver for.
DONE: Final = 0  # nothing runnable or pending, no run in flight
FLUSH: Final = 1  # flush the round's pending batches (Scheduler.flush_round), then resume
IDLE: Final = 2  # nothing runnable or pending, a run unfinished: wait for outside work or unstick

_MULTI: Final[Any] = object()  # _drive's marker for "the task yielded a list/tuple/dict"


def _calibrate_held() -> int:
    """What ``sys.getrefcount`` reads for an object held by one dict and one local variable,
    the state of an item that only its batch and ``_drive`` hold (see KeyedBatch): measured,
    not assumed, because interpreters count the call's own argument differently.

    Measured with this thread's trace and profile functions off: one that reads
    ``frame.f_locals`` (a debugger, a snooping tool) holds a reference to the local meanwhile
    (before Python 3.13), and a count one too high would absorb items one other holder keeps.
    """
    trace = sys.gettrace()
    profile = sys.getprofile()
    sys.settrace(None)
    sys.setprofile(None)
    try:
        return _measure_held()
    finally:
        sys.setprofile(profile)
        sys.settrace(trace)


def _measure_held() -> int:
    by_key = {0: object()}
    y = by_key[0]
    return sys.getrefcount(y)


# Absorption needs exact reference counts: off (never equal) where there are none, and where
# they are not exact (a free-threaded build without its GIL counts references per thread).
_EXACT_REFCOUNTS: Final = (
    hasattr(sys, "getrefcount") and getattr(sys, "_is_gil_enabled", lambda: True)()
)
_REFCOUNT: Final[Callable[[Any], int]] = sys.getrefcount if _EXACT_REFCOUNTS else lambda _: -1
_HELD: Final = _calibrate_held() if _EXACT_REFCOUNTS else 0


class Scheduler:
    """Runs tasks in rounds. One per thread and context (asyncio task), created on demand."""

    __slots__ = (
        "_ready",
        "_pending",
        "_active",
        "_running",
        "_frame",
        "_thread",
        "_runs",
        "_insts",
        "_hooks",
        "on_run_done",
        "ambient_run",
        "active_task",
        "_rounds",
        "_batches",
        "_items",
        "_tasks",
        "_nested_runs",
        "_since_check",
        "last_run",
        "caller",
        "parent_run",
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
        # The thread that made it: only that thread may drive it (see _runtime).
        self._thread = get_ident()
        # The runs in flight, in the order they started.
        self._runs: list[Run] = []
        # The instruments of the runs in flight, and those of them with per-task hooks.
        self._insts: tuple[Instrument, ...] = ()
        self._hooks: tuple[Instrument, ...] = ()
        # Called with each run that ends (the asyncio driver answers its caller there).
        self.on_run_done: Callable[[Run], None] | None = None
        # The run that code outside any task belongs to: the synchronous run, or the request the
        # asyncio driver is starting. Tasks find theirs through their context frame.
        self.ambient_run: Run | None = None
        self.active_task: AsyncTask[Any] | None = None
        self._rounds = 0
        self._batches = 0
        self._items = 0
        self._tasks = 0
        self._nested_runs = 0
        # Tasks started since the depth guard last looked (see _Limits), carried across drives:
        # a recursion that waits on a batch at every level starts one task per drive.
        self._since_check = 0
        self.last_run: RunStats | None = None
        # For a nested run: the task of the enclosing run that made the synchronous call, and
        # that run, whose per-run memory the nested run shares.
        self.caller: AsyncTask[Any] | None = None
        self.parent_run: Run | None = None

    # -- public introspection -------------------------------------------------------------------

    def stats(self) -> RunStats:
        """Totals since this scheduler was created."""
        return RunStats(self._rounds, self._batches, self._items, self._tasks, self._nested_runs)

    def is_running(self) -> bool:
        return self._running

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

    # -- the round loop -------------------------------------------------------------------------

    def advance(self, flush: Callable[[], None] | None = None) -> int:
        """THE round loop: drive, flush, resume, until a driver has to act; returns why it stopped.

        Returns ``FLUSH`` when this round's batches are due and ``flush`` is None (a driver that
        flushes elsewhere, e.g. in a worker thread, then calls ``advance()`` again); with a
        ``flush``, calls it inline and goes on. Returns ``IDLE`` when a run is unfinished but
        nothing can run and nothing is pending, and ``DONE`` when nothing is runnable or pending
        and no run is in flight: requests nobody waited on (a write issued and not yielded) have
        gone out by then.
        """
        # The same list objects for the scheduler's life (cleared, never replaced); _pending is
        # replaced by every flush.
        runs = self._runs
        ready = self._ready
        none = NOT_COMPUTED
        while True:
            # Has a run's root finished? (No run, or one, in a synchronous call: cheap.)
            for run in runs:
                root = run.root
                if root is None or root._value is not none:
                    self._settle()
                    break
            if ready:
                self._drive(self._hooks)
            elif self._pending:
                if flush is None:
                    return FLUSH
                flush()
            elif runs:
                return IDLE
            else:
                return DONE

    def add_run(self, run: Run) -> None:
        """Start ``run``: its root joins the current round."""
        self._runs.append(run)
        root = run.root
        if root is not None:
            self._start_root(root)

    def set_instruments(self, insts: tuple[Instrument, ...]) -> None:
        self._insts = insts
        self._hooks = task_hooks(insts) if insts else ()

    def _settle(self) -> None:
        """End the runs whose root is computed and whose requests have all been flushed."""
        ended: list[Run] | None = None
        for run in self._runs:
            root = run.root
            if root is not None and root._value is NOT_COMPUTED:
                continue
            if run.flush_round < 0 and self._pending:
                # Requests made before the root finished go out first (in the next flush).
                run.flush_round = self._rounds
                continue
            if run.flush_round >= self._rounds:
                continue
            if ended is None:
                ended = []
            ended.append(run)
        if ended is not None:
            for run in ended:
                self._runs.remove(run)
                if self.on_run_done is not None:
                    self.on_run_done(run)

    def end_run(self, run: Run) -> None:
        """Drop ``run`` without waiting for it (its caller gave up)."""
        try:
            self._runs.remove(run)
        except ValueError:
            pass

    # -- the synchronous driver -----------------------------------------------------------------

    def run(self, root: FutureBase[Any]) -> None:
        """Run rounds until ``root`` is computed. Its value or error is left on ``root``.

        The synchronous driver: it flushes inline, and when the loop is done with ``root``
        unfinished, diagnoses the deadlock. Its run is not in ``_runs`` (the loop ends when
        nothing is left, which is when a synchronous run ends); the ``Run`` object itself is
        made only if something asks for it (``current_run()``: the Cache's per-run memory).
        """
        if self._running:
            msg = f"{self!r} is already running; use run_future() for nested runs"
            raise RuntimeError(msg)
        insts = _instruments_var.get()
        rounds, batches, items, tasks, nested = (
            self._rounds,
            self._batches,
            self._items,
            self._tasks,
            self._nested_runs,
        )
        self._running = True
        if insts:
            self.set_instruments(insts)
        try:
            for inst in insts:
                inst.run_started(self)
            self._start_root(root)
            flush = self.flush_round
            while True:
                self.advance(flush)
                if root._value is not NOT_COMPUTED:
                    break
                self.unstick(root)  # nothing can run and nothing is pending, yet root is not done
        except BaseException as interrupt_:
            note_close_errors(interrupt_, self.abort([root]))
            raise
        finally:
            self._running = False
            run = self.ambient_run
            self.ambient_run = None
            if run is not None:
                run.end()
            self._switch_frame(None)
            self.active_task = None
            if insts:
                self.set_instruments(())
            self.last_run = last = RunStats(
                self._rounds - rounds,
                self._batches - batches,
                self._items - items,
                self._tasks - tasks,
                self._nested_runs - nested,
            )
            # Also when interrupted: an instrument sees every run end, counted up to the abort.
            for inst in insts:
                inst.run_finished(self, last)
        if run is not None and run.forgotten and self.parent_run is None:
            raise unyielded_error(run.forgotten)

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

    def _drive(
        self,
        hooks: tuple[Instrument, ...],
        # Constants as defaults: bound once, not loaded into locals on every drive (a deep
        # chain's round is one drive of one task). Never passed.
        none: Any = NOT_COMPUTED,
        task_cls: type[AsyncTask[Any]] = AsyncTask,
        item_cls: type[BatchItemBase[Any]] = BatchItemBase,
        future_cls: type[FutureBase[Any]] = FutureBase,
        aggregates: tuple[type, ...] = _AGGREGATES,
        multi: Any = _MULTI,
        keyed_cls: type[KeyedItem[Any]] = KeyedItem,
        refcount: Callable[[Any], int] = _REFCOUNT,
        held: int = _HELD,
        delivered: int = DELIVERED_VALUE,
    ) -> None:
        """Run runnable tasks until every one has blocked or finished.

        The hottest code of batchq: every line runs once per resumption of every task, so the
        common cases come first and are written out rather than called (checked by the
        scheduler benchmarks; see docs/how-it-works.md).
        """
        ready = self._ready
        pop = ready.pop
        push = ready.append
        started = 0
        # The depth guard's count lives in a local during the drive: starts since the last
        # check are ``started - (check_at - interval)``, carried over from earlier drives.
        interval = limits.first_check
        check_at = interval - self._since_check
        # Rounds only flush between drives, so this round's pending set stays the same object,
        # and a batch added to it stays there for the rest of the drive.
        pending = self._pending
        last_batch = None
        keyed = False  # whether last_batch is a KeyedBatch
        try:
            while ready:
                task = pop()
                # Then the task to run next without a trip through the stack: a task the one
                # before just started, or the single waiter it woke when it finished. Pushed,
                # it would be popped right back (the stack is LIFO): the same order, cheaper.
                while True:
                    gen = task._gen
                    if gen is None:
                        break  # finished meanwhile (interrupted while queued)
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
                    elif task._npending:
                        # Its keyed batch gave it the value itself (absorbed: see KeyedBatch).
                        # A None is delivered as a plain resumption (the branch above).
                        task._dep = None
                        if task._npending == delivered:
                            value = dep
                            err = None
                        else:
                            value = None
                            err = dep
                        task._npending = 0
                    else:
                        task._dep = None
                        try:
                            err = dep._error  # a future (the common case) ...
                        except AttributeError:  # ... or a list/tuple/dict of them
                            err = multi
                        if err is None:
                            value = dep._value
                        elif err is multi:
                            # Outside the except block: an error raised here must not carry the
                            # AttributeError as its __context__.
                            try:
                                value = _unwrap(dep)
                                err = None
                            except BaseException as e:
                                value = None
                                err = e
                        else:
                            value = None
                            if isinstance(dep, task_cls):
                                err = with_task_traceback(err, dep)
                    nxt = None
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
                                            push_elsewhere(w)
                                else:
                                    n = ws._npending
                                    if n:
                                        ws._npending = n - 1
                                    elif ws._sched is not self:
                                        push_elsewhere(ws)
                                    elif (
                                        hooks
                                        or ws._dep is not task
                                        or ws._contexts is not self._frame
                                        or task._error is not None
                                        or (wgen := ws._gen) is None
                                    ):
                                        # The loop's top: it _unwraps a list/tuple/dict; it
                                        # switches frames before reading the waiter's _dep,
                                        # where a context failing to resume leaves its error;
                                        # and an error set on this task while it ran is what
                                        # the waiter gets.
                                        nxt = ws
                                    else:
                                        # Its single waiter, waiting on this task alone in the
                                        # same frame, resumes here with the value just
                                        # returned: the loop's top would read it back from
                                        # this task, less directly.
                                        task = ws
                                        gen = wgen
                                        ws._dep = None
                                        value = e.value
                                        err = None
                                        self.active_task = ws
                                        continue
                            break
                        except AsyncTaskResult as e:
                            self._finish(task, e.result, hooks)
                            break
                        except GeneratorExit as e:
                            # Cancelled (AsyncTaskCancelledError) or closed: an error for every
                            # waiter, never a return value of None.
                            _fail(task, e)
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
                                if batch is not last_batch:
                                    # Most items of a drive are of one batch: it is added once.
                                    if batch._value is none:
                                        pending[batch] = None
                                        last_batch = batch
                                        # A Loader's batch: its items are all KeyedItems.
                                        keyed = type(y) is keyed_cls
                                elif keyed and refcount(y) == held:
                                    # A key's item that nothing else holds (no waiter, no
                                    # reference but its batch's by_key and ``y``): the batch
                                    # holds this task in its place, and the item is let go
                                    # (KeyedBatch). Its batch is pending (a flush settles every
                                    # item). Not the first item of a batch in a drive: a deep
                                    # chain's round, one key, pays for no check, and the
                                    # items of other batches for one local's.
                                    try:
                                        batch.by_key[y.key] = task  # type: ignore[attr-defined]
                                    except Exception:
                                        pass  # a key whose hash fails now: it waits as an item
                                    else:
                                        task._dep = batch
                                        task._npending = ABSORBED
                                        break
                            else:
                                value = y._value
                                err = y._error
                                continue
                        elif isinstance(y, task_cls):
                            if y._value is none:
                                if y._sched is None:
                                    started += 1
                                    if started >= check_at:
                                        # Rarely: is this an endless recursion? (_chain_too_deep)
                                        check_at = started + interval
                                        deep = _chain_too_deep(task)
                                        if deep is not None:
                                            _refuse(y, deep)
                                            value = None
                                            err = deep
                                            continue
                                    y._sched = self
                                    y._contexts = task._contexts
                                    if hooks or y._waiters is not None or (ygen := y._gen) is None:
                                        nxt = y
                                    else:
                                        # The child runs at once, here: this task waits on it
                                        # first, as below, so that an interrupt in the child's
                                        # first step finds both.
                                        task._dep = y
                                        y._waiters = task
                                        task = y
                                        gen = ygen
                                        value = None
                                        err = None
                                        self.active_task = y
                                        continue
                            else:
                                value = y._value
                                err = y._error
                                if err is not None and isinstance(y, task_cls):
                                    err = with_task_traceback(err, y)
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
                            # _register counts (and checks) the tasks it starts on the same count.
                            self._since_check = started - (check_at - interval)
                            try:
                                n = self._register(task, y)
                            except TaskDepthError as e:
                                value = None
                                err = e
                                continue
                            finally:
                                check_at = started + interval - self._since_check
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
                    if nxt is None:
                        break
                    task = nxt
        finally:
            self._tasks += started
            self._since_check = started - (check_at - interval)
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
            wake(task)

    def _register(self, task: AsyncTask[Any], obj: Any) -> int:
        """Wait on every uncomputed future in a list/tuple/dict; return how many."""
        ready = self._ready
        start = len(ready)
        n = self._register_leaves(task, obj)
        started = len(ready) - start
        if started:
            # The depth guard, for tasks started through a list (_drive checks the others).
            since = self._since_check + started
            if since >= limits.first_check:
                since = 0
                deep = _chain_too_deep(task)
                if deep is not None:
                    self._since_check = 0
                    _refuse_registered(task, obj, ready, start, deep)
                    raise deep
            self._since_check = since
        if started > 1:
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
            wake(fut)

    def flush_round(
        self,
        # Constants as defaults, as in _drive. Never passed.
        keyed_cls: type[KeyedItem[Any]] = KeyedItem,
        entry_list: type[EntryList] = EntryList,
    ) -> None:
        """Flush every pending batch, then make runnable the tasks whose waits are over.

        The one step a driver performs itself (inline, or in a worker thread): no task runs
        during it, and nothing else touches the scheduler meanwhile.
        """
        insts = self._insts
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
        push = self._ready.append
        items: Sequence[BatchItemBase[Any]]
        for batch in pending:
            if batch._value is not NOT_COMPUTED:
                items = batch.items  # flushed meanwhile (e.g. by value()): only wake
            else:
                try:
                    if insts:
                        if isinstance(batch, KeyedBatch):
                            batch._unabsorb()  # batch_flushed() is given items, as documented
                        start = time.perf_counter()
                        items = batch._round_flush()
                        seconds = time.perf_counter() - start
                        for inst in insts:
                            inst.batch_flushed(batch, items, seconds)
                    else:
                        items = batch._round_flush()
                except BaseException:
                    # Interrupted mid-round: what is not flushed stays pending, so the abort
                    # cancels it.
                    for b in pending:
                        if b._value is NOT_COMPUTED:
                            self._pending[b] = None
                    raise
                # Counted as it goes: no locals to add up, and an interrupted round counts
                # what it flushed.
                self._batches += 1
                self._items += len(items)
            # Backwards, so that the first item's waiters end on top of the stack (no reversed()
            # for one item: a deep chain's round). The wake-up below is _drive's, inlined on
            # purpose: a call per waiter shows in every round.
            mixed = type(items) is entry_list
            item: Any
            for item in reversed(items) if len(items) > 1 else items:
                if mixed and type(item) is not keyed_cls:
                    # A task its keyed batch held in its item's place, the value delivered
                    # (KeyedBatch): it is the waiter.
                    if item._sched is self:
                        push(item)
                    else:
                        push_elsewhere(item)
                    continue
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
                                push_elsewhere(w)
                    else:
                        n = ws._npending
                        if n:
                            ws._npending = n - 1
                        elif ws._sched is self:
                            push(ws)
                        else:
                            push_elsewhere(ws)
        if insts:
            for inst in insts:
                inst.round_finished(self, index)

    # -- contexts -------------------------------------------------------------------------------

    def _switch_frame(self, new: ContextFrame | None) -> None:
        old = self._frame
        if old is new:
            return
        self._frame = new
        switch_frames(self, old, new)

    # -- when nothing can run -------------------------------------------------------------------

    def unstick(self, root: FutureBase[Any]) -> None:
        """Nothing runnable and nothing pending: find why, and throw an error into a waiter.

        Raises :class:`DeadlockError` when no task can be told (``root`` itself is stuck).
        """
        path = find_cycle(root)
        if path is not None:
            chain = " -> ".join(t.call_str() for t in path)
            error: DeadlockError = DependencyCycleError(
                f"dependency cycle: {chain}; an async function cannot wait on itself, directly or "
                "through others. Compute the shared part in a separate function that both call."
            )
            interrupt(path[-2], error)
            return
        stuck = find_stuck(root)
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

    # -- stopping early -------------------------------------------------------------------------

    def close_tasks(
        self,
        tasks: list[AsyncTask[Any]],
        error: BaseException,
        orphans: list[FutureBase[Any]] | None = None,
    ) -> list[BaseException]:
        """Close the generators of ``tasks`` (parents first in the list; children close first).

        Each unfinished task ends with ``error``, which its waiters receive. Their ``finally``
        blocks and ``with`` exits run with their contexts active, as in a step. Futures that no
        one waits on any more are appended to ``orphans``. Returns what the generators raised
        while closing.
        """
        failed: list[BaseException] = []
        # Every task lets go of what it waits on first, in one pass per future.
        lost = detach_all(tasks)
        if orphans is not None:
            orphans.extend(lost)
        try:
            for task in reversed(tasks):
                gen = task._gen
                task._gen = None
                task._dep = None
                if gen is not None:
                    self._switch_frame(task._contexts)
                    self.active_task = task
                    try:
                        gen.close()
                    except BaseException as e:  # closing must reach every generator
                        failed.append(e)
                    finally:
                        self.active_task = None
                if task._value is NOT_COMPUTED:
                    task._value = None
                    task._error = error
                if task._waiters is not None:
                    wake(task)  # a waiter outside ``tasks`` gets the error
        finally:
            self._switch_frame(None)
        return failed

    def abort(self, roots: list[FutureBase[Any]]) -> list[BaseException]:
        """An interrupt (KeyboardInterrupt, cancellation...) stops everything: close it all.

        Returns what generators raised while closing, for the interrupt to carry as a note.
        """
        tasks = reachable_tasks(roots, self._ready)
        self._ready.clear()
        cancelled = AsyncTaskCancelledError("the run was interrupted before this task finished")
        failed = self.close_tasks(tasks, cancelled)
        self._ready.clear()
        for batch in [*self._pending, *self._active.values()]:
            batch.cancel()
        self._pending = {}
        self._active.clear()
        return failed


# -- helpers used by the loop (kept out of it so the hot path stays small) ------------------------


class _Limits:
    """How deep a chain of tasks waiting on each other may grow (asynq's MAX_TASK_STACK_SIZE).

    batchq runs deep chains without recursion, so depth costs only memory; the limit is there to
    turn an endless recursion (``f`` yielding ``f.asynq()`` forever) into an error instead of
    exhausting memory. Checked every ``first_check`` task starts (counted across drives, so a
    recursion that waits on a batch at every level is caught too, and through yielded lists), by
    walking the chain, so the common path pays one comparison per started task.
    """

    __slots__ = ("max_depth", "check_every", "first_check")

    def __init__(self) -> None:
        self.max_depth = 1_000_000
        self.check_every = 65_536
        self.first_check = self.check_every  # min(max_depth, check_every): the interval

    def set_max_depth(self, depth: int) -> None:
        self.max_depth = depth
        self.first_check = min(depth, self.check_every)


limits: Final = _Limits()


def _chain_too_deep(task: AsyncTask[Any]) -> TaskDepthError | None:
    """The error for ``task``'s chain of waiters if it is deeper than the limit, else None."""
    limit = limits.max_depth
    depth = 1
    names: list[str] = []
    t: Any = task
    while t is not None:
        if depth <= 3:
            names.append(t.call_str())
        ws = t._waiters
        t = ws[0] if isinstance(ws, list) else ws
        depth += 1
        if depth > limit:
            chain = " <- ".join(names)
            msg = (
                f"{task.call_str()} would start a task {depth} levels deep, past the limit of "
                f"{limit} (batchq.compat.debug.options.MAX_TASK_STACK_SIZE): is it an endless "
                f"recursion? The innermost calls: {chain} <- ..."
            )
            return TaskDepthError(msg)
    return None


def _refuse(task: AsyncTask[Any], error: BaseException) -> None:
    """``task`` will never start: it ends with ``error`` (and is not reported as unyielded)."""
    gen = task._gen
    task._gen = None
    task._value = None
    task._error = error
    if gen is not None:
        gen.close()


def _refuse_registered(
    task: AsyncTask[Any], obj: Any, ready: list[AsyncTask[Any]], start: int, error: BaseException
) -> None:
    """Undo ``_register``: the tasks it started never run, and ``task`` waits on nothing."""
    started = ready[start:]
    del ready[start:]
    for child in started:
        _refuse(child, error)
    for leaf in leaves(obj):
        ws = leaf._waiters
        if ws is task:
            leaf._waiters = None
        elif isinstance(ws, list):
            rest = [w for w in ws if w is not task]
            leaf._waiters = None if not rest else rest[0] if len(rest) == 1 else rest
    task._npending = 0


def unyielded_error(forgotten: list[str]) -> UnyieldedTaskError:
    """Strict mode: the run dropped tasks it never yielded (see ``_unyielded``)."""
    more = f" (and {len(forgotten) - 1} more)" if len(forgotten) > 1 else ""
    return UnyieldedTaskError(f"strict mode: {forgotten[0]}{more}")


def note_close_errors(interrupt_: BaseException, failed: list[BaseException]) -> None:
    """Attach to an interrupt what generators raised while its run was closed (3.11+)."""
    if failed and hasattr(interrupt_, "add_note"):
        shown = "; ".join(repr(e) for e in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        interrupt_.add_note(
            f"batchq: closing the interrupted run, {len(failed)} task(s) raised while their "
            f"generators closed: {shown}{more}"
        )


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


def with_task_traceback(error: BaseException, task: AsyncTask[Any]) -> BaseException:
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
            if isinstance(obj, AsyncTask):
                err = with_task_traceback(err, obj)
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
        none = NOT_COMPUTED
        future_cls = FutureBase  # locals: global loads per element showed in a 10,000 fan-out
        for x in obj:
            if isinstance(x, future_cls) and x._error is None and x._value is not none:
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


_DRIVE_CODE: Final = Scheduler._drive.__code__


# -- the entry from plain code ---------------------------------------------------------------------


def get_scheduler() -> Scheduler:
    """The scheduler of this thread and context (asyncio task), created on first use."""
    sched = current_scheduler()
    if sched is None:
        sched = Scheduler()
        set_current(sched)
    return sched


def run_sync(fut: FutureBase[T]) -> T:
    """Compute ``fut`` and return its value, or raise its error with the async call chain noted."""
    if fut._value is NOT_COMPUTED:
        run_future(fut)
    err = fut._error
    if err is not None:
        if isinstance(fut, AsyncTask):
            with_task_traceback(err, fut)
        note_async_chain(err)
        raise err
    return fut._value  # type: ignore[no-any-return]


def run_future(fut: FutureBase[Any]) -> None:
    """Compute ``fut`` synchronously: the entry from plain code into the scheduler."""
    # get_scheduler() and current_scheduler() inlined (keep in sync): once per f(x).
    sched = scheduler_var.get()
    if sched is None or sched._thread != get_ident():
        sched = Scheduler()
        set_current(sched)
    if not sched._running:
        sched.run(fut)
        return
    # A synchronous call inside a running task: it cannot share the outer round, so it splits
    # batches. Count it, tell instruments, and refuse it in strict mode.
    caller = sched.active_task
    sched._nested_runs += 1
    for inst in installed_instruments():
        inst.nested_run(sched, caller)
    run = run_of(sched)
    if strict_mode.get() or (run is not None and run.strict):
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
    inner.parent_run = run
    token = set_current(inner)
    try:
        inner.run(fut)
    finally:
        reset_current(token)
        sched._rounds += inner._rounds
        sched._batches += inner._batches
        sched._items += inner._items
        sched._tasks += inner._tasks
        sched._nested_runs += inner._nested_runs


install_entry(run_future)
