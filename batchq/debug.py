"""See what batchq is doing: async stacks, instruments, a trace recorder, strict mode.

- :func:`format_async_stack`: the chain of async calls waiting on the running task.
- :class:`Instrument` and :func:`instrument`: objects told about runs, rounds, flushes and tasks;
  with none installed the scheduler skips them at no cost.
- :class:`TraceRecorder`: an instrument that writes a run as Chrome trace-event JSON (open it in
  https://ui.perfetto.dev or chrome://tracing): one row per source, one slice per flush.
- :func:`strict` / :func:`set_strict`: a synchronous call of a batchq function inside a running
  task (which splits batches) raises :class:`batchq.SyncCallInAsyncError` instead of being counted.
- :func:`warn_unyielded`: a task made by ``f.asynq(...)`` and dropped without being yielded (a
  forgotten ``yield``) warns, naming the call and where it was made; in strict mode it fails the
  run. On by default under pytest, in ``python -X dev`` and with ``BATCHQ_DEBUG=1``.

An error that escapes a run already carries, as a note, the chain of async calls it went through.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import Token
from dataclasses import asdict
from typing import Any

from ._core._batch import BatchBase, BatchItemBase
from ._core._graph import waiters_of
from ._core._instruments import Instrument as Instrument
from ._core._instruments import RunStats, instruments
from ._core._instruments import strict_mode as _strict
from ._core._loop import Scheduler
from ._core._runtime import get_active_task
from ._core._task import AsyncTask
from ._decorators import set_checked_tasks

__all__ = [
    "format_async_stack",
    "Instrument",
    "instrument",
    "TraceRecorder",
    "strict",
    "set_strict",
    "reset_strict",
    "warn_unyielded",
]


# -- async stacks ---------------------------------------------------------------------------------


def format_async_stack(task: AsyncTask[Any] | None = None) -> str:
    """The async calls waiting on ``task`` (default: the running task), outermost first.

    Each line is a call with its arguments and where its generator is (the running line for the
    task itself, the waiting ``yield`` for its callers). Where several tasks wait on one, the
    first is followed and the others counted.
    """
    if task is None:
        task = get_active_task()
        if task is None:
            return "batchq async stack: no batchq task is running"
    elif not isinstance(task, AsyncTask):
        msg = (
            f"format_async_stack() takes an AsyncTask (or nothing, for the running task), "
            f"got {task!r} of type {type(task).__name__}"
        )
        raise TypeError(msg)
    chain: list[tuple[AsyncTask[Any], int, bool]] = []
    seen: set[int] = set()
    current: AsyncTask[Any] | None = task
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        waiters = waiters_of(current)
        if waiters:
            chain.append((current, len(waiters) - 1, False))
            current = waiters[0]
            continue
        # The outermost task of a nested run: continue with the task that called it synchronously.
        sched = current._sched
        caller = sched.caller if sched is not None else None
        chain.append((current, 0, caller is not None))
        current = caller
    chain.reverse()
    lines = ["batchq async stack (outermost first):"]
    for depth, (t, others, called_sync) in enumerate(chain):
        also = f"  [+{others} more waiting]" if others > 0 else ""
        how = "  (called synchronously: a nested run)" if called_sync else ""
        lines.append(f"  {'  ' * depth}{t.call_str()}{_where(t)}{also}{how}")
    return "\n".join(lines)


def _where(task: AsyncTask[Any]) -> str:
    frame = getattr(task._gen, "gi_frame", None)
    if frame is None:
        return ""
    return f"  at {frame.f_code.co_filename}:{frame.f_lineno}"


# -- instruments ----------------------------------------------------------------------------------


def instrument(*objs: Instrument) -> instruments:
    """Install ``objs`` for every run started inside ``with instrument(...):`` (this context).

    For asyncio callers, the instruments of each ``.asyncio()`` call apply to the rounds it takes
    part in.
    """
    for obj in objs:
        if not isinstance(obj, Instrument):
            msg = (
                f"instrument() takes batchq.debug.Instrument instances, got {obj!r} of type "
                f"{type(obj).__name__}; subclass Instrument and override the hooks you need"
            )
            raise TypeError(msg)
    return instruments(*objs)


# -- strict mode ----------------------------------------------------------------------------------


def set_strict(enabled: bool) -> Token[bool]:
    """Turn strict mode on or off in this context; returns a token for :func:`reset_strict`."""
    if not isinstance(enabled, bool):
        msg = f"set_strict() takes True or False, got {enabled!r} of type {type(enabled).__name__}"
        raise TypeError(msg)
    return _strict.set(enabled)


def reset_strict(token: Token[bool]) -> None:
    """Restore strict mode as it was before the :func:`set_strict` call that gave ``token``."""
    _strict.reset(token)


@contextmanager
def strict(enabled: bool = True) -> Iterator[None]:
    """Strict mode inside the ``with`` block: a sync call inside a running task raises."""
    token = set_strict(enabled)
    try:
        yield
    finally:
        _strict.reset(token)


def warn_unyielded(enabled: bool = True) -> bool:
    """Report tasks made by ``f.asynq(...)`` that are dropped without being yielded or run.

    Each such task warns (``batchq.UnyieldedTaskWarning``, naming the call and the line that made
    it); in strict mode the run that made it also fails with ``batchq.UnyieldedTaskError``.
    It costs about 85 ns per task, so it is off in production unless asked for, and on under
    pytest (batchq's plugin), in ``python -X dev`` and with ``BATCHQ_DEBUG=1``. Process-wide;
    returns the previous setting.
    """
    if not isinstance(enabled, bool):
        msg = (
            f"warn_unyielded() takes True or False, got {enabled!r} of type "
            f"{type(enabled).__name__}"
        )
        raise TypeError(msg)
    return set_checked_tasks(enabled)


# -- the trace recorder ---------------------------------------------------------------------------

_PID = 1
_SCHEDULER_TID = 0


class TraceRecorder(Instrument):
    """Records runs as Chrome trace-event JSON: ``with instrument(rec): ...`` then ``rec.write()``.

    Row 0 ("scheduler") holds a slice per run and per round (the flush phase of the round); every
    source (``batch.name()``) gets its own row with one slice per flush, whose ``args`` give the
    number of keys (items) and the round. With ``tasks=True``, every task is also recorded as an
    async slice from its first step to its end (this costs a hook call per task).

    One recorder should watch one thread or event loop at a time: slices from concurrent runs on
    one row would overlap.
    """

    def __new__(cls, *, tasks: bool = False) -> TraceRecorder:
        # Only the task-recording subclass overrides the per-task hooks, so that a recorder that
        # does not record tasks costs nothing per task.
        if tasks and cls is TraceRecorder:
            cls = _TaskTraceRecorder
        return super().__new__(cls)

    def __init__(self, *, tasks: bool = False) -> None:
        self.records_tasks = tasks
        self._origin = time.perf_counter()
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []
        self._tids: dict[str, int] = {}
        # Scheduler id -> its open runs, innermost last: [start time, rounds of that run so far].
        self._runs: dict[int, list[list[float]]] = {}
        # (scheduler id, the scheduler's round index) -> (start, the round's number in its run).
        self._rounds: dict[tuple[int, int], tuple[float, int]] = {}
        # Thread -> number of the round it is flushing (flushes run in the thread of their round).
        self._round: dict[int, int] = {}

    def _now(self) -> float:
        return (time.perf_counter() - self._origin) * 1e6

    def _tid(self, source: str) -> int:
        tid = self._tids.get(source)
        if tid is None:
            tid = self._tids[source] = len(self._tids) + 1
        return tid

    def _slice(
        self, name: str, cat: str, tid: int, start: float, end: float, args: dict[str, Any]
    ) -> None:
        self._events.append(
            {
                "name": name,
                "cat": cat,
                "ph": "X",
                "ts": start,
                "dur": max(0.0, end - start),
                "pid": _PID,
                "tid": tid,
                "args": args,
            }
        )

    # -- hooks ----------------------------------------------------------------------------------

    def run_started(self, scheduler: Scheduler) -> None:
        with self._lock:
            self._runs.setdefault(id(scheduler), []).append([self._now(), 0])

    def run_finished(self, scheduler: Scheduler, stats: RunStats) -> None:
        with self._lock:
            starts = self._runs.get(id(scheduler))
            if not starts:
                return
            start = starts.pop()[0]
            if not starts:
                del self._runs[id(scheduler)]
            self._slice("run", "run", _SCHEDULER_TID, start, self._now(), asdict(stats))

    def round_started(self, scheduler: Scheduler, round_index: int) -> None:
        # The scheduler's index counts every round it ever ran, nested runs' included; a trace
        # reads better with each run's rounds numbered 1, 2, ... as round assertions do.
        with self._lock:
            runs = self._runs.get(id(scheduler))
            if runs:
                runs[-1][1] += 1
                number = int(runs[-1][1])
            else:  # a round outside any run this recorder saw start
                number = round_index + 1
            self._rounds[(id(scheduler), round_index)] = (self._now(), number)
            self._round[threading.get_ident()] = number

    def round_finished(self, scheduler: Scheduler, round_index: int) -> None:
        with self._lock:
            started = self._rounds.pop((id(scheduler), round_index), None)
            self._round.pop(threading.get_ident(), None)
            if started is not None:
                start, number = started
                self._slice(
                    f"round {number}",
                    "round",
                    _SCHEDULER_TID,
                    start,
                    self._now(),
                    {"round": number},
                )

    def batch_flushed(
        self, batch: BatchBase, items: Sequence[BatchItemBase[Any]], seconds: float
    ) -> None:
        end = self._now()
        source = batch.name()
        with self._lock:
            round_index = self._round.get(threading.get_ident())
            args: dict[str, Any] = {"keys": len(items)}
            if round_index is not None:
                args["round"] = round_index
            if batch._error is not None:
                args["error"] = repr(batch._error)
            self._slice(source, "flush", self._tid(source), end - seconds * 1e6, end, args)

    # -- output ---------------------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """The trace events recorded so far, metadata (row names) first."""
        with self._lock:
            meta: list[dict[str, Any]] = [
                {"name": "process_name", "ph": "M", "pid": _PID, "args": {"name": "batchq"}},
                _thread_name(_SCHEDULER_TID, "scheduler"),
            ]
            meta.extend(_thread_name(tid, source) for source, tid in self._tids.items())
            return [*meta, *self._events]

    def to_json(self) -> str:
        """The trace as Chrome trace-event JSON (``{"traceEvents": [...]}``)."""
        return json.dumps({"traceEvents": self.events(), "displayTimeUnit": "ms"})

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the trace to ``path``; open it in https://ui.perfetto.dev or chrome://tracing."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    def __repr__(self) -> str:
        return (
            f"<TraceRecorder {len(self._events)} events, {len(self._tids)} sources"
            f"{', tasks' if self.records_tasks else ''}>"
        )


def _thread_name(tid: int, name: str) -> dict[str, Any]:
    return {"name": "thread_name", "ph": "M", "pid": _PID, "tid": tid, "args": {"name": name}}


class _TaskTraceRecorder(TraceRecorder):
    """A TraceRecorder that also records every task as an async slice."""

    def __init__(self, *, tasks: bool = True) -> None:
        super().__init__(tasks=True)
        self._next_id = 0
        self._open: dict[int, tuple[int, str, AsyncTask[Any]]] = {}

    def task_started(self, task: AsyncTask[Any]) -> None:
        with self._lock:
            self._next_id += 1
            name = task.call_str()
            # The task is kept until it finishes, so that its id() cannot be reused meanwhile.
            self._open[id(task)] = (self._next_id, name, task)
            self._events.append(self._task_event("b", self._next_id, name, {}))

    def task_finished(self, task: AsyncTask[Any]) -> None:
        with self._lock:
            opened = self._open.pop(id(task), None)
            if opened is not None:
                args = {"error": repr(task._error)} if task._error is not None else {}
                self._events.append(self._task_event("e", opened[0], opened[1], args))

    def _task_event(self, ph: str, ident: int, name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "cat": "task",
            "ph": ph,
            "id": ident,
            "ts": self._now(),
            "pid": _PID,
            "tid": _SCHEDULER_TID,
            "args": args,
        }


def __dir__() -> list[str]:
    # Only the public names: the typing helpers and imports above are not part of the module.
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
