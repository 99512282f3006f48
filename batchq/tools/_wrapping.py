"""How the tools wrap an async function: the wrapper binds the way the wrapped one does."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from qcore.caching import get_args_tuple, get_kwargs_defaults
from qcore.inspection import get_original_fn

from .._decorators import AsyncClassMethod, AsyncStaticMethod, asynq
from .._helpers import get_async_fn

__all__ = ["async_form", "rewrap", "default_keygetter"]


def async_form(fn: Any, tool: str) -> Callable[..., Any]:
    """``fn``'s task-returning form; refuses plain functions with a clear message."""
    inner = get_async_fn(fn)
    if inner is None:
        msg = (
            f"{tool} wraps async functions, got {fn!r} of type {type(fn).__name__}; "
            f"apply @asynq() first (put @{tool.strip('@()')}(...) above @asynq())"
        )
        raise TypeError(msg)
    return inner


def rewrap(fn: Any, body: Callable[..., Any]) -> Any:
    """``@asynq()`` on ``body``, named like ``fn`` and bound like it (method, class, static).

    Only the naming attributes are copied: ``fn.__dict__`` holds its own ``asynq`` and ``fn``.
    """
    functools.update_wrapper(body, fn, updated=())
    if isinstance(fn, AsyncStaticMethod):
        wrapped: Any = asynq()(staticmethod(body))
    elif isinstance(fn, AsyncClassMethod):
        wrapped = asynq()(classmethod(body))
    else:
        wrapped = asynq()(body)
    wrapped.original_fn = get_original_fn(fn)
    return wrapped


def default_keygetter(
    fn: Any, skip_first: bool
) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """A hashable key for a call's arguments, equal for equivalent calls (defaults filled in)."""
    original = get_original_fn(fn)
    try:
        spec = inspect.getfullargspec(original)
    except TypeError:
        return lambda args, kwargs: (args, tuple(sorted(kwargs.items())))
    names = spec.args[1:] if skip_first else spec.args
    arg_names = [*names, *spec.kwonlyargs]
    defaults = get_kwargs_defaults(spec)
    return lambda args, kwargs: get_args_tuple(args, kwargs, arg_names, defaults)
