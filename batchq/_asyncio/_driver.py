"""batchq from asyncio: ``await f.asyncio(x)`` drives the one round loop from an event loop.

Each event loop has one *driver*: a scheduler and a runner task that steps
:meth:`Scheduler.advance`, the same loop a synchronous call runs. Where the synchronous driver
flushes inline, this one flushes in a worker thread, so a blocking fetch never stalls the loop;
where the synchronous driver would report a deadlock, this one first waits for the asyncio work
that batchq tasks wait on (``from_asyncio``).

Every ``.asyncio()`` call is its own run: its own read-your-writes memory and in-flight cached
calls (``Run.state``), its own errors and cancellation, and its result is delivered only once the
requests it made, writes nobody waited on included, have been flushed. Calls in flight at the same
moment share rounds, and so round trips; calls that start while a flush runs join the next round.
"""

from __future__ import annotations

import contextvars
import functools
import weakref
from _thread import get_ident
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from .._core._contexts import ContextFrame
from .._core._errors import AsyncTaskCancelledError, DeadlockError
from .._core._format import note_async_chain
from .._core._futures import NOT_COMPUTED, FutureBase
from .._core._graph import needed_elsewhere, reachable_tasks, wake
from .._core._instruments import Instrument, RunStats, set_installed, strict_mode
from .._core._instruments import installed_instruments as _installed
from .._core._loop import (
    DONE,
    FLUSH,
    Scheduler,
    note_close_errors,
    unyielded_error,
    with_task_traceback,
)
from .._core._runtime import Run, set_current
from .._core._task import AsyncTask, blocked_on
from ._work import AsyncioFuture, outcome, report, run_one, running_driver

if TYPE_CHECKING:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

__all__ = ["run_in_loop", "Driver", "drivers"]

T = TypeVar("T")


async def run_in_loop(
    make: Callable[[], FutureBase[T]], fn: Any = None, args: tuple[Any, ...] = ()
) -> T:
    """Compute the future ``make()`` returns on the running loop's driver, and return its value.

    ``make`` is called by the driver, in its context, so that what it requests joins the driver's
    round. ``fn``/``args`` name the call in stacks when ``make()`` is not itself a task.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    driver = drivers.get(loop)
    if driver is None:
        driver = drivers[loop] = Driver()
    call = _Call(make, fn, args, loop.create_future())
    driver.submit(call, loop)
    try:
        return await call.future  # type: ignore[no-any-return]
    finally:
        if not call.future.done():
            call.future.cancel()  # this coroutine was closed while it waited
        if call.future.cancelled():
            driver.abandon(call)


class _Call:
    """One ``.asyncio()`` call: how to make its future, and the asyncio future its caller awaits."""

    __slots__ = ("make", "fn", "args", "future", "instruments", "strict", "run", "watching")

    def __init__(
        self,
        make: Callable[[], FutureBase[Any]],
        fn: Any,
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
    ) -> None:
        self.make = make
        self.fn = fn
        self.args = args
        self.future = future
        # Instruments and strict mode are the caller's: they apply to the rounds its call is in.
        self.instruments = _installed()
        self.strict = strict_mode.get()
        self.run: Run | None = None
        # The asyncio work the driver last found this call waiting on (see Driver._stuck_run).
        self.watching: AsyncioFuture[Any] | None = None


def _work_in_flight(root: FutureBase[Any]) -> AsyncioFuture[Any] | None:
    """Asyncio work in flight that ``root`` waits on, directly or through its tasks; None if
    there is none (stopping at the first found)."""
    seen: set[int] = set()
    stack: list[FutureBase[Any]] = [root]
    while stack:
        fut = stack.pop()
        if fut._value is not NOT_COMPUTED or id(fut) in seen:
            continue
        seen.add(id(fut))
        if isinstance(fut, AsyncioFuture):
            return fut
        if isinstance(fut, AsyncTask):
            stack.extend(blocked_on(fut))
    return None


def _wait_for(fut: FutureBase[Any]) -> Generator[Any, Any, Any]:
    return (yield fut)


class Driver:
    """Drives the round loop for every batchq call awaited on one event loop.

    Everything here runs on the loop's thread, except ``Scheduler.flush_round``, which runs in a
    worker thread while the runner awaits it; meanwhile the loop only appends to ``incoming``,
    ``abandoned`` and ``finished``, which the runner takes in after each wait (``_take_in``).
    """

    def __init__(self) -> None:
        self.sched = Scheduler()
        self.sched.on_run_done = self._run_done
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = 0
        self.runner: asyncio.Task[None] | None = None
        self.wake: asyncio.Event | None = None
        self.incoming: list[_Call] = []
        self.calls: dict[Run, _Call] = {}  # started and not yet answered
        self.abandoned: list[_Call] = []
        self.finished: list[AsyncioFuture[Any]] = []  # asyncio work done, waiters to resume
        self.outstanding = 0  # asyncio work started and not finished
        # Calls not known to wait on asyncio work in flight: new ones, and those whose work
        # ended. _stuck_run looks at these only (each other call waits on work still running).
        self.unchecked: dict[_Call, None] = {}
        self.pool: ThreadPoolExecutor | None = None  # the flush thread, started on first use
        # Strong references to every asyncio task this driver creates: the loop keeps weak ones.
        self.tasks: set[asyncio.Task[Any]] = set()
        # Instruments told run_started, with the scheduler's totals then: each is told
        # run_finished as soon as no call in flight has it (not when the runner goes idle, which
        # under steady load is never).
        self.told: list[tuple[Instrument, RunStats]] = []
        self.tuned = False  # whether a call in flight brought instruments

    def keep(self, task: asyncio.Task[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _wake(self) -> None:
        if self.wake is not None:
            self.wake.set()

    def submit(self, call: _Call, loop: asyncio.AbstractEventLoop) -> None:
        self.incoming.append(call)
        if self.runner is not None:
            self._wake()
            return
        self._start_runner(loop)

    def _start_runner(self, loop: asyncio.AbstractEventLoop) -> None:
        import asyncio

        self.loop = loop
        self.thread = get_ident()
        self.wake = asyncio.Event()
        # A fresh context: batchq code never sees, or leaks into, the context of whichever caller
        # happened to start the runner.
        runner = contextvars.Context().run(loop.create_task, self._run())
        self.runner = runner
        self.keep(runner)
        # An interrupt (KeyboardInterrupt) propagates out of the loop and reaches the caller of
        # asyncio.run(); the runner task that carried it must not be reported as unretrieved.
        runner.add_done_callback(_retrieve)
        runner.add_done_callback(functools.partial(self._runner_ended, loop))

    def _runner_ended(self, loop: asyncio.AbstractEventLoop, runner: asyncio.Task[Any]) -> None:
        if self.runner is not runner:
            return  # _run cleaned up after itself (the usual end)
        # Cancelled before its first step (a shutdown handler cancelling every task), so _run's
        # cleanup never ran: without this, every later call on this loop would wait forever.
        self.runner = None
        self.wake = None
        self.loop = None
        self.incoming = [call for call in self.incoming if not call.future.done()]
        if self.incoming and not loop.is_closed():
            self._start_runner(loop)  # calls whose callers still wait

    def abandon(self, call: _Call) -> None:
        """The caller stopped waiting: close what only its call needed (done by the runner)."""
        if call.run is not None and self.runner is not None:
            self.abandoned.append(call)
            self._wake()

    # -- the runner -----------------------------------------------------------------------------

    def _follow_thread(self) -> None:
        """After each wait: the loop may now run in another thread (``run_until_complete`` from
        a new thread), and the scheduler must move with it, or task code would not find it
        current (``current_scheduler`` checks the thread) and would start a scheduler of its own.
        """
        ident = get_ident()
        if ident != self.sched._thread:
            self.thread = ident
            self.sched._thread = ident

    async def _run(self) -> None:
        sched = self.sched
        self._follow_thread()
        set_current(sched)
        running_driver.set(self)
        sched._running = True
        before = sched.stats()
        try:
            await self._rounds()
        except BaseException as e:
            self._abort_all(e)
            if not isinstance(e, Exception):
                raise
        finally:
            sched._running = False
            sched._runs.clear()
            sched._switch_frame(None)
            sched.active_task = None
            sched.set_instruments(())
            self.runner = None
            self.wake = None
            self.loop = None
            sched.last_run = sched.stats() - before
            told = self.told
            self.told = []
            self.tuned = False
            _tell_finished(sched, told)

    async def _rounds(self) -> None:
        """Iterate the scheduler's round loop; flush in a worker thread, wait on the loop."""
        import asyncio

        sched = self.sched
        self._take_in()
        joined = False
        while True:
            need = sched.advance()  # the one round loop, up to where this driver must act
            if need == DONE:
                return
            if sched._frame is not None:
                # The runner is about to wait: other code runs on the loop meanwhile, and must not
                # see the contexts (scoped overrides) of the task driven last. Paused here, on the
                # loop's thread, as a synchronous run pauses them before each flush.
                sched._switch_frame(None)
            if need == FLUSH:
                if not joined:
                    # Calls about to start (already scheduled on the loop) join this round.
                    joined = True
                    await asyncio.sleep(0)
                    self._follow_thread()
                    self._take_in()
                    if sched._ready:
                        # Drive them first; the loop asks to flush again, and (joined being
                        # True) that flush goes ahead.
                        continue
                joined = False
                await self._flush()
            elif self.finished or self.incoming or self.abandoned:
                assert self.wake is not None
                await self.wake.wait()
                self.wake.clear()
            elif self.outstanding:
                # Asyncio work is in flight, but a call may wait on none of it (a cycle beside a
                # request that streams forever): that call is stuck now, not when the work ends.
                stuck = self._stuck_run()
                if stuck is not None:
                    self._unstick(stuck)
                    call = self.calls.get(stuck)
                    if call is not None:
                        self.unchecked[call] = None  # told, not failed: it may be stuck again
                else:
                    assert self.wake is not None
                    await self.wake.wait()
                    self.wake.clear()
            else:
                self._unstick()
            self._follow_thread()
            self._take_in()

    def _take_in(self) -> None:
        """What the loop handed over while the runner waited."""
        if self.finished:
            self._resume_bridged()
        if self.abandoned:
            self._drop_abandoned()
        if self.incoming:
            self._start_incoming()

    def _start_incoming(self) -> None:
        calls = self.incoming
        self.incoming = []
        sched = self.sched
        # No task runs now: the frame left by the last one driven (and with it that task's run)
        # must not be current while make() runs, or what it requests joins the wrong run.
        sched._switch_frame(None)
        for call in calls:
            if call.future.done():
                continue  # its caller was cancelled before it started
            run = Run(strict=call.strict)
            sched.ambient_run = run  # what make() requests belongs to this call's run
            try:
                fut = call.make()
            except Exception as e:
                call.future.set_exception(e)
                continue
            finally:
                sched.ambient_run = None
            if isinstance(fut, AsyncTask) and fut._sched is None:
                root: AsyncTask[Any] = fut
            else:
                root = AsyncTask(_wait_for(fut), call.fn, call.args)
            # Every task of the call inherits this frame, and with it the call's run.
            root._contexts = ContextFrame(None, None, run)
            run.root = root
            call.run = run
            self.calls[run] = call
            self.unchecked[call] = None
            sched.add_run(run)
            if call.instruments:
                self.tuned = True
        if self.tuned:
            self._retune()

    def _retune(self) -> None:
        """Install the union of the instruments of the calls in flight (they share rounds).

        Strict mode is not installed here: it is each call's own (``Run.strict``).
        """
        found: dict[int, Instrument] = {}
        for call in self.calls.values():
            for inst in call.instruments:
                found.setdefault(id(inst), inst)
        insts = tuple(found.values())
        self.tuned = bool(insts)
        # Installed in the runner's context too: nested runs started by task code see them.
        set_installed(insts)
        sched = self.sched
        kept = [(t, before) for t, before in self.told if any(t is i for i in insts)]
        if len(kept) != len(self.told):
            gone = [(t, before) for t, before in self.told if not any(t is i for i in insts)]
            self.told = kept
            _tell_finished(sched, gone)
        for inst in insts:
            if not any(inst is t for t, _ in self.told):
                self.told.append((inst, sched.stats()))
                inst.run_started(sched)
        sched.set_instruments(insts)

    def _forget(self, run: Run) -> _Call | None:
        """Drop ``run``'s call from those in flight (answered, failed or abandoned)."""
        call = self.calls.pop(run, None)
        if call is not None:
            self.unchecked.pop(call, None)
            work = call.watching
            if work is not None:
                # Not kept by work that goes on (shared with a call still in flight) until it ends.
                call.watching = None
                if work.watchers is not None:
                    work.watchers.pop(call, None)
        return call

    def _run_done(self, run: Run) -> None:
        """The scheduler ended ``run``: answer its caller."""
        call = self._forget(run)
        if call is not None and run.forgotten and not call.future.done():
            call.future.set_exception(unyielded_error(run.forgotten))
        elif call is not None and run.root is not None:
            _deliver(call, run.root)
        run.end()
        if self.tuned:
            self._retune()

    async def _flush(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        pool = self.pool
        if pool is None:
            # The driver's own thread, not the loop's default executor: threads of that one may
            # all be blocked waiting for a batchq result (asyncio.to_thread code calling back
            # into the loop), and then no flush could ever run. One flush runs at a time.
            from concurrent.futures import ThreadPoolExecutor

            pool = self.pool = ThreadPoolExecutor(1, thread_name_prefix="batchq-flush")
        work = loop.run_in_executor(pool, contextvars.copy_context().run, self.sched.flush_round)
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            # A thread cannot be stopped: let the flush end before the runner closes everything.
            await asyncio.wait([work])
            if not work.cancelled():
                work.exception()  # retrieved: the cancellation is what propagates
            raise

    def _stuck_run(self) -> Run | None:
        """A call in flight that waits on no asyncio work in flight, when nothing can run.

        A call found waiting on some work is looked at again only when that work ends (it
        cannot move before), so under steady load a check costs what changed since the last.
        """
        unchecked = self.unchecked
        while unchecked:
            call = unchecked.popitem()[0]
            run = call.run
            if run is None or self.calls.get(run) is not call:
                continue  # answered or dropped meanwhile
            root = run.root
            if root is None or root._value is not NOT_COMPUTED:
                continue
            work = _work_in_flight(root)
            if work is None:
                return run
            old = call.watching
            if old is not None and old is not work and old.watchers is not None:
                old.watchers.pop(call, None)
            if work.watchers is None:
                work.watchers = {}
            work.watchers[call] = None
            call.watching = work
        return None

    def _unstick(self, run: Run | None = None) -> None:
        """Nothing can run and ``run`` (by default the first unfinished one) waits on nothing
        that will complete: tell it, or fail it."""
        sched = self.sched
        if run is None:
            run = next(
                r for r in sched._runs if r.root is not None and r.root._value is NOT_COMPUTED
            )
        root = run.root
        assert root is not None
        try:
            sched.unstick(root)
        except DeadlockError as e:
            sched.end_run(run)
            call = self._forget(run)
            self._close(reachable_tasks([root], []), e)
            if call is not None and not call.future.done():
                call.future.set_exception(e)
            if self.tuned:
                self._retune()

    # -- asyncio work started from batchq code --------------------------------------------------

    def start_bridged(self, start: Callable[[], Any]) -> AsyncioFuture[Any]:
        assert self.loop is not None
        fut: AsyncioFuture[Any] = AsyncioFuture(start)
        # A fresh context here too: the coroutine is asyncio code, not part of a batchq task.
        task = contextvars.Context().run(self.loop.create_task, run_one(start))
        fut._task = task
        self.outstanding += 1
        self.keep(task)
        task.add_done_callback(functools.partial(self._bridged_done, fut))
        return fut

    def _bridged_done(self, fut: AsyncioFuture[Any], task: asyncio.Task[Any]) -> None:
        self.outstanding -= 1
        fut._task = None
        if fut.watchers is not None:
            # Only the calls still in flight: a call answered or dropped meanwhile (cancelled
            # while it waited on this work) would stay in unchecked, with its run and tasks,
            # until the driver next looks for a stuck call (perhaps never).
            calls = self.calls
            watchers: dict[_Call, None] = fut.watchers
            fut.watchers = None
            for call in watchers:
                call.watching = None
                if call.run is not None and calls.get(call.run) is call:
                    self.unchecked[call] = None
        ok, value = outcome(task, fut._start)
        if ok:
            fut._value = value
        else:
            fut._value = None
            fut._error = value
        if self.runner is not None:
            if fut._waiters is not None:
                self.finished.append(fut)
                self._wake()
            elif not self.outstanding:
                # Nobody waited on it, but the runner may be waiting for outside work to end
                # before it diagnoses a stuck run: there is none left now.
                self._wake()

    def _resume_bridged(self) -> None:
        finished = self.finished
        self.finished = []
        for fut in finished:
            wake(fut)

    # -- cancellation ---------------------------------------------------------------------------

    def _drop_abandoned(self) -> None:
        calls = self.abandoned
        self.abandoned = []
        sched = self.sched
        roots: list[FutureBase[Any]] = []
        for call in calls:
            run = call.run
            if run is not None and self._forget(run) is not None:
                sched.end_run(run)
                run.end()
                if run.root is not None:
                    roots.append(run.root)
        if not roots:
            return
        # Tasks shared with a call still in flight stay; the rest only the cancelled calls needed.
        # Found from the cancelled calls' own tasks and their waiters: a cancellation costs what
        # the cancelled calls hold, not a walk over every call in flight.
        candidates = reachable_tasks(roots, [])
        live = [r.root for r in self.calls if r.root is not None]
        keep = needed_elsewhere(candidates, live)
        doomed = [t for t in candidates if id(t) not in keep]
        self._close(
            doomed,
            AsyncTaskCancelledError(
                "the asyncio caller stopped waiting (cancelled) before this task finished"
            ),
        )
        if self.tuned:
            self._retune()

    def _close(self, tasks: list[AsyncTask[Any]], error: BaseException) -> None:
        orphans: list[FutureBase[Any]] = []
        for e in self.sched.close_tasks(tasks, error, orphans):
            report(e, "closing a cancelled batchq task raised")
        for leaf in orphans:
            if isinstance(leaf, AsyncioFuture) and leaf._task is not None:
                leaf._task.cancel()  # nobody else needs this asyncio work

    def _abort_all(self, error: BaseException) -> None:
        """The runner itself failed or was cancelled: close everything, tell every caller."""
        sched = self.sched
        roots = [r.root for r in self.calls if r.root is not None]
        calls = [*self.calls.values(), *self.incoming]
        self.calls.clear()
        self.unchecked.clear()
        self.incoming.clear()
        self.abandoned.clear()
        self.finished.clear()
        sched._runs.clear()
        note_close_errors(error, sched.abort(roots))
        for task in list(self.tasks):
            if task is not self.runner:
                task.cancel()
        delivered = False
        for call in calls:
            if call.future.done():
                continue
            if isinstance(error, Exception):
                call.future.set_exception(error)
                delivered = True
            else:
                call.future.cancel()
        if isinstance(error, Exception) and not delivered:
            report(error, "the batchq asyncio driver failed")


def _deliver(call: _Call, root: FutureBase[Any]) -> None:
    future = call.future
    if future.done():
        return
    err = root._error
    if err is None:
        future.set_result(root._value)
        return
    if isinstance(root, AsyncTask):
        with_task_traceback(err, root)
    note_async_chain(err)
    try:
        future.set_exception(err)
    except TypeError:  # StopIteration cannot travel through an asyncio future
        name = root.call_str() if isinstance(root, AsyncTask) else repr(root)
        wrapped = RuntimeError(f"{name} failed with {err!r}")
        wrapped.__cause__ = err
        future.set_exception(wrapped)


def _tell_finished(sched: Scheduler, told: list[tuple[Instrument, RunStats]]) -> None:
    now = sched.stats()
    for inst, before in told:
        try:
            inst.run_finished(sched, now - before)
        except Exception as e:
            report(e, f"{inst!r}.run_finished() raised")


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


# One driver per event loop, dropped with its loop.
drivers: weakref.WeakKeyDictionary[Any, Driver] = weakref.WeakKeyDictionary()
