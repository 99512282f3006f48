"""batchq's pytest plugin, loaded through the ``pytest11`` entry point when batchq is installed.

Fixtures:

- ``memcached_server`` (session): a real memcached of our own on a free 127.0.0.1 port, stopped
  when the session ends; the tests that use it are skipped, with the reason, only when no memcached
  binary exists and none can be installed.
- ``memcache_client``: a pymemcache client to that server, flushed before each test.
- ``batchq_stats``: a :class:`batchq.testing.RoundCounter` recording every run of the test.

Everything heavy is imported inside the fixtures, so that loading the plugin costs nothing and a
project without pymemcache or memcached still runs its other tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .memcache import MemcachedServer
    from .testing import RoundCounter

__all__ = ["memcached_server", "memcache_client", "batchq_stats"]

# Generous: the machine may be busy, and a hung test is worse than a slow one.
_CLIENT_TIMEOUT_SECONDS = 10.0


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    """A memcached process on 127.0.0.1 for the whole session; ``.address`` is ``(host, port)``."""
    try:
        from .memcache import _server
    except ImportError as e:  # batchq.memcache needs pymemcache
        pytest.skip(f"batchq.memcache cannot be imported ({e}); 'pip install pymemcache'")
    binary = _server.ensure_memcached()
    if binary is None:
        pytest.skip(
            "memcached is not installed and could not be installed (installing needs root and "
            "apt-get); install it, e.g. 'apt-get install memcached', to run this test"
        )
    server = _server.MemcachedServer(binary=binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def memcache_client(memcached_server: MemcachedServer) -> Iterator[Any]:
    """A pymemcache ``Client`` to ``memcached_server``, which starts each test empty."""
    # Imported by name: pymemcache ships no type information, and it may not be installed.
    try:
        base = importlib.import_module("pymemcache.client.base")
    except ImportError:
        pytest.skip("pymemcache is not installed; 'pip install pymemcache' to run this test")
    client = base.Client(
        memcached_server.address,
        connect_timeout=_CLIENT_TIMEOUT_SECONDS,
        timeout=_CLIENT_TIMEOUT_SECONDS,
    )
    try:
        # Wait for the reply: the test must not see keys of an earlier test.
        client.flush_all(noreply=False)
        yield client
    finally:
        client.close()


@pytest.fixture
def batchq_stats() -> Iterator[RoundCounter]:
    """Records the rounds, batches and keys of every batchq run made during the test."""
    from .testing import count_rounds

    with count_rounds() as counter:
        yield counter
