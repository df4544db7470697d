"""The gunicorn worker `scim-server serve` runs with one thread per process.

gunicorn's gthread worker reads connections on its main thread and hands each request to a
thread pool, even a pool of one. Under load the two threads then trade the GIL and wake each
other through futexes and a pipe for every request: on 2 cores that cost a third of the CPU of
a create or a PATCH. This worker is gthread with the hand-off taken out: the main thread serves
the request itself, keeping gthread's keep-alive connections, timeouts and shutdown. A request
holds the process either way (gthread's pool of one serves one request at a time too).

It relies on gthread's `enqueue_req`, `handle` and `finish_request` (gunicorn 27).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from typing import Any

from gunicorn.workers.gthread import ThreadWorker


class InlineWorker(ThreadWorker):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ready: deque[Any] = deque()
        self._serving = False

    def enqueue_req(self, conn: Any) -> None:
        """Serve the connection's request now, on this thread.

        finish_request() enqueues a connection again when the client has already sent its
        next request (pipelining): that one waits in `_ready` instead of recursing."""
        self._ready.append(conn)
        if self._serving:
            return
        self._serving = True
        try:
            while self._ready:
                ready = self._ready.popleft()
                outcome: Future[Any] = Future()
                try:
                    outcome.set_result(self.handle(ready))
                except Exception as exc:  # handle() catches its own; as the pool would
                    outcome.set_exception(exc)
                self.finish_request(ready, outcome)
        finally:
            self._serving = False
