"""The memcache page on pylibmc, batchq's fastest client (``pip install 'batchq[pylibmc]'``).

The same depth-4 JSON page as ``bench_memcache.py``, on one real memcached:

- ``hand-batched`` (baseline): hand-written ``get_many`` per level on pymemcache, today's usual
  code;
- ``hand-batched-pylibmc``: the same code on pylibmc, the physical reference (the fastest client,
  no scheduler): what the page costs at least;
- ``batchq-pylibmc``: batchq's page on a Cache over pylibmc;
- ``batchq``: batchq's page on pymemcache, for comparison.

Without pylibmc this module does not import, and the suite says so and how to install it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pymemcache.client.base import Client

from batchq.memcache import _pylibmc, pylibmc_client

from ._harness import BenchEnv, Outcome, Workload, ratio_target, register, round_trip_target
from .bench_memcache import _DATA, UNITS, _Resources, b_page, hand_batched_page, page_pair

if not _pylibmc.available():
    raise ImportError(f"pylibmc is not installed: {_pylibmc.INSTALL}")

_res = _Resources()


def _build(env: BenchEnv) -> Mapping[str, Callable[[], Outcome]]:
    (address,) = env.memcached(1)
    pymemcache = Client(address, connect_timeout=2.0, timeout=5.0, no_delay=True)
    _res.closers.append(pymemcache.close)
    fast: Any = pylibmc_client([f"{address[0]}:{address[1]}"])
    _res.closers.append(fast.close)
    hand, batchq_ = page_pair(pymemcache, _res, _DATA, hand_batched_page, b_page)
    hand_fast, batchq_fast = page_pair(fast, _res, _DATA, hand_batched_page, b_page)
    return {
        "hand-batched": hand,
        "hand-batched-pylibmc": hand_fast,
        "batchq-pylibmc": batchq_fast,
        "batchq": batchq_,
    }


register(
    Workload(
        name="memcache-page-fastest",
        description=(
            f"depth-4 JSON page, {UNITS} keys, on a real memcached: batchq on pylibmc against "
            "hand-batched code on pymemcache, and hand-batched on pylibmc as the floor"
        ),
        systems=("hand-batched", "hand-batched-pylibmc", "batchq-pylibmc", "batchq"),
        baseline="hand-batched",
        build=_build,
        teardown=_res.close,
        units=UNITS,
        unit="key",
        targets=(
            ratio_target(
                "batchq-pylibmc",
                "hand-batched",
                at_most=0.9,
                label="batchq on pylibmc within 0.9x hand-batched on pymemcache",
            ),
            round_trip_target("batchq-pylibmc", "hand-batched", label="batchq: 4 round trips"),
        ),
        needs_memcached=True,
        budget_s=12.0,
        max_reps=40,
    )
)
