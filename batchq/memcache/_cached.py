"""Cached functions: ``@cache.cached()`` and the default keys of their calls.

A call looks its key up in the round's ``get_many``; a miss runs the function (which may yield)
and writes the value back, batched with the round's writes and not waited for. Calls with the same
key in one run compute once (the run's in-flight cached calls, see ``_run``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, overload

from batchq._core._futures import FutureBase
from batchq._core._runtime import current_scheduler
from batchq._core._task import AsyncTask
from batchq._decorators import AsyncFunction

from ._errors import DeserializationError, ValueTooLargeError
from ._herd import Policy
from ._herd import cached_call as herd_call
from ._keys import MAX_KEY_LENGTH
from ._op import _Op
from ._run import run_state

if TYPE_CHECKING:
    from ._cache import Cache

__all__ = ["CachedFunction"]

P = ParamSpec("P")
T = TypeVar("T")

_log = logging.getLogger("batchq.memcache")

_Keyer = Callable[[tuple[Any, ...], dict[str, Any]], str | bytes]


class CachedFunction(AsyncFunction[P, T]):
    """An async function whose results live in a Cache; see :meth:`Cache.cached`."""

    cache_key: Callable[..., str | bytes]
    # fn.invalidate(*args, **kwargs) marks one call's key stale (see Cache.invalidate).
    invalidate: _Op[..., bool]


class _CacheDecorator:
    """What ``cache.cached(...)`` returns: applies the caching to a function."""

    def __init__(
        self,
        cache: Cache,
        ttl: int,
        key: Callable[..., str | bytes] | None,
        policy: Policy | None = None,
    ) -> None:
        self._cache = cache
        self._ttl = ttl
        self._key = key
        self._policy = policy  # None: no option beyond ttl and key, the plain path

    @overload
    def __call__(self, fn: AsyncFunction[P, T]) -> CachedFunction[P, T]: ...
    @overload
    def __call__(self, fn: Callable[P, Generator[Any, Any, T]]) -> CachedFunction[P, T]: ...
    @overload
    def __call__(self, fn: Callable[P, T]) -> CachedFunction[P, T]: ...

    def __call__(self, fn: Any) -> Any:
        cache = self._cache
        ttl = self._ttl
        if getattr(fn, "is_pure_async_fn", None) is not None:
            make_task = fn if fn.is_pure_async_fn() else fn.asynq
        elif callable(fn):
            make_task = AsyncFunction(fn).asynq
        else:
            msg = f"cache.cached() decorates functions, got {fn!r}"
            raise TypeError(msg)
        keyer = make_keyer(fn, self._key)
        original = getattr(fn, "fn", fn)
        policy = self._policy
        if policy is None:

            def call(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                return cached_call(cache, keyer, make_task, ttl, original, args, kwargs)

        else:

            def call(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                return herd_call(cache, policy, keyer, make_task, original, args, kwargs)

        result: CachedFunction[Any, Any] = CachedFunction(call)
        # The generator is call()'s; present the wrapped function's identity.
        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            value = getattr(fn, attr, None)
            if value is not None:
                setattr(result, attr, value)
        result._is_gen = True
        result.__wrapped__ = fn
        result.cache_key = lambda *a, **kw: keyer(a, kw)
        invalidate = cache._invalidate_asynq
        result.invalidate = _Op(
            lambda *a, **kw: invalidate(keyer(a, kw)),
            f"{getattr(fn, '__qualname__', fn)!s}.invalidate",
        )
        return result


def cached_call(
    cache: Cache,
    keyer: _Keyer,
    make_task: Callable[..., FutureBase[Any]],
    ttl: int,
    fn: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Generator[Any, Any, Any]:
    """One call of a cached function: the cached value, or the computed one (then written back)."""
    key = keyer(args, kwargs)
    raw = cache.encode_key(key)
    got = cache._lookup(key, raw)
    try:
        value = yield got
    except DeserializationError as e:
        # Unreadable (another writer, another serde): recompute and overwrite it.
        _log.warning("%s: recomputing %r: %s", cache.name, key, e)
    else:
        if got.hit:
            return value
    state = run_state()
    slot = (id(cache), raw)
    task = state.inflight.get(slot) if state is not None else None
    if task is None or (task._sched is not None and task._sched is not current_scheduler()):
        task = AsyncTask(_compute(cache, key, raw, make_task, ttl, args, kwargs), fn, args, kwargs)
        if state is not None:
            state.inflight[slot] = task
    return (yield task)


def _compute(
    cache: Cache,
    key: str | bytes,
    raw: bytes,
    make_task: Callable[..., FutureBase[Any]],
    ttl: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Generator[Any, Any, Any]:
    value = yield make_task(*args, **kwargs)
    try:
        packed = cache._pack(key, value)
    except ValueTooLargeError as e:
        # Data-dependent, not a bug: the caller still gets its value, just uncached.
        _log.warning("%s: not caching %r: %s", cache.name, key, e)
        with cache._stats_lock:
            cache._counters.write_failures += 1
        return value
    # Not waited for: the write joins this round's batch and the scheduler flushes it before
    # the run returns; a failure is logged and counted (the caller has its value either way).
    # An unserializable value is a programming error and raises above, from _pack.
    cache._write(key, raw, packed, ttl)
    return value


# -- default keys ---------------------------------------------------------------------------------

_KEY_ROOM: Final = MAX_KEY_LENGTH - 64  # leave room for prefixes


def make_keyer(fn: Any, custom: Callable[..., str | bytes] | None) -> _Keyer:
    """The function from a call's ``(args, kwargs)`` to its key."""
    if custom is not None:

        def custom_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | bytes:
            return custom(*args, **kwargs)

        return custom_key
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None)
    _check_nameable(fn, module, qualname)
    head = f"{module}:{qualname}"
    try:
        sig: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None

    def default_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if sig is not None:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            pairs = list(bound.arguments.items())
        else:
            pairs = [(str(i), a) for i, a in enumerate(args)] + sorted(kwargs.items())
        parts = []
        for name, value in pairs:
            try:
                parts.append(f"{name}={_canon(value)}")
            except _Unencodable as e:
                msg = (
                    f"cannot build a cache key for {head} from the argument {name}={value!r}: "
                    f"{e.args[0]}; default keys take None, bool, int, float, str, bytes and "
                    "tuples, lists, sets and dicts of them. Pass key=lambda ...: f'...' to "
                    "cache.cached() to name the key yourself"
                )
                raise TypeError(msg) from None
        text = f"{head}:{','.join(parts)}"
        encoded = text.encode("utf-8", errors="surrogatepass")
        if len(encoded) <= _KEY_ROOM and not any(b <= 0x20 or b == 0x7F for b in encoded):
            return text
        # Too long, or a space in an argument: the same hash in every process.
        return f"{head[:120]}:#{hashlib.sha256(encoded).hexdigest()}"

    return default_key


def _check_nameable(fn: Any, module: str, qualname: str | None) -> None:
    """Refuse a function whose ``module:qualname`` does not name it alone.

    Every function one factory makes shares one qualname (``make.<locals>.inner``), and so does
    every lambda of a module: their default keys would be the same, and each would read the
    others' values.
    """
    if not isinstance(qualname, str):
        why = "has no __qualname__ to name it by"
    elif "<lambda>" in qualname:
        why = "is a lambda, and every lambda of its module shares the name '<lambda>'"
    elif "<locals>" in qualname:
        outer = qualname.rsplit(".<locals>.", 1)[0]
        why = (
            f"is defined inside {outer}(), and every function made by a call of {outer}() "
            f"shares the name {qualname!r}, whatever its closure holds"
        )
    else:
        return
    shown = qualname if isinstance(qualname, str) else repr(fn)
    msg = (
        f"cache.cached() cannot make a default key for {module}.{shown}: it {why}, so calls of "
        "different functions would read each other's cached values. Pass key= with what tells "
        "them apart, e.g. @cache.cached(key=lambda user_id: f'profile:{user_id}'), or define the "
        "function at module or class level"
    )
    raise TypeError(msg)


class _Unencodable(Exception):
    pass


def _canon(value: Any) -> str:
    """A text for ``value`` that is the same in every process (unlike ``hash()``)."""
    kind = type(value)
    if value is None or kind is bool:
        return repr(value)
    if kind is int:
        return str(value)
    if kind is float:
        return f"f{value!r}"
    if kind is str:
        return json.dumps(value)
    if kind is bytes:
        return f"x{value.hex()}"
    if kind is tuple:
        return "(" + ",".join(_canon(v) for v in value) + ")"
    if kind is list:
        return "[" + ",".join(_canon(v) for v in value) + "]"
    if kind is dict:
        return "{" + ",".join(sorted(f"{_canon(k)}:{_canon(v)}" for k, v in value.items())) + "}"
    if kind is set or kind is frozenset:
        return "<" + ",".join(sorted(_canon(v) for v in value)) + ">"
    raise _Unencodable(f"{kind.__qualname__} has no process-stable encoding")
