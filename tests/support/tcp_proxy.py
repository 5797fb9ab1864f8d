"""A TCP proxy between one node and Redis that can hold the bytes: a network partition.

Held, it keeps every connection open and forwards nothing, in either direction — what a
cut cable or a dropped route looks like to both ends (no reset, only silence).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from tests.support.daemon import free_port


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.port = free_port()
        self._target = (target_host, target_port)
        self._open = threading.Event()
        self._open.set()
        self._stopping = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def hold(self) -> None:
        """Forward nothing from now on (connections stay open)."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def stop(self) -> None:
        self._stopping.set()
        self._open.set()
        self._thread.join(timeout=5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=2)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        ends = {client: upstream, upstream: client}
        with client, upstream:
            while not self._stopping.is_set():
                if not self._open.wait(timeout=0.1):
                    continue  # held: whatever arrives waits in the kernel's buffers
                readable, _, _ = select.select(list(ends), [], [], 0.1)
                for end in readable:
                    if not self._open.is_set():
                        break
                    with contextlib.suppress(OSError):
                        data = end.recv(65536)
                        if not data:
                            return
                        ends[end].sendall(data)
