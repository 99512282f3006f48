"""Async versions of map, filter, sorted, max, min: every call is issued at once, so they batch.

``function`` may be any async callable (``@asynq()`` function or method, ``Loader.load``, pure
async function) or a plain function.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

from .._decorators import asynq
from .._helpers import call_async

__all__ = ["amap", "afilter", "afilterfalse", "asorted", "amax", "amin", "asift"]

T = TypeVar("T")


@asynq()
def amap(function: Callable[..., Any], sequence: Iterable[Any]) -> Generator[Any, Any, list[Any]]:
    """``list(map(function, sequence))`` with an async ``function``."""
    values: list[Any] = yield [call_async(function, elt) for elt in sequence]
    return values


@asynq()
def afilter(
    function: Callable[..., Any] | None, sequence: Iterable[T]
) -> Generator[Any, Any, list[T]]:
    """``list(filter(function, sequence))`` with an async ``function``."""
    if function is None:
        return list(filter(None, sequence))
    items = list(sequence)  # iterated twice
    keep = yield [call_async(function, elt) for elt in items]
    return list(itertools.compress(items, keep))


@asynq()
def afilterfalse(
    function: Callable[..., Any], sequence: Iterable[T]
) -> Generator[Any, Any, list[T]]:
    """``list(itertools.filterfalse(function, sequence))`` with an async ``function``."""
    items = list(sequence)
    drop = yield [call_async(function, elt) for elt in items]
    return list(itertools.compress(items, [not d for d in drop]))


@asynq()
def asorted(
    iterable: Iterable[T], key: Callable[..., Any] | None = None, reverse: bool = False
) -> Generator[Any, Any, list[T]]:
    """``sorted(iterable, key=key, reverse=reverse)`` with an async ``key``."""
    values = list(iterable)
    if key is None:
        return sorted(values, reverse=reverse)  # type: ignore[type-var]
    keys = yield [call_async(key, v) for v in values]
    # Compare keys only, never the values (sorted() with key= does the same); stable.
    order = sorted(range(len(values)), key=keys.__getitem__, reverse=reverse)
    return [values[i] for i in order]


def _extreme_args(name: str, args: tuple[Any, ...]) -> Any:
    if not args:
        msg = f"{name}() expected at least 1 argument (an iterable, or several values), got 0"
        raise TypeError(msg)
    return args[0] if len(args) == 1 else args


def _extreme(
    pick: Callable[..., Any], name: str, args: tuple[Any, ...], key: Callable[..., Any] | None
) -> Generator[Any, Any, Any]:
    """``pick`` (max or min) with an async ``key``, every key computed in one round."""
    iterable = _extreme_args(name, args)
    if key is None:
        return pick(iterable)
    items = list(iterable)
    if not items:
        msg = f"{name}() arg is an empty sequence: {iterable!r}"
        raise ValueError(msg)
    keys = yield [call_async(key, v) for v in items]
    # First of the extreme items, as max() and min() do.
    best = pick(range(len(items)), key=keys.__getitem__)
    return items[best]


@asynq()
def amax(*args: Any, key: Callable[..., Any] | None = None) -> Generator[Any, Any, Any]:
    """``max(...)`` with an async ``key``: ``amax(iterable, key=f)`` or ``amax(a, b, key=f)``."""
    return (yield from _extreme(max, "amax", args, key))


@asynq()
def amin(*args: Any, key: Callable[..., Any] | None = None) -> Generator[Any, Any, Any]:
    """``min(...)`` with an async ``key``: ``amin(iterable, key=f)`` or ``amin(a, b, key=f)``."""
    return (yield from _extreme(min, "amin", args, key))


@asynq()
def asift(
    pred: Callable[..., Any], items: Iterable[T]
) -> Generator[Any, Any, tuple[list[T], list[T]]]:
    """Split ``items`` into those ``pred`` accepts and those it rejects, keeping order."""
    items = list(items)
    results = yield [call_async(pred, item) for item in items]
    yes: list[T] = []
    no: list[T] = []
    for item, ok in zip(items, results, strict=True):
        (yes if ok else no).append(item)
    return yes, no
