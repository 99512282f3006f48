"""Values overridden for one task (and the tasks it starts), undone while that task is switched out.

Built on :class:`batchq.AsyncContext`: an override's ``resume`` installs its value and remembers
the one it replaced; ``pause`` puts that one back. Because the scheduler pauses a task's contexts
whenever another task outside its frame runs, an unrelated task never sees the override.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from ._core._contexts import AsyncContext

__all__ = ["AsyncScopedValue", "async_override"]

T = TypeVar("T")


class AsyncScopedValue(Generic[T]):
    """A value with a default that a task can override for its own duration.

    ``with v.override(x):`` makes ``v.get()`` (or ``v()``) return ``x`` in the task that entered
    it and in the tasks it starts while inside, and nowhere else.
    """

    __slots__ = ("_value",)

    def __init__(self, default: T) -> None:
        self._value = default

    def get(self) -> T:
        return self._value

    def set(self, value: T) -> None:
        """Replace the current value (for everyone: this is not scoped)."""
        self._value = value

    def override(self, value: T) -> _ScopedValueOverride[T]:
        """A context that overrides the value while the current task runs."""
        return _ScopedValueOverride(self, value)

    def __call__(self) -> T:
        return self._value

    def __str__(self) -> str:
        return f"AsyncScopedValue({self._value})"

    def __repr__(self) -> str:
        return f"AsyncScopedValue({self._value!r})"


class _ScopedValueOverride(AsyncContext, Generic[T]):
    def __init__(self, target: AsyncScopedValue[T], value: T) -> None:
        self._target = target
        self._value = value
        self._old_value: Any = None

    def resume(self) -> None:
        self._old_value = self._target._value
        self._target._value = self._value

    def pause(self) -> None:
        self._target._value = self._old_value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self._target!r}, value={self._value!r})"


class async_override(AsyncContext):  # a class named like a function, as in asynq
    """``with async_override(obj, "attr", value):`` sets ``obj.attr`` for the current task only."""

    def __init__(self, target: object, property_name: str, value: object) -> None:
        if not isinstance(property_name, str):
            msg = (
                f"async_override(target, property_name, value) takes the attribute name as a "
                f"str, got {property_name!r}"
            )
            raise TypeError(msg)
        self._target = target
        self._property_name = property_name
        self._value = value
        self._old_value: Any = None

    def resume(self) -> None:
        self._old_value = getattr(self._target, self._property_name)
        setattr(self._target, self._property_name, self._value)

    def pause(self) -> None:
        setattr(self._target, self._property_name, self._old_value)

    def __repr__(self) -> str:
        return (
            f"async_override(target={self._target!r}, property_name={self._property_name!r}, "
            f"value={self._value!r})"
        )
