"""``aretry``: run an async function again when it fails with given exceptions."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from typing import Any

from ._wrapping import async_form, rewrap

__all__ = ["aretry"]


def aretry(
    exception_cls: type[BaseException] | tuple[type[BaseException], ...],
    max_tries: int = 10,
    sleep: float = 0.05,
) -> Callable[[Any], Any]:
    """Retry an async function up to ``max_tries`` times while it raises ``exception_cls``.

    Waits ``sleep`` seconds between tries (blocking, as asynq does); the last error is raised.
    """
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        msg = f"aretry(max_tries=...) takes a positive int, got {max_tries!r}"
        raise ValueError(msg)

    def decorator(fn: Any) -> Any:
        call = async_form(fn, "@aretry()")

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
