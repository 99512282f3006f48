"""Loopback TCP proxies that hold each reply until a fixed delay after its request.

They stand in for memcached servers at different network distances in the cluster benchmark.
``DelayProxies`` runs them in a child process (``python -m benchmarks._delay_proxy``), so that
their forwarding never competes for the GIL with the process being measured; the child exits
when its standard input closes.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = ["DelayProxies", "DelayProxy"]


class DelayProxy:
    """A loopback TCP proxy that holds each reply until ``delay`` seconds after its request."""

    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            for s in (downstream, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sockets += [downstream, up]
            sent = [0.0]
            threading.Thread(target=self._forward, args=(downstream, up, sent), daemon=True).start()
            threading.Thread(target=self._reply, args=(up, downstream, sent), daemon=True).start()

    def _forward(self, src: socket.socket, dst: socket.socket, sent: list[float]) -> None:
        with _Quiet():
            while chunk := src.recv(65536):
                sent[0] = time.monotonic()
                dst.sendall(chunk)

    def _reply(self, src: socket.socket, dst: socket.socket, sent: list[float]) -> None:
        with _Quiet():
            while chunk := src.recv(65536):
                wait = sent[0] + self.delay - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                dst.sendall(chunk)

    def close(self) -> None:
        self._closed = True
        for s in self._sockets:
            with _Quiet():
                s.close()


class _Quiet:
    """Swallow the OSError a socket raises when the other side or close() ends it."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, OSError)


class DelayProxies:
    """One child process running a ``DelayProxy`` per (upstream address, delay) pair."""

    def __init__(self, upstreams: list[tuple[tuple[str, int], float]]) -> None:
        spec = json.dumps([[list(addr), delay] for addr, delay in upstreams])
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._delay_proxy", spec],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self.close()
            msg = f"the delay-proxy process exited before listening (exit {self._process.poll()})"
            raise RuntimeError(msg)
        self.addresses: list[tuple[str, int]] = [(h, int(p)) for h, p in json.loads(line)]

    def close(self) -> None:
        proc = self._process
        if proc.poll() is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> int:
    proxies = [
        DelayProxy((host, int(port)), float(delay)) for (host, port), delay in json.loads(argv[0])
    ]
    print(json.dumps([list(p.address) for p in proxies]), flush=True)
    sys.stdin.read()  # until the parent closes our standard input (or dies)
    for p in proxies:
        p.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
