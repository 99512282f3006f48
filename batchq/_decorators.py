"""``@asynq()``: ``f(x)`` runs to the end and returns the value; ``f.asynq(x)`` returns a task.

Typed with ParamSpec so that ``f.asynq(x)`` is ``AsyncTask[T]`` for a function returning ``T``
(or a generator returning ``T``). Method binding is written here rather than on
``qcore.decorators.DecoratorBase`` because that erases the signature to ``Callable[..., T]`` and
adds a binder call on every method call.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import os
import sys
from collections.abc import Callable, Coroutine, Generator
from inspect import CO_VARARGS, CO_VARKEYWORDS
from types import FunctionType, MethodType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Concatenate,
    Generic,
    Literal,
    ParamSpec,
    TypeVar,
    overload,
)

from ._core._errors import AsyncTaskResult, YieldTypeError
from ._core._format import fn_name
from ._core._futures import NOT_COMPUTED, FutureBase
from ._core._loop import run_sync
from ._core._task import AsyncTask
from ._core._unyielded import new_checked_task

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - exercised on 3.10 only
    from typing_extensions import Self

__all__ = [
    "asynq",
    "AsyncFunction",
    "PureAsyncFunction",
    "BoundAsyncFunction",
    "AsyncStaticMethod",
    "AsyncClassMethod",
]

P = ParamSpec("P")
P2 = ParamSpec("P2")
T = TypeVar("T")
S = TypeVar("S")

# The globals of every generated task maker. ``_bq_new`` makes the task object: object.__new__,
# or, while unyielded tasks are reported, a maker of tasks that report it (see set_checked_tasks).
_MAKER_GLOBALS: dict[str, Any] = {"_bq_new": object.__new__}


def set_checked_tasks(enabled: bool) -> bool:
    """Make every ``f.asynq(...)`` build tasks that warn when dropped unyielded; returns the
    previous setting. Process-wide: task makers are shared by every thread."""
    previous = _MAKER_GLOBALS["_bq_new"] is new_checked_task
    _MAKER_GLOBALS["_bq_new"] = new_checked_task if enabled else object.__new__
    return previous


def checked_tasks() -> bool:
    return _MAKER_GLOBALS["_bq_new"] is new_checked_task


# On where mistakes are made: Python's development mode (-X dev) or BATCHQ_DEBUG=1. The pytest
# plugin switches it on for test sessions.
if sys.flags.dev_mode or os.environ.get("BATCHQ_DEBUG", "") not in ("", "0"):
    set_checked_tasks(True)
_WRAPPER_ASSIGNMENTS = ("__module__", "__name__", "__qualname__", "__doc__")


def _call_plain(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Generator[Any, Any, Any]:
    """Run a plain (non-generator) function as a task that never yields."""
    value = fn(*args, **kwargs)
    if isinstance(value, FutureBase):
        msg = (
            f"{fn_name(fn)}() is a plain (non-generator) async function and returned {value!r}, "
            "a future, as its value: did you forget to yield it? Write "
            "`return (yield g.asynq(...))`, which makes it a generator, or decorate it with "
            "@async_proxy() if returning a future is what you mean."
        )
        raise YieldTypeError(msg)
    return value
    yield  # makes this a generator  # pragma: no cover


def _call_plain_sync(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call a plain function directly; ``result(x)`` in it returns ``x``, as from its task."""
    try:
        return fn(*args, **kwargs)
    except AsyncTaskResult as r:
        return r.result


class _AsyncCallable(Generic[P, T]):
    """What every decorated function shares: the wrapped ``fn`` and how to make its task."""

    fn: Callable[..., Any]
    task_cls: type[AsyncTask[Any]]
    binder_cls: ClassVar[type[BoundMethod[Any, Any]]]

    def __init__(
        self,
        fn: Callable[..., Any],
        task_cls: type[AsyncTask[Any]] = AsyncTask,
        sync_fn: Callable[..., Any] | None = None,
        asyncio_fn: Callable[..., Any] | None = None,
    ) -> None:
        if isinstance(fn, (classmethod, staticmethod)):
            # asynq's decorator classes take a raw classmethod too (custom subclasses do this).
            fn = fn.__func__
        if inspect.iscoroutinefunction(fn):
            msg = (
                f"@asynq() cannot decorate the coroutine function {fn!r} (async def): batchq "
                "async functions are generators that yield what they wait on. Call asyncio code "
                "from batchq through batchq.from_asyncio(...), or write a generator function."
            )
            raise TypeError(msg)
        if not callable(fn):
            msg = f"@asynq() decorates functions, got {fn!r} of type {type(fn).__name__}"
            raise TypeError(msg)
        # Like functools.wraps: the function's attributes first, then ours, so that a function
        # wrapped with functools.wraps(other_async_fn) cannot smuggle in the other's fn/flags.
        try:
            self.__dict__.update(getattr(fn, "__dict__", {}))
        except Exception:
            pass
        for attr in _WRAPPER_ASSIGNMENTS:
            try:
                setattr(self, attr, getattr(fn, attr))
            except AttributeError:
                pass
        self.__wrapped__ = fn
        self.fn = fn
        self.task_cls = task_cls
        self.sync_fn = sync_fn
        self.asyncio_fn = asyncio_fn
        self._is_gen = inspect.isgeneratorfunction(fn)
        # A subclass that overrides _call_pure (asynq's extension point) decides every call.
        self._own_call = type(self)._call_pure is not _AsyncCallable._call_pure

    def _call_pure(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncTask[T]:
        """The task of one call; asynq's name, which custom decorator subclasses override."""
        fn = self.fn
        task_cls = self.task_cls or AsyncTask
        if self._is_gen:
            return task_cls(fn(*args, **kwargs), fn, args, kwargs)
        return task_cls(_call_plain(fn, args, kwargs), fn, args, kwargs)

    def is_pure_async_fn(self) -> bool:
        return False

    def is_decorator(self) -> bool:
        """qcore's decorator protocol, which introspection tools (pycroscope) follow."""
        return True

    @property
    def decorator(self) -> Self:
        """Itself: ``Class.method`` is the decorated function, where qcore gives an unbound
        binder whose ``decorator`` it is; ``Class.method.decorator`` reads the same in both."""
        return self

    def __reduce__(self) -> str:
        # Pickled by reference, like the function it decorates: task queues and multiprocessing
        # send function references, and copy.deepcopy(f) is f.
        name: str = getattr(self, "__qualname__", self.fn.__qualname__)
        return name

    def name(self) -> str:
        return "@asynq()"

    def __repr__(self) -> str:
        return f"<{self.name()} {getattr(self, '__qualname__', self.fn)!r}>"


class AsyncFunction(_AsyncCallable[P, T]):
    """A function decorated with ``@asynq()``."""

    def __init__(
        self,
        fn: Callable[..., Any],
        task_cls: type[AsyncTask[Any]] = AsyncTask,
        sync_fn: Callable[..., Any] | None = None,
        asyncio_fn: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(fn, task_cls, sync_fn, asyncio_fn)

    def asynq(self, /, *args: P.args, **kwargs: P.kwargs) -> AsyncTask[T]:
        """The task of this call, to ``yield`` from another async function."""
        return self._call_pure(args, kwargs)

    def asyncio(self, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        """Await this call from asyncio code; calls pending at the same moment share rounds."""
        if self.asyncio_fn is not None:
            return self.asyncio_fn(*args, **kwargs)  # type: ignore[no-any-return]
        from ._asyncio import run_in_loop

        return run_in_loop(lambda: self.asynq(*args, **kwargs))

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self.sync_fn is not None:
            return self.sync_fn(*args, **kwargs)  # type: ignore[no-any-return]
        if not self._is_gen:
            # Called directly, without a task (_call_plain_sync inlined, for speed). A subclass
            # that overrides _call_pure gets _call_through_call_pure as __call__ instead.
            try:
                return self.fn(*args, **kwargs)  # type: ignore[no-any-return]
            except AsyncTaskResult as r:
                return r.result  # type: ignore[return-value]
        return run_sync(self._call_pure(args, kwargs))

    def _call_through_call_pure(self, /, *args: Any, **kwargs: Any) -> Any:
        if self.sync_fn is not None:
            return self.sync_fn(*args, **kwargs)
        return run_sync(self._call_pure(args, kwargs))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # asynq's extension point: a custom decorator overrides _call_pure, and every call,
        # also of a plain function, goes through it. Decided once here, not on every call.
        if (
            cls._call_pure is not _AsyncCallable._call_pure
            and cls.__call__ is AsyncFunction.__call__
        ):
            cls.__call__ = AsyncFunction._call_through_call_pure  # type: ignore[method-assign]

    @overload
    def __get__(
        self: AsyncFunction[Concatenate[type[S], P2], T], obj: None, owner: type[S]
    ) -> BoundAsyncFunction[P2, T]: ...

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...

    @overload
    def __get__(
        self: AsyncFunction[Concatenate[S, P2], T], obj: S, owner: type[Any] | None = None
    ) -> BoundAsyncFunction[P2, T]: ...

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        # BoundAsyncFunction(self, obj) without its __init__ call: once per obj.method.
        bound: BoundAsyncFunction[Any, Any] = _new_object(BoundAsyncFunction)
        bound.__func__ = self
        bound.__self__ = obj
        return bound


class _GeneratorAsyncFunction(AsyncFunction[P, T]):
    """The common case (a generator function, the default task class, no sync_fn), specialised
    so that ``f.asynq(x)`` makes its task without a further call or branch.

    For a plain Python function, ``asynq`` is a function generated with that function's own
    signature: the arguments go straight to the generator, without a tuple and a dict packed per
    call. It lives in a slot, not in ``__dict__``, so ``functools.wraps`` never copies it onto a
    wrapper (whose ``asynq`` would then skip the wrapper).
    """

    __slots__ = ("asynq", "_bound_maker")

    def __new__(
        cls,
        fn: Callable[..., Any],
        task_cls: type[AsyncTask[Any]] = AsyncTask,
        sync_fn: Callable[..., Any] | None = None,
        asyncio_fn: Callable[..., Any] | None = None,
    ) -> Self:
        func = fn.__func__ if isinstance(fn, (classmethod, staticmethod)) else fn
        if inspect.isgeneratorfunction(func):
            return object.__new__(cls)
        # Rebuilt from a plain function (type(f)(g)): the maker and __call__ here would run g's
        # return value as a generator. What @asynq() makes of g instead (not a subclass of cls:
        # type.__call__ does not initialize it a second time).
        return AsyncFunction(fn, task_cls, sync_fn, asyncio_fn)  # type: ignore[return-value]

    def __init__(
        self,
        fn: Callable[..., Any],
        task_cls: type[AsyncTask[Any]] = AsyncTask,
        sync_fn: Callable[..., Any] | None = None,
        asyncio_fn: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(fn, task_cls, sync_fn, asyncio_fn)
        maker: Callable[..., AsyncTask[Any]]
        if task_cls is not AsyncTask:  # rebuilt by type(f)(fn, task_cls, sync_fn), e.g. in mock
            maker = AsyncFunction.asynq
        else:
            maker = _task_factory(fn) or _packed_task_factory(fn)
        # A bound method named asynq whose __self__ is f, as in asynq: tools find f from it.
        self.asynq = MethodType(maker, self)  # type: ignore[method-assign]
        # obj.f.asynq's task maker: made when first asked for (most functions are not methods).
        self._bound_maker: Callable[..., AsyncTask[Any]] | None = (
            None if task_cls is AsyncTask else _generic_bound_asynq
        )

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        # The task from the generated maker too: no tuple and dict of the arguments per call.
        if self.sync_fn is not None:
            return self.sync_fn(*args, **kwargs)  # type: ignore[no-any-return]
        try:
            task = self.asynq(*args, **kwargs)
        except TypeError:
            # Bad arguments. The maker's count of them includes its hidden first parameter (the
            # bound f): fn itself says what is wrong ("f() takes 1 positional argument but 2
            # were given"); the generator it makes is never started.
            self.fn(*args, **kwargs)
            raise
        try:
            return run_sync(task)
        except BaseException:
            if task._sched is None:
                # Refused before it ran (a synchronous call inside a task, in strict mode): the
                # caller sees the error, and the task must not also be reported as unyielded.
                task._gen = None
            raise


# Every generated ``asynq``: AsyncTask.__init__ inlined, the arguments passed as received.
_FACTORY_TEMPLATE = """\
def _bq_make(_bq_fn, _bq_cls, _bq_nc{defaults}):
    def asynq({params}):
        _bq_task = _bq_new(_bq_cls)
        _bq_task._value = _bq_nc
        _bq_task._error = None
        _bq_task._waiters = None
        _bq_task._gen = _bq_fn({call})
        _bq_task._dep = None
        _bq_task._npending = 0
        _bq_task._sched = None
        _bq_task._contexts = None
        _bq_task._call = _bq_fn
        return _bq_task
    return asynq
"""


def _task_factory(
    fn: Callable[..., Any], method: bool = True, bound: bool = False
) -> Callable[..., AsyncTask[Any]] | None:
    """``fn``'s task maker with ``fn``'s own parameters, or None if they cannot be copied.

    With ``method``, a first parameter that is ignored comes before them (the maker is bound to
    the decorated function as its ``asynq``). Without, the maker takes exactly ``fn``'s
    parameters, so that Python's errors about the arguments count them as for ``fn``. With
    ``bound``, the maker is the ``asynq`` method of a :class:`BoundAsyncFunction`: it takes
    ``fn``'s parameters too, but its first one receives that bound method, whose ``__self__`` it
    passes as ``fn``'s first argument (the errors read as for the bound method ``obj.fn``).

    Read from the code object, not ``inspect.signature``, which would believe a ``__wrapped__``
    or ``__signature__`` that the function does not actually have.
    """
    if type(fn) is not FunctionType:
        return None
    code = fn.__code__
    nargs = code.co_argcount
    nposonly = code.co_posonlyargcount
    nkwonly = code.co_kwonlyargcount
    names = code.co_varnames
    star = bool(code.co_flags & CO_VARARGS)
    starstar = bool(code.co_flags & CO_VARKEYWORDS)
    used = names[: nargs + nkwonly + star + starstar]
    if any(name.startswith("_bq_") or name == "asynq" for name in used):
        return None
    defaults = fn.__defaults__ or ()
    kwdefaults = fn.__kwdefaults__ or {}
    env: dict[str, Any] = {}
    params: list[str] = []
    call: list[str] = []
    first_default = nargs - len(defaults)
    for i, name in enumerate(names[:nargs]):
        if i >= first_default:
            env[f"_bq_d{i}"] = defaults[i - first_default]
            params.append(f"{name}=_bq_d{i}")
        else:
            params.append(name)
        call.append(name)
        if i + 1 == nposonly:
            params.append("/")
    if star:
        params.append(f"*{names[nargs + nkwonly]}")
        call.append(f"*{names[nargs + nkwonly]}")
    elif nkwonly:
        params.append("*")
    for j, name in enumerate(names[nargs : nargs + nkwonly]):
        if name in kwdefaults:
            env[f"_bq_k{j}"] = kwdefaults[name]
            params.append(f"{name}=_bq_k{j}")
        else:
            params.append(name)
        call.append(f"{name}={name}")
    if starstar:
        params.append(f"**{names[nargs + nkwonly + star]}")
        call.append(f"**{names[nargs + nkwonly + star]}")
    if bound:
        # fn's first parameter (the instance) is where the bound method comes in: passed on as
        # its __self__. Kept under fn's name, so that a call naming it (obj.m.asynq(self=1))
        # fails as obj.m's own would.
        if not nargs:
            return None
        call[0] = f"{names[0]}.__self__"
    elif method:
        params[:0] = ["_bq_self"] if nposonly else ["_bq_self", "/"]
    return _build_factory(fn, params, call, env, "bound task maker" if bound else "task maker")


def _packed_task_factory(
    fn: Callable[..., Any], method: bool = True
) -> Callable[..., AsyncTask[Any]]:
    """The task maker for any callable: arguments packed and passed on as they came (after an
    ignored first parameter with ``method``, as in :func:`_task_factory`)."""
    packed = ["*_bq_args", "**_bq_kwargs"]
    return _build_factory(fn, ["_bq_self", "/", *packed] if method else packed, packed, {})


@functools.lru_cache(maxsize=4096)
def _compiled_maker(source: str) -> Callable[..., Callable[..., AsyncTask[Any]]]:
    """Compile a factory source once: functions with the same parameters share it (compiling
    costs about 70 µs, which every decorated function would otherwise add to import time)."""
    # Safe: the source holds only identifiers read from a function's own code object. Defined in
    # a namespace of its own, not in the shared globals (which the maker reads _bq_new from):
    # another thread may be compiling its own _bq_make at the same moment.
    namespace: dict[str, Any] = {}
    exec(source, _MAKER_GLOBALS, namespace)
    maker: Callable[..., Callable[..., AsyncTask[Any]]] = namespace["_bq_make"]
    return maker


@functools.lru_cache(maxsize=4096)
def _source_lines(source: str) -> list[str]:
    """The lines of a factory source, shared by every function whose maker it compiles to."""
    return source.splitlines(True)


def _build_factory(
    fn: Callable[..., Any],
    params: list[str],
    call: list[str],
    env: dict[str, Any],
    kind: str = "task maker",
) -> Callable[..., AsyncTask[Any]]:
    source = _FACTORY_TEMPLATE.format(
        defaults="".join(f", {name}" for name in env),
        params=", ".join(params),
        call=", ".join(call),
    )
    factory: Callable[..., AsyncTask[Any]] = _compiled_maker(source)(
        fn, AsyncTask, NOT_COMPUTED, *env.values()
    )
    # Its own code name and file, so that profilers keep each function's task maker on its own
    # row and tracebacks and inspect.getsource show the generated code (registered in linecache).
    # Replacing the code object costs about 1 µs; compiling it would cost 70. The code's
    # qualname is fn's, so that errors in the arguments read as for fn: "f() missing 1 ...".
    # A method's second maker (obj.method.asynq's) has a file of its own: named like the first,
    # it would replace the first's source in linecache and share its profiler row.
    qualname = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "fn"))
    module = getattr(fn, "__module__", None) or "?"
    filename = f"<batchq {kind} for {module}.{qualname}>"
    if sys.version_info >= (3, 11):
        code = factory.__code__.replace(co_filename=filename, co_qualname=qualname)
    else:  # pragma: no cover - exercised on 3.10 only
        code = factory.__code__.replace(co_filename=filename)
    factory.__code__ = code
    linecache.cache[filename] = (len(source), None, _source_lines(source), filename)
    factory.__qualname__ = qualname
    factory.__module__ = module
    factory.__doc__ = "The task of this call, to ``yield`` from another async function."
    return factory


class _BoundSignature:
    """``inspect.signature(obj.method)``: the decorated function's, without ``self``/``cls``.

    On the class itself it is None, so that ``inspect.signature(BoundAsyncFunction)`` reads the
    constructor as usual (a property would hand inspect the property object).
    """

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> inspect.Signature | None:
        if obj is None:
            return None
        sig = inspect.signature(obj.__func__.fn)
        params = list(sig.parameters.values())
        if params and params[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            params = params[1:]
        return sig.replace(parameters=params)


class BoundMethod(Generic[P, T]):
    """What every bound async callable shares; subclasses add ``asynq`` and ``__call__``."""

    __slots__ = ("__func__", "__self__")

    def __init__(self, func: Any, obj: object) -> None:
        self.__func__ = func
        self.__self__ = obj

    def _bound_sync_fn(self) -> Callable[..., Any] | None:
        """``sync_fn`` bound like a method, if the decorated function has one."""
        sync_fn: Callable[..., Any] | None = self.__func__.sync_fn
        if sync_fn is None:
            return None
        bind = getattr(sync_fn, "__get__", None)
        if bind is None:
            return sync_fn
        if isinstance(self.__func__, AsyncClassMethod):
            # __self__ is the class; a classmethod sync_fn binds to it, not to its metaclass.
            bound: Callable[..., Any] = bind(None, self.__self__)
        else:
            bound = bind(self.__self__, type(self.__self__))
        return bound

    # No ``fn`` property: a bound method follows qcore's binder protocol (``decorator``,
    # ``instance``), and tools that find ``fn`` on the class would unwrap it to the unbound
    # function. ``bound.fn`` still works, through __getattr__.

    @property
    def decorator(self) -> Any:
        return self.__func__

    @property
    def instance(self) -> object:
        return self.__self__

    def is_decorator(self) -> bool:
        return True

    __signature__ = _BoundSignature()

    def is_pure_async_fn(self) -> bool:
        return False

    def name(self) -> str:
        return self.__func__.name()  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        if name in ("__func__", "__self__"):
            # Not set yet (copy and pickle make the object first): no endless recursion.
            raise AttributeError(name)
        return getattr(self.__func__, name)

    def __copy__(self) -> Self:
        return self  # as immutable as the function and the instance it holds

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        # As copy.deepcopy does Python's own methods: the function bound to a copy of the instance
        # (by name, a base class's method bound through super() would become the override).
        import copy

        return type(self)(self.__func__, copy.deepcopy(self.__self__, memo))

    def __reduce__(self) -> tuple[Any, ...]:
        # As Python's own bound methods: bound again from the instance (or class) by name. Unlike
        # them, refused when that name finds another method, which would load in its place.
        name = self.__func__.__name__
        if self != getattr(self.__self__, name, None):
            import pickle

            msg = (
                f"cannot pickle {self!r}: a bound method is pickled as its instance and its "
                f"name {name!r}, and that name finds another method or nothing on the instance "
                "(a base class's method bound through super(), or one stored under another "
                "name). Pickle the instance and read the method from it after loading."
            )
            raise pickle.PicklingError(msg)
        return (getattr, (self.__self__, name))

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and other.__func__ is self.__func__
            and other.__self__ is self.__self__
        )

    def __hash__(self) -> int:
        return hash((id(self.__func__), id(self.__self__)))

    def __repr__(self) -> str:
        return f"<bound {self.__func__!r} of {self.__self__!r}>"


class BoundAsyncFunction(BoundMethod[P, T]):
    """An ``@asynq()`` method bound to its instance (or class, for classmethods)."""

    __slots__ = ()
    __func__: _AsyncCallable[Any, T]

    if TYPE_CHECKING:
        # At run time, a property (set below the class): the method's own task maker.
        def asynq(self, /, *args: P.args, **kwargs: P.kwargs) -> AsyncTask[T]:
            """The task of this call, to ``yield`` from another async function."""

    def asyncio(self, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        """Await this call from asyncio code; calls pending at the same moment share rounds."""
        asyncio_fn = self.__func__.asyncio_fn
        if asyncio_fn is not None:
            return asyncio_fn(self.__self__, *args, **kwargs)  # type: ignore[no-any-return]
        from ._asyncio import run_in_loop

        return run_in_loop(lambda: self.asynq(*args, **kwargs))

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> T:
        sync_fn = self._bound_sync_fn()
        if sync_fn is not None:
            return sync_fn(*args, **kwargs)  # type: ignore[no-any-return]
        func = self.__func__
        if not func._is_gen and not func._own_call:
            return _call_plain_sync(func.fn, (self.__self__, *args), kwargs)  # type: ignore[no-any-return]
        return run_sync(func._call_pure((self.__self__, *args), kwargs))


class AsyncClassMethod(AsyncFunction[P, T]):
    """``@asynq()`` over ``@classmethod``: binds to the class, also when read from an instance."""

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        return BoundAsyncFunction(self, owner if owner is not None else type(obj))


class AsyncStaticMethod(AsyncFunction[P, T]):
    """``@asynq()`` over ``@staticmethod``: never binds."""

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        return self


class PureAsyncFunction(_AsyncCallable[P, T]):
    """``@asynq(pure=True)``: calling it returns the task itself (asynq's pure mode)."""

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> AsyncTask[T]:
        if self._own_call:
            return self._call_pure(args, kwargs)  # a custom decorator subclass
        fn = self.fn
        task_cls = self.task_cls or AsyncTask
        if self._is_gen:
            return task_cls(fn(*args, **kwargs), fn)
        return task_cls(_call_plain(fn, args, kwargs), fn, args, kwargs)

    def asyncio(self, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        """Await this call from asyncio code; calls pending at the same moment share rounds."""
        if self.asyncio_fn is not None:
            return self.asyncio_fn(*args, **kwargs)  # type: ignore[no-any-return]
        from ._asyncio import run_in_loop

        return run_in_loop(lambda: self(*args, **kwargs))

    def is_pure_async_fn(self) -> bool:
        return True

    def name(self) -> str:
        return "@asynq(pure=True)"

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        # BoundPureAsyncFunction(self, obj) without its __init__ call: once per obj.method.
        bound: BoundPureAsyncFunction[Any, Any] = _new_object(BoundPureAsyncFunction)
        bound.__func__ = self
        bound.__self__ = obj
        return bound


class _GeneratorPureAsyncFunction(PureAsyncFunction[P, T]):
    """The common pure case (a generator function, the default task class), specialised so that
    ``f(x)`` makes its task without packing the arguments or a further call.

    A call on an instance goes through its type, so each function gets a subclass of its own
    (made by :func:`_pure_function`) whose ``__call__`` is the function's generated task maker.
    Built again from another function (``type(f)(g)``, as a decorator of decorated functions
    does), it builds ``g``'s own class instead of reusing ``f``'s maker.
    """

    _bq_fn: ClassVar[Any] = None
    # obj.f(x)'s task maker (the function's parameters, the instance from the bound method):
    # made on the first such call, as most pure functions are not methods.
    _bq_bound: ClassVar[Callable[..., AsyncTask[Any]] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls._call_pure is _AsyncCallable._call_pure:
            cls._bq_bound = None  # (its own, not a base's made for another function)
            return
        # A subclass of a function's class that overrides _call_pure (asynq's extension point)
        # decides every call: the generated makers it would inherit skip the override.
        if "__call__" not in cls.__dict__:
            cls.__call__ = PureAsyncFunction.__call__  # type: ignore[method-assign]
        cls._bq_bound = staticmethod(_generic_bound_pure)

    def __new__(
        cls,
        fn: Callable[..., Any],
        task_cls: type[AsyncTask[Any]] = AsyncTask,
        sync_fn: Callable[..., Any] | None = None,
        asyncio_fn: Callable[..., Any] | None = None,
    ) -> Self:
        if fn is cls._bq_fn and task_cls is AsyncTask:
            return object.__new__(cls)
        # Not a subclass of cls: type.__call__ does not initialize it a second time.
        return _pure_function(fn, task_cls, asyncio_fn)  # type: ignore[return-value]


def _pure_function(
    fn: Callable[..., Any], task_cls: type[AsyncTask[Any]], asyncio_fn: Callable[..., Any] | None
) -> PureAsyncFunction[Any, Any]:
    """``@asynq(pure=True)`` of a plain function: its own fast class when it can have one."""
    if task_cls is not AsyncTask or not inspect.isgeneratorfunction(fn):
        return PureAsyncFunction(fn, task_cls, None, asyncio_fn)
    # A static method: the maker takes fn's own parameters, not the instance, so that Python's
    # errors about the arguments count them as for fn (and a call passes one argument less).
    maker = _task_factory(fn, method=False) or _packed_task_factory(fn, method=False)
    cls = type(
        "PureAsyncFunction",
        (_GeneratorPureAsyncFunction,),
        {
            "__call__": staticmethod(maker),
            "_bq_fn": fn,
            "__module__": PureAsyncFunction.__module__,
        },
    )
    cls.__qualname__ = PureAsyncFunction.__qualname__
    func: PureAsyncFunction[Any, Any] = object.__new__(cls)
    func.__init__(fn, task_cls, None, asyncio_fn)  # type: ignore[misc]
    return func


def _generic_bound_asynq(bound: BoundAsyncFunction[Any, Any], /, *args: Any, **kwargs: Any) -> Any:
    """``obj.method.asynq`` of any async function: the call packed and passed on."""
    func = bound.__func__
    if type(func) is _GeneratorAsyncFunction:
        # Its generated task maker: no argument tuple kept per task.
        return func.asynq(bound.__self__, *args, **kwargs)
    return func._call_pure((bound.__self__, *args), kwargs)


# Named like every asynq, where tools look for it (obj.method.asynq.__name__ == "asynq").
_generic_bound_asynq.__name__ = "asynq"
_generic_bound_asynq.__qualname__ = "BoundAsyncFunction.asynq"


def _bound_asynq(bound: BoundAsyncFunction[Any, Any]) -> Any:
    """``obj.method.asynq``: the method's own task maker, bound to ``obj.method``.

    For a generator method it is generated with the method's parameters (the instance taken from
    the bound method), so ``obj.method.asynq(x)`` makes its task in one call, as ``f.asynq(x)``
    does; the generic maker packs the arguments and calls on. Either way it is a bound method
    named ``asynq`` whose ``__self__`` is ``obj.method``: tools find the function from it. (A
    property: its getter is called from C, cheaper than a descriptor's ``__get__`` in Python.)
    """
    func = bound.__func__
    if type(func) is not _GeneratorAsyncFunction:
        return MethodType(_generic_bound_asynq, bound)
    maker = func._bound_maker
    if maker is None:
        maker = func._bound_maker = (
            _task_factory(func.fn, method=False, bound=True) or _generic_bound_asynq
        )
    return MethodType(maker, bound)


BoundAsyncFunction.asynq = property(_bound_asynq)  # type: ignore[assignment,method-assign]


_new_object = object.__new__


class BoundPureAsyncFunction(BoundAsyncFunction[P, T]):
    """A pure async method bound to its instance: calling it returns the task."""

    __slots__ = ()

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> AsyncTask[T]:  # type: ignore[override]
        func = self.__func__
        if isinstance(func, _GeneratorPureAsyncFunction):  # (of a class of its own)
            maker = func._bq_bound
            if maker is None:
                maker = _task_factory(func.fn, method=False, bound=True) or _generic_bound_pure
                type(func)._bq_bound = staticmethod(maker)  # (not bound to func when read)
            return maker(self, *args, **kwargs)
        return func._call_pure((self.__self__, *args), kwargs)

    def is_pure_async_fn(self) -> bool:
        return True


def _generic_bound_pure(
    bound: BoundPureAsyncFunction[Any, Any], /, *args: Any, **kwargs: Any
) -> Any:
    """``obj.f(x)``'s task for a pure method whose parameters the generated maker cannot copy."""
    return bound.__func__._call_pure((bound.__self__, *args), kwargs)


class PureAsyncClassMethod(PureAsyncFunction[P, T]):
    """``@asynq(pure=True)`` over ``@classmethod``: binds to the class."""

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        return BoundPureAsyncFunction(self, owner if owner is not None else type(obj))


class PureAsyncStaticMethod(PureAsyncFunction[P, T]):
    """``@asynq(pure=True)`` over ``@staticmethod``: never binds."""

    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        return self


# qcore's decorator protocol: ``type`` says how a decorator binds (None, classmethod or
# staticmethod); a qcore decorator applied on top of ours reads it (asynq-era custom decorators).
# Set here, not in the class bodies, where an attribute named ``type`` would shadow the builtin.
for _cls, _binding in (
    (_AsyncCallable, None),
    (AsyncClassMethod, classmethod),
    (AsyncStaticMethod, staticmethod),
    (PureAsyncClassMethod, classmethod),
    (PureAsyncStaticMethod, staticmethod),
):
    setattr(_cls, "type", _binding)  # noqa: B010


# qcore's decorator protocol: the class a method binds to. With ``fn``, it is how tools
# (pycroscope) recognise a method-like decorator and check ``obj.method(...)`` as a method call.
_AsyncCallable.binder_cls = BoundAsyncFunction
PureAsyncFunction.binder_cls = BoundPureAsyncFunction


class _Decorate:
    """What ``asynq()`` returns: applies the decorator, keeping the signature for mypy."""

    def __init__(
        self,
        task_cls: type[AsyncTask[Any]],
        sync_fn: Callable[..., Any] | None,
        asyncio_fn: Callable[..., Any] | None = None,
    ) -> None:
        self._task_cls = task_cls
        self._sync_fn = sync_fn
        self._asyncio_fn = asyncio_fn

    @overload
    def __call__(
        self, fn: classmethod[Any, P, Generator[Any, Any, T]]
    ) -> AsyncClassMethod[P, T]: ...
    @overload
    def __call__(self, fn: classmethod[Any, P, T]) -> AsyncClassMethod[P, T]: ...
    @overload
    def __call__(self, fn: staticmethod[P, Generator[Any, Any, T]]) -> AsyncStaticMethod[P, T]: ...
    @overload
    def __call__(self, fn: staticmethod[P, T]) -> AsyncStaticMethod[P, T]: ...
    @overload
    def __call__(self, fn: Callable[P, Generator[Any, Any, T]]) -> AsyncFunction[P, T]: ...
    @overload
    def __call__(self, fn: Callable[P, T]) -> AsyncFunction[P, T]: ...

    def __call__(self, fn: Any) -> Any:
        _refuse_double(fn)
        args = (self._task_cls, self._sync_fn, self._asyncio_fn)
        if isinstance(fn, classmethod):
            return AsyncClassMethod(fn.__func__, *args)
        if isinstance(fn, staticmethod):
            return AsyncStaticMethod(fn.__func__, *args)
        if (
            self._task_cls is AsyncTask
            and self._sync_fn is None
            and inspect.isgeneratorfunction(fn)
        ):
            return _GeneratorAsyncFunction(fn, AsyncTask, None, self._asyncio_fn)
        return AsyncFunction(fn, *args)


class _DecoratePure:
    def __init__(
        self, task_cls: type[AsyncTask[Any]], asyncio_fn: Callable[..., Any] | None = None
    ) -> None:
        self._task_cls = task_cls
        self._asyncio_fn = asyncio_fn

    @overload
    def __call__(
        self, fn: classmethod[Any, P, Generator[Any, Any, T]]
    ) -> PureAsyncClassMethod[P, T]: ...
    @overload
    def __call__(self, fn: classmethod[Any, P, T]) -> PureAsyncClassMethod[P, T]: ...
    @overload
    def __call__(
        self, fn: staticmethod[P, Generator[Any, Any, T]]
    ) -> PureAsyncStaticMethod[P, T]: ...
    @overload
    def __call__(self, fn: staticmethod[P, T]) -> PureAsyncStaticMethod[P, T]: ...
    @overload
    def __call__(self, fn: Callable[P, Generator[Any, Any, T]]) -> PureAsyncFunction[P, T]: ...
    @overload
    def __call__(self, fn: Callable[P, T]) -> PureAsyncFunction[P, T]: ...

    def __call__(self, fn: Any) -> Any:
        _refuse_double(fn)
        if isinstance(fn, classmethod):
            return PureAsyncClassMethod(fn.__func__, self._task_cls, None, self._asyncio_fn)
        if isinstance(fn, staticmethod):
            return PureAsyncStaticMethod(fn.__func__, self._task_cls, None, self._asyncio_fn)
        return _pure_function(fn, self._task_cls, self._asyncio_fn)


def _refuse_double(fn: object) -> None:
    if hasattr(fn, "asynq") or getattr(fn, "is_pure_async_fn", None) is not None:
        msg = f"@asynq() is applied twice to {fn!r}; apply it once"
        raise TypeError(msg)


@overload
def asynq(
    pure: Literal[False] = False,
    sync_fn: Callable[..., Any] | None = None,
    cls: type[AsyncTask[Any]] = AsyncTask,
    asyncio_fn: Callable[..., Any] | None = None,
) -> _Decorate: ...
@overload
def asynq(
    pure: Literal[True],
    sync_fn: None = None,
    cls: type[AsyncTask[Any]] = AsyncTask,
    asyncio_fn: Callable[..., Any] | None = None,
) -> _DecoratePure: ...


def asynq(
    pure: bool = False,
    sync_fn: Callable[..., Any] | None = None,
    cls: type[AsyncTask[Any]] = AsyncTask,
    asyncio_fn: Callable[..., Any] | None = None,
) -> _Decorate | _DecoratePure:
    """Make a generator (or plain) function an async function.

    ``f(x)`` runs it to the end; ``f.asynq(x)`` returns a task to yield from another async
    function. With ``pure=True``, ``f(x)`` itself returns the task. ``sync_fn`` replaces the
    synchronous call; ``asyncio_fn`` (an ``async def`` with the same parameters) replaces
    ``await f.asyncio(x)``; ``cls`` is the task class (a subclass of :class:`AsyncTask`).
    """
    if callable(pure) and not isinstance(pure, bool):
        msg = (
            f"asynq is a decorator factory: write @asynq(), not @asynq (got {pure!r}). "
            "The parentheses take options such as pure=True."
        )
        raise TypeError(msg)
    if not (isinstance(cls, type) and issubclass(cls, AsyncTask)):
        msg = f"asynq(cls=...) takes a subclass of batchq.AsyncTask, got {cls!r}"
        raise TypeError(msg)
    if pure:
        if sync_fn is not None:
            msg = "asynq(pure=True) does not take sync_fn: a pure function has no sync call"
            raise TypeError(msg)
        return _DecoratePure(cls, asyncio_fn)
    if sync_fn is not None and not (callable(sync_fn) or isinstance(sync_fn, classmethod)):
        msg = f"asynq(sync_fn=...) takes a callable, got {sync_fn!r}"
        raise TypeError(msg)
    if asyncio_fn is not None and not callable(asyncio_fn):
        msg = f"asynq(asyncio_fn=...) takes an async function, got {asyncio_fn!r}"
        raise TypeError(msg)
    return _Decorate(cls, sync_fn, asyncio_fn)
