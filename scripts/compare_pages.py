"""Time the memcached page on this tree and on an older commit, alternately, in one process.

    .venv/bin/python scripts/compare_pages.py 731d9b9 [json|str] [pairs] [pymemcache|pylibmc]

The benchmark suite's page workloads compare batchq with hand-batched code; on a shared, noisy
machine their ratio moves by 10% or more from one run to the next, too much to tell whether a
change made the page slower by a few percent. This script instead runs the same page (the
benchmark's, 2,100 tasks and 4,200 gets against a real memcached through pymemcache) with both
trees in one process, alternating which goes first, and reports the median of the per-pair
ratios (new / old): machine-wide slowdowns hit both sides of a pair alike. With ``pylibmc``, each
tree reads through a client from its own ``pylibmc_client``.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from typing import Any

from compare_speed import ROOT, load_old


def make_page(mod: Any, which: str, question_keys: list[str]) -> Any:
    """The benchmark's page (JSON or str values), decorated with ``mod``'s ``asynq``."""
    asynq = mod.asynq
    if which == "str":

        @asynq()
        def answer(cache, aid):
            author = yield cache.get.asynq(aid)
            return (yield cache.get.asynq(author))

        @asynq()
        def question(cache, qkey):
            list_key = yield cache.get.asynq(qkey)
            ids = yield cache.get.asynq(list_key)
            return (qkey, (yield [answer.asynq(cache, aid) for aid in ids.split(" ")]))

    else:

        @asynq()
        def answer(cache, aid):
            found = yield cache.get.asynq(aid)
            user = yield cache.get.asynq(found["author"])
            return user["name"]

        @asynq()
        def question(cache, qkey):
            found = yield cache.get.asynq(qkey)
            ids = yield cache.get.asynq(found["answers"])
            names = yield [answer.asynq(cache, aid) for aid in ids]
            return (found["title"], names)

    @asynq()
    def page(cache):
        return (yield [question.asynq(cache, qkey) for qkey in question_keys])

    return page


def main() -> None:
    commit = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    which = sys.argv[2] if len(sys.argv) > 2 else "json"
    pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 150
    kind = sys.argv[4] if len(sys.argv) > 4 else "pymemcache"
    sys.path.insert(0, str(ROOT))
    from pymemcache.client.base import Client

    import batchq
    from batchq.testing import MemcachedServer
    from benchmarks import bench_memcache as bm

    old_mod = load_old(commit)
    import batchq_old.memcache  # type: ignore[import-not-found]

    data = bm._STR_DATA if which == "str" else bm._DATA
    with MemcachedServer() as server:
        client = Client(server.address, no_delay=True)
        batchq.memcache.Cache(client).set_many(data)
        if kind == "pylibmc":
            servers = [f"{server.address[0]}:{server.address[1]}"]
            caches = tuple(
                m.memcache.Cache(m.memcache.pylibmc_client(servers)) for m in (old_mod, batchq)
            )
        else:
            caches = (batchq_old.memcache.Cache(client), batchq.memcache.Cache(client))
        pages = tuple(make_page(m, which, bm._QUESTION_KEYS) for m in (old_mod, batchq))
        if pages[0](caches[0]) != pages[1](caches[1]):
            raise SystemExit("the two trees' pages differ")
        for _ in range(5):
            for side in (0, 1):
                pages[side](caches[side])
        ratios, times = [], ([], [])
        for i in range(pairs):
            took = [0.0, 0.0]
            for side in (0, 1) if i % 2 else (1, 0):
                gc.collect()
                start = time.perf_counter()
                pages[side](caches[side])
                took[side] = time.perf_counter() - start
                times[side].append(took[side])
            ratios.append(took[1] / took[0])
    old_ms, new_ms = (statistics.median(t) * 1e3 for t in times)
    print(
        f"{which} page on {kind}, {pairs} pairs: median ratio now / {commit[:7]} "
        f"{statistics.median(ratios):.3f} (medians {new_ms:.2f} ms / {old_ms:.2f} ms)"
    )


if __name__ == "__main__":
    main()
