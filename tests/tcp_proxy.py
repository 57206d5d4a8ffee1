"""A loopback TCP proxy that a test can stop (connections refused, open ones cut) and start again.

Used in front of the moto S3 server to make a storage outage: ``stop()`` closes the listening socket and
every open connection, so new connections are refused and pooled ones break, exactly as when an endpoint
goes away; ``start()`` listens on the same port again. Threads only, 127.0.0.1 only.
"""
from __future__ import annotations

import socket
import threading
import time


class LoopbackProxy:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<target_port> while started."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.accepted: list[float] = []  # time.monotonic() of each connection accepted

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LoopbackProxy":
        """Listen (on the same port as before, after a stop) and forward every new connection."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        sock.settimeout(0.2)  # the accept loop notices a stop within this
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._thread = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        sock, self._listener = self._listener, None
        if sock is not None:
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for c in conns:
            _close(c)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:  # closed by stop()
                return
            self.accepted.append(time.monotonic())
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                _close(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    _close(client)
                    _close(upstream)
                    return
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)
            _close(src)
            _close(dst)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
