"""The Cache's memory of the current run: its writes (read-your-writes) and its cached calls.

Everything the Cache keeps per run goes through :func:`run_state` (get or start the state of the
run in progress) and :func:`peek_run_state` (the hot path's look, which never creates one). What a
"run" is belongs to the core; only the body of this module knows how it is found.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Final

from batchq._scheduler import Scheduler, get_scheduler
from batchq._task import AsyncTask

__all__ = ["RunState", "peek_run_state", "run_state"]


class RunState:
    """What one top-level run wrote (read-your-writes) and which cached calls it is computing.

    Both maps are keyed by ``(id(cache), encoded key)``. ``overlay`` holds the packed value of
    each write (None: a delete); ``inflight`` the task computing each cached call.
    """

    __slots__ = ("sched", "marker", "overlay", "inflight")

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        # A scheduler's last_run is replaced at the end of every run, so (sched, last_run) names
        # the run in progress; nested runs happen while it is still running with the same marker.
        self.marker = sched.last_run
        self.overlay: dict[tuple[int, bytes], bytes | None] = {}
        self.inflight: dict[tuple[int, bytes], AsyncTask[Any]] = {}

    def is_live(self) -> bool:
        """Whether the run this state belongs to is still the one in progress."""
        return self.sched.is_running() and self.sched.last_run is self.marker


# One per context (thread, asyncio task); replaced by the next run, so it never outlives it by more
# than one run's writes.
_runs: ContextVar[RunState | None] = ContextVar("batchq_memcache_run", default=None)

peek_run_state: Final = _runs.get
"""The last run state of this context, or None; it may be stale: check ``is_live()`` before use.

Costs one ContextVar read and never creates a state, so reads that find no writes stay cheap."""


def run_state() -> RunState | None:
    """The state of the run in progress in this context (created on first use), or None outside
    any run."""
    state = _runs.get()
    if state is not None and state.is_live():
        return state
    sched = get_scheduler()
    if not sched.is_running():
        if state is not None:
            _runs.set(None)
        return None
    state = RunState(sched)
    _runs.set(state)
    return state
