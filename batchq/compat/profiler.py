"""asynq.profiler under the porting rule: a per-thread list of collected stats.

batchq's scheduler never appends to it (asynq appends per-task timings when
``debug.options.COLLECT_PERF_STATS`` is set); use :class:`batchq.Instrument` or
:class:`batchq.debug.TraceRecorder` for per-task and per-flush timings.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["append", "flush", "reset", "incr_counter"]


class _State(threading.local):
    def __init__(self) -> None:
        self.stats: list[Any] = []
        self.counter = 0


_state = _State()


def reset() -> None:
    """Forget this thread's stats."""
    _state.stats = []
    _state.counter = 0


def append(stats: Any) -> None:
    """Add one entry to this thread's stats."""
    _state.stats.append(stats)


def flush() -> list[Any]:
    """This thread's stats, in the order appended; the list is then emptied."""
    stats = _state.stats
    _state.stats = []
    return stats


def incr_counter() -> int:
    """A number that increases by one per call in this thread."""
    _state.counter += 1
    return _state.counter
