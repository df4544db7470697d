"""Runs the emulator as a real threaded HTTP(S) server on loopback and describes it in the
start-up line: authority_host, graph_url, tenant_id, client_id, client_secret, ca_bundle,
domains."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, ThreadedWSGIServer, WSGIRequestHandler

from scim_server.graph.emulator import tls
from scim_server.graph.emulator.app import create_emulator_app
from scim_server.graph.emulator.state import Emulator, EmulatorOptions


class QuietHandler(WSGIRequestHandler):
    """The emulator keeps its own request log; the dev server's access lines would add noise."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


HANDSHAKE_TIMEOUT = 10.0  # seconds a client has to finish its TLS handshake


class LazyTlsServer(ThreadedWSGIServer):
    """A threaded server whose TLS handshake runs in the connection's own thread.

    werkzeug wraps the listening socket, so the handshake runs inside accept() on the one
    serving thread: a client that connects and sends no ClientHello would hold every other
    request. Here the listening socket stays plain and each accepted socket is wrapped in its
    handler thread, with a timeout on the handshake."""

    def __init__(
        self, host: str, port: int, app: Any, handler: type[WSGIRequestHandler], tls: Any
    ) -> None:
        super().__init__(host, port, app, handler)
        # Set after the base class bound a plain socket; werkzeug reads it for https URLs.
        self.ssl_context: ssl.SSLContext | None = tls

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                request.close()
            return
        try:
            conn.settimeout(None)
            super().finish_request(conn, client_address)
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


class EmulatorServer:
    def __init__(
        self, options: EmulatorOptions, host: str = "127.0.0.1", port: int = 0, use_tls: bool = True
    ) -> None:
        self.emulator = Emulator(options)
        self._tempdir: Path | None = None
        ssl_context = None
        self.tls_files: tls.TlsFiles | None = None
        if use_tls:
            self._tempdir = Path(tempfile.mkdtemp(prefix="graph-emulator-"))
            self.tls_files = tls.generate(self._tempdir, host)
            ssl_context = self.tls_files.server_context()
        self.server: BaseWSGIServer = LazyTlsServer(
            host, port, create_emulator_app(self.emulator), QuietHandler, ssl_context
        )
        scheme = "https" if use_tls else "http"
        shown_host = f"[{host}]" if ":" in host else host
        self.emulator.base_url = f"{scheme}://{shown_host}:{self.server.server_port}"
        self._thread: threading.Thread | None = None

    @property
    def info(self) -> dict[str, Any]:
        em = self.emulator
        return {
            "authority_host": em.base_url,
            "graph_url": em.graph_url,
            "tenant_id": em.options.tenant_id,
            "client_id": em.options.client_id,
            "client_secret": em.options.client_secret,
            "ca_bundle": str(self.tls_files.ca_bundle) if self.tls_files else None,
            "domains": em.domain_names,
        }

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def start(self) -> EmulatorServer:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="graph-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.emulator.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self.emulator.close()
        if self._tempdir:
            shutil.rmtree(self._tempdir, ignore_errors=True)
