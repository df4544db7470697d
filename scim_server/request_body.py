"""A request body the client garbled is the client's error, whichever server reads it.

The WSGI server hands the application a stream that reads the body as it arrives, and raises
its own exception types when the bytes are not what the headers promised: a malformed chunked
encoding (gunicorn's InvalidChunkSize), a body cut short (NoMoreData), a connection dropped.
Without this they surface from `request.get_data()` or `request.form` as unexpected errors,
that is 500s. `guard_request_body` wraps the stream so that any of them is a 400 Bad Request,
which the SCIM API answers in its error format and the portal with its error page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from werkzeug.exceptions import BadRequest, HTTPException

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class UnreadableBody(BadRequest):
    description = (
        "The request body could not be read: its chunked encoding or its length is malformed, "
        "or the connection closed before it ended."
    )


class _GuardedInput:
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._stream, method)(*args)
        except HTTPException:
            raise
        except Exception:  # the server's own types: the client sent something unreadable
            raise UnreadableBody() from None

    def read(self, *args: Any) -> bytes:
        data: bytes = self._call("read", *args)
        return data

    def readline(self, *args: Any) -> bytes:
        line: bytes = self._call("readline", *args)
        return line

    def readlines(self, *args: Any) -> list[bytes]:
        lines: list[bytes] = self._call("readlines", *args)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


def guard_request_body(app: WSGIApp) -> WSGIApp:
    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # Only requests that carry a body: the rest are left as they come.
        if environ.get("CONTENT_LENGTH") or environ.get("HTTP_TRANSFER_ENCODING"):
            stream = environ.get("wsgi.input")
            if stream is not None:
                environ["wsgi.input"] = _GuardedInput(stream)
        return app(environ, start_response)

    return guarded
