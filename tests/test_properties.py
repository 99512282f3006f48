"""Property: on random dependency graphs over two loaders, batchq computes what plain code computes,
with exactly the fetches that "flush every pending batch each round" predicts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Generator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

import batchq
from batchq import Loader, asynq

# A node is ("leaf", source, key) or ("seq", [stage, ...]) where a stage is a list of nodes that
# the task yields together; stages run one after another.
leaf = st.tuples(st.just("leaf"), st.sampled_from("AB"), st.integers(0, 5))
trees = st.recursive(
    leaf,
    lambda children: st.tuples(
        st.just("seq"), st.lists(st.lists(children, max_size=3), min_size=1, max_size=3)
    ),
    max_leaves=40,
)


def plain(node: Any) -> Any:
    """The reference: a synchronous evaluation with no batching at all."""
    if node[0] == "leaf":
        return (node[1], node[2] * 10)
    return [[plain(child) for child in stage] for stage in node[1]]


def predict(node: Any, t: int, requests: dict[str, dict[int, set[int]]]) -> int:
    """Round in which ``node``'s value is available, given it is requested in round ``t``."""
    if node[0] == "leaf":
        requests[node[1]][t].add(node[2])
        return t + 1  # fetched at the end of round t
    for stage in node[1]:
        t = max((predict(child, t, requests) for child in stage), default=t)
    return t


@given(trees)
@settings(max_examples=150, deadline=None)
def test_random_graphs_match_plain_evaluation_and_predicted_fetches(tree: Any) -> None:
    calls: dict[str, list[list[int]]] = {"A": [], "B": []}

    def fetcher(name: str) -> Any:
        def fetch(keys: list[int]) -> list[Any]:
            calls[name].append(list(keys))
            return [(name, k * 10) for k in keys]

        return fetch

    loaders = {name: Loader(fetcher(name), name=name) for name in "AB"}

    @asynq()
    def node_task(node: Any) -> Generator[Any, Any, Any]:
        out = []
        for stage in node[1]:
            out.append((yield [start(child) for child in stage]))  # noqa: PERF401 - yield
        return out

    def start(node: Any) -> Any:
        if node[0] == "leaf":
            return loaders[node[1]].load.asynq(node[2])
        return node_task.asynq(node)

    root = tree if tree[0] == "seq" else ("seq", [[tree]])
    assert node_task(root) == plain(root)

    requests: dict[str, dict[int, set[int]]] = defaultdict(lambda: defaultdict(set))
    depth = predict(root, 0, requests)
    for name in "AB":
        expected = [requests[name][t] for t in sorted(requests[name])]
        assert [set(keys) for keys in calls[name]] == expected
        # Each key at most once per fetch.
        assert all(len(keys) == len(set(keys)) for keys in calls[name])
    stats = batchq.get_scheduler().last_run
    assert stats is not None
    assert stats.rounds == depth
