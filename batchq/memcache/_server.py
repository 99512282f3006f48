"""Real memcached processes for tests and benchmarks.

A :class:`MemcachedServer` runs its own memcached on a free 127.0.0.1 port (never the system daemon,
never UDP), so tests can run in parallel and fault tests can pause, resume or restart it without
touching anything else. Every process is stopped at interpreter exit, even if the test forgot to.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import IO

from ._errors import MemcachedNotFoundError, ServerStartError

__all__ = ["MemcachedServer", "ensure_memcached", "find_memcached"]

_SEARCH_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")
# Where Debian's invoke-rc.d looks for a policy; exit code 101 means "do not start any service".
_POLICY_RC_D = "/usr/sbin/policy-rc.d"
_PORT_ATTEMPTS = 10


def find_memcached() -> str | None:
    """Return the path of a memcached binary (PATH first, then the usual dirs), or None."""
    found = shutil.which("memcached")
    if found is not None:
        return found
    for directory in _SEARCH_DIRS:
        candidate = os.path.join(directory, "memcached")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_memcached(
    *, run: Callable[[Sequence[str]], int] | None = None, policy_path: str = _POLICY_RC_D
) -> str | None:
    """Return a memcached binary, installing Debian's package when missing and possible.

    Installs only as root with apt-get available, and never lets the package start the system
    daemon (tests start their own servers on free ports). Returns None when memcached is still
    unavailable. ``run`` and ``policy_path`` exist for tests.
    """
    found = find_memcached()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    runner = run if run is not None else _run_quietly
    created_policy = False
    if not os.path.lexists(policy_path):
        with open(policy_path, "w") as policy:
            policy.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy_path, 0o755)
        created_policy = True
    try:
        install = ["apt-get", "install", "-y", "-q", "memcached"]
        if runner(install) != 0 and runner(["apt-get", "update", "-q"]) == 0:
            runner(install)
    finally:
        if created_policy:
            os.unlink(policy_path)
    return find_memcached()


def _run_quietly(argv: Sequence[str]) -> int:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        completed = subprocess.run(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return 1
    return completed.returncode


def _free_port(host: str) -> int:
    # The port is free when we close the socket; another process may still take it before
    # memcached binds it, which MemcachedServer detects and retries with a new port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _reap(process: subprocess.Popen[bytes], timeout: float, graceful: bool = True) -> None:
    """Stop a memcached process: SIGCONT (in case it is paused), SIGTERM, then SIGKILL.

    memcached notices SIGTERM on its next clock tick, so a graceful stop takes up to a second.
    """
    if process.poll() is not None:
        return
    if graceful:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        else:
            return
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()


class MemcachedServer:
    """A memcached process of our own on 127.0.0.1; started by the constructor.

    Use as a context manager, or call :meth:`stop`; a process left running is stopped at exit.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        binary: str | None = None,
        memory_mb: int = 64,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        found = binary if binary is not None else find_memcached()
        if found is None:
            msg = (
                "no memcached binary found on PATH or in /usr/bin, /usr/sbin, /usr/local/bin; "
                "install it (e.g. 'apt-get install memcached', or run scripts/ensure-memcached.sh) "
                "or skip tests marked 'memcached'"
            )
            raise MemcachedNotFoundError(msg)
        self.binary = found
        self.memory_mb = memory_mb
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: (
            weakref.finalize[[subprocess.Popen[bytes], float], MemcachedServer] | None
        ) = None
        self._paused = False
        self._start(port=None)

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<MemcachedServer {self.host}:{self.port} pid={self.pid} {state}>"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, the form pymemcache's ``Client`` takes."""
        return (self.host, self.port)

    @property
    def pid(self) -> int | None:
        """The process id, or None once stopped."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the process is alive (a paused process is still running)."""
        return self._process is not None and self._process.poll() is None

    def stop(self, *, graceful: bool = True) -> None:
        """Terminate the process (kill it after ``stop_timeout``); safe to call twice.

        A graceful stop takes up to a second (memcached checks for SIGTERM once a second);
        ``graceful=False`` kills at once, like a crash, and is what fast fault tests want.
        """
        finalizer, self._finalizer = self._finalizer, None
        self._paused = False
        if finalizer is None:
            return
        detached = finalizer.detach()
        if detached is not None:
            _, _, (process, timeout), _ = detached
            _reap(process, timeout, graceful)

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections hang, as with an overloaded server.

        Returns once the process is stopped: a signal is delivered asynchronously, and a request
        sent in between would still be answered.
        """
        self._signal(signal.SIGSTOP)
        self._paused = True
        self._wait_for_state("T", timeout=2.0)

    def _wait_for_state(self, state: str, timeout: float) -> None:
        """Wait until /proc says the process is in ``state`` (where /proc exists)."""
        pid = self.pid
        if pid is None:
            return
        path = f"/proc/{pid}/stat"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(path) as f:
                    # "pid (comm) S ...": the state follows the last ')'.
                    if f.read().rpartition(")")[2].split()[0] == state:
                        return
            except (OSError, IndexError):
                return  # no /proc (not Linux) or the process is gone: nothing to wait for
            time.sleep(0.001)

    def resume(self) -> None:
        """Continue a paused process (SIGCONT)."""
        self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self, *, graceful: bool = True) -> None:
        """Stop and start again on the same port, with an empty cache (see :meth:`stop`)."""
        self.stop(graceful=graceful)
        self._start(port=self.port)

    def __enter__(self) -> MemcachedServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _signal(self, signum: signal.Signals) -> None:
        if not self.running or self._process is None:
            msg = (
                f"cannot send {signum.name} to {self!r}: the process is not running; "
                "call restart() first"
            )
            raise ServerStartError(msg)
        self._process.send_signal(signum)

    def _start(self, port: int | None) -> None:
        """Start memcached on ``port`` (or a free one), retrying while the port is taken."""
        last_error = ""
        for _ in range(_PORT_ATTEMPTS):
            chosen = port if port is not None else _free_port(self.host)
            with tempfile.TemporaryFile() as stderr:
                process = self._spawn(chosen, stderr)
                error = self._wait_ready(process, chosen, stderr)
            if error is None:
                self.port = chosen
                self._process = process
                self._finalizer = weakref.finalize(self, _reap, process, self.stop_timeout)
                return
            _reap(process, self.stop_timeout)
            last_error = error
            if "Address already in use" not in error:
                break
            if port is not None:
                # Restart on the same port: wait for whoever holds it (often our old process's
                # sockets) instead of moving, since clients are configured with this port.
                time.sleep(0.2)
        msg = (
            f"memcached ({self.binary!r}) did not start on {self.host}:{port or 'a free port'}: "
            f"{last_error}"
        )
        raise ServerStartError(msg)

    def _spawn(self, port: int, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
        argv = [
            self.binary,
            "-l",
            self.host,
            "-p",
            str(port),
            "-U",
            "0",
            "-m",
            str(self.memory_mb),
        ]
        if os.geteuid() == 0:
            # memcached refuses to run as root without naming a user; stay root rather than
            # depend on a 'memcache' account existing.
            argv += ["-u", "root"]
        argv += self.extra_args
        try:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
            )
        except OSError as exc:
            msg = f"could not run memcached {self.binary!r}: {exc}; check the path and permissions"
            raise ServerStartError(msg) from exc

    def _wait_ready(
        self, process: subprocess.Popen[bytes], port: int, stderr: IO[bytes]
    ) -> str | None:
        """Wait until our process answers on ``port``; return None, or why it is not ready."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = process.poll()
            if code is not None:
                stderr.seek(0)
                output = stderr.read().decode(errors="replace").strip()
                return f"it exited with code {code}; stderr: {output or '(empty)'}"
            if _served_pid(self.host, port) == process.pid:
                return None
            if time.monotonic() > deadline:
                stderr.seek(0)
                output = stderr.read().decode(errors="replace").strip()
                return (
                    f"it did not answer within {self.start_timeout}s; "
                    f"stderr: {output or '(empty)'}; raise start_timeout if the machine is slow"
                )
            time.sleep(0.01)


def _served_pid(host: str, port: int) -> int | None:
    """The pid reported by ``stats`` at host:port, or None if nothing answers yet.

    Comparing pids proves the answer comes from our process, not another memcached (say, a
    parallel test run) that grabbed the port while ours was failing to bind it.
    """
    try:
        # Short: memcached answers in microseconds, and the caller retries until its deadline.
        with socket.create_connection((host, port), timeout=0.2) as conn:
            conn.sendall(b"stats\r\n")
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    return None
                reply += chunk
    except OSError:
        return None
    for line in reply.split(b"\r\n"):
        if line.startswith(b"STAT pid "):
            return int(line[len(b"STAT pid ") :])
    return None
