"""Proxies in front of the test archive: one lets a request hang, one adds TLS.

:class:`StallingProxy`: the server seems to stop answering in the middle of a retrieve.

Every byte is passed through both ways, except that a chunk from the client containing one of the
proxy's ``markers`` (a SOP Instance UID in a WADO-RS path, say) is swallowed while that marker has
stalls left: the connection stays open and nothing comes back, as with a server that hangs, until
the client gives up and closes it.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import subprocess
import threading
from pathlib import Path


class _Proxy:
    """Listens on 127.0.0.1:``port`` (a free port) and hands each connection to :meth:`_handle` in a thread."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()

    def __enter__(self) -> _Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        raise NotImplementedError


class StallingProxy(_Proxy):
    """Forwards to 127.0.0.1:``target_port``; a request holding a marker with stalls left hangs."""

    def __init__(self, target_port: int) -> None:
        self.markers: dict[bytes, int] = {}  # marker -> stalls left (a large number: always)
        self.stalled = 0
        self._lock = threading.Lock()
        super().__init__(target_port)

    def stall(self, marker: str, times: int) -> None:
        with self._lock:
            self.markers[marker.encode("ascii")] = times

    def _should_stall(self, chunk: bytes) -> bool:
        with self._lock:
            for marker, left in self.markers.items():
                if left > 0 and marker in chunk:
                    self.markers[marker] = left - 1
                    self.stalled += 1
                    return True
        return False

    def _handle(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, client)
        hung = False
        try:
            while not self._closed.is_set():
                for key, _ in selector.select(timeout=0.5):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is client and (hung or self._should_stall(data)):
                        hung = True  # swallow this request and whatever follows on this connection
                        continue
                    if source is upstream and hung:
                        continue
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            selector.close()
            client.close()
            upstream.close()


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throw-away certificate and key for ``host`` (openssl); returns (certificate, key) PEM paths."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", f"/CN={host}", "-addext", f"subjectAltName=IP:{host}"],
                   check=True, capture_output=True)
    return cert, key


class TlsProxy(_Proxy):
    """HTTPS in front of a plain-HTTP server: terminates TLS with ``certificate`` and forwards the bytes.

    (Debian's Orthanc 1.10 crashes when its own ``SslEnabled`` is on, so the tests put TLS in front.)
    """

    def __init__(self, target_port: int, certificate: Path, key: Path) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(str(certificate), str(key))
        self.handshake_failures = 0
        super().__init__(target_port)

    def _handle(self, raw: socket.socket) -> None:
        try:
            client = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshake_failures += 1  # the client did not trust the certificate
            raw.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        threading.Thread(target=_copy, args=(upstream, client), daemon=True).start()
        _copy(client, upstream)


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
