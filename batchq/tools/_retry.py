"""``aretry``: run an async function again when it fails with given exceptions."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from .._helpers import get_async_fn
from ._wrapping import rewrap

__all__ = ["aretry"]


def aretry(
    exception_cls: type[BaseException] | tuple[type[BaseException], ...],
    max_tries: int = 10,
    sleep: float = 0.05,
) -> Callable[[Any], Any]:
    """Retry an async function up to ``max_tries`` times while it raises ``exception_cls``.

    Waits ``sleep`` seconds between tries (blocking, as asynq does); the last error is raised.
    A plain function is retried too: each try is a synchronous call inside the task.
    """
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        msg = f"aretry(max_tries=...) takes a positive int, got {max_tries!r}"
        raise ValueError(msg)

    def decorator(fn: Any) -> Any:
        call = get_async_fn(fn)
        if call is None:
            if isinstance(fn, (classmethod, staticmethod)) or not callable(fn):
                msg = (
                    f"@aretry() decorates functions, got {fn!r} of type {type(fn).__name__}; "
                    "for a plain class or static method put @aretry() below @classmethod"
                )
                raise TypeError(msg)
            call = get_async_fn(fn, wrap_if_none=True)
            assert call is not None

        def body(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            for attempt in range(1, max_tries + 1):
                try:
                    return (yield call(*args, **kwargs))
                except exception_cls:
                    if attempt == max_tries:
                        raise
                    time.sleep(sleep)
            raise AssertionError("unreachable")  # pragma: no cover

        return rewrap(fn, body)

    return decorator
