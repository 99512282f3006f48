"""Caches of async functions' results: per instance, least-recently-used, lazy constant.

They cache values, not tasks: two calls pending in the same round both run (see ``deduplicate``
to share one pending call).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Generator
from typing import Any

from qcore import utime
from qcore.caching import LRUCache

from ._wrapping import async_form, default_keygetter, rewrap

__all__ = ["acached_per_instance", "alru_cache", "alazy_constant"]

_MISSING = object()


def acached_per_instance() -> Callable[[Any], Any]:
    """Cache an async method's results per instance (``qcore.caching.cached_per_instance``).

    The cache of an instance is dropped when the instance is garbage collected; instances need
    not be hashable.
    """

    def decorator(fn: Any) -> Any:
        call = async_form(fn, "@acached_per_instance()")
        cache_key = default_keygetter(fn, skip_first=True)
        # id(instance) -> (weak reference keeping the entry's lifetime, {key: value})
        cache: dict[int, tuple[weakref.ref[Any], dict[Any, Any]]] = {}

        def forget(instance_id: int, _ref: object) -> None:
            cache.pop(instance_id, None)

        def body(self: Any, *args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            entry = cache.get(id(self))
            if entry is None:
                ref = weakref.ref(self, functools.partial(forget, id(self)))
                entry = cache[id(self)] = (ref, {})
            values = entry[1]
            key = cache_key(args, kwargs)
            value = values.get(key, _MISSING)
            if value is _MISSING:
                value = yield call(self, *args, **kwargs)
                values[key] = value
            return value

        wrapped = rewrap(fn, body)
        wrapped.__acached_per_instance_cache__ = cache
        return wrapped

    return decorator


def alru_cache(
    maxsize: int = 128,
    key_fn: Callable[[tuple[Any, ...], dict[str, Any]], Any] | None = None,
) -> Callable[[Any], Any]:
    """Cache the last ``maxsize`` results of an async function (``functools.lru_cache``).

    ``key_fn(args, kwargs)`` builds the cache key; by default equivalent calls (``f(1)``,
    ``f(a=1)``, ``f(1, b=<default>)``) share one key.
    """
    if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
        msg = f"alru_cache(maxsize=...) takes a positive int, got {maxsize!r}"
        raise ValueError(msg)

    def decorator(fn: Any) -> Any:
        call = async_form(fn, "@alru_cache()")
        cache: LRUCache[Any, Any] = LRUCache(maxsize)
        cache_key = key_fn if key_fn is not None else default_keygetter(fn, skip_first=False)

        def body(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            key = cache_key(args, kwargs)
            try:
                return cache[key]
            except KeyError:
                pass
            value = yield call(*args, **kwargs)
            cache[key] = value
            return value

        wrapped = rewrap(fn, body)
        wrapped.cache = cache
        return wrapped

    return decorator


def alazy_constant(ttl: int = 0) -> Callable[[Any], Any]:
    """Compute an async function of no arguments once, then reuse its value.

    With ``ttl`` (microseconds, as ``qcore.caching.lazy_constant``) the value is recomputed once
    older than that; ``f.dirty()`` forgets it now.
    """
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        msg = f"alazy_constant(ttl=...) takes microseconds as an int >= 0, got {ttl!r}"
        raise ValueError(msg)

    def decorator(fn: Any) -> Any:
        call = async_form(fn, "@alazy_constant()")

        def body() -> Generator[Any, Any, Any]:
            refreshed = wrapper.alazy_constant_refresh_time
            if refreshed == 0 or (ttl != 0 and refreshed < utime() - ttl):
                wrapper.alazy_constant_cached_value = yield call()
                wrapper.alazy_constant_refresh_time = utime()
            return wrapper.alazy_constant_cached_value

        wrapper: Any = rewrap(fn, body)

        def dirty() -> None:
            wrapper.alazy_constant_refresh_time = 0

        wrapper.dirty = dirty
        wrapper.alazy_constant_refresh_time = 0
        wrapper.alazy_constant_cached_value = None
        return wrapper

    return decorator
