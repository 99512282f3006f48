"""Every workload does the same work in each system (one cycle each, sizes as registered)."""

from __future__ import annotations

import dataclasses

import pytest

from benchmarks import __main__ as cli
from benchmarks._harness import REGISTRY, BenchEnv, run_workload

cli.discover()

# The deep ones cost seconds in asynq and are the same code as depth-125.
CHEAP = [
    "get-and-set-3000",
    "fanout-10000",
    "chain-1000",
    "depth-125",
    "latency-page-1ms",
    "herd-warm-local",
]


@pytest.mark.parametrize("name", CHEAP)
def test_systems_agree_in_one_cycle(name: str):
    w = dataclasses.replace(REGISTRY.workloads[name], budget_s=0.0, min_reps=1, max_reps=1)
    result = run_workload(w, BenchEnv(quick=True))
    assert result.error is None
    assert result.ok
    assert result.reps == 1


def test_round_trips_are_what_each_shape_implies():
    def trips(name: str) -> dict[str, int | None]:
        w = dataclasses.replace(REGISTRY.workloads[name], budget_s=0.0, min_reps=1, max_reps=1)
        result = run_workload(w, BenchEnv(quick=True))
        return {s: r.trips for s, r in result.systems.items()}

    assert set(trips("fanout-10000").values()) == {1}
    assert set(trips("chain-1000").values()) == {1000}
    page = trips("latency-page-1ms")
    assert page["naive"] == 320  # 20 + 100 + 200 lookups, one request each
    assert page["hand-batched"] == page["batchq"] == page["asynq"] == 3


def test_memory_probe_counts_pending_tasks_for_both_systems():
    from benchmarks.bench_memory import pending_bytes_asynq, pending_bytes_batchq

    b = pending_bytes_batchq(2000)
    a = pending_bytes_asynq(2000)
    assert b.answer == a.answer
    assert b.round_trips == a.round_trips == 1
    # Each pending task holds at least its generator frame: far more than 100 bytes.
    assert b.measured is not None
    assert b.measured > 2000 * 100
    assert a.measured is not None
    assert a.measured > 2000 * 100
