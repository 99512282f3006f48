"""batchq.testing.MemcachedServer really starts, stops, pauses, resumes and restarts memcached
processes; find_memcached and require_memcached look for the binary and never install it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymemcache.client.base import Client

import batchq
import batchq.testing
from batchq.testing import (
    MemcachedNotFoundError,
    MemcachedServer,
    ServerStartError,
    _server,
    find_memcached,
    require_memcached,
)

needs_memcached = pytest.mark.skipif(
    find_memcached() is None, reason="memcached is not installed (scripts/ensure-memcached.sh)"
)


@pytest.fixture
def server() -> Iterator[MemcachedServer]:
    running = MemcachedServer().start()
    yield running
    running.stop(graceful=False)  # a graceful stop costs a second; stop() has its own tests


_open_clients: list[Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open_clients:
        _open_clients.pop().close()


def _client(server: MemcachedServer, timeout: float = 2.0) -> Client:
    """A pymemcache client that waits for replies, closed after the test."""
    client = Client(server.address, connect_timeout=timeout, timeout=timeout, default_noreply=False)
    _open_clients.append(client)
    return client


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its /proc status says so.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def _connect_refused(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.memcached
@needs_memcached
class TestLifecycle:
    def test_serves_pymemcache_on_loopback_without_udp(self, server: MemcachedServer) -> None:
        client = _client(server)
        assert client.set("greeting", b"hello") is True
        assert client.get("greeting") == b"hello"
        settings = client.stats("settings")
        assert settings[b"inter"] == b"127.0.0.1"
        assert settings[b"udpport"] == 0
        assert settings[b"maxbytes"] == 64 * 1024 * 1024
        assert server.address == ("127.0.0.1", server.port)
        assert client.stats()[b"pid"] == server.pid

    def test_two_servers_are_independent(self, server: MemcachedServer) -> None:
        other = MemcachedServer().start()
        try:
            assert other.port != server.port
            _client(server).set("k", b"first")
            assert _client(other).get("k") is None
        finally:
            other.stop(graceful=False)

    def test_stop_ends_the_process_and_is_idempotent(self) -> None:
        server = MemcachedServer().start()
        pid = server.pid
        assert pid is not None
        server.stop()
        assert not _alive(pid)
        assert server.pid is None
        assert not server.running
        assert _connect_refused(server.address)
        server.stop()
        server.stop(graceful=False)

    def test_context_manager_stops_on_error(self) -> None:
        pids: list[int | None] = []

        def fail_inside() -> None:
            with MemcachedServer() as server:
                pids.append(server.pid)
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            fail_inside()
        [pid] = pids
        assert pid is not None
        assert not _alive(pid)

    def test_non_graceful_stop_is_fast(self) -> None:
        server = MemcachedServer().start()
        pid = server.pid
        assert pid is not None
        started = time.monotonic()
        server.stop(graceful=False)
        assert time.monotonic() - started < 0.5
        assert not _alive(pid)

    def test_pause_blocks_clients_and_resume_keeps_data(self, server: MemcachedServer) -> None:
        _client(server).set("k", b"v")
        server.pause()
        assert "paused" in repr(server)
        with pytest.raises(socket.timeout):
            _client(server, timeout=0.2).get("k")
        server.resume()
        assert _client(server).get("k") == b"v"

    def test_stop_works_while_paused(self) -> None:
        server = MemcachedServer(stop_timeout=5.0).start()
        pid = server.pid
        assert pid is not None
        server.pause()
        server.stop()
        assert not _alive(pid)

    @pytest.mark.parametrize("graceful", [True, False])
    def test_restart_keeps_the_port_and_empties_the_cache(
        self, server: MemcachedServer, graceful: bool
    ) -> None:
        _client(server).set("k", b"v")
        port, pid = server.port, server.pid
        assert pid is not None
        server.restart(graceful=graceful)
        assert server.port == port
        assert server.pid not in (None, pid)
        assert not _alive(pid)
        assert _client(server).get("k") is None
        assert _client(server).set("k", b"again") is True

    def test_restart_after_stop_and_while_paused(self, server: MemcachedServer) -> None:
        server.stop(graceful=False)
        server.restart()
        assert server.running
        server.pause()
        server.restart(graceful=False)
        assert _client(server).set("k", b"v") is True

    def test_pause_of_a_stopped_server_says_so(self, server: MemcachedServer) -> None:
        server.stop()
        with pytest.raises(ServerStartError, match=r"SIGSTOP.*not running.*restart\(\)"):
            server.pause()

    def test_retries_when_the_chosen_port_is_taken(self, monkeypatch: pytest.MonkeyPatch) -> None:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            taken = squatter.getsockname()[1]
            ports = [taken]
            real_free_port = _server._free_port

            def next_port(host: str) -> int:
                return ports.pop() if ports else real_free_port(host)

            monkeypatch.setattr(_server, "_free_port", next_port)
            server = MemcachedServer().start()
            try:
                assert server.port != taken
                assert _client(server).set("k", b"v") is True
            finally:
                server.stop(graceful=False)

    def test_restart_fails_clearly_when_the_port_stays_taken(
        self, server: MemcachedServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_server, "_PORT_ATTEMPTS", 2)
        server.stop(graceful=False)
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", server.port))
            squatter.listen()
            with pytest.raises(ServerStartError, match="Address already in use"):
                server.restart()

    def test_start_failure_reports_stderr(self) -> None:
        with pytest.raises(ServerStartError, match=r"exited with code \d+; stderr: .*\S"):
            MemcachedServer(extra_args=["--no-such-option"]).start()

    def test_bad_binary_is_reported(self, tmp_path: Path) -> None:
        missing = str(tmp_path / "memcached")
        with pytest.raises(ServerStartError, match="could not run memcached"):
            MemcachedServer(binary=missing).start()

    def test_process_is_stopped_at_interpreter_exit(self) -> None:
        script = textwrap.dedent(
            """
            from batchq.testing import MemcachedServer
            server = MemcachedServer().start()
            print(server.pid, flush=True)
            """
        )
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=True,
        )
        assert not _alive(int(done.stdout.strip()))


@pytest.mark.memcached
@needs_memcached
class TestStartIsExplicit:
    def test_the_constructor_starts_nothing(self) -> None:
        server = MemcachedServer(memory_mb=8)
        assert not server.running
        assert server.pid is None
        assert server.port == 0
        assert "not started" in repr(server)
        with pytest.raises(ServerStartError, match=r"never started.*start\(\)"):
            _ = server.address
        with pytest.raises(ServerStartError, match=r"SIGSTOP.*not running.*call start\(\)"):
            server.pause()
        server.stop()  # harmless before start

    def test_start_returns_the_running_server_and_refuses_a_second_start(self) -> None:
        server = MemcachedServer(memory_mb=8)
        try:
            assert server.start() is server
            assert server.running
            assert _client(server).set("k", b"v") is True
            with pytest.raises(ServerStartError, match=r"already running.*stop\(\).*restart\(\)"):
                server.start()
            pid = server.pid
            assert pid is not None
        finally:
            server.stop(graceful=False)
        assert not _alive(pid)

    def test_with_starts_and_stops(self) -> None:
        server = MemcachedServer(memory_mb=8)
        with server as entered:
            assert entered is server
            assert server.running
            pid = server.pid
            assert pid is not None
            assert _client(server).set("k", b"v") is True
        assert not server.running
        assert not _alive(pid)

    def test_with_keeps_a_server_already_started(self) -> None:
        with MemcachedServer(memory_mb=8).start() as server:
            pid = server.pid
            assert server.running
        assert pid is not None
        assert not _alive(pid)

    def test_restart_of_a_server_never_started_starts_it(self) -> None:
        server = MemcachedServer(memory_mb=8)
        try:
            server.restart(graceful=False)
            assert server.running
            assert server.port > 0
        finally:
            server.stop(graceful=False)

    def test_a_stopped_server_can_start_again_on_its_port(self) -> None:
        server = MemcachedServer(memory_mb=8).start()
        port = server.port
        server.stop(graceful=False)
        try:
            server.start()
            assert server.port == port
            assert _client(server).set("k", b"v") is True
        finally:
            server.stop(graceful=False)


# -- finding the binary: it is looked for, never installed -------------------------------------


@pytest.fixture
def no_memcached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A PATH and search directories without memcached; returns the search directory."""
    monkeypatch.delenv("BATCHQ_MEMCACHED", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_server, "_SEARCH_DIRS", (str(tmp_path / "bin"),))
    return tmp_path / "bin"


def _fake_binary(path: Path, executable: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    if executable:
        path.chmod(0o755)
    return path


def test_find_memcached_searches_usual_dirs_without_path(no_memcached: Path) -> None:
    assert find_memcached() is None
    binary = _fake_binary(no_memcached / "memcached", executable=False)
    assert find_memcached() is None  # not executable
    binary.chmod(0o755)
    assert find_memcached() == str(binary)


def test_find_memcached_prefers_path(no_memcached: Path, tmp_path: Path) -> None:
    _fake_binary(no_memcached / "memcached")
    on_path = _fake_binary(tmp_path / "memcached")
    assert find_memcached() == str(on_path)


def test_the_environment_variable_names_the_binary(
    no_memcached: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_binary(no_memcached / "memcached")
    chosen = _fake_binary(tmp_path / "elsewhere" / "my-memcached")
    monkeypatch.setenv("BATCHQ_MEMCACHED", str(chosen))
    assert find_memcached() == str(chosen)
    assert require_memcached() == str(chosen)
    # A name is looked up on PATH.
    monkeypatch.setenv("PATH", str(chosen.parent))
    monkeypatch.setenv("BATCHQ_MEMCACHED", "my-memcached")
    assert find_memcached() == str(chosen)


def test_a_wrong_environment_variable_is_not_replaced_by_another_binary(
    no_memcached: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_binary(no_memcached / "memcached")  # would be found without the variable
    missing = str(tmp_path / "nowhere" / "memcached")
    monkeypatch.setenv("BATCHQ_MEMCACHED", missing)
    assert find_memcached() is None
    with pytest.raises(MemcachedNotFoundError) as info:
        require_memcached()
    message = str(info.value)
    assert f"BATCHQ_MEMCACHED={missing!r} is not an executable file" in message
    assert "apt-get install memcached" in message


def test_require_memcached_names_the_install_commands(no_memcached: Path) -> None:
    with pytest.raises(MemcachedNotFoundError) as info:
        require_memcached()
    message = str(info.value)
    assert "memcached is not installed" in message
    assert str(no_memcached) in message  # where it looked
    assert "'apt-get install memcached'" in message
    assert "'brew install memcached'" in message
    assert "scripts/ensure-memcached.sh" in message
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, batchq.BatchqError)


def test_start_without_a_binary_raises_the_same_error(no_memcached: Path) -> None:
    server = MemcachedServer()  # constructing never fails for want of a binary
    with pytest.raises(MemcachedNotFoundError, match="apt-get install memcached"):
        server.start()
    assert not server.running
    with pytest.raises(MemcachedNotFoundError), MemcachedServer():
        raise AssertionError("the block must not run without a server")


def test_nothing_is_ever_installed(no_memcached: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No code path of batchq.testing runs a program other than memcached itself."""
    ran: list[object] = []

    def record(*args: object, **kwargs: object) -> None:
        ran.append(args)
        raise AssertionError(f"ran {args!r}")

    monkeypatch.setattr(subprocess, "run", record)
    monkeypatch.setattr(subprocess, "Popen", record)
    monkeypatch.setattr(_server.os, "geteuid", lambda: 0)  # even as root
    assert find_memcached() is None
    with pytest.raises(MemcachedNotFoundError):
        MemcachedServer().start()
    assert ran == []
    source = Path(_server.__file__).read_text()
    assert "apt-get install" not in source.replace("'apt-get install memcached'", "")


def test_the_server_errors_are_exported_from_batchq_testing_only() -> None:
    import batchq.memcache

    for name in ("MemcachedServer", "ensure_memcached", "find_memcached", "ServerStartError"):
        assert not hasattr(batchq.memcache, name), name
        assert name not in batchq.memcache.__all__
    assert batchq.testing.ServerStartError is ServerStartError
    assert issubclass(ServerStartError, RuntimeError)
