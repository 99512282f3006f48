"""MemcachedServer really starts, stops, pauses, resumes and restarts memcached processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from pymemcache.client.base import Client

from batchq.memcache import (
    MemcachedNotFoundError,
    MemcachedServer,
    ServerStartError,
    _server,
    ensure_memcached,
    find_memcached,
)

needs_memcached = pytest.mark.skipif(
    find_memcached() is None, reason="memcached is not installed (scripts/ensure-memcached.sh)"
)


@pytest.fixture
def server() -> Iterator[MemcachedServer]:
    running = MemcachedServer()
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
        other = MemcachedServer()
        try:
            assert other.port != server.port
            _client(server).set("k", b"first")
            assert _client(other).get("k") is None
        finally:
            other.stop(graceful=False)

    def test_stop_ends_the_process_and_is_idempotent(self) -> None:
        server = MemcachedServer()
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
        server = MemcachedServer()
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
        server = MemcachedServer(stop_timeout=5.0)
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
            server = MemcachedServer()
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
            MemcachedServer(extra_args=["--no-such-option"])

    def test_bad_binary_is_reported(self, tmp_path: Path) -> None:
        missing = str(tmp_path / "memcached")
        with pytest.raises(ServerStartError, match="could not run memcached"):
            MemcachedServer(binary=missing)

    def test_process_is_stopped_at_interpreter_exit(self) -> None:
        script = textwrap.dedent(
            """
            from batchq.memcache import MemcachedServer
            server = MemcachedServer()
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


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_server, "find_memcached", lambda: None)
    with pytest.raises(MemcachedNotFoundError, match="apt-get install memcached"):
        MemcachedServer()
    with pytest.raises(FileNotFoundError):
        MemcachedServer()


def test_find_memcached_searches_usual_dirs_without_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_server, "_SEARCH_DIRS", (str(tmp_path / "bin"),))
    assert find_memcached() is None
    binary = tmp_path / "bin" / "memcached"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    assert find_memcached() is None  # not executable
    binary.chmod(0o755)
    assert find_memcached() == str(binary)


class TestEnsureMemcached:
    @pytest.fixture
    def installed(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """Pretend memcached is missing until a fake `apt-get install` succeeds."""
        state: list[str] = []
        monkeypatch.setattr(
            _server, "find_memcached", lambda: "/usr/bin/memcached" if state else None
        )
        monkeypatch.setattr(_server.os, "geteuid", lambda: 0)
        monkeypatch.setattr(_server.shutil, "which", lambda name: f"/usr/bin/{name}")
        return state

    def test_returns_existing_binary_without_running_anything(self) -> None:
        calls: list[Sequence[str]] = []
        found = find_memcached()
        if found is None:
            pytest.skip("memcached is not installed")
        assert ensure_memcached(run=lambda argv: calls.append(argv) or 0) == found
        assert calls == []

    def test_installs_with_a_policy_that_blocks_the_daemon(
        self, installed: list[str], tmp_path: Path
    ) -> None:
        policy = tmp_path / "policy-rc.d"
        seen: list[tuple[list[str], str]] = []

        def run(argv: Sequence[str]) -> int:
            seen.append((list(argv), policy.read_text()))
            assert os.access(policy, os.X_OK)
            installed.append("yes")
            return 0

        assert ensure_memcached(run=run, policy_path=str(policy)) == "/usr/bin/memcached"
        assert seen == [(["apt-get", "install", "-y", "-q", "memcached"], "#!/bin/sh\nexit 101\n")]
        assert not policy.exists()

    def test_updates_and_retries_when_install_fails(
        self, installed: list[str], tmp_path: Path
    ) -> None:
        calls: list[list[str]] = []

        def run(argv: Sequence[str]) -> int:
            calls.append(list(argv))
            if argv[1] == "update":
                return 0
            if len(calls) == 1:
                return 100
            installed.append("yes")
            return 0

        path = ensure_memcached(run=run, policy_path=str(tmp_path / "policy-rc.d"))
        assert path == "/usr/bin/memcached"
        assert [argv[1] for argv in calls] == ["install", "update", "install"]

    def test_keeps_an_existing_policy_and_reports_failure(
        self, installed: list[str], tmp_path: Path
    ) -> None:
        policy = tmp_path / "policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 0\n")
        assert ensure_memcached(run=lambda argv: 1, policy_path=str(policy)) is None
        assert policy.read_text() == "#!/bin/sh\nexit 0\n"

    def test_does_nothing_without_root(
        self, installed: list[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(_server.os, "geteuid", lambda: 1000)

        def run(argv: Sequence[str]) -> int:
            raise AssertionError(f"ran {argv!r} without root")

        assert ensure_memcached(run=run) is None
