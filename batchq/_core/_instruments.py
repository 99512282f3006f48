"""What a run reports: its statistics, the instruments that watch it, and strict mode.

Instruments are installed objects read once per run, never flags read in the loop: with none
installed, a run pays for one empty-tuple check per drive.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._batch import BatchBase, BatchItemBase
from ._task import AsyncTask

if TYPE_CHECKING:
    from ._loop import Scheduler

__all__ = ["RunStats", "Instrument", "instruments", "installed_instruments", "strict_mode"]


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

    def __sub__(self, other: RunStats) -> RunStats:
        return RunStats(
            self.rounds - other.rounds,
            self.batches - other.batches,
            self.items - other.items,
            self.tasks - other.tasks,
            self.nested_runs - other.nested_runs,
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
# Strict mode: a synchronous call inside a running task raises instead of being counted. Scoped
# to the current context; batchq.debug.strict() is its public switch.
strict_mode: ContextVar[bool] = ContextVar("batchq_strict", default=False)


def installed_instruments() -> tuple[Instrument, ...]:
    return _instruments.get()


def set_installed(insts: tuple[Instrument, ...]) -> None:
    """Install exactly ``insts`` in the current context (the asyncio driver's union of calls)."""
    _instruments.set(insts)


class instruments:  # used like a function: `with instruments(recorder):`
    """Context manager that installs instruments for every run started inside it."""

    def __init__(self, *added: Instrument) -> None:
        self._added = added
        self._token: Any = None

    def __enter__(self) -> None:
        self._token = _instruments.set(_instruments.get() + self._added)

    def __exit__(self, *exc: object) -> None:
        _instruments.reset(self._token)


def task_hooks(insts: tuple[Instrument, ...]) -> tuple[Instrument, ...]:
    """The instruments that override a per-task method: only those are called per task."""
    return tuple(
        i
        for i in insts
        if type(i).task_started is not Instrument.task_started
        or type(i).task_finished is not Instrument.task_finished
    )
