"""Real memcached processes for tests and benchmarks; never installs anything.

A :class:`MemcachedServer` runs its own memcached on a free 127.0.0.1 port (never the system daemon,
never UDP), so tests can run in parallel and fault tests can pause, resume or restart it without
touching anything else. It starts on :meth:`~MemcachedServer.start` (or on entering ``with``), and
every process still running is stopped at interpreter exit, even if the test forgot to.

Installing memcached is the job of ``scripts/ensure-memcached.sh`` (``make test`` runs it) or of the
system's package manager: :func:`find_memcached` and :func:`require_memcached` only look.
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
from collections.abc import Sequence
from types import TracebackType
from typing import IO

from .._core._errors import BatchqError

__all__ = [
    "MemcachedServer",
    "find_memcached",
    "require_memcached",
    "MemcachedNotFoundError",
    "ServerStartError",
]

_ENV_VAR = "BATCHQ_MEMCACHED"
"""An environment variable naming the memcached binary to use (a path, or a name looked up on PATH).

When set, it is the only place looked at: a wrong value makes memcached unavailable rather than
silently using another binary.
"""

_INSTALL_HINT = (
    "install it with 'apt-get install memcached' (Debian, Ubuntu), 'brew install memcached' "
    f"(macOS) or 'bash scripts/ensure-memcached.sh' (a batchq checkout), or set {_ENV_VAR} "
    "to the path of a memcached binary"
)
"""How to get memcached; part of every message saying it is missing."""

_SEARCH_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/opt/homebrew/bin")
_PORT_ATTEMPTS = 10


class MemcachedNotFoundError(BatchqError, FileNotFoundError):
    """No memcached binary was found; the message says where it looked and how to install one."""


class ServerStartError(BatchqError, RuntimeError):
    """A test memcached process failed to start (or was used before starting); the message carries
    its stderr."""


def find_memcached() -> str | None:
    """The path of a memcached binary, or None; looks, never installs.

    ``$BATCHQ_MEMCACHED`` when set (and only it), else ``PATH``, else the usual directories
    (/usr/bin, /usr/sbin, /usr/local/bin, /opt/homebrew/bin).
    """
    configured = os.environ.get(_ENV_VAR)
    if configured:
        return _executable(configured) or shutil.which(configured)
    found = shutil.which("memcached")
    if found is not None:
        return found
    for directory in _SEARCH_DIRS:
        candidate = _executable(os.path.join(directory, "memcached"))
        if candidate is not None:
            return candidate
    return None


def require_memcached() -> str:
    """The path of a memcached binary; raises :class:`MemcachedNotFoundError`, naming the install
    command, when there is none."""
    found = find_memcached()
    if found is not None:
        return found
    raise MemcachedNotFoundError(_missing_message())


def _missing_message() -> str:
    """Where memcached was looked for, and how to get it."""
    configured = os.environ.get(_ENV_VAR)
    if configured:
        where = f"{_ENV_VAR}={configured!r} is not an executable file or a command on PATH"
    else:
        where = "memcached is not installed (looked on PATH and in " + ", ".join(_SEARCH_DIRS) + ")"
    return f"{where}; {_INSTALL_HINT}"


def _executable(path: str) -> str | None:
    if os.sep in path and os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    return None


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
    """A memcached process of our own on 127.0.0.1, started by :meth:`start` or ``with``.

    ``with MemcachedServer() as server:`` starts it and stops it at the end of the block;
    ``server = MemcachedServer().start()`` starts it until :meth:`stop`. The constructor only
    records the settings. A process left running is stopped at interpreter exit.
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
        self.binary = binary
        """The memcached to run; None means :func:`require_memcached` finds one at start."""
        self.memory_mb = memory_mb
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.port = 0
        """The port, chosen at the first start and kept by :meth:`restart`; 0 before."""
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: (
            weakref.finalize[[subprocess.Popen[bytes], float], MemcachedServer] | None
        ) = None
        self._paused = False

    def start(self) -> MemcachedServer:
        """Start the process on a free port and return this server, once it answers.

        Raises :class:`MemcachedNotFoundError` (naming the install command) when no binary is
        found, :class:`ServerStartError` when memcached does not start or already runs.
        """
        if self.running:
            msg = f"{self!r} is already running; stop() it first, or call restart()"
            raise ServerStartError(msg)
        if self.binary is None:
            self.binary = require_memcached()
        self._start(self.binary, port=self.port or None)
        return self

    def __repr__(self) -> str:
        if self._paused:
            state = "paused"
        elif self.running:
            state = "running"
        else:
            state = "stopped" if self.port else "not started"
        return f"<MemcachedServer {self.host}:{self.port} pid={self.pid} {state}>"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, the form pymemcache's ``Client`` takes; known once started."""
        if not self.port:
            msg = (
                f"{self!r} has no address yet: it was never started; call start() first "
                "(`server = MemcachedServer().start()`) or use `with MemcachedServer() as server:`"
            )
            raise ServerStartError(msg)
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
        """Stop and start again on the same port, with an empty cache (see :meth:`stop`).

        A server never started is simply started.
        """
        self.stop(graceful=graceful)
        self.start()

    def __enter__(self) -> MemcachedServer:
        """Start the server (unless :meth:`start` did); the end of the ``with`` block stops it."""
        if not self.running:
            self.start()
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
            fix = "call restart() first" if self.port else "call start() first"
            msg = f"cannot send {signum.name} to {self!r}: the process is not running; {fix}"
            raise ServerStartError(msg)
        self._process.send_signal(signum)

    def _start(self, binary: str, port: int | None) -> None:
        """Start memcached on ``port`` (or a free one), retrying while the port is taken."""
        last_error = ""
        for _ in range(_PORT_ATTEMPTS):
            chosen = port if port is not None else _free_port(self.host)
            with tempfile.TemporaryFile() as stderr:
                process = self._spawn(binary, chosen, stderr)
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
            f"memcached ({binary!r}) did not start on {self.host}:{port or 'a free port'}: "
            f"{last_error}"
        )
        raise ServerStartError(msg)

    def _spawn(self, binary: str, port: int, stderr: IO[bytes]) -> subprocess.Popen[bytes]:
        argv = [
            binary,
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
            msg = f"could not run memcached {binary!r}: {exc}; check the path and permissions"
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
