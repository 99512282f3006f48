"""Walks over the graph of waiting tasks: who waits on what, cycles, stuck tasks, interrupts.

None of this is on the hot path: the loop wakes waiters inline. These walks run when a run is
stuck, interrupted or cancelled, and for introspection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._futures import NOT_COMPUTED, ErrorFuture, FutureBase
from ._task import AsyncTask, blocked_on, leaves

__all__ = [
    "waiters_of",
    "wake",
    "push_elsewhere",
    "find_cycle",
    "find_stuck",
    "reachable_tasks",
    "needed_elsewhere",
    "interrupt",
    "detach",
    "detach_all",
]


def waiters_of(fut: FutureBase[Any]) -> list[AsyncTask[Any]]:
    """The tasks waiting on ``fut`` (stored bare when there is one, as a list when more)."""
    ws = fut._waiters
    if ws is None:
        return []
    return list(ws) if isinstance(ws, list) else [ws]


def push_elsewhere(task: AsyncTask[Any]) -> None:
    """Make ``task`` runnable on its own scheduler."""
    sched = task._sched
    if sched is not None:
        sched._ready.append(task)


def wake(fut: FutureBase[Any]) -> None:
    """Resume the waiters of a future that just completed (slow path)."""
    ws = waiters_of(fut)
    fut._waiters = None
    for w in ws:
        if w._npending:
            w._npending -= 1
        else:
            push_elsewhere(w)


def find_cycle(root: FutureBase[Any]) -> list[AsyncTask[Any]] | None:
    """A path of tasks ending with a repeat (the cycle), found by iterative DFS from the root."""
    if not isinstance(root, AsyncTask):
        return None
    on_path: dict[int, int] = {}
    done: set[int] = set()
    path: list[AsyncTask[Any]] = []
    stack: list[tuple[AsyncTask[Any], list[AsyncTask[Any]]]] = []

    def children(t: AsyncTask[Any]) -> list[AsyncTask[Any]]:
        return [leaf for leaf in blocked_on(t) if isinstance(leaf, AsyncTask)]

    path.append(root)
    on_path[id(root)] = 0
    stack.append((root, children(root)))
    while stack:
        _, kids = stack[-1]
        if not kids:
            t, _ = stack.pop()
            path.pop()
            del on_path[id(t)]
            done.add(id(t))
            continue
        child = kids.pop()
        if id(child) in on_path:
            return [*path[on_path[id(child)] :], child]
        if id(child) in done:
            continue
        on_path[id(child)] = len(path)
        path.append(child)
        stack.append((child, children(child)))
    return None


def find_stuck(root: FutureBase[Any]) -> tuple[AsyncTask[Any], FutureBase[Any]] | None:
    """The first blocked task (depth-first) waiting on something no one will complete."""
    if not isinstance(root, AsyncTask):
        return None
    seen: set[int] = set()
    stack: list[AsyncTask[Any]] = [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        for leaf in blocked_on(t):
            if isinstance(leaf, AsyncTask) and blocked_on(leaf):
                stack.append(leaf)
            else:
                return t, leaf
    return None


def waited_on(task: AsyncTask[Any]) -> Iterator[FutureBase[Any]]:
    """The futures ``task``'s ``_dep`` holds, computed or not, without giving absorbed keys
    their items back: none when ``_dep`` is not what it waits on (below zero, ``_npending``
    says it is the keyed batch holding it, or a value or error delivered: see KeyedBatch)."""
    if task._npending < 0:
        return iter(())
    return leaves(task._dep)


def reachable_tasks(
    roots: list[FutureBase[Any]], ready: list[AsyncTask[Any]]
) -> list[AsyncTask[Any]]:
    """Unfinished tasks reachable from the roots and the runnable stack, parents first."""
    out: list[AsyncTask[Any]] = []
    seen: set[int] = set()
    stack: list[FutureBase[Any]] = [*roots, *ready]
    while stack:
        f = stack.pop()
        if id(f) in seen or not isinstance(f, AsyncTask) or f._value is not NOT_COMPUTED:
            continue
        seen.add(id(f))
        out.append(f)
        stack.extend(waited_on(f))
    return out


def needed_elsewhere(tasks: list[AsyncTask[Any]], live_roots: list[FutureBase[Any]]) -> set[int]:
    """The ids of those of ``tasks`` (everything unfinished reachable from some roots) that
    something outside them still waits on, directly or through others of them, or that are
    among ``live_roots``.

    It looks at ``tasks`` and their waiters only, never at the rest of the graph: dropping one
    request's tasks costs what that request holds, however many others are in flight.
    """
    ids = {id(t) for t in tasks}
    live = {id(r) for r in live_roots}
    stack = [t for t in tasks if id(t) in live or any(id(w) not in ids for w in waiters_of(t))]
    kept: set[int] = set()
    while stack:
        t = stack.pop()
        if id(t) in kept:
            continue
        kept.add(id(t))
        stack.extend(
            c
            for c in waited_on(t)
            if isinstance(c, AsyncTask) and id(c) in ids and id(c) not in kept
        )
    return kept


def detach_all(tasks: list[AsyncTask[Any]]) -> list[FutureBase[Any]]:
    """:func:`detach` for many tasks at once, each future's waiters filtered once (detaching
    10,000 waiters of one future one by one would copy its waiter list 10,000 times); returns
    the futures nobody waits on any more."""
    ids = {id(t) for t in tasks}
    found: dict[int, FutureBase[Any]] = {}
    for task in tasks:
        for leaf in blocked_on(task):
            found[id(leaf)] = leaf
        task._npending = 0
    orphans: list[FutureBase[Any]] = []
    for leaf in found.values():
        ws = [w for w in waiters_of(leaf) if id(w) not in ids]
        leaf._waiters = None if not ws else ws[0] if len(ws) == 1 else ws
        if not ws:
            orphans.append(leaf)
    return orphans


def detach(task: AsyncTask[Any]) -> list[FutureBase[Any]]:
    """Stop ``task`` waiting: remove it from the waiters of what it waits on; return those."""
    found = blocked_on(task)
    for leaf in found:
        ws = [w for w in waiters_of(leaf) if w is not task]
        leaf._waiters = None if not ws else ws[0] if len(ws) == 1 else ws
    task._npending = 0
    return found


def interrupt(task: AsyncTask[Any], error: BaseException) -> None:
    """Stop waiting: detach ``task`` from what it waits on and throw ``error`` at its yield."""
    detach(task)
    task._dep = ErrorFuture(error)
    push_elsewhere(task)
