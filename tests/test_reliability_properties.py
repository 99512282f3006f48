"""Property: on random dependency graphs with failures at random nodes, batchq computes exactly what
a plain synchronous evaluation computes (values and exceptions, node by node), in the predicted
number of rounds with the predicted fetches, and leaves nothing behind.

Graphs mix tasks (some shared by several parents), three loaders (one fails some keys by returning
exceptions, one is always down), ``@cache.cached`` functions over a ``LocalClient`` (some keys
already cached, the rest computed from a loader, failing when it fails), constant and error
futures, every yield shape (bare, list, tuple,
dict, nested), tasks that raise before or after a stage and tasks that catch what a stage raised.

The number of examples comes from a hypothesis profile chosen by the environment variable
``BATCHQ_HYPOTHESIS_PROFILE``: ``default`` (quick, in every test run) or ``nightly`` (long). The
profiles are applied to these tests only, so other modules' hypothesis settings are untouched.
"""

from __future__ import annotations

import inspect
import os
import re
from collections import defaultdict
from collections.abc import Callable, Generator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import batchq
from batchq import ConstFuture, ErrorFuture, Loader, asynq
from batchq._core._instruments import Instrument, instruments
from batchq._core._loop import Scheduler
from batchq.memcache import Cache, LocalClient

settings.register_profile(
    "reliability-default",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "reliability-nightly",
    max_examples=5_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_PROFILE_NAME = os.environ.get("BATCHQ_HYPOTHESIS_PROFILE", "default")
if _PROFILE_NAME not in ("default", "nightly"):
    msg = (
        f"BATCHQ_HYPOTHESIS_PROFILE={_PROFILE_NAME!r} is not a profile of these tests; "
        "use 'default' (quick) or 'nightly' (5,000 examples)"
    )
    raise ValueError(msg)
PROFILE = settings.get_profile(f"reliability-{_PROFILE_NAME}")


class KeyFailed(Exception):
    """What loader A's fetch returns (not raises) for keys it cannot load."""


class SourceDown(Exception):
    """What loader C's fetch raises for every batch."""


class NodeFailed(Exception):
    """What a task raises on its own account."""


# -- the graph model -----------------------------------------------------------------------------
#
# leaf:  ("load", source, key)   a loader key; A fails keys >= 4, C fails every batch
#        ("const", value)        a ConstFuture
#        ("errfut", tag)         an ErrorFuture
#        ("cached", uid, source, key)  a call of a cached function: a hit if uid is pre-cached,
#                                else it loads (source, key) like a "load" leaf and caches that
# group: ("group", [child, ...]) a nested list inside a yielded structure
# task:  ("task", stages, raise_at, catch, tag)
#        stages: ((shape, [child, ...]), ...) yielded one after another; shape is "bare" (exactly
#        one child, yielded alone), "list", "tuple" or "dict"
#        raise_at: the task raises NodeFailed before stage raise_at (== len(stages): before
#        returning), or never (None / beyond the end)
#        catch: the task catches what a stage raises and records it as that stage's value
# Equal task nodes are one shared task in a run: several parents yield the same task.

FAILING_KEYS = 4
loads = st.tuples(st.just("load"), st.sampled_from("ABC"), st.integers(0, 5))
consts = st.tuples(st.just("const"), st.integers(0, 3))
errfuts = st.tuples(st.just("errfut"), st.integers(0, 3))
cacheds = st.tuples(st.just("cached"), st.just(0), st.sampled_from("AB"), st.integers(0, 5))
leaves = st.one_of(loads, loads, loads, consts, errfuts, cacheds)


def _tasks(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    stage = st.one_of(
        st.tuples(st.just("bare"), st.lists(children, min_size=1, max_size=1)),
        st.tuples(st.sampled_from(["list", "tuple", "dict"]), st.lists(children, max_size=3)),
    )
    return st.tuples(
        st.just("task"),
        st.lists(stage, min_size=1, max_size=3).map(tuple),
        st.one_of(st.none(), st.integers(0, 4)),
        st.booleans(),
        st.integers(0, 3),
    )


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    group = st.tuples(st.just("group"), st.lists(children, max_size=3).map(tuple))
    return st.one_of(_tasks(children), _tasks(children), group)


def _freeze(node: Any) -> Any:
    """Lists to tuples, so that equal nodes are equal dict keys."""
    if isinstance(node, (list, tuple)):
        return tuple(_freeze(x) for x in node)
    return node


def _number_cached(node: Any) -> Any:
    """Give every cached call its own uid, so that each cache key is asked for by one call.

    Equal task nodes stay equal (one shared task), so their cached calls stay one call; without
    this, two calls of one key in a run would race in ways that depend on task order in a round.
    """
    counter = iter(range(10**6))
    seen: dict[Any, Any] = {}

    def walk(n: Any) -> Any:
        kind = n[0]
        if kind == "cached":
            return ("cached", next(counter), n[2], n[3])
        if kind == "group":
            return ("group", tuple(walk(c) for c in n[1]))
        if kind == "task":
            if n not in seen:
                stages = tuple((shape, tuple(walk(c) for c in cs)) for shape, cs in n[1])
                seen[n] = ("task", stages, *n[2:])
            return seen[n]
        return n

    return walk(node)


graphs = st.recursive(leaves, _extend, max_leaves=30).map(_freeze).map(_number_cached)


def as_root(node: Any) -> Any:
    return node if node[0] == "task" else ("task", (("bare", (node,)),), None, False, 0)


# -- the reference: plain synchronous evaluation --------------------------------------------------

Outcome = tuple[str, Any]  # ("ok", value) or ("err", (type name, message))


def err_of(exc: BaseException) -> Outcome:
    return ("err", (type(exc).__name__, str(exc)))


def leaf_error(node: Any) -> BaseException | None:
    """The error a leaf fails with, or None."""
    if node[0] == "load":
        if node[1] == "C":
            return SourceDown("source C is down")
        if node[1] == "A" and node[2] >= FAILING_KEYS:
            return KeyFailed(f"A cannot load {node[2]}")
    if node[0] == "errfut":
        return NodeFailed(f"error future {node[1]}")
    return None


def leaf_value(node: Any) -> Any:
    if node[0] == "load":
        return (node[1], node[2] * 10)
    return ("const", node[1])


class Plain:
    """Evaluates a graph with ordinary calls; records each task node's outcome and stage count."""

    def __init__(self, precached: frozenset[int] = frozenset()) -> None:
        self.precached = precached
        self.outcomes: dict[Any, Outcome] = {}
        self.stages_run: dict[Any, int] = {}

    def child(self, node: Any) -> Any:
        """The value a yield receives for ``node``; raises what the yield raises."""
        kind = node[0]
        if kind == "group":
            # Every part is evaluated; the first error in order is the one raised.
            return self.collect([self.attempt(c) for c in node[1]], list)
        if kind == "task":
            status, payload = self.task(node)
            if status == "err":
                raise payload[1]
            return payload
        if kind == "cached":
            if node[1] in self.precached:
                return ["cached", node[1]]
            load = ("load", node[2], node[3])
            error = leaf_error(load)
            if error is not None:
                raise error
            return list(leaf_value(load))
        error = leaf_error(node)
        if error is not None:
            raise error
        return leaf_value(node)

    def attempt(self, node: Any) -> tuple[Any, BaseException | None]:
        try:
            return self.child(node), None
        except Exception as e:
            return None, e

    @staticmethod
    def collect(results: list[tuple[Any, BaseException | None]], shape: Callable[..., Any]) -> Any:
        for _, error in results:
            if error is not None:
                raise error
        return shape(value for value, _ in results)

    def stage(self, shape: str, children: tuple[Any, ...]) -> Any:
        results = [self.attempt(c) for c in children]
        if shape == "bare":
            value, error = results[0]
            if error is not None:
                raise error
            return value
        if shape == "dict":
            return self.collect(results, lambda values: dict(enumerate(values)))
        return self.collect(results, list if shape == "list" else tuple)

    def task(self, node: Any) -> tuple[str, Any]:
        """("ok", value) or ("err", (outcome, exception)); memoised like a shared task."""
        if node in self.outcomes:
            return self._memo[node]
        _, stages, raise_at, catch, tag = node
        out: list[Any] = []
        result: tuple[str, Any]
        count = 0
        try:
            for i, (shape, children) in enumerate(stages):
                if raise_at == i:
                    raise NodeFailed(f"task {tag} failed before stage {i}")
                count += 1
                if catch:
                    try:
                        value = self.stage(shape, children)
                    except Exception as e:
                        value = ("caught", type(e).__name__, str(e))
                else:
                    value = self.stage(shape, children)
                out.append(value)
            if raise_at == len(stages):
                raise NodeFailed(f"task {tag} failed before returning")
            result = ("ok", out)
            self.outcomes[node] = ("ok", out)
        except Exception as e:
            result = ("err", (err_of(e), e))
            self.outcomes[node] = err_of(e)
        self.stages_run[node] = count
        self._memo[node] = result
        return result

    _memo: dict[Any, tuple[str, Any]]

    def run(self, root: Any) -> None:
        self._memo = {}
        self.task(root)


# -- the round prediction -------------------------------------------------------------------------


def leaves_of(children: tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    for c in children:
        if c[0] == "group":
            out.extend(leaves_of(c[1]))
        else:
            out.append(c)
    return out


def model_stages(node: Any, stages_run: dict[Any, int], precached: frozenset[int]) -> list[Any]:
    """The leaves a task-like node waits on, stage by stage, for the stages it reaches.

    A cached call is two stages: the cache read and, on a miss, the load. Cache reads (and the
    write-back, see ``writes_back``) are keys of the source "cache".
    """
    if node[0] == "task":
        return [leaves_of(children) for _, children in node[1][: stages_run[node]]]
    _, uid, source, key = node
    cache_op = ("load", "cache", uid)
    if uid in precached:
        return [[cache_op]]
    load = ("load", source, key)
    return [[cache_op], [load]]


def writes_back(node: Any, precached: frozenset[int]) -> bool:
    """Whether a task-like node ends by writing to the cache: a cached call that computed a value.

    Nobody waits for that write: it joins the round in which the call ends, and is flushed with
    it (a round of its own at the very end, if nothing else is pending then).
    """
    return (
        node[0] == "cached"
        and node[1] not in precached
        and leaf_error(("load", node[2], node[3])) is None
    )


def predict(
    root: Any, stages_run: dict[Any, int], precached: frozenset[int] = frozenset()
) -> tuple[int, dict[int, dict[str, set[int]]]]:
    """Simulate "run every runnable task; flush every pending batch; resume": the number of rounds,
    and per round the keys each source is asked for.

    Which stages a task reaches does not depend on timing (``stages_run``, from the plain run), so
    the simulation only tracks when each task can go on.
    """
    staged: dict[Any, list[Any]] = {}

    def stages(node: Any) -> list[Any]:
        if node not in staged:
            staged[node] = model_stages(node, stages_run, precached)
        return staged[node]

    requests: dict[int, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    stage_of: dict[Any, int] = {}  # task node -> index of its next stage
    waits: dict[Any, int] = {}  # task node -> what it still waits for in its current stage
    waiters: dict[Any, list[Any]] = defaultdict(list)  # task node -> tasks waiting for it
    done: set[Any] = set()
    loads_now: list[Any] = []  # tasks waiting on a key of this round
    runnable = [root]
    stage_of[root] = 0
    t = 0
    while True:
        while runnable:
            task = runnable.pop()
            while True:
                i = stage_of[task]
                if i >= len(stages(task)):
                    done.add(task)
                    if writes_back(task, precached):
                        requests[t]["cache"].add(task[1])
                    for w in waiters.pop(task, []):
                        waits[w] -= 1
                        if waits[w] == 0:
                            runnable.append(w)
                    break
                stage_of[task] = i + 1
                pending = 0
                for leaf in stages(task)[i]:
                    if leaf[0] == "load":
                        requests[t][leaf[1]].add(leaf[2])
                        loads_now.append(task)
                        pending += 1
                    elif leaf[0] in ("task", "cached") and leaf not in done:
                        if leaf not in stage_of:
                            stage_of[leaf] = 0
                            runnable.append(leaf)
                        waiters[leaf].append(task)
                        pending += 1
                if pending:
                    waits[task] = pending
                    break
        if root in done:
            # The run ends after flushing what is still pending, waited for or not.
            return (t + 1 if t in requests and any(requests[t].values()) else t), requests
        assert loads_now, "the model deadlocked: the graph generator made a cycle"
        for task in loads_now:
            waits[task] -= 1
            if waits[task] == 0:
                runnable.append(task)
        loads_now = []
        t += 1


# -- running on batchq ----------------------------------------------------------------------------


class RoundRecorder(Instrument):
    def __init__(self) -> None:
        self.base = 0
        self.round = 0

    def run_started(self, scheduler: Scheduler) -> None:
        self.base = scheduler.stats().rounds

    def round_started(self, scheduler: Scheduler, round_index: int) -> None:
        self.round = round_index - self.base


class RecordingClient(LocalClient):
    """A LocalClient that tells the harness which cached calls each request carries."""

    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.harness = harness

    def get_many(self, keys: Any) -> dict[str | bytes, Any]:
        keys = list(keys)
        self.harness.record_cache(keys)
        return super().get_many(keys)

    def set_many(self, values: Any, expire: int = 0, noreply: bool | None = None) -> Any:
        self.harness.record_cache(list(values))
        return super().set_many(values, expire, noreply)


class Harness:
    def __init__(self) -> None:
        self.recorder = RoundRecorder()
        self.fetches: dict[str, list[tuple[int, list[int]]]] = {s: [] for s in [*"ABC", "cache"]}
        self.tasks: dict[Any, batchq.AsyncTask[Any]] = {}
        self.generators: list[Generator[Any, Any, Any]] = []
        self.loaders = {
            "A": Loader(self._fetch_a, name="A"),
            "B": Loader(self._fetch_b, name="B", max_batch_size=2),
            "C": Loader(self._fetch_c, name="C"),
        }
        harness = self

        @asynq()
        def node_task(node: Any) -> Generator[Any, Any, Any]:
            _, stages, raise_at, catch, tag = node
            out = []
            for i, (shape, children) in enumerate(stages):
                if raise_at == i:
                    raise NodeFailed(f"task {tag} failed before stage {i}")
                if catch:
                    try:
                        value = yield harness.build(shape, children)
                    except Exception as e:
                        value = ("caught", type(e).__name__, str(e))
                else:
                    value = yield harness.build(shape, children)
                out.append(value)
            if raise_at == len(stages):
                raise NodeFailed(f"task {tag} failed before returning")
            return out

        self.node_task = node_task
        self.cache = Cache(RecordingClient(self), name="cache")

        @self.cache.cached(key=lambda uid, source, key: f"load:uid={uid},{source}:{key}")
        def cached_load(uid: int, source: str, key: int) -> Generator[Any, Any, Any]:
            return list((yield harness.loaders[source].load.asynq(key)))

        self.cached_load = cached_load

    def record_cache(self, keys: list[Any]) -> None:
        uids = []
        for key in keys:
            found = re.search(rb"uid=(\d+)", key if isinstance(key, bytes) else key.encode())
            assert found is not None, key
            uids.append(int(found.group(1)))
        self.fetches["cache"].append((self.recorder.round, uids))

    def precache(self, graph: Any, uids: frozenset[int]) -> None:
        """Store ``["cached", uid]`` for the cached calls of ``graph`` whose uid is in ``uids``."""
        stack = [graph]
        while stack:
            node = stack.pop()
            if node[0] == "cached":
                _, uid, source, key = node
                if uid in uids:
                    self.cache.set(self.cached_load.cache_key(uid, source, key), ["cached", uid])
            elif node[0] == "group":
                stack.extend(node[1])
            elif node[0] == "task":
                stack.extend(c for _, children in node[1] for c in children)
        self.fetches["cache"].clear()

    def _fetch_a(self, keys: list[int]) -> list[Any]:
        self.fetches["A"].append((self.recorder.round, list(keys)))
        return [
            KeyFailed(f"A cannot load {k}") if k >= FAILING_KEYS else ("A", k * 10) for k in keys
        ]

    def _fetch_b(self, keys: list[int]) -> dict[int, Any]:
        self.fetches["B"].append((self.recorder.round, list(keys)))
        return {k: ("B", k * 10) for k in keys}

    def _fetch_c(self, keys: list[int]) -> list[Any]:
        self.fetches["C"].append((self.recorder.round, list(keys)))
        raise SourceDown("source C is down")

    def task(self, node: Any) -> batchq.AsyncTask[Any]:
        task = self.tasks.get(node)
        if task is None:
            task = self.tasks[node] = self.node_task.asynq(node)
            assert task._gen is not None
            self.generators.append(task._gen)
        return task

    def start(self, node: Any) -> Any:
        kind = node[0]
        if kind == "task":
            return self.task(node)
        if kind == "group":
            return [self.start(c) for c in node[1]]
        if kind == "load":
            return self.loaders[node[1]].load.asynq(node[2])
        if kind == "const":
            return ConstFuture(("const", node[1]))
        if kind == "cached":
            task = self.cached_load.asynq(*node[1:])
            assert task._gen is not None
            self.generators.append(task._gen)
            return task
        error = leaf_error(node)
        assert error is not None
        return ErrorFuture(error)

    def build(self, shape: str, children: tuple[Any, ...]) -> Any:
        started = [self.start(c) for c in children]
        if shape == "bare":
            return started[0]
        if shape == "dict":
            return dict(enumerate(started))
        return started if shape == "list" else tuple(started)


def outcome_of(task: batchq.AsyncTask[Any]) -> Outcome:
    error = task.error()
    return err_of(error) if error is not None else ("ok", task.value())


@given(graphs, st.frozensets(st.integers(0, 12)))
@PROFILE
def test_random_graphs_with_failures_match_plain_evaluation(
    graph: Any, precached: frozenset[int]
) -> None:
    root = as_root(graph)
    plain = Plain(precached)
    plain.run(root)

    harness = Harness()
    harness.precache(root, precached)
    sched = batchq.get_scheduler()
    with instruments(harness.recorder):
        try:
            got: Outcome = ("ok", harness.task(root).value())
        except Exception as e:
            got = err_of(e)

    # Same value or exception at the root, and at every task node, shared or not.
    assert got == plain.outcomes[root]
    assert set(harness.tasks) == set(plain.outcomes)
    for node, task in harness.tasks.items():
        assert outcome_of(task) == plain.outcomes[node], node

    # Rounds and fetches as "flush every pending batch each round" predicts.
    rounds, requests = predict(root, plain.stages_run, precached)
    assert sched.last_run is not None
    assert sched.last_run.rounds == rounds
    for source, calls in harness.fetches.items():
        by_round: dict[int, list[int]] = defaultdict(list)
        for round_index, keys in calls:
            by_round[round_index].extend(keys)
        expected = {r: keys[source] for r, keys in requests.items() if keys.get(source)}
        assert {r: set(keys) for r, keys in by_round.items()} == expected, source
        # Each key once per round, and B's chunks no larger than its max_batch_size.
        assert all(len(keys) == len(set(keys)) for keys in by_round.values())
        if source == "B":
            assert all(len(keys) <= 2 for _, keys in calls)

    # Nothing left behind: every task done, every generator closed, the scheduler idle and empty.
    assert all(task.is_computed() and task._gen is None for task in harness.tasks.values())
    assert all(inspect.getgeneratorstate(g) == inspect.GEN_CLOSED for g in harness.generators)
    assert not sched.is_running()
    assert sched._ready == []
    assert sched._pending == {}
    assert sched._active == {}


def test_the_model_predicts_a_known_graph() -> None:
    """The reference itself, on a graph worked out by hand: a shared task, a caught failure."""
    shared = ("task", (("bare", (("load", "B", 1),)),), None, False, 0)
    root = (
        "task",
        (
            ("list", (shared, ("load", "A", 5))),  # round 0: B1, A5 (A5 fails)
            ("tuple", (shared, ("load", "B", 2))),  # round 1: B2; shared is already done
        ),
        None,
        True,
        1,
    )
    plain = Plain()
    plain.run(root)
    assert plain.outcomes[root] == (
        "ok",
        [("caught", "KeyFailed", "A cannot load 5"), ([("B", 10)], ("B", 20))],
    )
    rounds, requests = predict(root, plain.stages_run)
    assert rounds == 2
    assert {r: dict(v) for r, v in requests.items()} == {0: {"B": {1}, "A": {5}}, 1: {"B": {2}}}


def test_the_model_predicts_a_cached_call_by_hand() -> None:
    """A miss: read in round 0, load in round 1, and the write-back joins round 2's load."""
    root = (
        "task",
        (("bare", (("cached", 0, "B", 3),)), ("bare", (("load", "A", 1),))),
        None,
        False,
        0,
    )
    plain = Plain()
    plain.run(root)
    assert plain.outcomes[root] == ("ok", [["B", 30], ("A", 10)])
    rounds, requests = predict(root, plain.stages_run)
    assert rounds == 3
    assert {r: dict(v) for r, v in requests.items()} == {
        0: {"cache": {0}},
        1: {"B": {3}},
        2: {"cache": {0}, "A": {1}},
    }
    # Already cached: one read, no load, no write.
    plain = Plain(frozenset({0}))
    plain.run(root)
    assert plain.outcomes[root] == ("ok", [["cached", 0], ("A", 10)])
    assert predict(root, plain.stages_run, frozenset({0}))[0] == 2


@pytest.mark.parametrize("profile", ["reliability-default", "reliability-nightly"])
def test_profiles_are_registered(profile: str) -> None:
    assert settings.get_profile(profile).deadline is None
