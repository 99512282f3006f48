"""``AsyncEventHook``: a ``qcore.events.EventHook`` whose handlers may be async."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from qcore.errors import prepare_for_reraise, reraise
from qcore.events import EventHook

from .._decorators import asynq
from .._helpers import call_async

__all__ = ["AsyncEventHook"]


@asynq()
def _capture(handler: Any, args: tuple[Any, ...]) -> Generator[Any, Any, BaseException | None]:
    try:
        yield call_async(handler, *args)
    except Exception as e:
        prepare_for_reraise(e)
        return e
    return None


class AsyncEventHook(EventHook):
    """Triggering calls every handler at once, async ones included (so their requests batch)."""

    @asynq()
    def trigger(self, *args: Any) -> Generator[Any, Any, None]:
        """Call every handler; the first error stops nothing already started but is raised."""
        yield [call_async(handler, *args) for handler in list(self)]

    @asynq()
    def safe_trigger(self, *args: Any) -> Generator[Any, Any, None]:
        """Call every handler even if some fail; then raise the first error, if any."""
        errors = yield [_capture.asynq(handler, args) for handler in list(self)]
        for error in errors:
            if error is not None:
                reraise(error)
