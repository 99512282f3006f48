"""The Cache's async functions: ``cache.get(...)`` runs one, ``cache.get.asynq(...)`` yields it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, ParamSpec, TypeVar

from batchq._core._futures import FutureBase
from batchq._core._loop import run_sync

__all__ = ["_Op"]

P = ParamSpec("P")
T = TypeVar("T")


class _Op(Generic[P, T]):
    """An async function of the Cache: ``op(...)`` runs it, ``op.asynq(...)`` is yieldable."""

    __slots__ = ("asynq", "_name")

    def __init__(self, asynq: Callable[P, FutureBase[T]], name: str) -> None:
        self.asynq = asynq
        self._name = name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return run_sync(self.asynq(*args, **kwargs))

    def is_pure_async_fn(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"<async {self._name}>"
