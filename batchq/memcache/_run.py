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

__all__ = ["RunState", "RUN_STATE_KEY", "WriteGate", "peek_run_state", "run_state", "state_of"]


# -- the write gate -------------------------------------------------------------------------------
#
# Every read of a page must know whether its run wrote the key (read-your-writes), and most runs
# never write: a page only reads. Finding the run's state costs a walk (scheduler, frame, run,
# state) on every read, so each Cache keeps a *write gate*: a list with one entry per live run
# state that has written to it. A read walks to its run's overlay only while the gate is open (the
# list not empty). ``list.append`` and ``list.pop`` are each one C call, atomic between threads,
# so no lock is needed, even in ``__del__`` (which may run inside any code, the append included).
# The gate can only be too open (then a read looks and finds nothing: slower, never wrong): it
# opens before the write enters the overlay, and closes only when the state is gone.

WriteGate = list[None]


class RunState:
    """What one run wrote (read-your-writes) and which cached calls it is computing.

    Both maps are keyed by ``(id(cache), encoded key)``. ``overlay`` holds the packed value of
    each write (None: a delete), written through :meth:`remember`; ``inflight`` the task
    computing each cached call.
    """

    __slots__ = ("overlay", "inflight", "_gates")

    def __init__(self) -> None:
        self.overlay: dict[tuple[int, bytes], bytes | None] = {}
        self.inflight: dict[tuple[int, bytes], AsyncTask[Any]] = {}
        # The write gate (see WriteGate) of every Cache this run wrote to, by id: kept alive
        # here, so an id is never reused while this state holds it.
        self._gates: dict[int, WriteGate] | None = None

    def remember(self, gate: WriteGate, slot: tuple[int, bytes], data: bytes | None) -> None:
        """Note a write of this run to the Cache whose write gate is ``gate``: this run reads
        ``data`` (None: a miss) under ``slot`` from now on."""
        gates = self._gates
        if gates is None:
            gates = self._gates = {}
        if id(gate) not in gates:
            # Opened before the overlay holds the write, so a read after it always looks.
            gates[id(gate)] = gate
            gate.append(None)
        self.overlay[slot] = data

    def __del__(self) -> None:
        # The run is over (Run.end() let go of its state): close the gates it opened.
        gates = self._gates
        if gates is not None:
            self._gates = None
            for gate in gates.values():
                gate.pop()


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
