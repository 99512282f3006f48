"""Running asyncio mains in tests: no hang, and nothing reported to the loop's exception handler."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Guards against a hang turning into a stuck test run; never an assertion about speed.
HANG_GUARD_SECONDS = 60.0


def run(make_main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """asyncio.run(main), failing if the loop's exception handler saw anything.

    That handler is where "Task was destroyed but it is pending" and "exception was never
    retrieved" end up; warnings (e.g. a coroutine never awaited) are errors under pytest here.
    """
    seen: list[dict[str, Any]] = []

    async def main() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
        try:
            return await asyncio.wait_for(make_main(), HANG_GUARD_SECONDS)
        finally:
            gc.collect()
            await asyncio.sleep(0)

    result = asyncio.run(main())
    gc.collect()
    assert seen == []
    return result
