"""Round assertions: count the rounds a piece of code costs, and fail when it stops batching.

The batchq equivalent of an "assert number of queries" helper::

    with batchq.testing.assert_rounds(2):
        render_page(user_id)

fails with every round's batches and keys when the page needs more (or fewer) rounds. Use
:func:`count_rounds` to read the numbers instead of asserting them.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from .._core._batch import BatchBase, BatchItemBase
from .._core._instruments import Instrument, RunStats, instruments
from .._core._loop import Scheduler
from .._core._runtime import get_active_task

__all__ = [
    "BatchRecord",
    "RoundCounter",
    "count_rounds",
    "assert_rounds",
    "assert_max_rounds",
]

_F = TypeVar("_F", bound=Callable[..., Any])

# How much of a round the failure message shows; a long listing hides the pattern it should show.
_MAX_KEYS_SHOWN = 8
_MAX_KEY_CHARS = 40


class BatchRecord(NamedTuple):
    """One flushed batch: the name of its source and the keys it fetched."""

    source: str
    keys: tuple[Any, ...]


class RoundCounter(Instrument):
    """Records what every batchq run started while it is active costs.

    ``stats`` adds up the runs (nested runs included, once); ``rounds`` lists, for each round in
    the order the rounds started, the batches flushed in it. Create it with :func:`count_rounds`.
    """

    def __init__(self) -> None:
        self.stats = RunStats()
        self.rounds: list[list[BatchRecord]] = []
        # Rounds still open: a fetch may run a nested scheduler in the middle of a round.
        self._open: list[tuple[Scheduler, list[BatchRecord]]] = []
        # Runs in progress: only a run with no enclosing run adds to ``stats``, because an outer
        # run's statistics already include its nested runs.
        self._runs: list[Scheduler] = []
        self._installed: contextlib.ExitStack | None = None

    # -- the instrument -------------------------------------------------------------------------

    # A run interrupted by a BaseException still ends with run_finished, but the round it was
    # flushing gets no round_finished: what it left open is recognised by its scheduler no longer
    # running, and dropped.

    def run_started(self, scheduler: Scheduler) -> None:
        self._runs = [s for s in self._runs if s.is_running()]
        self._runs.append(scheduler)

    def run_finished(self, scheduler: Scheduler, stats: RunStats) -> None:
        self._runs = [s for s in self._runs if s is not scheduler and s.is_running()]
        if not self._runs:
            self.stats = self.stats + stats

    def round_started(self, scheduler: Scheduler, round_index: int) -> None:
        batches: list[BatchRecord] = []
        self.rounds.append(batches)
        self._open = [(s, b) for s, b in self._open if s.is_running()]
        self._open.append((scheduler, batches))

    def round_finished(self, scheduler: Scheduler, round_index: int) -> None:
        self._open = [(s, b) for s, b in self._open if s is not scheduler]

    def batch_flushed(
        self, batch: BatchBase, items: Sequence[BatchItemBase[Any]], seconds: float
    ) -> None:
        record = BatchRecord(_source_name(batch), tuple(_item_key(item) for item in items))
        if self._open:
            self._open[-1][1].append(record)

    # -- use ------------------------------------------------------------------------------------

    def __enter__(self) -> RoundCounter:
        if self._installed is not None:
            msg = f"{self!r} is already active; create a new one with count_rounds()"
            raise RuntimeError(msg)
        task = get_active_task()
        if task is not None:
            msg = (
                f"count_rounds() was entered inside the running task {task.call_str()}: it only "
                "sees runs that start inside it, and the scheduler running this task started "
                "before. Wrap the synchronous call (e.g. `with assert_rounds(2): page(uid)`) in "
                "the test instead."
            )
            raise RuntimeError(msg)
        stack = contextlib.ExitStack()
        stack.enter_context(instruments(self))
        self._installed = stack
        return self

    def __exit__(self, *exc_info: object) -> None:
        stack, self._installed = self._installed, None
        if stack is not None:
            stack.close()

    def clear(self) -> None:
        """Forget what was recorded so far (e.g. after a test's setup)."""
        self.stats = RunStats()
        self.rounds = []

    def assert_rounds(self, expected: int) -> None:
        """Fail, listing every round, unless exactly ``expected`` rounds ran so far."""
        _check_count("assert_rounds", expected)
        if self.stats.rounds != expected:
            raise AssertionError(self.describe(f"expected {_rounds(expected)}"))

    def assert_max_rounds(self, limit: int) -> None:
        """Fail, listing every round, if more than ``limit`` rounds ran so far."""
        _check_count("assert_max_rounds", limit)
        if self.stats.rounds > limit:
            raise AssertionError(self.describe(f"expected at most {_rounds(limit)}"))

    def describe(self, expectation: str = "") -> str:
        """The failure message: what was expected, what ran, and each round's batches and keys."""
        ran = self.stats.rounds
        head = f"{expectation}, ran {ran}" if expectation else f"ran {_rounds(ran)}"
        lines = [head + (":" if self.rounds else "")]
        for number, batches in enumerate(self.rounds, 1):
            listing = "; ".join(_describe_batch(b) for b in batches) or "(no batch left to flush)"
            lines.append(f"  round {number}: {listing}")
        if len(self.rounds) < ran:
            # Runs made while no instrument was installed cannot be listed.
            lines.append(f"  ({_rounds(ran - len(self.rounds))} not recorded)")
        return "\n".join(lines)

    def __repr__(self) -> str:
        s = self.stats
        return (
            f"<RoundCounter rounds={s.rounds} batches={s.batches} items={s.items} "
            f"tasks={s.tasks} nested_runs={s.nested_runs}>"
        )


def count_rounds() -> RoundCounter:
    """A context manager recording every batchq run started inside it.

    ``with count_rounds() as counter: ...`` then read ``counter.stats`` (a :class:`batchq.RunStats`)
    and ``counter.rounds`` (per round, a :class:`BatchRecord` per batch flushed).
    """
    return RoundCounter()


class _RoundsAssertion(contextlib.ContextDecorator):
    """A context manager and decorator checking the rounds run inside it on the way out."""

    _name = ""

    def __init__(self, n: int) -> None:
        _check_count(self._name, n)
        self.n = n
        self._counters: list[RoundCounter] = []

    def __enter__(self) -> RoundCounter:
        # A stack, so that one decorator instance can be re-entered (recursion, reuse).
        counter = RoundCounter().__enter__()
        self._counters.append(counter)
        return counter

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        counter = self._counters.pop()
        counter.__exit__(exc_type, *rest)
        if exc_type is None:
            self._check(counter)

    def _check(self, counter: RoundCounter) -> None:
        raise NotImplementedError

    def __call__(self, func: _F) -> _F:
        if inspect.isgeneratorfunction(func):
            msg = (
                f"{self._name}() cannot decorate the generator function {func!r}: it would "
                "check before the generator runs. Decorate the synchronous test function, or "
                "use `with` around the synchronous call."
            )
            raise TypeError(msg)
        return super().__call__(func)


class assert_rounds(_RoundsAssertion):  # lower case: used like a function, as contextlib's are
    """Fail unless the code inside runs exactly ``n`` rounds; the message lists every round.

    A context manager (``with assert_rounds(2): ...``, which binds the :class:`RoundCounter`) and a
    decorator of synchronous functions.
    """

    _name = "assert_rounds"

    def _check(self, counter: RoundCounter) -> None:
        counter.assert_rounds(self.n)


class assert_max_rounds(_RoundsAssertion):
    """Fail if the code inside runs more than ``n`` rounds; the message lists every round."""

    _name = "assert_max_rounds"

    def _check(self, counter: RoundCounter) -> None:
        counter.assert_max_rounds(self.n)


def _check_count(name: str, n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        msg = f"{name}() takes a number of rounds (an int), got {n!r} of type {type(n).__name__}"
        raise TypeError(msg)
    if n < 0:
        msg = f"{name}() takes a number of rounds >= 0, got {n!r}"
        raise ValueError(msg)


def _rounds(n: int) -> str:
    return f"{n} round" if n == 1 else f"{n} rounds"


def _source_name(batch: BatchBase) -> str:
    try:
        return str(batch.name())
    except Exception:  # a batch written for asynq may break name(); the listing must still work
        return type(batch).__qualname__


def _item_key(item: BatchItemBase[Any]) -> Any:
    try:
        return item.key  # type: ignore[attr-defined]
    except AttributeError:
        try:
            return _ItemRepr(repr(item))
        except Exception as e:  # a broken __repr__ must not hide the failure being reported
            return _ItemRepr(f"<{type(item).__name__}: repr failed with {type(e).__name__}>")


class _ItemRepr(str):
    """``repr(item)`` for an item without a key; shown as is, not quoted, in listings."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception as e:  # a broken __repr__ must not hide the failure being reported
        text = f"<{type(value).__name__}: repr failed with {type(e).__name__}>"
    return text if len(text) <= _MAX_KEY_CHARS else text[: _MAX_KEY_CHARS - 3] + "..."


def _describe_batch(batch: BatchRecord) -> str:
    keys = batch.keys
    shown = ", ".join(_short(k) for k in keys[:_MAX_KEYS_SHOWN])
    if len(keys) > _MAX_KEYS_SHOWN:
        shown += f", ... {len(keys) - _MAX_KEYS_SHOWN} more"
    noun = "key" if len(keys) == 1 else "keys"
    return f"{batch.source} ({len(keys)} {noun}: {shown})"
