"""A TCP relay in front of the test apiserver that can go dark or stall: outages as a client sees them.

While dark, every relayed connection is cut and new ones are accepted and closed at once, as
during an apiserver restart. While stalled, nothing moves either way and new connections wait,
as with a frozen apiserver (SIGSTOP); afterwards everything flows on. The apiserver itself keeps
serving everyone else (the test's own
client talks to it directly). TLS passes through untouched (the relay listens on 127.0.0.1 too,
so the serving certificate still matches).
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import yaml

CHUNK_BYTES = 65536


class ApiOutage:
    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        target = urlsplit(config["clusters"][0]["cluster"]["server"])
        assert target.hostname and target.hostname.startswith("127."), target  # loopback only
        self._target = (target.hostname, target.port or 443)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{self.port}"
        self._config = config
        self._dark = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def kubeconfig(self, path: Path) -> Path:
        """A copy of the kubeconfig that goes through the relay."""
        path.write_text(yaml.safe_dump(self._config))
        return path

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        self._cut()

    @contextmanager
    def dark(self) -> Iterator[None]:
        self._dark.set()
        self._cut()
        try:
            yield
        finally:
            self._dark.clear()

    @contextmanager
    def stalled(self) -> Iterator[None]:
        self._flowing.clear()
        try:
            yield
        finally:
            self._flowing.set()

    def _cut(self) -> None:
        with self._lock:
            for sock in self._open:
                sock.close()
            self._open.clear()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._dark.is_set():
                client.close()
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()  # stalled: the connection is accepted and left hanging
        try:
            upstream = socket.create_connection(self._target, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._open += [client, upstream]
        self._relay(client, upstream)

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while True:
                self._flowing.wait()
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                for sock in readable:
                    data = sock.recv(CHUNK_BYTES)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):  # cut by an outage, or closed by either side
            return
        finally:
            client.close()
            upstream.close()
