"""Misses under load (issue 13): a thundering herd on 200 hot keys.

8 workers (processes on a real memcached; threads on the embedded LocalClient) each serve 10
requests at the same moment; request ``r`` of every worker reads the same 20 hot keys through a
cached function whose source costs 5 ms a call. Before each storm the 200 keys "expire together":
they are deleted (what a hard expiry leaves) for the plain and herd systems, and invalidated (what
a soft expiry leaves: a stale record) for the stale system.

Systems: ``plain`` (``cache.cached(ttl)``: every worker that misses computes), ``herd``
(``herd=True``: one computes per key, the others wait) and ``stale`` (``stale_ttl``: everyone is
served the stale value, one recomputes in the background). A repetition's ``round_trips`` are the
source calls; the summary reports the median and p99 latency of a request.

A second workload checks that protection costs nothing when values are present: a warm page of
200 cached calls, plain against herd (stored plain too) and stale (a record parsed per call).
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import batchq
from batchq.memcache import Cache, LocalClient

from ._harness import (
    BenchEnv,
    Outcome,
    Summary,
    SummaryLine,
    Workload,
    WorkloadResult,
    ratio_target,
    register,
    register_summary,
    round_trip_target,
)

KEYS = 200
WORKERS = 8
REQUESTS = 10
PER_REQUEST = KEYS // REQUESTS
SOURCE_COST = 0.005
SYSTEMS = ("plain", "herd", "stale")


class _Count:
    def __init__(self) -> None:
        self.n = 0
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.n += 1


def _functions(cache: Cache, count: _Count) -> dict[str, Any]:
    def source(k: int) -> Any:
        count.add()
        time.sleep(SOURCE_COST)
        return {"key": k, "payload": "x" * 100}

    return {
        "plain": cache.cached(ttl=3600, key=lambda k: f"hot:plain:{k}")(source),
        "herd": cache.cached(ttl=3600, herd=True, key=lambda k: f"hot:herd:{k}")(source),
        "stale": cache.cached(ttl=3600, stale_ttl=3600, key=lambda k: f"hot:stale:{k}")(source),
    }


def _requests(fn: Any, start_at: float) -> list[float]:
    """One worker's requests, from ``start_at``; their latencies."""

    @batchq.asynq()
    def request(r: int) -> Any:
        return (yield [fn.asynq(k) for k in range(r * PER_REQUEST, (r + 1) * PER_REQUEST)])

    time.sleep(max(0.0, start_at - time.time()))
    latencies = []
    for r in range(REQUESTS):
        t0 = time.perf_counter()
        values = request(r)
        latencies.append(time.perf_counter() - t0)
        assert len(values) == PER_REQUEST
    return latencies


def _prepare(cache: Cache, fns: Mapping[str, Any], system: str) -> None:
    """Make the 200 keys expire together."""
    fn = fns[system]
    keys = [fn.cache_key(k) for k in range(KEYS)]
    if system == "stale":
        cache.drain(60)
        missing = [k for k in range(KEYS) if cache.get(keys[k]) is None]
        if missing:
            _fill(fn, missing)
        cache.invalidate_many(keys)
    else:
        cache.delete_many(keys)


def _fill(fn: Any, ks: list[int]) -> None:
    @batchq.asynq()
    def fill() -> Any:
        return (yield [fn.asynq(k) for k in ks])

    fill()


# -- workers: processes on memcached --------------------------------------------------------------


def _worker_main(address: tuple[str, int], conn: Any) -> None:
    from pymemcache.client.base import PooledClient

    cache = Cache(PooledClient(address, max_pool_size=8, timeout=5, no_delay=True))
    count = _Count()
    fns = _functions(cache, count)
    while True:
        msg = conn.recv()
        if msg is None:
            return
        system, start_at = msg
        before = count.n
        latencies = _requests(fns[system], start_at)
        cache.drain(60)  # the background recomputes of stale serving count too
        conn.send((latencies, count.n - before))


class _Storm:
    """The workers of one workload and the Cache the parent prepares the keys with."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {s: [] for s in SYSTEMS}
        self.closers: list[Callable[[], None]] = []

    def record(self, system: str, latencies: list[float]) -> None:
        self.latencies[system].extend(latencies)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()


_mc = _Storm()
_local = _Storm()


def _build_memcached(env: BenchEnv) -> Mapping[str, Callable[[], Outcome]]:
    from pymemcache.client.base import PooledClient

    (address,) = env.memcached(1)
    ctx = multiprocessing.get_context("spawn")
    pipes = []
    for _ in range(WORKERS):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(address, child), daemon=True)
        proc.start()
        pipes.append(parent)

        def stop(parent: Any = parent, proc: Any = proc) -> None:
            parent.send(None)
            proc.join(10)

        _mc.closers.append(stop)
    client = PooledClient(address, max_pool_size=4, timeout=5)
    _mc.closers.append(client.close)
    cache = Cache(client)
    fns = _functions(cache, _Count())

    def system(name: str) -> Callable[[], Outcome]:
        def rep() -> Outcome:
            _prepare(cache, fns, name)
            start_at = time.time() + 0.05
            for pipe in pipes:
                pipe.send((name, start_at))
            results = [pipe.recv() for pipe in pipes]
            for latencies, _ in results:
                _mc.record(name, latencies)
            calls = sum(calls for _, calls in results)
            return Outcome(answer=(WORKERS * REQUESTS, PER_REQUEST), round_trips=calls)

        return rep

    return {name: system(name) for name in SYSTEMS}


# -- workers: threads on LocalClient --------------------------------------------------------------


def _build_local(env: BenchEnv) -> Mapping[str, Callable[[], Outcome]]:
    cache = Cache(LocalClient(max_items=None, max_bytes=None))
    count = _Count()
    fns = _functions(cache, count)

    def system(name: str) -> Callable[[], Outcome]:
        def rep() -> Outcome:
            _prepare(cache, fns, name)
            before = count.n
            start_at = time.time() + 0.02
            out: list[list[float]] = []
            threads = [
                threading.Thread(target=lambda: out.append(_requests(fns[name], start_at)))
                for _ in range(WORKERS)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            cache.drain(60)
            for latencies in out:
                _local.record(name, latencies)
            return Outcome(answer=(WORKERS * REQUESTS, PER_REQUEST), round_trips=count.n - before)

        return rep

    return {name: system(name) for name in SYSTEMS}


_TARGETS = (
    round_trip_target(
        "herd", "plain", at_most=KEYS / (KEYS * WORKERS), label="herd: 200 source calls vs 1,600"
    ),
    round_trip_target(
        "stale", "plain", at_most=KEYS / (KEYS * WORKERS), label="stale: 200 source calls vs 1,600"
    ),
)

register(
    Workload(
        name="herd-memcached",
        description=(
            f"{WORKERS} processes x {REQUESTS} requests on {KEYS} hot keys that expire together, "
            f"a {SOURCE_COST * 1000:g} ms source, on a real memcached"
        ),
        systems=SYSTEMS,
        baseline="plain",
        build=_build_memcached,
        teardown=_mc.close,
        units=WORKERS * REQUESTS,
        unit="request",
        targets=_TARGETS,
        needs_memcached=True,
        budget_s=10.0,
        min_reps=3,
        max_reps=8,
    )
)

register(
    Workload(
        name="herd-local",
        description=(
            f"{WORKERS} threads x {REQUESTS} requests on {KEYS} hot keys that expire together, "
            f"a {SOURCE_COST * 1000:g} ms source, on the embedded LocalClient"
        ),
        systems=SYSTEMS,
        baseline="plain",
        build=_build_local,
        teardown=_local.close,
        units=WORKERS * REQUESTS,
        unit="request",
        targets=_TARGETS,
        budget_s=10.0,
        min_reps=3,
        max_reps=8,
    )
)


def _latency_lines(name: str, storm: _Storm) -> list[SummaryLine]:
    lines = []
    for system in SYSTEMS:
        samples = sorted(storm.latencies[system])
        if not samples:
            continue
        median = statistics.median(samples)
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        lines.append(
            SummaryLine(
                f"{name} {system}: request latency median / p99",
                p99,
                f"{median * 1000:.1f} ms / {p99 * 1000:.1f} ms",
            )
        )
    warm = storm.latencies["stale"]
    if warm:
        # No request waits for a recompute: every stale request is far below one source call
        # per key of the request (20 x 5 ms = 100 ms).
        worst = max(warm)
        bound = PER_REQUEST * SOURCE_COST / 2
        lines.append(
            SummaryLine(
                f"{name} stale: slowest request",
                worst,
                f"{worst * 1000:.1f} ms",
                target=f"< {bound * 1000:g} ms (no request waits for a recompute)",
                passed=worst < bound,
            )
        )
    return lines


def _latencies(results: Mapping[str, WorkloadResult]) -> list[SummaryLine]:
    lines = []
    if "herd-memcached" in results:
        lines += _latency_lines("herd-memcached", _mc)
    if "herd-local" in results:
        lines += _latency_lines("herd-local", _local)
    return lines


register_summary(Summary("herd-latency", _latencies))


# -- warm values: protection costs nothing when values are present --------------------------------


def _build_warm(env: BenchEnv) -> Mapping[str, Callable[[], Outcome]]:
    cache = Cache(LocalClient(max_items=None, max_bytes=None))
    count = _Count()
    fns = _functions(cache, count)
    for name in SYSTEMS:
        _fill(fns[name], list(range(KEYS)))

    def system(name: str) -> Callable[[], Outcome]:
        fn = fns[name]

        @batchq.asynq()
        def page() -> Any:
            return (yield [fn.asynq(k) for k in range(KEYS)])

        def rep() -> Outcome:
            before = count.n
            values = page()
            return Outcome(answer=values, round_trips=count.n - before)

        return rep

    return {name: system(name) for name in SYSTEMS}


register(
    Workload(
        name="herd-warm-local",
        description=(
            f"a warm page of {KEYS} cached calls: plain, herd-protected, and served from a "
            "record (stale_ttl)"
        ),
        systems=SYSTEMS,
        baseline="plain",
        build=_build_warm,
        units=KEYS,
        unit="call",
        # The bound: protection costs nothing when values are present. The record of
        # stale serving is reported, not targeted: parsing it is extra Python per warm call.
        targets=(ratio_target("herd", "plain", at_most=1.05, label="warm herd call within 5%"),),
        budget_s=5.0,
    )
)
