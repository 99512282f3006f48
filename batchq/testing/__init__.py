"""Testing code that uses batchq: round assertions and real memcached servers for tests.

- :func:`assert_rounds`, :func:`assert_max_rounds`, :func:`count_rounds`: fail when a page stops
  batching, listing every round's batches and keys.
- :class:`MemcachedServer`: a memcached process of its own on a free 127.0.0.1 port, started by
  ``start()`` or ``with``; :func:`find_memcached` / :func:`require_memcached` look for the binary
  and never install it.
- The pytest plugin (:mod:`batchq.testing.pytest_plugin`, loaded by the ``pytest11`` entry point)
  and :mod:`batchq.mock` (``patch`` for async functions) build on these.
"""

# Only re-exports here, and no `from __future__` import: dir(batchq.testing) shows the public
# names and nothing else.
from ._rounds import BatchRecord as BatchRecord
from ._rounds import RoundCounter as RoundCounter
from ._rounds import assert_max_rounds as assert_max_rounds
from ._rounds import assert_rounds as assert_rounds
from ._rounds import count_rounds as count_rounds
from ._server import MemcachedNotFoundError as MemcachedNotFoundError
from ._server import MemcachedServer as MemcachedServer
from ._server import ServerStartError as ServerStartError
from ._server import find_memcached as find_memcached
from ._server import require_memcached as require_memcached

__all__ = [
    # round assertions
    "BatchRecord",
    "RoundCounter",
    "count_rounds",
    "assert_rounds",
    "assert_max_rounds",
    # memcached processes for tests and benchmarks
    "MemcachedServer",
    "find_memcached",
    "require_memcached",
    "MemcachedNotFoundError",
    "ServerStartError",
]
