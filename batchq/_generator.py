"""Async generators (asynq's): a generator that both waits on futures and produces values.

Inside an ``@async_generator()`` function, ``yield`` a future to wait on it and ``yield
Value(x)`` to produce ``x``. Iterating the result gives one future per produced value; yield each
to get the value. Waits after the last ``Value`` make one extra future whose value is
``END_OF_GENERATOR``, which consumers skip.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any, Final, Generic, ParamSpec, TypeVar

from ._core._futures import ConstFuture, FutureBase
from ._core._task import AsyncTask
from ._decorators import asynq
from ._helpers import async_proxy

__all__ = [
    "END_OF_GENERATOR",
    "Value",
    "async_generator",
    "list_of_generator",
    "take_first",
    "AsyncGenerator",
]

P = ParamSpec("P")
T = TypeVar("T")


class _EndOfGenerator:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_GENERATOR"

    def __reduce__(self) -> str:
        return "END_OF_GENERATOR"


END_OF_GENERATOR: Final[Any] = _EndOfGenerator()
"""The value of the extra future an async generator makes when it waits after its last Value."""


class Value(Generic[T]):
    """A value produced by an async generator (as opposed to a future it waits on)."""

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"<Value: {self.value!r}>"


def async_generator() -> Callable[
    [Callable[P, Generator[Any, Any, Any]]], Callable[P, AsyncGenerator]
]:
    """Decorator: calling the function returns an :class:`AsyncGenerator` over its values."""

    def decorator(fn: Callable[P, Generator[Any, Any, Any]]) -> Callable[P, AsyncGenerator]:
        @functools.wraps(fn)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> AsyncGenerator:
            return AsyncGenerator(fn(*args, **kwargs))

        return wrapped

    return decorator


class AsyncGenerator:
    """Iterates an async generator function's values as futures, one per ``Value``."""

    def __init__(self, generator: Generator[Any, Any, Any]) -> None:
        self.generator = generator
        self.last_task: AsyncTask[Any] | None = None
        self.is_stopped = False

    def __iter__(self) -> Iterator[FutureBase[Any]]:
        return self

    def __next__(self) -> FutureBase[Any]:
        return self.send.asynq(None)  # type: ignore[no-any-return]

    @async_proxy()
    def send(self, value: Any) -> FutureBase[Any]:
        """The future of the next value; ``value`` goes back into the generator.

        As in asynq, ``gen.send(v)`` returns the value and ``gen.send.asynq(v)`` its future.
        """
        last = self.last_task
        if last is not None and not last.is_computed():
            msg = (
                f"{self!r}: the future of the previous value is not computed yet; yield it "
                "before advancing the generator"
            )
            raise RuntimeError(msg)
        if self.is_stopped:
            raise StopIteration
        # Advance to the first yield now, so that an exhausted generator stops iteration here.
        first = self._advance(value)
        if isinstance(first, Value):
            return ConstFuture(first.value)
        task = self._until_value.asynq(first)
        self.last_task = task
        return task

    @asynq()
    def _until_value(self, waited: Any) -> Generator[Any, Any, Any]:
        result = yield waited
        while True:
            try:
                step = self._advance(result)
            except StopIteration:
                return END_OF_GENERATOR
            if isinstance(step, Value):
                return step.value
            result = yield step

    def _advance(self, value: Any) -> Any:
        try:
            return self.generator.send(value)
        except StopIteration:
            self.is_stopped = True
            raise

    def __repr__(self) -> str:
        state = " stopped" if self.is_stopped else ""
        return f"<@async_generator() {self.generator!r}{state}>"


@asynq()
def list_of_generator(generator: Iterable[FutureBase[Any]]) -> Generator[Any, Any, list[Any]]:
    """Every value of an async generator, in order."""
    data = []
    for task in generator:
        value = yield task
        if value is END_OF_GENERATOR:
            continue
        data.append(value)
    return data


@asynq()
def take_first(generator: Iterable[FutureBase[Any]], n: int) -> Generator[Any, Any, list[Any]]:
    """The first ``n`` values of an async generator (fewer if it ends first)."""
    ret: list[Any] = []
    # As in asynq, n counts the futures consumed, END_OF_GENERATOR included.
    for i, task in enumerate(generator):
        value = yield task
        if value is END_OF_GENERATOR:
            continue
        ret.append(value)
        if i == n - 1:
            break
    return ret
