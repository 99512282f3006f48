"""Futures: a value or an error that becomes known later.

Every yieldable leaf (tasks, batch items, constant futures) is a ``FutureBase``. The scheduler reads
``_value``/``_error``/``_waiters`` directly: these slots are the protocol between them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, cast

from ._errors import FutureIsAlreadyComputed

if TYPE_CHECKING:
    from ._task import AsyncTask

__all__ = ["FutureBase", "Future", "ConstFuture", "ErrorFuture", "none_future"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class _NotComputed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<not computed>"


NOT_COMPUTED: Final[Any] = _NotComputed()


class FutureBase(Generic[T_co]):
    """A delayed value. ``value()`` computes it if needed and raises its error if it failed."""

    # No __weakref__ slot: 8 bytes on every task and item; subclasses without __slots__ get one.
    __slots__ = ("_value", "_error", "_waiters")

    _value: Any
    _error: BaseException | None
    # Tasks blocked on this future, resumed by the scheduler when it completes: one task stored
    # bare (the common case, saving a list per future), several in a list. Read via waiters_of().
    _waiters: AsyncTask[Any] | list[AsyncTask[Any]] | None

    def __init__(self) -> None:
        self._value = NOT_COMPUTED
        self._error = None
        self._waiters = None

    def is_computed(self) -> bool:
        return self._value is not NOT_COMPUTED

    def value(self) -> T_co:
        if self._value is NOT_COMPUTED:
            self._compute()
            if self._value is NOT_COMPUTED:
                msg = (
                    f"{self!r} is still not computed after _compute(); "
                    "a _compute() override must call set_value() or set_error()"
                )
                raise RuntimeError(msg)
        if self._error is not None:
            raise self._error
        return cast("T_co", self._value)

    __call__ = value

    def error(self) -> BaseException | None:
        if self._value is NOT_COMPUTED:
            self._compute()
        return self._error

    def set_value(self, value: Any) -> None:
        if self._value is not NOT_COMPUTED:
            raise FutureIsAlreadyComputed(
                f"cannot set value {value!r} on {self!r}: it is already computed"
            )
        self._error = None
        self._value = value
        self._computed()

    def set_error(self, error: BaseException) -> None:
        if self._value is not NOT_COMPUTED:
            raise FutureIsAlreadyComputed(
                f"cannot set error {error!r} on {self!r}: it is already computed"
            )
        if not isinstance(error, BaseException):
            msg = f"set_error() takes an exception instance, got {error!r}"
            raise TypeError(msg)
        self._error = error
        self._value = None
        self._computed()

    def raise_if_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _computed(self) -> None:
        """Hook run after a value or error is set; the scheduler, not this, resumes waiters."""

    def _compute(self) -> None:
        """Produce the value; subclasses override. The default fails clearly."""
        msg = (
            f"{type(self).__name__} has no way to compute its value: it is not computed and "
            "does not override _compute()"
        )
        raise NotImplementedError(msg)

    # A future used as if it were its value is almost always a forgotten ``yield``: say so, rather
    # than let ``task["name"]`` or ``f"{task}"`` fail obscurely or print "<AsyncTask ...>". No
    # __len__: static checkers (pycroscope) read a __len__ as "this type has a truth value".

    def __bool__(self) -> bool:
        raise TypeError(_forgot_yield(self, "used as a bool"))

    def __getitem__(self, key: object) -> Any:
        raise TypeError(_forgot_yield(self, f"indexed with [{key!r}]"))

    def __iter__(self) -> Any:
        raise TypeError(_forgot_yield(self, "iterated over"))

    def __format__(self, spec: str) -> str:
        # Only a pending future: asynq code formats computed ones in messages ("{}".format(f)).
        if self._value is NOT_COMPUTED:
            raise TypeError(_forgot_yield(self, "formatted (an f-string or format())"))
        return format(repr(self), spec)

    def __repr__(self) -> str:
        if self._value is NOT_COMPUTED:
            state = "pending"
        elif self._error is not None:
            state = f"error={self._error!r}"
        else:
            state = f"value={_short_repr(self._value)}"
        return f"<{type(self).__name__} {state}>"


def _forgot_yield(fut: FutureBase[Any], how: str) -> str:
    return (
        f"{fut!r} was {how}, but it is a future, not its value: did you forget to yield it? "
        "Write `value = yield f.asynq(...)` inside an async function, or call f(...) outside "
        "one; use repr() or {!r} to print the future itself."
    )


def _short_repr(value: object, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception as e:  # a broken __repr__ must not hide the real problem
        text = f"<repr failed: {type(e).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Handlers:
    """The handlers of an event, in subscription order (qcore's ``EventHook`` interface, which
    asynq's ``on_computed`` is: ``subscribe``, ``unsubscribe``, iteration, ``len``, ``in``)."""

    __slots__ = ("_handlers",)

    def __init__(self) -> None:
        self._handlers: list[Callable[..., Any]] = []

    def subscribe(self, handler: Callable[..., Any]) -> None:
        self._handlers.append(handler)

    def unsubscribe(self, handler: Callable[..., Any]) -> None:
        self._handlers.remove(handler)

    def trigger(self, *args: Any) -> None:
        for handler in list(self._handlers):
            handler(*args)

    __call__ = trigger

    def __iter__(self) -> Iterator[Callable[..., Any]]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def __contains__(self, handler: object) -> bool:
        return handler in self._handlers

    def __repr__(self) -> str:
        return f"<Handlers {self._handlers!r}>"


class Future(FutureBase[T_co]):
    """A future computed on demand by calling ``value_provider()``."""

    __slots__ = ("_value_provider", "_on_computed")

    def __init__(self, value_provider: Callable[[], T_co]) -> None:
        super().__init__()
        self._value_provider = value_provider
        self._on_computed: Handlers | None = None

    @property
    def on_computed(self) -> Handlers:
        """asynq's event hook: ``fut.on_computed.subscribe(handler)``; ``handler(fut)`` runs once
        the value or error is set. A handler's ``Exception`` is logged and does not change the
        future; a ``BaseException`` (an interrupt) propagates."""
        if self._on_computed is None:
            self._on_computed = Handlers()
        return self._on_computed

    def _computed(self) -> None:
        hook = self._on_computed
        if hook is None:
            return
        for handler in list(hook):
            try:
                handler(self)
            except Exception:
                logging.getLogger("batchq").exception(
                    "an on_computed handler of %r failed; the future keeps its value", self
                )

    def _compute(self) -> None:
        try:
            value = self._value_provider()
        except Exception as e:
            self.set_error(e)
        else:
            self.set_value(value)


class ConstFuture(FutureBase[T_co]):
    """A future that already holds ``value``."""

    __slots__ = ()

    def __init__(self, value: T_co) -> None:
        self._value = value
        self._error = None
        self._waiters = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (ConstFuture, (self._value,))


class ErrorFuture(FutureBase[Any]):
    """A future that always raises ``error``."""

    __slots__ = ()

    def __init__(self, error: BaseException) -> None:
        if not isinstance(error, BaseException):
            msg = f"ErrorFuture takes an exception instance, got {error!r}"
            raise TypeError(msg)
        self._value = None
        self._error = error
        self._waiters = None


none_future: Final[ConstFuture[None]] = ConstFuture(None)
