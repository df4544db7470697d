"""At most N requests run in Python at once in each HTTP worker of `serve`, each once its
body is in (`serve --threads N`, default 1).

granian hands each request to a Python thread once its headers are in, and under WSGI that
thread reads the body. So a worker keeps many threads: a client that sends its body slowly
holds one, waiting on the socket, while the others serve. But when two or three requests of
one process run at once, their threads take turns on the interpreter lock: after each call
into SQLite a thread waits for the lock while another runs Python, and on SQLite a writer
holds the database's write lock all the while, which every writer of every process waits
for. PATCH, whose write transaction runs the most Python, ran at about half the rate it has
with one request at a time (benchmarks/RESULTS.md, "One request at a time per worker").

So this gate, outermost in the worker's WSGI stack: a request first reads its whole body
(the thread waits on the socket, holding neither the gate nor the interpreter lock), then
takes a slot and runs. Idle and slow clients still cost only a socket or a waiting thread.
A body larger than the largest allowed is not read here: the application refuses it (413)
from its Content-Length, or werkzeug cuts it off at the limit.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from typing import Any

from scim_server.httplimits import buffered

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _UnreadableInput(io.RawIOBase):
    """wsgi.input of a body that could not be read (the client closed, or garbled its
    chunked encoding): reading it raises again, which the application answers 400
    (scim_server.request_body)."""

    def __init__(self, error: Exception) -> None:
        self._error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise self._error


class RequestGate:
    """WSGI middleware: read the body, then wait for one of `slots` turns to run."""

    def __init__(self, app: WsgiApp, max_body: int | None, slots: int = 1) -> None:
        self.app = app
        self.max_body = max_body
        self._turns = threading.BoundedSemaphore(max(slots, 1))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        self._read_body(environ)
        with self._turns:
            # Joined (and closed) inside the turn: a body streamed after it would run the
            # application's code beside the next request.
            return buffered(self.app(environ, start_response))

    def _read_body(self, environ: dict[str, Any]) -> None:
        length = environ.get("CONTENT_LENGTH") or ""
        if length.isdigit():
            size = int(length)
            if size == 0 or (self.max_body is not None and size > self.max_body):
                return
        elif "HTTP_TRANSFER_ENCODING" not in environ:
            return
        else:  # chunked: no more than one byte past the limit
            size = self.max_body + 1 if self.max_body is not None else -1
        stream = environ.get("wsgi.input")
        if stream is None:
            return
        try:
            data = stream.read(size)
        except Exception as error:  # the server's own types for a body it could not read
            environ["wsgi.input"] = _UnreadableInput(error)
            return
        environ["wsgi.input"] = io.BytesIO(data)
