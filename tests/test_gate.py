"""The request gate of `serve`'s HTTP workers (scim_server.gate): a body is read before the
request takes its turn, and no more than the set number of requests run at once. Over real
sockets, tests/test_serving.py shows that slow bodies still delay no one."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

from scim_server.gate import RequestGate
from scim_server.request_body import guard_request_body

StartResponse = Callable[..., Any]


class _BlockingInput:
    """A body whose bytes arrive when the test says so, as a slow client's would."""

    def __init__(self, data: bytes, arrived: threading.Event) -> None:
        self.data = data
        self.arrived = arrived

    def read(self, size: int = -1) -> bytes:
        assert self.arrived.wait(10)
        return self.data


class _BrokenInput:
    def read(self, size: int = -1) -> bytes:
        raise OSError("connection reset by peer")


def _environ(body: Any = None, length: int | None = None, **extra: str) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST" if body is not None else "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "test",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": body if body is not None else io.BytesIO(),
        "wsgi.input_terminated": True,
    }
    if length is not None:
        environ["CONTENT_LENGTH"] = str(length)
    environ.update(extra)
    return environ


def _call(app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> tuple[str, bytes]:
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> None:
        seen["status"] = status

    body = b"".join(app(environ, start_response))
    return seen["status"], body


def _echo(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    try:
        data = Request(environ).get_data()
    except Exception as error:  # guard_request_body's 400
        return Response(status=getattr(error, "code", 500))(environ, start_response)
    return Response(data)(environ, start_response)


def test_a_slow_body_is_read_before_its_turn_so_others_go_on() -> None:
    arrived = threading.Event()
    gate = RequestGate(_echo, max_body=100, slots=1)
    result: dict[str, Any] = {}
    slow = threading.Thread(
        target=lambda: result.update(
            slow=_call(gate, _environ(_BlockingInput(b"late", arrived), length=4))
        )
    )
    slow.start()
    # The slow request is waiting for its body: the only slot is free for this one.
    assert _call(gate, _environ(io.BytesIO(b"quick"), length=5)) == ("200 OK", b"quick")
    arrived.set()
    slow.join(10)
    assert result["slow"] == ("200 OK", b"late")


@pytest.mark.parametrize("slots", [1, 2])
def test_no_more_requests_run_at_once_than_the_slots(slots: int) -> None:
    running = most = 0
    lock = threading.Lock()
    two_in = threading.Barrier(2, timeout=0.5)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        with contextlib.suppress(threading.BrokenBarrierError):
            two_in.wait()  # a second request joins only if the gate lets it in
        with lock:
            running -= 1
        return Response(b"ok")(environ, start_response)

    gate = RequestGate(app, max_body=100, slots=slots)
    threads = [threading.Thread(target=_call, args=(gate, _environ())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most == slots


def test_a_body_that_cannot_be_read_is_a_400() -> None:
    gate = RequestGate(guard_request_body(_echo), max_body=100)
    status, _ = _call(gate, _environ(_BrokenInput(), length=10))
    assert status.startswith("400")


def test_a_body_over_the_limit_is_left_for_the_application_to_refuse() -> None:
    untouched = _BrokenInput()  # reading it would fail: the gate must not
    seen: list[Any] = []

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        seen.append(environ["wsgi.input"])
        return Response(status=413)(environ, start_response)

    status, _ = _call(RequestGate(app, max_body=100), _environ(untouched, length=101))
    assert status.startswith("413") and seen == [untouched]


def test_a_chunked_body_is_read_to_one_byte_past_the_limit() -> None:
    # One byte more than allowed tells the application (werkzeug's limit) to answer 413.
    gate = RequestGate(_echo, max_body=100)
    chunked = _environ(io.BytesIO(b"x" * 5000), HTTP_TRANSFER_ENCODING="chunked")
    assert _call(gate, chunked) == ("200 OK", b"x" * 101)
    small = _environ(io.BytesIO(b"abc"), HTTP_TRANSFER_ENCODING="chunked")
    assert _call(gate, small) == ("200 OK", b"abc")


def test_a_streamed_response_is_joined_and_closed_inside_the_turn() -> None:
    closed: list[bool] = []

    class Streamed:
        def __iter__(self) -> Any:
            return iter([b"a", b"b"])

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Any:
        start_response("200 OK", [])
        return Streamed()

    assert _call(RequestGate(app, 100), _environ()) == ("200 OK", b"ab")
    assert closed == [True]
