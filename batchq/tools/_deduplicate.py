"""``deduplicate``: calls with equal arguments that are pending at the same time share one task.

The shared task is kept per scheduler (a nested synchronous run never waits on a task that only
the outer run can advance) and forgotten as soon as it finishes, successfully or not, so a later
call runs again. A task that is not referenced anymore is forgotten too (weak references).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Generator
from typing import Any

from .._core._loop import Scheduler, get_scheduler
from .._core._task import AsyncTask
from .._helpers import AsyncWrapper, BoundAsyncWrapper, call_async
from ._wrapping import async_form, default_keygetter

__all__ = ["deduplicate", "DeduplicatedFunction"]

KeyGetter = Callable[[tuple[Any, ...], dict[str, Any]], Any]


class _Pending:
    """One shared call: the task everyone waits on and the task running the body inside it."""

    __slots__ = ("outer", "inner", "__weakref__")

    def __init__(self) -> None:
        self.outer: AsyncTask[Any] | None = None
        self.inner: Any = None


class BoundDeduplicatedFunction(BoundAsyncWrapper[Any, Any]):
    __slots__ = ()

    def dirty(self, *args: Any, **kwargs: Any) -> None:
        func: DeduplicatedFunction = self.__func__
        func.dirty(self.__self__, *args, **kwargs)


class DeduplicatedFunction(AsyncWrapper[Any, Any]):
    """An async function wrapped by ``@deduplicate()``."""

    def __init__(self, fn: Any, keygetter: KeyGetter) -> None:
        async_form(fn, "@deduplicate()")  # refuse plain functions early
        super().__init__(fn, self._shared_task, "@deduplicate()")
        self._wrapped = fn
        self._keygetter = keygetter
        self._pending: weakref.WeakKeyDictionary[Scheduler, dict[Any, _Pending]] = (
            weakref.WeakKeyDictionary()
        )

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self._keygetter(args, kwargs)
        try:
            hash(key)
        except TypeError:
            msg = (
                f"@deduplicate() of {getattr(self, '__qualname__', self.fn)!s} got the "
                f"unhashable key {key!r} for arguments {args!r} {kwargs!r}; pass hashable "
                "arguments or a keygetter that returns a hashable key"
            )
            raise TypeError(msg) from None
        return key

    def _shared_task(self, *args: Any, **kwargs: Any) -> AsyncTask[Any]:
        key = self._key(args, kwargs)
        sched = get_scheduler()
        shared = self._pending.get(sched)
        if shared is None:
            shared = self._pending[sched] = {}
        entry = shared.get(key)
        if entry is not None:
            task = entry.outer
            active = sched.active_task
            if (
                task is not None
                and not task.is_computed()
                and task._sched in (None, sched)
                # The body calling itself with the same arguments gets a task of its own (as in
                # asynq), instead of waiting on itself.
                and active is not task
                and active is not entry.inner
            ):
                return task
        entry = _Pending()
        task = AsyncTask(self._run(entry, shared, key, args, kwargs), self.fn, args, kwargs)
        entry.outer = task
        shared[key] = entry
        return task

    def _run(
        self,
        entry: _Pending,
        shared: dict[Any, _Pending],
        key: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Generator[Any, Any, Any]:
        try:
            entry.inner = call_async(self._wrapped, *args, **kwargs)
            return (yield entry.inner)
        finally:
            if shared.get(key) is entry:
                del shared[key]
            entry.outer = entry.inner = None

    def dirty(self, *args: Any, **kwargs: Any) -> None:
        """Forget the pending shared call with these arguments: the next call starts a new one."""
        key = self._key(args, kwargs)
        for shared in list(self._pending.values()):
            shared.pop(key, None)


DeduplicatedFunction.bound_cls = BoundDeduplicatedFunction


def deduplicate(
    keygetter: KeyGetter | None = None,
) -> Callable[[Any], DeduplicatedFunction]:
    """Make equal calls that are pending at the same time share one task (one execution).

    ``yield [f.asynq(1), f.asynq(1)]`` runs ``f(1)`` once; both get its value (or its error).
    ``keygetter(args, kwargs)`` builds the key; by default equivalent calls share one.
    ``f.dirty(*args)`` forgets a pending call. Put ``@deduplicate()`` above ``@asynq()``.
    """
    if keygetter is not None and not callable(keygetter):
        msg = (
            "deduplicate(keygetter=...) takes a callable keygetter(args, kwargs), "
            f"got {keygetter!r}"
        )
        raise TypeError(msg)

    def decorator(fn: Any) -> DeduplicatedFunction:
        getter = keygetter if keygetter is not None else default_keygetter(fn, skip_first=False)
        return DeduplicatedFunction(fn, getter)

    return decorator
