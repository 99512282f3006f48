"""asyncio both ways: await batchq functions from asyncio code, yield asyncio work in batchq code.

``await f.asyncio(x)`` hands the call to its event loop's *driver*: one scheduler per loop that runs
rounds for every call in flight. A round runs the runnable tasks on the loop's thread (task code is
pure Python and does no I/O), then flushes the round's batches in a worker thread, so a blocking
fetch never stalls the loop. Calls that start while a flush runs join the next round; calls pending
at the same moment share rounds, and so round trips.

:func:`from_asyncio` goes the other way: it makes an awaitable something batchq code can ``yield``.
Under a driver the awaitable runs at once as an asyncio task on the driver's loop; the tasks waiting
on it resume in the round after it finishes, while other rounds carry on meanwhile. In a plain
synchronous run, the awaitables requested in a round run together when the round flushes, on a
private event loop.

Importing this module does not import asyncio, so ``import batchq`` stays cheap.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import weakref
from _thread import get_ident
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from ._batch import BatchBase, BatchItemBase
from ._debug_format import fn_name, format_args, note_async_chain
from ._errors import AsyncTaskCancelledError, BatchCancelledError, BatchingError, DeadlockError
from ._futures import NOT_COMPUTED, FutureBase
from ._scheduler import (
    Instrument,
    RunStats,
    Scheduler,
    _current,
    _instruments,
    _leaves,
    _push_elsewhere,
    _reachable_tasks,
    _strict,
    _task_hooks,
    _with_task_traceback,
    note_close_errors,
    run_sync,
    waiters_of,
)
from ._task import AsyncTask

if TYPE_CHECKING:
    import asyncio

__all__ = ["from_asyncio", "AsyncioFunction", "AsyncioFuture", "AsyncioItem", "run_in_loop"]

P = ParamSpec("P")
T = TypeVar("T")

# -- batchq from asyncio: the per-loop driver ------------------------------------------------------


async def run_in_loop(
    make: Callable[[], FutureBase[T]], fn: Any = None, args: tuple[Any, ...] = ()
) -> T:
    """Compute the future ``make()`` returns on the running loop's driver, and return its value.

    ``make`` is called by the driver, in its context, so that what it requests joins the driver's
    round. ``fn``/``args`` name the call in stacks when ``make()`` is not itself a task.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    driver = _drivers.get(loop)
    if driver is None:
        driver = _drivers[loop] = _Driver()
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

    __slots__ = ("make", "fn", "args", "future", "instruments", "strict", "root")

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
        self.instruments = _instruments.get()
        self.strict = _strict.get()
        self.root: AsyncTask[Any] | None = None


def _wait_for(fut: FutureBase[Any]) -> Generator[Any, Any, Any]:
    return (yield fut)


class _Driver:
    """Runs rounds for every batchq call awaited on one event loop.

    Everything here runs on the loop's thread, except ``Scheduler._flush_round``, which runs in a
    worker thread while the runner awaits it; meanwhile the loop only appends to ``incoming``,
    ``abandoned`` and ``finished``, which the runner drains between steps.
    """

    def __init__(self) -> None:
        self.sched = Scheduler()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = 0
        self.runner: asyncio.Task[None] | None = None
        self.wake: asyncio.Event | None = None
        self.incoming: list[_Call] = []
        self.calls: dict[AsyncTask[Any], _Call] = {}  # started, by root task
        self.abandoned: list[_Call] = []
        self.finished: list[AsyncioFuture[Any]] = []  # asyncio work done, waiters to resume
        self.outstanding = 0  # asyncio work started and not finished
        # Strong references to every asyncio task this driver creates: the loop keeps weak ones.
        self.tasks: set[asyncio.Task[Any]] = set()
        self.insts: tuple[Instrument, ...] = ()
        self.hooks: tuple[Instrument, ...] = ()
        self.told: list[Instrument] = []  # instruments told run_started by this runner
        self.tuned = False  # whether a call in flight brought instruments or strict mode

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
        import asyncio

        self.loop = loop
        self.thread = get_ident()
        self.wake = asyncio.Event()
        # A fresh context: batchq code never sees, or leaks into, the context of whichever caller
        # happened to start the runner.
        runner = contextvars.Context().run(loop.create_task, self._run())
        self.runner = runner
        self.keep(runner)

    def abandon(self, call: _Call) -> None:
        """The caller stopped waiting: close what only its call needed (done by the runner)."""
        if call.root is not None and self.runner is not None:
            self.abandoned.append(call)
            self._wake()

    # -- the runner -----------------------------------------------------------------------------

    async def _run(self) -> None:
        sched = self.sched
        _current.set(sched)
        _running_driver.set(self)
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
            sched._switch_frame(None)
            sched.active_task = None
            self.runner = None
            self.wake = None
            self.loop = None
            stats = sched.stats()
            sched.last_run = last = RunStats(
                stats.rounds - before.rounds,
                stats.batches - before.batches,
                stats.items - before.items,
                stats.tasks - before.tasks,
                stats.nested_runs - before.nested_runs,
            )
            told = self.told
            self.told = []
            self.insts = self.hooks = ()
            self.tuned = False
            for inst in told:
                try:
                    inst.run_finished(sched, last)
                except Exception as e:
                    _report(e, f"{inst!r}.run_finished() raised")

    async def _rounds(self) -> None:
        import asyncio

        sched = self.sched
        joined = False
        while True:
            if self.finished:
                self._resume_bridged()
            if self.abandoned:
                self._drop_abandoned()
            if self.incoming:
                self._start_incoming()
            if sched._ready:
                sched._drive(self.hooks)
                # Pause every AsyncContext: other asyncio code runs until the next step.
                sched._switch_frame(None)
                self._settle()
            elif sched._pending:
                if not joined:
                    # Calls about to start (already scheduled on the loop) join this round.
                    joined = True
                    await asyncio.sleep(0)
                    continue
                joined = False
                await self._flush()
            elif self.calls:
                if self.outstanding or self.finished:
                    assert self.wake is not None
                    await self.wake.wait()
                    self.wake.clear()
                else:
                    self._unstick()
            else:
                return

    def _start_incoming(self) -> None:
        calls = self.incoming
        self.incoming = []
        sched = self.sched
        for call in calls:
            if call.future.done():
                continue  # its caller was cancelled before it started
            try:
                fut = call.make()
            except Exception as e:
                call.future.set_exception(e)
                continue
            if isinstance(fut, AsyncTask) and fut._sched is None:
                root = fut
            else:
                root = AsyncTask(_wait_for(fut), call.fn, call.args)
            call.root = root
            self.calls[root] = call
            sched._start_root(root)
            if call.instruments or call.strict:
                self.tuned = True
        if self.tuned:
            self._retune()

    def _retune(self) -> None:
        """Install the union of the instruments, and strict mode, of the calls in flight."""
        found: dict[int, Instrument] = {}
        strict = False
        for call in self.calls.values():
            for inst in call.instruments:
                found.setdefault(id(inst), inst)
            strict = strict or call.strict
        insts = tuple(found.values())
        self.tuned = bool(insts) or strict
        _instruments.set(insts)
        _strict.set(strict)
        for inst in insts:
            if not any(inst is t for t in self.told):
                self.told.append(inst)
                inst.run_started(self.sched)
        self.insts = insts
        self.hooks = _task_hooks(insts) if insts else ()

    def _settle(self) -> None:
        """Hand every finished root's value or error to its caller."""
        done = [root for root in self.calls if root._value is not NOT_COMPUTED]
        for root in done:
            _deliver(self.calls.pop(root), root)
        if done and self.tuned:
            self._retune()

    async def _flush(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            None, contextvars.copy_context().run, self.sched._flush_round, self.insts
        )
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            # A thread cannot be stopped: let the flush end before the runner closes everything.
            await asyncio.wait([work])
            if not work.cancelled():
                work.exception()  # retrieved: the cancellation is what propagates
            raise

    def _unstick(self) -> None:
        root = next(iter(self.calls))
        try:
            self.sched._unstick(root)
        except DeadlockError as e:
            call = self.calls.pop(root)
            self._close(_reachable_tasks(root, []))
            if not call.future.done():
                call.future.set_exception(e)

    # -- asyncio work started from batchq code --------------------------------------------------

    def start_bridged(self, start: Callable[[], Any]) -> AsyncioFuture[Any]:
        assert self.loop is not None
        fut: AsyncioFuture[Any] = AsyncioFuture(start)
        # A fresh context here too: the coroutine is asyncio code, not part of a batchq task.
        task = contextvars.Context().run(self.loop.create_task, _run_one(start))
        fut._task = task
        self.outstanding += 1
        self.keep(task)
        task.add_done_callback(functools.partial(self._bridged_done, fut))
        return fut

    def _bridged_done(self, fut: AsyncioFuture[Any], task: asyncio.Task[Any]) -> None:
        self.outstanding -= 1
        fut._task = None
        ok, value = _outcome(task, fut)
        if ok:
            fut._value = value
        else:
            fut._value = None
            fut._error = value
        if fut._waiters is not None and self.runner is not None:
            self.finished.append(fut)
            self._wake()

    def _resume_bridged(self) -> None:
        finished = self.finished
        self.finished = []
        for fut in finished:
            for w in waiters_of(fut):
                if w._npending:
                    w._npending -= 1
                else:
                    _push_elsewhere(w)
            fut._waiters = None

    # -- cancellation ---------------------------------------------------------------------------

    def _drop_abandoned(self) -> None:
        calls = self.abandoned
        self.abandoned = []
        roots = [c.root for c in calls if c.root is not None and c.root in self.calls]
        for root in roots:
            del self.calls[root]
        if not roots:
            return
        # Tasks shared with a call still in flight stay; the rest only the cancelled calls needed.
        keep = {id(t) for r in self.calls for t in _reachable_tasks(r, [])}
        doomed: dict[int, AsyncTask[Any]] = {}
        for root in roots:
            for t in _reachable_tasks(root, []):
                if id(t) not in keep:
                    doomed.setdefault(id(t), t)
        self._close(list(doomed.values()))
        if self.tuned:
            self._retune()

    def _close(self, tasks: list[AsyncTask[Any]]) -> None:
        """Close the generators of ``tasks`` (parents first in the list; closed children first)."""
        sched = self.sched
        cancelled = AsyncTaskCancelledError(
            "the asyncio caller stopped waiting (cancelled) before this task finished"
        )
        for task in reversed(tasks):
            for leaf in _leaves(task._dep):
                ws = [w for w in waiters_of(leaf) if w is not task]
                leaf._waiters = None if not ws else ws[0] if len(ws) == 1 else ws
                if not ws and isinstance(leaf, AsyncioFuture) and leaf._task is not None:
                    leaf._task.cancel()  # nobody else needs this asyncio work
            gen = task._gen
            task._gen = None
            task._dep = None
            task._npending = 0
            task._waiters = None
            if gen is not None:
                # Its `finally` blocks and `with` exits run with its contexts active, as in a step.
                sched._switch_frame(task._contexts)
                sched.active_task = task
                try:
                    gen.close()
                except Exception as e:
                    _report(e, f"closing {task.call_str()} raised")
                finally:
                    sched.active_task = None
            if task._value is NOT_COMPUTED:
                task._value = None
                task._error = cancelled
        sched._switch_frame(None)

    def _abort_all(self, error: BaseException) -> None:
        """The runner itself failed or was cancelled: close everything, tell every caller."""
        sched = self.sched
        roots = list(self.calls)
        calls = [*self.calls.values(), *self.incoming]
        self.calls.clear()
        self.incoming.clear()
        self.abandoned.clear()
        self.finished.clear()
        failed: list[BaseException] = []
        for root in roots:
            failed += sched._abort(root)
        note_close_errors(error, failed)
        for batch in [*sched._pending, *sched._active.values()]:
            batch.cancel()
        sched._pending = {}
        sched._active.clear()
        sched._ready.clear()
        sched._switch_frame(None)
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
            _report(error, "the batchq asyncio driver failed")


def _deliver(call: _Call, root: AsyncTask[Any]) -> None:
    future = call.future
    if future.done():
        return
    err = root._error
    if err is None:
        future.set_result(root._value)
        return
    _with_task_traceback(err, root)
    note_async_chain(err)
    try:
        future.set_exception(err)
    except TypeError:  # StopIteration cannot travel through an asyncio future
        wrapped = RuntimeError(f"{root.call_str()} failed with {err!r}")
        wrapped.__cause__ = err
        future.set_exception(wrapped)


def _report(error: BaseException, message: str) -> None:
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    loop.call_exception_handler({"message": message, "exception": error})


_drivers: weakref.WeakKeyDictionary[Any, _Driver] = weakref.WeakKeyDictionary()
# The driver whose runner owns the current context (set in runner contexts only).
_running_driver: contextvars.ContextVar[_Driver | None] = contextvars.ContextVar(
    "batchq_asyncio_driver", default=None
)


# -- asyncio from batchq: from_asyncio -------------------------------------------------------------


class AsyncioFuture(FutureBase[T]):
    """asyncio work running on a driver's loop; the driver resumes its waiters when it ends."""

    __slots__ = ("_start", "_task")

    def __init__(self, start: Callable[[], Any]) -> None:
        super().__init__()
        self._start = start
        self._task: asyncio.Task[Any] | None = None

    def _compute(self) -> None:
        """Nothing to do here: the driver sets the outcome when the asyncio task ends."""

    def value(self) -> T:
        if self._value is NOT_COMPUTED:
            msg = (
                f"{_describe(self._start)} is asyncio work still running on the event loop; "
                "waiting for it synchronously would block that loop for good. Yield it from an "
                "async function (`value = yield ...`) instead of calling .value()."
            )
            raise DeadlockError(msg)
        return super().value()

    __call__ = value

    def __repr__(self) -> str:
        state = "running" if self._value is NOT_COMPUTED else "done"
        return f"<AsyncioFuture {_describe(self._start)} {state}>"


class AsyncioItem(BatchItemBase[T]):
    """An awaitable waiting for its round's flush (in a synchronous run)."""

    __slots__ = ("_start",)

    def __init__(self, batch: AsyncioBatch, start: Callable[[], Any]) -> None:
        super().__init__(batch)
        self._start = start

    def __repr__(self) -> str:
        state = "pending" if self._value is NOT_COMPUTED else "done"
        return f"<AsyncioItem {_describe(self._start)} {state}>"


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
            if isinstance(start, functools.partial) and start.func is _given:
                aw = start.args[0]
                if inspect.iscoroutine(aw) and inspect.getcoroutinestate(aw) == "CORO_CREATED":
                    aw.close()  # never started: close it, or Python warns it was never awaited


_ASYNCIO: Any = object()  # the batch source of every AsyncioItem


def _given(awaitable: Any) -> Any:
    return awaitable


def _request(start: Callable[[], Any], *, may_bridge: bool = True) -> FutureBase[Any]:
    """Run ``start()``'s awaitable on the driver's loop now, or in this round's flush."""
    sched = _current.get()
    if may_bridge:
        driver = _running_driver.get()
        if (
            driver is not None
            and driver.sched is sched
            and driver.runner is not None
            and get_ident() == driver.thread
        ):
            return driver.start_bridged(start)
    if sched is None:
        sched = Scheduler()
        _current.set(sched)
    batch = sched._active.get(_ASYNCIO)
    if batch is None:
        batch = AsyncioBatch(sched)
        sched.set_active_batch(_ASYNCIO, batch)
    return AsyncioItem(batch, start)  # type: ignore[arg-type]


async def _run_one(start: Callable[[], Any]) -> Any:
    awaitable = start()
    if not inspect.isawaitable(awaitable):
        msg = (
            f"{_describe(start)} returned {awaitable!r}, which is not awaitable; from_asyncio() "
            "wraps an async function (async def) or an awaitable such as a coroutine"
        )
        raise TypeError(msg)
    return await awaitable


def _outcome(task: asyncio.Task[Any], start: Callable[[], Any]) -> tuple[bool, Any]:
    """(True, value) or (False, the error a waiting batchq task receives)."""
    if task.cancelled():
        return False, BatchCancelledError(f"{_describe(start)} was cancelled before it finished")
    err = task.exception()
    if err is None:
        return True, task.result()
    if isinstance(err, Exception):
        return False, err
    wrapped = BatchingError(
        f"{_describe(start)} raised {err!r}, which is not an Exception; a batchq task can only "
        "receive an Exception"
    )
    wrapped.__cause__ = err
    return False, wrapped


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
    tasks = [contextvars.Context().run(loop.create_task, _run_one(s)) for s in starts]
    if tasks:
        await asyncio.wait(tasks)
    return [_outcome(t, s) for t, s in zip(tasks, starts, strict=True)]


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


def _describe(start: Callable[[], Any]) -> str:
    if isinstance(start, functools.partial):
        if start.func is _given:
            aw = start.args[0]
            name = getattr(aw, "__qualname__", None)
            return f"from_asyncio({name}(...))" if name else f"from_asyncio({aw!r})"
        return f"{fn_name(start.func)}({format_args(start.args, start.keywords)})"
    return fn_name(start)


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
        return _request(functools.partial(_given, target))
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
