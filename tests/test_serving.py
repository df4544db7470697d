"""`scim-server serve` over real sockets: hostile clients, keep-alive, the access log, the
errors produced below Flask, and a graceful stop."""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from tests.conftest import ScimClient
from tests.serving import (
    Response,
    RunningServe,
    alive,
    descendants,
    read_response,
    serve,
)

SCIM_JSON = "application/scim+json"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServe]:
    """One `serve` as `make run` starts it (sync worker on, sandbox tenant, access log)."""
    with serve(tmp_path_factory.mktemp("serving")) as running:
        yield running


def _ordinary(server: RunningServe) -> float:
    """Seconds for one authenticated GET on a new connection, checked."""
    started = time.monotonic()
    response = server.call("GET", "/scim/v2/Users?count=1")
    assert response.status == 200
    return time.monotonic() - started


def test_idle_and_slow_clients_delay_no_one(server: RunningServe) -> None:
    held: list[socket.socket] = []
    worst: dict[str, float] = {}

    def measure(phase: str, seconds: float = 1.0) -> None:
        deadline = time.monotonic() + seconds
        worst[phase] = 0.0
        while time.monotonic() < deadline:
            worst[phase] = max(worst[phase], _ordinary(server))

    try:
        for _ in range(50):  # a load balancer's TCP probes, a proxy's keep-alive pool
            held.append(server.connect())
        measure("50 idle connections")
        for _ in range(50):  # requests whose headers never end
            sock = server.connect()
            sock.sendall(b"GET /scim/v2/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
            held.append(sock)
        measure("+50 unfinished headers")
        for _ in range(20):  # POSTs whose bodies never end: half of Content-Length sent
            sock = server.connect()
            head = server.request_bytes("POST", "/scim/v2/Users", {"userName": "x" * 200})
            sock.sendall(head[: len(head) - 100])
            held.append(sock)
        measure("+20 unfinished bodies", 3.0)
    finally:
        for sock in held:
            sock.close()
    assert all(seconds < 1.0 for seconds in worst.values()), worst


def test_kept_alive_and_pipelined_requests_are_all_answered(server: RunningServe) -> None:
    with server.connect() as sock:
        buffered = bytearray()
        for _ in range(3):  # one after the other on one connection
            sock.sendall(server.request_bytes("GET", "/scim/v2/Users?count=1"))
            response = read_response(sock, buffered)
            assert response.status == 200
            assert response.headers.get("connection", "keep-alive") != "close"
        sock.sendall(server.request_bytes("GET", "/scim/v2/Groups") * 3)  # pipelined
        for _ in range(3):
            assert read_response(sock, buffered).status == 200


def test_the_access_log_redacts_activation_links_and_never_shows_a_token(
    server: RunningServe,
) -> None:
    secret = "s3cr3t-Activation-T0ken"
    response = server.call(
        "GET",
        f"/portal/activate/{secret}?x=1",
        headers={"Referer": f"https://dir.example.com/portal/activate/{secret}"},
    )
    assert response.status == 410  # no such link: but logged
    request_id = response.headers["x-request-id"]
    server.wait_for(request_id)
    line = next(line for line in server.output().splitlines() if request_id in line)
    assert "scim_server.access" in line and " INFO " in line
    assert '"GET /portal/activate/[redacted]?x=1 HTTP/1.1" 410' in line
    assert '"https://dir.example.com/portal/activate/[redacted]"' in line
    output = server.output()
    assert secret not in output
    assert server.token not in output  # nor the bearer token of any request


def test_a_request_line_too_long_is_414_in_scim_json(server: RunningServe) -> None:
    response = server.call("GET", "/scim/v2/Users?filter=" + "a" * 9000)
    _assert_scim_error(response, 414)


def test_headers_too_large_are_431_in_scim_json(server: RunningServe) -> None:
    response = server.call("GET", "/scim/v2/Users", headers={"X-Big": "b" * 70_000})
    _assert_scim_error(response, 431)


def test_a_body_too_large_is_413_in_scim_json_before_it_is_read(server: RunningServe) -> None:
    with server.connect() as sock:
        head = server.request_bytes("POST", "/scim/v2/Users", {"userName": "big"})
        head = head.replace(b"Content-Length: 19", b"Content-Length: 20000000")
        sock.sendall(head)  # 20 MB announced, 19 bytes sent: answered at once
        response = read_response(sock)
    _assert_scim_error(response, 413)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/nope", 404),
        ("GET", "/scim/v2/Nope", 404),
        ("DELETE", "/portal/login", 405),
        ("PUT", "/scim/v2/ServiceProviderConfig", 405),
    ],
)
def test_unknown_routes_and_wrong_methods_are_scim_errors(
    server: RunningServe, method: str, path: str, status: int
) -> None:
    response = server.call(method, path)
    _assert_scim_error(response, status)
    if status == 405:
        assert response.headers.get("allow")


def _assert_scim_error(response: Response, status: int) -> None:
    assert response.status == status, response
    assert response.headers["content-type"].startswith(SCIM_JSON)
    body = response.json()
    assert body["schemas"] == [ERROR_SCHEMA] and body["status"] == str(status)


def test_sigterm_answers_the_request_in_flight_then_all_processes_end(tmp_path: Path) -> None:
    with serve(tmp_path) as running:
        # The sync worker has started delivering (a worker stopped while it is still starting
        # has nothing to finish, and says nothing): its batch and leases are what SIGTERM tests.
        running.wait_for("provisioning users on", timeout=60)
        family = descendants(running.process.pid)
        assert len(family) >= 4  # granian and its 2 workers, the sync worker
        idle = running.connect()  # a kept-alive connection, idle: closed by the stop
        with running.connect() as sock:
            request = running.request_bytes("POST", "/scim/v2/Users", {"userName": "late"})
            sock.sendall(request[:-5])  # in flight: the body not finished
            time.sleep(0.5)
            stopped_at = time.monotonic()
            running.process.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            sock.sendall(request[-5:])
            response = read_response(sock)
        assert response.status == 201, response
        running.process.wait(15)
        assert running.process.returncode == 0, running.output()
        while any(alive(pid) for pid in family):
            assert time.monotonic() - stopped_at < 15, [p for p in family if alive(p)]
            time.sleep(0.1)
        idle.close()
    output = running.output()
    assert "SIGTERM received: stopping" in output
    assert "sync stopped" in output


# ------------------------------------------------------------------ in-process


def test_the_access_log_record_carries_the_request_fields(
    scim: ScimClient, caplog: pytest.LogCaptureFixture
) -> None:
    created = scim.post("/Users", {"userName": "fields@example.com"})
    user_id = created.json["id"]
    with caplog.at_level(logging.INFO, logger="scim_server.access"):
        caplog.clear()  # the POST's line is not this test's
        response = scim.get(f"/Users/{user_id}", headers={"User-Agent": "Okta SCIM Client"})
        response.close()  # the line is written when the server closes the body (PEP 3333)
    records = [r for r in caplog.records if r.name == "scim_server.access"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.INFO
    assert record.request_id == response.headers["X-Request-Id"]
    assert record.method == "GET"
    assert record.path == f"/scim/v2/Users/{user_id}"
    assert record.route == "/scim/v2/<any(Users, Groups):resource>/<ident>"  # Flask's rule
    assert record.status == 200
    assert isinstance(record.duration_ms, float) and record.duration_ms >= 0
    assert record.token_name == "test"
    assert record.remote_addr == "127.0.0.1"
    assert record.user_agent == "Okta SCIM Client"
    message = record.getMessage()
    assert f'"GET /scim/v2/Users/{user_id} HTTP/1.1" 200' in message
    assert " - test " in message and "Okta SCIM Client" in message


def test_an_unrouted_request_is_logged_without_route_or_token(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="scim_server.access"):
        client.get("/nope", headers={"Authorization": "Bearer not-a-token"}).close()
    (record,) = [r for r in caplog.records if r.name == "scim_server.access"]
    assert record.status == 404 and record.route is None and record.token_name is None
    assert "not-a-token" not in caplog.text


def test_no_access_log_turns_the_lines_off(tmp_path: Path) -> None:
    with serve(tmp_path, "--no-access-log", "--no-sync", "--workers", "1") as running:
        response = running.call("GET", "/scim/v2/Users?count=1")
        assert response.status == 200
        time.sleep(0.5)
        assert response.headers["x-request-id"] not in running.output()
        assert "scim_server.access" not in running.output()
        assert running.worker_pid() is None  # --no-sync: no sync worker either
