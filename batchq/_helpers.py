"""asynq's helpers for code that takes "a function, async or not": inspect, adapt, wrap.

They recognise every kind of batchq callable by its protocol rather than its class: anything with
an ``asynq`` attribute has an async form (``@asynq()`` functions and methods, ``Loader.load``,
proxies and wrappers made here); anything whose ``is_pure_async_fn()`` is true returns its future
when called (``@asynq(pure=True)``, ``lazy``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Literal, ParamSpec, TypeVar, overload

from ._core._errors import UsageError
from ._core._futures import ConstFuture, Future, FutureBase
from ._core._loop import run_sync
from ._core._task import AsyncTask
from ._decorators import AsyncClassMethod, AsyncStaticMethod, BoundMethod

__all__ = [
    "has_async_fn",
    "is_pure_async_fn",
    "is_async_fn",
    "get_async_fn",
    "get_async_or_sync_fn",
    "lazy",
    "async_proxy",
    "async_call",
    "make_async_decorator",
    "AsyncProxy",
    "AsyncWrapper",
    "BoundAsyncWrapper",
]

P = ParamSpec("P")
T = TypeVar("T")

_AGGREGATES = (list, tuple, dict)


def has_async_fn(fn: object) -> bool:
    """True if ``fn`` has an async form, ``fn.asynq(...)``."""
    return hasattr(fn, "asynq")


def is_pure_async_fn(fn: object) -> bool:
    """True if calling ``fn`` returns its future (``@asynq(pure=True)``, ``lazy``, pure proxies)."""
    check = getattr(fn, "is_pure_async_fn", None)
    if check is not None:
        try:
            return bool(check())
        except TypeError:
            # Read from a class (e.g. is_pure_async_fn(AsyncFunction)): an unbound method.
            return False
    inner = getattr(fn, "fn", None)
    if inner is not None and inner is not fn:
        return is_pure_async_fn(inner)
    return False


def is_async_fn(fn: object) -> bool:
    """True if ``fn`` can be called asynchronously, pure or not."""
    return hasattr(fn, "asynq") or is_pure_async_fn(fn)


def _sync_as_future(fn: Callable[..., Any]) -> Callable[..., FutureBase[Any]]:
    @functools.wraps(fn)
    def sync_to_async_fn_wrapper(*args: Any, **kwargs: Any) -> FutureBase[Any]:
        return ConstFuture(fn(*args, **kwargs))

    sync_to_async_fn_wrapper.is_pure_async_fn = _true  # type: ignore[attr-defined]
    return sync_to_async_fn_wrapper


def _true() -> bool:
    return True


def get_async_fn(fn: Any, wrap_if_none: bool = False) -> Callable[..., Any] | None:
    """The function whose call returns ``fn``'s future, or None if ``fn`` is not async.

    With ``wrap_if_none``, a plain ``fn`` is wrapped so that its result comes back as a future.
    """
    if hasattr(fn, "asynq"):
        return fn.asynq  # type: ignore[no-any-return]
    if is_pure_async_fn(fn):
        return fn  # type: ignore[no-any-return]
    if wrap_if_none:
        return _sync_as_future(fn)
    return None


def get_async_or_sync_fn(fn: Any) -> Any:
    """``fn.asynq`` if ``fn`` has one, else ``fn`` itself."""
    if hasattr(fn, "asynq"):
        return fn.asynq
    return fn


def lazy(fn: Callable[P, T]) -> Callable[P, Future[T]]:
    """Make ``fn`` lazy: a call returns a ``Future`` that runs ``fn`` when first needed."""

    @functools.wraps(fn)
    def lazy_fn(*args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return Future(lambda: fn(*args, **kwargs))

    lazy_fn.is_pure_async_fn = _true  # type: ignore[attr-defined]
    return lazy_fn


def call_async(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """What to yield to call ``fn``, whatever kind it is; a plain result comes as a future."""
    asynq = getattr(fn, "asynq", None)
    if asynq is not None:
        return asynq(*args, **kwargs)
    if is_pure_async_fn(fn):
        return fn(*args, **kwargs)
    return ConstFuture(fn(*args, **kwargs))


# -- binding: wrappers bind to an instance the way the function they wrap does -----------------

_INSTANCE, _CLASS, _STATIC = "instance", "class", "static"


def _binding_of(fn: object) -> str:
    if isinstance(fn, (staticmethod, AsyncStaticMethod)):
        return _STATIC
    if isinstance(fn, (classmethod, AsyncClassMethod)):
        return _CLASS
    if isinstance(fn, AsyncWrapper):
        return fn._binding
    return _INSTANCE


def _unwrap_method(fn: Any) -> Any:
    """The callable inside a raw ``classmethod``/``staticmethod`` object."""
    if isinstance(fn, (classmethod, staticmethod)):
        return fn.__func__
    return fn


def _gather(obj: Any) -> Any:
    return (yield obj)


def _as_future(obj: Any, where: object) -> FutureBase[Any]:
    """A future for what an async callable returned, so that it can be run synchronously."""
    if isinstance(obj, FutureBase):
        return obj
    if obj is None or type(obj) in _AGGREGATES:
        return AsyncTask(_gather(obj), where, (), None)
    msg = (
        f"{where!r} returned {obj!r} of type {type(obj).__name__}, which cannot be waited on; "
        "the function behind an async proxy or wrapper must return a future (a task, a batch "
        "item, ConstFuture(...)) or a list/tuple/dict of them"
    )
    raise TypeError(msg)


class AsyncWrapper(Generic[P, T]):
    """An async function built from ``call(*args)``, which returns the call's future.

    ``w.asynq(*args)`` is ``call(*args)``; ``w(*args)`` computes it. Used by ``async_proxy``,
    ``make_async_decorator`` and the tools that wrap an async function.
    """

    bound_cls: type[BoundAsyncWrapper[Any, Any]]
    # qcore's name for it, by which tools (pycroscope) recognise a method-like decorator.
    binder_cls: type[BoundAsyncWrapper[Any, Any]]

    def __init__(
        self,
        fn: Any,
        call: Callable[..., Any],
        name: str,
        sync_fn: Callable[..., Any] | None = None,
        asyncio_fn: Callable[..., Any] | None = None,
    ) -> None:
        if not callable(call):
            msg = f"{name} needs a callable that returns a future, got {call!r}"
            raise TypeError(msg)
        self._binding = _binding_of(fn)
        inner = _unwrap_method(fn)
        if not callable(inner):
            msg = f"{name} decorates functions, got {fn!r} of type {type(fn).__name__}"
            raise TypeError(msg)
        self.fn = inner
        self._call = call
        self._name = name
        self.sync_fn = sync_fn
        self.asyncio_fn = asyncio_fn
        # updated=(): copying the wrapped object's __dict__ would copy its own fn/asynq too.
        functools.update_wrapper(self, inner, updated=())

    def asynq(self, /, *args: P.args, **kwargs: P.kwargs) -> AsyncTask[T]:
        """The future of this call, to ``yield``."""
        return self._call(*args, **kwargs)  # type: ignore[no-any-return]

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self.sync_fn is not None:
            return self.sync_fn(*args, **kwargs)  # type: ignore[no-any-return]
        return run_sync(_as_future(self._call(*args, **kwargs), self))  # type: ignore[no-any-return]

    def asyncio(self, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        """Await this call from asyncio code; calls pending at the same moment share rounds."""
        asyncio_fn = self.asyncio_fn
        if asyncio_fn is not None:
            return asyncio_fn(*args, **kwargs)  # type: ignore[no-any-return]
        from ._asyncio import run_in_loop

        return run_in_loop(lambda: _as_future(self._call(*args, **kwargs), self))

    def is_pure_async_fn(self) -> bool:
        return False

    def name(self) -> str:
        return self._name

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        binding = self._binding
        if binding == _STATIC:
            return self
        if binding == _CLASS:
            return self.bound_cls(self, owner if owner is not None else type(obj))
        if obj is None:
            return self
        return self.bound_cls(self, obj)

    def __repr__(self) -> str:
        return f"<{self._name} {getattr(self, '__qualname__', self.fn)!r}>"


class BoundAsyncWrapper(BoundMethod[P, T]):
    """An ``AsyncWrapper`` read from an instance (or a class, for class methods)."""

    __slots__ = ()
    __func__: AsyncWrapper[Any, T]

    def asynq(self, /, *args: P.args, **kwargs: P.kwargs) -> AsyncTask[T]:
        return self.__func__._call(self.__self__, *args, **kwargs)  # type: ignore[no-any-return]

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        sync_fn = self._bound_sync_fn()
        if sync_fn is not None:
            return sync_fn(*args, **kwargs)  # type: ignore[no-any-return]
        future = _as_future(self.__func__._call(self.__self__, *args, **kwargs), self)
        return run_sync(future)  # type: ignore[no-any-return]

    def asyncio(self, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        """Await this call from asyncio code; calls pending at the same moment share rounds."""
        asyncio_fn = self.__func__.asyncio_fn
        if asyncio_fn is not None:
            return asyncio_fn(self.__self__, *args, **kwargs)  # type: ignore[no-any-return]
        from ._asyncio import run_in_loop

        return run_in_loop(
            lambda: _as_future(self.__func__._call(self.__self__, *args, **kwargs), self)
        )


AsyncWrapper.bound_cls = AsyncWrapper.binder_cls = BoundAsyncWrapper


class AsyncProxy(AsyncWrapper[P, T]):
    """``@async_proxy()``: ``fn`` returns a future itself; ``f.asynq(...)`` returns it as is."""

    # asynq's proxies have no task class: the function returns its future itself.
    task_cls = None

    def __init__(
        self,
        fn: Any,
        sync_fn: Callable[..., Any] | None = None,
        asyncio_fn: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(fn, _unwrap_method(fn), "@async_proxy()", sync_fn, asyncio_fn)


@overload
def async_proxy(
    pure: Literal[False] = False,
    sync_fn: Callable[..., Any] | None = None,
    asyncio_fn: Callable[..., Any] | None = None,
) -> Callable[[Callable[P, Any]], AsyncProxy[P, Any]]: ...
@overload
def async_proxy(
    pure: Literal[True], sync_fn: None = None, asyncio_fn: Callable[..., Any] | None = None
) -> Callable[[T], T]: ...


def async_proxy(
    pure: bool = False,
    sync_fn: Callable[..., Any] | None = None,
    asyncio_fn: Callable[..., Any] | None = None,
) -> Any:
    """Mark a function that returns a future (instead of yielding) as async.

    ``f.asynq(...)`` returns that future and ``f(...)`` computes it (or calls ``sync_fn``). With
    ``pure=True`` the function is returned unchanged: calling it already gives the future.
    """
    if sync_fn is not None:
        if pure:
            msg = "async_proxy(pure=True) does not take sync_fn: a pure proxy has no sync call"
            raise UsageError(msg)
        if not callable(sync_fn):
            msg = f"async_proxy(sync_fn=...) takes a callable, got {sync_fn!r}"
            raise TypeError(msg)
    if callable(pure) and not isinstance(pure, bool):
        msg = (
            f"async_proxy is a decorator factory: write @async_proxy(), not @async_proxy "
            f"(got {pure!r})"
        )
        raise TypeError(msg)

    def decorate(fn: Any) -> Any:
        if pure:
            return fn
        return AsyncProxy(fn, sync_fn, asyncio_fn)

    return decorate


def _async_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn`` asynchronously whether or not it is async.

    ``value = yield async_call.asynq(fn, *args)`` works for async, pure async and plain ``fn``.
    """
    return call_async(fn, *args, **kwargs)


async_call: AsyncProxy[..., Any] = AsyncProxy(_async_call)
for _attr in ("__name__", "__qualname__"):
    setattr(async_call, _attr, "async_call")


def make_async_decorator(
    fn: Any, wrapper_fn: Callable[..., Any], name: str
) -> AsyncWrapper[..., Any]:
    """Wrap the async function ``fn``: ``wrapper_fn(*args)`` returns the future of each call.

    ``name`` names the decorator in reprs (``@name()``). The result binds like ``fn`` does
    (method, classmethod or staticmethod).
    """
    if not isinstance(name, str):
        msg = f"make_async_decorator(name=...) takes the decorator's name as a str, got {name!r}"
        raise TypeError(msg)
    return AsyncWrapper(fn, wrapper_fn, f"@{name}()")
