"""The Cache's memory of the current run: its writes (read-your-writes) and its cached calls.

Everything the Cache keeps per run goes through :func:`run_state` (get or start the state of the
run in progress) and :func:`peek_run_state` (a look that never creates one). A run is the core's:
one synchronous call, or one asyncio request (``batchq._core._runtime.Run``). The state lives in
the run's own memory, so one request never sees another's writes or cached calls, and it goes
when the run ends.
"""

from __future__ import annotations

from typing import Any, Final

from batchq._core._runtime import Run, current_run, current_scheduler, run_of
from batchq._core._task import AsyncTask

__all__ = ["RunState", "RUN_STATE_KEY", "peek_run_state", "run_state", "state_of"]


class RunState:
    """What one run wrote (read-your-writes) and which cached calls it is computing.

    Both maps are keyed by ``(id(cache), encoded key)``. ``overlay`` holds the packed value of
    each write (None: a delete); ``inflight`` the task computing each cached call.
    """

    __slots__ = ("overlay", "inflight")

    def __init__(self) -> None:
        self.overlay: dict[tuple[int, bytes], bytes | None] = {}
        self.inflight: dict[tuple[int, bytes], AsyncTask[Any]] = {}


RUN_STATE_KEY: Final = object()  # this module's key in Run.state


def state_of(run: Run | None) -> RunState | None:
    """``run``'s state if it has one (the hot path: a read never creates a state)."""
    return None if run is None else run.state.get(RUN_STATE_KEY)


def peek_run_state() -> RunState | None:
    """The current run's state, or None outside a run or before its first write."""
    sched = current_scheduler()
    return None if sched is None else state_of(run_of(sched))


def run_state() -> RunState | None:
    """The state of the run in progress (created on first use), or None outside any run."""
    run = current_run()
    if run is None:
        return None
    state: RunState | None = run.state.get(RUN_STATE_KEY)
    if state is None:
        state = run.state[RUN_STATE_KEY] = RunState()
    return state
