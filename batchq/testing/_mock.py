"""``patch``: :func:`unittest.mock.patch` that also replaces ``f.asynq()`` and ``f.asyncio()``.

When the patched attribute is a batchq (or asynq) async function, or anything with an ``.asynq``
attribute such as ``Loader.load``, the mock answers every call style and records them on itself::

    with batchq.mock.patch("app.models.get_user") as get_user:
        get_user.return_value = {"name": "ann"}
        render_page(1)  # get_user(1), `yield get_user.asynq(1)`, `await get_user.asyncio(1)`
    get_user.assert_called_once_with(1)

``mocked.asynq(...)`` returns a future of what ``mocked(...)`` returns (or raises);
``await mocked.asyncio(...)`` returns (or raises) it, recording the call when awaited, as the real
function runs when awaited. Configure the mock itself, never its ``.asynq`` or ``.asyncio`` (that is
refused). Anything else behaves exactly as with ``unittest.mock.patch``. A ``new=`` function is made
an async function of the same kind as the one it replaces (a generator function may yield, as the
real one does).

This module is the implementation; the public names are in :mod:`batchq.mock`.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Coroutine, Generator, Mapping
from typing import TYPE_CHECKING, Any, Final
from unittest import mock

from .._core._errors import BatchqError
from .._core._futures import ConstFuture, ErrorFuture, FutureBase
from .._decorators import (
    AsyncClassMethod,
    AsyncFunction,
    AsyncStaticMethod,
    BoundAsyncFunction,
    PureAsyncFunction,
    _AsyncCallable,
    asynq,
)

__all__ = ["patch", "DEFAULT", "AsynqAttributeError"]

DEFAULT: Final[Any] = mock.DEFAULT
"""The default of ``new``: let ``patch`` create the mock (also for ``patch.multiple``)."""

_NO_SELF: Final = object()


class AsynqAttributeError(BatchqError, AttributeError, TypeError):
    """An attribute of a mock's ``.asynq`` or ``.asyncio`` was set or read; it belongs on the mock.

    Also a ``TypeError``, as asynq's mock raises when its ``.asynq`` is configured.
    """


# -- what replaces an async function -------------------------------------------------------------


def _as_future(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], pure: bool = False
) -> FutureBase[Any]:
    """Call ``fn`` now; its result or exception as a computed future, to yield.

    A call the mock refuses before recording it (a wrong signature under autospec) raises at
    once, as calling the real function with wrong arguments does.
    """
    before = _call_count(fn)
    try:
        result = fn(*args, **kwargs)
    except Exception as e:
        if before is not None and _call_count(fn) == before:
            raise
        return ErrorFuture(e)
    if pure and isinstance(result, FutureBase):
        # A pure function returns a future: a mock configured to return one is used as is.
        return result
    return ConstFuture(result)


def _call_count(fn: Callable[..., Any]) -> int | None:
    """How many calls a mock (or autospecced function) recorded; None for other callables."""
    if isinstance(fn, mock.NonCallableMock) or inspect.isfunction(fn):
        count = getattr(fn, "call_count", None)
        return count if isinstance(count, int) else None
    return None


class _CallStyle:
    """``mocked.asynq`` or ``mocked.asyncio``: calls the mock, so the call is recorded there."""

    __slots__ = ("_mock", "_pure", "_self")
    _style = ""

    def __init__(self, target: Callable[..., Any], pure: bool, bound_self: Any = _NO_SELF) -> None:
        object.__setattr__(self, "_mock", target)
        object.__setattr__(self, "_pure", pure)
        object.__setattr__(self, "_self", bound_self)

    def _args(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return args if self._self is _NO_SELF else (self._self, *args)

    def __setattr__(self, name: str, value: object) -> None:
        msg = (
            f"cannot set {name!r} on the .{self._style} of a batchq mock: f(...), f.asynq(...) "
            f"and f.asyncio(...) share one mock, so configure the mock itself: "
            f"`mocked.{name} = {_short(value)}` instead of `mocked.{self._style}.{name} = ...`"
        )
        raise AsynqAttributeError(msg)

    def __delattr__(self, name: str) -> None:
        self.__setattr__(name, None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            # Protocol probes (copy, inspect, pickle...) must see an ordinary missing attribute.
            raise AttributeError(name)
        msg = (
            f"{name!r} of the .{self._style} of a batchq mock: calls of f.{self._style}(...) are "
            f"recorded on the mock itself, together with the other call styles; use "
            f"`mocked.{name}` instead of `mocked.{self._style}.{name}`"
        )
        raise AsynqAttributeError(msg)

    def __repr__(self) -> str:
        return f"<.{self._style} of {self._mock!r}>"


class _AsynqSide(_CallStyle):
    """``mocked.asynq(...)``: a computed future of the mock's outcome, to yield."""

    __slots__ = ()
    _style = "asynq"

    def __call__(self, *args: Any, **kwargs: Any) -> FutureBase[Any]:
        return _as_future(self._mock, self._args(args), kwargs, self._pure)


class _AsyncioSide(_CallStyle):
    """``mocked.asyncio(...)``: a coroutine; awaiting it calls the mock and gives its outcome."""

    __slots__ = ()
    _style = "asyncio"

    def __call__(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        return _await_outcome(self._mock, self._args(args), kwargs, self._pure)


async def _await_outcome(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], pure: bool
) -> Any:
    """The mock's outcome for an ``await f.asyncio(...)``; the call happens (and is recorded) here,
    when awaited, as the real function only runs when awaited."""
    future = _as_future(fn, args, kwargs, pure)
    if future.is_computed():
        return future.value()
    # A pure function's mock returned a real task: run it as the real .asyncio() would.
    return await _value_of.asyncio(future)


@asynq()
def _value_of(future: FutureBase[Any]) -> Generator[Any, Any, Any]:
    return (yield future)


class _StandIn:
    """Installed instead of the mock when the mock alone cannot behave like the original.

    For a pure async function (whose call returns a future), and for an autospecced method that
    must bind its instance for both call styles. Attributes read and set go to the mock.
    """

    __slots__ = ("_mock", "_pure", "_binds", "_self")

    def __init__(
        self, target: Callable[..., Any], pure: bool, binds: bool, bound_self: Any = _NO_SELF
    ) -> None:
        object.__setattr__(self, "_mock", target)
        object.__setattr__(self, "_pure", pure)
        object.__setattr__(self, "_binds", binds)
        object.__setattr__(self, "_self", bound_self)

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        if not self._binds or obj is None:
            return self
        return _StandIn(self._mock, self._pure, False, obj)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._self is not _NO_SELF:
            args = (self._self, *args)
        if self._pure:
            return _as_future(self._mock, args, kwargs, pure=True)
        return self._mock(*args, **kwargs)

    @property
    def asynq(self) -> _AsynqSide:
        return _AsynqSide(self._mock, self._pure, self._self)

    @property
    def asyncio(self) -> _AsyncioSide:
        return _AsyncioSide(self._mock, self._pure, self._self)

    def is_pure_async_fn(self) -> bool:
        return bool(self._pure)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mock, name)

    def __setattr__(self, name: str, value: object) -> None:
        setattr(self._mock, name, value)

    def __repr__(self) -> str:
        return f"<batchq stand-in for {self._mock!r}>"


def _short(value: object, limit: int = 40) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- recognising async functions -----------------------------------------------------------------

_PURE: Final = "pure"
_ASYNC: Final = "async"


def _async_kind(original: Any) -> str | None:
    """``"pure"``, ``"async"``, or None when ``original`` is not an async function."""
    if original is mock.DEFAULT or isinstance(original, type):
        return None
    if isinstance(original, mock.NonCallableMock):
        # A mock has every attribute; only one that a batchq patch wired counts.
        side = original.__dict__.get("asynq")
        if isinstance(side, _AsynqSide):
            return _PURE if side._pure else _ASYNC
        return None
    if isinstance(original, (_StandIn, _AsyncCallable, BoundAsyncFunction)):
        return _PURE if original.is_pure_async_fn() else _ASYNC
    try:
        is_pure = getattr(original, "is_pure_async_fn", None)
        if callable(is_pure) and is_pure() is True:
            return _PURE
        return _ASYNC if hasattr(original, "asynq") else None
    except Exception:  # an exotic object whose attributes raise is not an async function
        return None


def _has_asyncio(original: Any) -> bool:
    """Whether ``original`` (an async function) offers ``.asyncio()``."""
    if isinstance(original, mock.NonCallableMock):
        return isinstance(original.__dict__.get("asyncio"), _AsyncioSide)
    try:
        return callable(getattr(original, "asyncio", None))
    except Exception:  # an exotic object whose attributes raise
        return False


def _signature_source(original: Any, target: Any) -> tuple[Any, bool]:
    """What to autospec instead of ``original``, and whether the result must bind an instance."""
    if isinstance(original, AsyncClassMethod):
        return classmethod(_decorated_function(original)), False
    if isinstance(original, AsyncStaticMethod):
        return staticmethod(_decorated_function(original)), False
    if isinstance(original, _AsyncCallable):
        return _decorated_function(original), isinstance(target, type)
    if isinstance(original, BoundAsyncFunction):
        return types.MethodType(_decorated_function(original.__func__), original.__self__), False
    call = getattr(original, "__call__", None)  # noqa: B004 - the bound __call__ is wanted
    return (call if call is not None else original), False


def _decorated_function(func: _AsyncCallable[..., Any]) -> Callable[..., Any]:
    """The function the user wrote under ``func``'s decorators, whose signature calls must match.

    A cached function's ``fn`` is a ``(*args, **kwargs)`` shim; the function it caches is its
    ``__wrapped__``, possibly itself decorated with ``@asynq()``.
    """
    inner: Any = func
    for _ in range(100):  # a bound on decorator depth, against a __wrapped__ cycle
        wrapped = inner.__dict__.get("__wrapped__") if hasattr(inner, "__dict__") else None
        if isinstance(inner, _AsyncCallable):
            inner = wrapped if wrapped is not None else inner.fn
        elif isinstance(wrapped, _AsyncCallable):
            inner = wrapped
        else:
            return inner  # type: ignore[no-any-return]
    return inner  # type: ignore[no-any-return]


def _wrap_new(new: Any, original: Any, kind: str) -> Any:
    """A ``new=`` replacement for an async function, answering both call styles."""
    if isinstance(new, mock.NonCallableMock):
        return new  # wired in place by the caller
    if _async_kind(new) is not None:
        return new  # already answers both styles
    if not callable(new) and not isinstance(new, (classmethod, staticmethod)):
        return new  # replaced by a value, as unittest.mock allows
    if kind == _PURE:
        if inspect.isfunction(new):
            return PureAsyncFunction(new)
        return _StandIn(new, pure=True, binds=False)
    if isinstance(new, classmethod):
        return AsyncClassMethod(new.__func__)
    if isinstance(new, staticmethod):
        return AsyncStaticMethod(new.__func__)
    if inspect.isfunction(new):
        # Mirror how the original binds, as the plain function would have.
        if isinstance(original, AsyncClassMethod):
            return AsyncClassMethod(new)
        if isinstance(original, AsyncStaticMethod):
            return AsyncStaticMethod(new)
        if isinstance(original, _AsyncCallable):
            return AsyncFunction(new)
    # A bound method, partial or callable object does not bind; neither does its replacement.
    return AsyncStaticMethod(new)


def _wire(created: Any, kind: str, asyncio: bool) -> None:
    """Give a mock (or autospecced function) an ``.asynq`` and ``.asyncio`` recording on itself."""
    # Straight into __dict__: a spec_set mock refuses new attributes, and a mock's own
    # __setattr__ would treat the value as a child.
    created.__dict__["asynq"] = _AsynqSide(created, kind == _PURE)
    if asyncio:  # only where the original has one: code calling it would fail for real
        created.__dict__["asyncio"] = _AsyncioSide(created, kind == _PURE)


# -- the patcher ---------------------------------------------------------------------------------

# Active batchq patches per (target, attribute), oldest first. Patches entered inside async
# functions need not end in reverse order: task A patches f, task B patches f, A ends first.
# unittest.mock would then put back the real f while B is still active, and B's end would put
# back A's mock for good. Here the patch ending out of order hands its original to the one above.
_stacks: dict[tuple[int, str], list[_Patch]] = {}


if TYPE_CHECKING:
    _PatchBase = mock._patch[Any]
else:  # generic only in the type stubs
    _PatchBase = mock._patch


class _Patch(_PatchBase):
    """``unittest.mock``'s patcher, made aware of async functions."""

    _installed: Any

    def __init__(
        self,
        getter: Callable[[], Any],
        attribute: str,
        new: Any,
        spec: Any,
        create: bool,
        spec_set: Any,
        autospec: Any,
        new_callable: Any,
        kwargs: Mapping[str, Any],
        *,
        unsafe: bool = False,
    ) -> None:
        args = (getter, attribute, new, spec, create, spec_set, autospec, new_callable, kwargs)
        if unsafe:
            super().__init__(*args, unsafe=True)
        else:
            super().__init__(*args)
        self.unsafe = unsafe

    def copy(self) -> _Patch:
        patcher = _Patch(
            self.getter,
            self.attribute,
            self.new,
            self.spec,
            self.create,
            self.spec_set,
            self.autospec,
            self.new_callable,
            self.kwargs,
            unsafe=self.unsafe,
        )
        patcher.attribute_name = self.attribute_name
        patcher.additional_patchers = [p.copy() for p in self.additional_patchers]
        return patcher

    # -- entering and leaving -------------------------------------------------------------------

    def __enter__(self) -> Any:
        original, _ = self.get_original()
        kind = _async_kind(original)
        given, autospec = self.new, self.autospec
        binds = False
        if kind is not None:
            if given is not mock.DEFAULT:
                self.new = _wrap_new(given, original, kind)
            elif autospec is True:
                # The decorated object's signature is (*args, **kwargs); check the function's.
                self.autospec, binds = _signature_source(original, self.getter())
        try:
            result = super().__enter__()
        finally:
            replacement = self.new
            self.new, self.autospec = given, autospec
        if given is mock.DEFAULT:
            created = result[self.attribute_name] if self.attribute_name is not None else result
        else:
            created = replacement
        if kind is not None:
            created = self._finish(created, kind, binds, _has_asyncio(original))
        self._installed = created
        self._push()
        return result

    def _finish(self, created: Any, kind: str, binds: bool, asyncio: bool) -> Any:
        """Wire the mock that replaced an async function; install a stand-in if it needs one."""
        if not (isinstance(created, mock.NonCallableMock) or inspect.isfunction(created)):
            return created  # a wrapper made by _wrap_new, or a non-callable replacement
        if not callable(created):
            return created
        _wire(created, kind, asyncio)
        if kind == _PURE or binds:
            standin = _StandIn(created, pure=kind == _PURE, binds=binds)
            setattr(self.target, self.attribute, standin)
            return standin
        return created

    def _push(self) -> None:
        _stacks.setdefault((id(self.target), self.attribute), []).append(self)

    def __exit__(self, *exc_info: Any) -> None:
        key = (id(self.target), self.attribute)
        stack = _stacks.get(key, [])
        if self in stack:
            index = stack.index(self)
            if index != len(stack) - 1:
                # Out of order: the patch above ours restores our original when it ends, and our
                # own restore leaves its replacement in place.
                above = stack[index + 1]
                above.temp_original, above.is_local = self.temp_original, self.is_local
                self.temp_original, self.is_local = stack[-1]._installed, True
            del stack[index]
            if not stack:
                del _stacks[key]
        return super().__exit__(*exc_info)

    # -- decorating -----------------------------------------------------------------------------

    def __call__(self, func: Any) -> Any:
        if isinstance(func, _AsyncCallable):
            # Patch both call styles of a decorated test function, and keep it async.
            return type(func)(self(func.fn), func.task_cls, func.sync_fn)
        if inspect.isgeneratorfunction(func):
            return self._decorate_generator(func)
        return super().__call__(func)

    def decorate_class(self, klass: Any) -> Any:
        prefix = patch.TEST_PREFIX
        for attr in dir(klass):
            if not attr.startswith(prefix):
                continue
            value = getattr(klass, attr)
            if not hasattr(value, "__call__"):  # noqa: B004 - as unittest.mock decides
                continue
            setattr(klass, attr, self.copy()(value))
        return klass

    def _decorate_generator(
        self, func: Callable[..., Generator[Any, Any, Any]]
    ) -> Callable[..., Generator[Any, Any, Any]]:
        """Keep the patch for the generator's whole life, not just the call that creates it."""
        patchings = getattr(func, "patchings", None)
        if patchings is not None:
            patchings.append(self)
            return func

        @functools.wraps(func)
        def patched(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            with self.decoration_helper(patched, args, kwargs) as (new_args, new_kwargs):  # type: ignore[arg-type]
                return (yield from func(*new_args, **new_kwargs))

        patched.patchings = [self]  # type: ignore[attr-defined]
        return patched


# -- the public entry points ---------------------------------------------------------------------


class _PatchEntry:
    """The ``patch`` callable, carrying ``.object``, ``.dict``, ``.multiple`` and ``.stopall``."""

    TEST_PREFIX: str = mock.patch.TEST_PREFIX
    dict = mock._patch_dict

    def __call__(
        self,
        target: str,
        new: Any = mock.DEFAULT,
        spec: Any = None,
        create: bool = False,
        spec_set: Any = None,
        autospec: Any = None,
        new_callable: Any = None,
        *,
        unsafe: bool = False,
        **kwargs: Any,
    ) -> _Patch:
        """Patch ``target`` ("package.module.name") like :func:`unittest.mock.patch`.

        An async function target is replaced by a mock answering ``f(...)`` and
        ``f.asynq(...)``, both recorded on it.
        """
        if not isinstance(target, str):
            msg = (
                f"patch() takes the target as a dotted string such as 'app.models.get_user', "
                f"got {target!r}; to patch an attribute of an object, use "
                "patch.object(obj, 'name')"
            )
            raise TypeError(msg)
        try:
            owner, attribute = target.rsplit(".", 1)
        except ValueError:
            msg = (
                f"patch() needs a dotted target such as 'app.models.get_user', got {target!r}; "
                "name the module too"
            )
            raise TypeError(msg) from None
        getter = functools.partial(_resolve, owner)
        return _Patch(
            getter,
            attribute,
            new,
            spec,
            create,
            spec_set,
            autospec,
            new_callable,
            kwargs,
            unsafe=unsafe,
        )

    def object(
        self,
        target: Any,
        attribute: str,
        new: Any = mock.DEFAULT,
        spec: Any = None,
        create: bool = False,
        spec_set: Any = None,
        autospec: Any = None,
        new_callable: Any = None,
        *,
        unsafe: bool = False,
        **kwargs: Any,
    ) -> _Patch:
        """Patch ``target.attribute`` like :func:`unittest.mock.patch.object`."""
        if isinstance(target, str):
            msg = (
                f"patch.object() takes the object to patch, got the string {target!r}; "
                f"use patch('{target}.{attribute}') to patch by name"
            )
            raise TypeError(msg)
        return _Patch(
            lambda: target,
            attribute,
            new,
            spec,
            create,
            spec_set,
            autospec,
            new_callable,
            kwargs,
            unsafe=unsafe,
        )

    def multiple(
        self,
        target: Any,
        spec: Any = None,
        create: bool = False,
        spec_set: Any = None,
        autospec: Any = None,
        new_callable: Any = None,
        **kwargs: Any,
    ) -> _Patch:
        """Patch several attributes of ``target`` at once, like ``unittest.mock.patch.multiple``.

        Pass ``name=DEFAULT`` to have a mock created; created mocks are passed by keyword to a
        decorated function, or returned in a dict by the context manager.
        """
        if not kwargs:
            msg = (
                "patch.multiple() needs at least one attribute to patch, as a keyword: "
                "patch.multiple(module, get_user=DEFAULT)"
            )
            raise ValueError(msg)
        if isinstance(target, str):
            getter: Callable[[], Any] = functools.partial(_resolve, target)
        else:
            getter = lambda: target  # noqa: E731 - mirrors patch.object
        patchers = []
        for attribute, new in kwargs.items():
            patcher = _Patch(
                getter, attribute, new, spec, create, spec_set, autospec, new_callable, {}
            )
            patcher.attribute_name = attribute
            patchers.append(patcher)
        first = patchers[0]
        first.additional_patchers = patchers[1:]
        return first

    def stopall(self) -> None:
        """Stop every patch started with ``start()`` (batchq's and unittest.mock's alike)."""
        mock.patch.stopall()

    def __repr__(self) -> str:
        return "<batchq.mock.patch>"


def _resolve(name: str) -> Any:
    import pkgutil

    return pkgutil.resolve_name(name)


patch: Final = _PatchEntry()
"""Drop-in for :func:`unittest.mock.patch` that also patches ``f.asynq(...)``; see the module."""
