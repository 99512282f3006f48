"""Round cost against depth: a chain of 125 ... 4000 levels, one batch round per level.

A scheduler that rescans what is pending pays more per round as the graph deepens; batchq's round
costs what it resumes, so its per-round time should stay flat.

Flatness is measured twice. ``round-flatness`` times batchq alone, 32 chains of depth 125 against
one chain of depth 4000 (4,000 rounds each), interleaved in one workload, so the ratio is paired
cycle by cycle like every other ratio here: this is the figure with the target. The summary line
divides the per-round medians of the ``depth-125`` and ``depth-4000`` workloads for both batchq
and asynq; those ran at different moments, so it moves with the machine's drift and is shown for
comparison only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import batchq

from ._chain import batchq_chain, chain_systems
from ._harness import (
    BenchEnv,
    Outcome,
    Summary,
    SummaryLine,
    Workload,
    WorkloadResult,
    format_measure,
    ratio_target,
    register,
    register_summary,
)
from ._sources import Store

DEPTHS = (125, 250, 500, 1000, 2000, 4000)
# "Flat" as a number: per-round time may grow by at most half from depth 125 to 4000.
FLATNESS_TARGET = 1.5

_DATA = {i: i % 97 for i in range(1, max(DEPTHS) + 1)}


def _builder(depth: int) -> Callable[[BenchEnv], Mapping[str, Callable[[], Outcome]]]:
    def build(env: BenchEnv) -> Mapping[str, Callable[[], Outcome]]:
        return chain_systems(_DATA, depth)

    return build


def _name(depth: int) -> str:
    return f"depth-{depth}"


for _depth in DEPTHS:
    # asynq's round cost grows with depth (about 2.4 s per repetition at 4000 levels): the deep
    # workloads get a few repetitions, the shallow ones many.
    register(
        Workload(
            name=_name(_depth),
            description=f"a chain of {_depth} levels, one batch round per level",
            systems=("asynq", "batchq"),
            baseline="asynq",
            build=_builder(_depth),
            units=_depth,
            unit="round",
            targets=(
                ratio_target("batchq", "asynq", at_most=0.1, label="per round <= 0.1x asynq"),
            ),
            budget_s=4.0 if _depth <= 1000 else 6.0,
            min_reps=3 if _depth >= 2000 else 5,
            max_reps=40,
            series=("round cost vs depth", _depth),
        )
    )


_SHALLOW, _DEEP = DEPTHS[0], DEPTHS[-1]


def _build_flatness(env: BenchEnv) -> Mapping[str, Callable[[], Outcome]]:
    def chains(depth: int) -> Callable[[], Outcome]:
        def rep() -> Outcome:
            store = Store(_DATA)
            loader = batchq.Loader(store.get_many)
            for _ in range(_DEEP // depth):
                batchq_chain(loader, depth)
            # The same work for both: 4,000 rounds of one fetch each.
            return Outcome(answer=store.trips, round_trips=store.trips)

        return rep

    return {f"batchq-depth-{_SHALLOW}": chains(_SHALLOW), f"batchq-depth-{_DEEP}": chains(_DEEP)}


register(
    Workload(
        name="round-flatness",
        description=(
            f"batchq's round at depth {_DEEP} against depth {_SHALLOW}: one chain of {_DEEP} "
            f"levels against {_DEEP // _SHALLOW} chains of {_SHALLOW}, {_DEEP} rounds each"
        ),
        systems=(f"batchq-depth-{_SHALLOW}", f"batchq-depth-{_DEEP}"),
        baseline=f"batchq-depth-{_SHALLOW}",
        build=_build_flatness,
        units=_DEEP,
        unit="round",
        targets=(
            ratio_target(
                f"batchq-depth-{_DEEP}",
                f"batchq-depth-{_SHALLOW}",
                at_most=FLATNESS_TARGET,
                label=f"round cost flat: depth {_DEEP} <= {FLATNESS_TARGET:g}x depth {_SHALLOW}",
            ),
        ),
        budget_s=4.0,
        max_reps=40,
    )
)


def _flatness(results: Mapping[str, WorkloadResult]) -> list[SummaryLine]:
    low, high = results.get(_name(DEPTHS[0])), results.get(_name(DEPTHS[-1]))
    if low is None or high is None:
        return []
    lines = []
    for system in ("batchq", "asynq"):
        ratio = high.per_unit(system) / low.per_unit(system)
        shown = (
            f"{ratio:.2f} ({format_measure(low.per_unit(system), 'time')} per round at "
            f"{DEPTHS[0]}, {format_measure(high.per_unit(system), 'time')} at {DEPTHS[-1]})"
        )
        # For comparison only: the target is on round-flatness, whose cycles are paired.
        lines.append(
            SummaryLine(
                label=f"flatness of {system}'s round cost (depth {DEPTHS[-1]} / {DEPTHS[0]})",
                value=ratio,
                shown=shown,
                target="",
                passed=None,
            )
        )
    return lines


register_summary(Summary("depth-flatness", _flatness))
