"""batchq's pytest plugin, loaded through the ``pytest11`` entry point when batchq is installed.

While a test session runs, a task made by ``f.asynq(...)`` and dropped without being yielded
warns (``batchq.UnyieldedTaskWarning``; an error under ``-W error``). Set
``batchq_warn_unyielded = false`` in the ini file to turn it off.

Fixtures:

- ``memcached_server`` (session): a real memcached of our own on a free 127.0.0.1 port, stopped
  when the session ends. It never installs anything: when no memcached binary is found, the tests
  that use it are skipped with a message naming the install command.
- ``memcache_client``: a pymemcache client to that server, flushed before each test.
- ``batchq_stats``: a :class:`batchq.testing.RoundCounter` recording every run of the test.

It registers the ``memcached`` marker, so projects using ``--strict-markers`` may mark their tests
that need a real memcached. Loading it imports neither pymemcache nor ``batchq.memcache``: a project
without them still runs its other tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

from .._decorators import set_checked_tasks
from ._rounds import RoundCounter, count_rounds
from ._server import MemcachedServer, _missing_message, find_memcached

__all__ = ["memcached_server", "memcache_client", "batchq_stats"]

# Generous: the machine may be busy, and a hung test is worse than a slow one.
_CLIENT_TIMEOUT_SECONDS = 10.0

_MARKER = "memcached: needs a real memcached server (batchq's memcached_server fixture starts one)"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "batchq_warn_unyielded",
        "warn when a task made by f.asynq(...) is dropped without being yielded (default: true)",
        type="bool",
        default=True,
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``memcached`` marker (no PytestUnknownMarkWarning under --strict-markers),
    and report forgotten yields in the test session (``batchq_warn_unyielded = false`` in the
    ini file turns that off)."""
    config.addinivalue_line("markers", _MARKER)
    if config.getini("batchq_warn_unyielded"):
        set_checked_tasks(True)


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    """A memcached process on 127.0.0.1 for the whole session; ``.address`` is ``(host, port)``.

    Skips the test, naming the install command, when memcached is not installed.
    """
    binary = find_memcached()
    if binary is None:
        pytest.skip(f"batchq's memcached_server fixture: {_missing_message()}")
    with MemcachedServer(binary=binary) as server:
        yield server


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
    with count_rounds() as counter:
        yield counter
