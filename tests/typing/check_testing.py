"""Checked by `mypy --strict` in `make test` (not collected by pytest): batchq.testing's types."""

from __future__ import annotations

from typing_extensions import assert_type

from batchq.testing import (
    MemcachedServer,
    RoundCounter,
    assert_rounds,
    count_rounds,
    find_memcached,
    require_memcached,
)


def check() -> None:
    assert_type(find_memcached(), str | None)
    assert_type(require_memcached(), str)
    assert_type(MemcachedServer().start(), MemcachedServer)
    with MemcachedServer(memory_mb=8) as server:
        assert_type(server.address, tuple[str, int])
        assert_type(server.pid, int | None)
    with count_rounds() as counter:
        assert_type(counter, RoundCounter)
    with assert_rounds(1) as counted:
        assert_type(counted, RoundCounter)


def check_errors() -> None:
    MemcachedServer("memcached")  # type: ignore[call-arg]  # keyword-only settings
    assert_rounds("2")  # type: ignore[arg-type]
