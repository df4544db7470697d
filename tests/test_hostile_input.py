"""Hostile input, one cause per test: each of these answered 500 (or was stored) before its
fix. Every answer is a 4xx in SCIM's error format (RFC 7644 §3.12) and changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from scim_server.api.http import MAX_JSON_DEPTH, MAX_START_INDEX, parse_json
from scim_server.errors import InvalidSyntax, InvalidValue
from scim_server.scim.filter_parser import MAX_FILTER_COMPARISONS, MAX_FILTER_DEPTH
from scim_server.scim.resource import MAX_STRING_LENGTH, canonical_item
from scim_server.scim.schema import Attribute
from tests.conftest import SCIM, ScimClient

ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"


def _raw(scim: ScimClient, method: str, path: str, data: bytes | str, **headers: str) -> Any:
    sent = {"Authorization": f"Bearer {scim.token}", "Content-Type": SCIM, **headers}
    return scim.client.open("/scim/v2" + path, method=method, data=data, headers=sent)


def _error(response: Any, status: int, scim_type: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.content_type == SCIM
    body: dict[str, Any] = response.get_json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type
    return body


def _count(app: Flask, table: str) -> int:
    from scim_server.db import db

    with app.app_context():
        return int(db.session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


# ---------------------------------------------------------------- one JSON decoder


def test_json_nested_thousands_deep_is_invalid_syntax(scim: ScimClient, app: Flask) -> None:
    # Was a RecursionError in json.loads: 500.
    for body in ("[" * 5000 + "]" * 5000, '{"userName": ' + '{"a":' * 5000 + "1" + "}" * 5001):
        _error(_raw(scim, "POST", "/Users", body), 400, "invalidSyntax")
        _error(_raw(scim, "POST", "/Bulk", body), 400, "invalidSyntax")
        _error(_raw(scim, "POST", "/.search", body), 400, "invalidSyntax")
    assert _count(app, "users") == 0


def test_json_depth_limit_is_exact() -> None:
    assert parse_json(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(InvalidSyntax, match="levels deep"):
        parse_json(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    # Many brackets side by side are not deep.
    assert len(parse_json(b"[" + b",".join([b"[]"] * 500) + b"]")) == 500


def test_lone_surrogates_are_invalid_syntax(scim: ScimClient, app: Flask) -> None:
    # Were stored as text no encoder takes: 500 when the database or the response encoded it.
    user = scim.user("base")
    for body in (
        {"userName": "\ud800"},
        {"userName": "x", "name": {"givenName": "\udfff"}},
        {"userName": "x", "\udc00": 1},
    ):
        data = json.dumps(body)  # ensure_ascii: the surrogate travels as \ud800, as IdPs send
        _error(_raw(scim, "POST", "/Users", data), 400, "invalidSyntax")
        _error(_raw(scim, "PUT", f"/Users/{user['id']}", data), 400, "invalidSyntax")
    patch = {"Operations": [{"op": "replace", "path": "title", "value": "\ud800"}]}
    _error(_raw(scim, "PATCH", f"/Users/{user['id']}", json.dumps(patch)), 400, "invalidSyntax")
    # A surrogate pair is one character, and fine.
    assert scim.user("smile", title="\ud83d\ude00")["title"] == "\U0001f600"
    assert scim.get(f"/Users/{user['id']}").get_json()["meta"]["version"] == user["meta"]["version"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "9" * 5000])
def test_numbers_json_does_not_have_are_invalid_syntax(scim: ScimClient, number: str) -> None:
    # NaN and Infinity were read as floats; 1e400 as inf.
    body = '{"schemas": ["' + USER + '"], "count": ' + number + "}"
    _error(_raw(scim, "POST", "/Users/.search", body), 400, "invalidSyntax")


def test_duplicate_member_names_are_invalid_syntax(scim: ScimClient, app: Flask) -> None:
    # Were read as the last one: which value the client meant is anyone's guess (RFC 7493 §2.3).
    body = '{"userName": "first", "userName": "second"}'
    detail = _error(_raw(scim, "POST", "/Users", body), 400, "invalidSyntax")["detail"]
    assert "userName" in detail
    assert _count(app, "users") == 0


def test_bodies_that_are_not_utf8_are_invalid_syntax(scim: ScimClient, app: Flask) -> None:
    # UTF-16 was accepted (json.loads guesses the encoding of bytes); RFC 8259 §8.1: UTF-8.
    body = json.dumps({"userName": "utf16"})
    _error(_raw(scim, "POST", "/Users", body.encode("utf-16")), 400, "invalidSyntax")
    _error(_raw(scim, "POST", "/Users", b'{"userName": "\xff\xfe"}'), 400, "invalidSyntax")
    _error(_raw(scim, "POST", "/Users", "\ufeff" + body), 400, "invalidSyntax")
    assert _count(app, "users") == 0


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/scim+json; charset=latin1",
    ],
)
def test_a_body_that_is_not_json_by_its_content_type_is_415(
    scim: ScimClient, app: Flask, content_type: str
) -> None:
    # Was parsed as JSON whatever it said it was.
    response = _raw(
        scim, "POST", "/Users", '{"userName": "typed"}', **{"Content-Type": content_type}
    )
    _error(response, 415, None)
    assert _count(app, "users") == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/scim+json; charset=UTF-8", "APPLICATION/JSON", ""],
)
def test_json_content_types_are_taken(scim: ScimClient, content_type: str) -> None:
    body = '{"userName": "typed"}'
    response = _raw(scim, "POST", "/Users", body, **{"Content-Type": content_type})
    assert response.status_code == 201


# ---------------------------------------------------------------- numbers and strings


@pytest.mark.parametrize("start", ["99999999999999999999999", str(2**63), str(MAX_START_INDEX)])
def test_a_start_index_past_any_database_offset_is_an_empty_page(
    scim: ScimClient, start: str
) -> None:
    # Was OverflowError: Python int too large to convert to SQLite INTEGER (500).
    scim.user("only")
    for response in (
        scim.get(f"/Users?startIndex={start}"),
        scim.get(f"/Groups?startIndex={start}&count=5"),
        scim.post("/.search", {"startIndex": int(start)}),
        scim.post("/Users/.search", {"startIndex": start}),
    ):
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert body["Resources"] == []
        assert body["startIndex"] == MAX_START_INDEX if int(start) >= MAX_START_INDEX else True


def test_huge_and_negative_paging_numbers_are_clamped(scim: ScimClient) -> None:
    scim.user("one")
    body = scim.get(
        "/Users?startIndex=-99999999999999999999999&count=99999999999999999999"
    ).get_json()
    assert (body["startIndex"], body["itemsPerPage"], body["totalResults"]) == (1, 1, 1)
    body = scim.get("/Users?count=-99999999999999999999999").get_json()
    assert (body["totalResults"], body["itemsPerPage"], body["Resources"]) == (1, 0, [])


def test_integer_attributes_hold_64_bits_and_decimals_are_finite() -> None:
    number = Attribute("n", type="integer")
    assert canonical_item(number, 2**63 - 1) == 2**63 - 1
    assert canonical_item(number, -(2**63)) == -(2**63)
    for value in (2**63, -(2**63) - 1, 10**30):
        with pytest.raises(InvalidValue, match="between"):
            canonical_item(number, value)
    decimal = Attribute("d", type="decimal")
    assert canonical_item(decimal, 1.5) == 1.5
    for value in (float("inf"), float("nan"), 10**400):
        with pytest.raises(InvalidValue, match="finite"):
            canonical_item(decimal, value)


def test_control_characters_in_values_are_invalid_value(scim: ScimClient, app: Flask) -> None:
    # NUL was refused, the other C0 controls stored.
    for value in ("a\u0001b", "bell\u0007", "esc\u001b[0m", "nul\u0000"):
        _error(scim.post("/Users", {"userName": "c", "title": value}), 400, "invalidValue")
        group = {"displayName": "g", "members": [{"value": "x", "display": value}]}
        _error(scim.post("/Groups", group), 400, "invalidValue")
    assert _count(app, "users") == 0
    # Tab and line breaks are text (RFC 7643 §4.1.2 formats an address on two lines).
    formatted = "100 Universal City Plaza\nHollywood, CA 91608 USA\t\r"
    user = scim.user("lines", addresses=[{"type": "work", "formatted": formatted}])
    assert user["addresses"][0]["formatted"] == formatted


def test_a_string_longer_than_the_limit_is_invalid_value(scim: ScimClient, app: Flask) -> None:
    # user_values.value is TEXT: a 100 k-character email was stored.
    long = "a" * (MAX_STRING_LENGTH + 1)
    body = {"userName": "long", "emails": [{"value": long}]}
    detail = _error(scim.post("/Users", body), 400, "invalidValue")["detail"]
    assert str(MAX_STRING_LENGTH) in detail
    user = scim.user("short")
    patch = {
        "schemas": [PATCH],
        "Operations": [{"op": "add", "path": "emails", "value": body["emails"]}],
    }
    _error(scim.patch(f"/Users/{user['id']}", patch), 400, "invalidValue")
    assert scim.get(f"/Users/{user['id']}").get_json()["meta"]["version"] == user["meta"]["version"]


# ---------------------------------------------------------------- filters and ids


@pytest.mark.parametrize(
    "text",
    [
        " and ".join(['title eq "x"'] * 3000),
        " or ".join(['emails[value eq "x"]'] * 600),
        "not (" * 300 + "title pr" + ")" * 300,
        "(" * (MAX_FILTER_DEPTH + 1) + "title pr" + ")" * (MAX_FILTER_DEPTH + 1),
        " or ".join(['userName eq "x"'] * (MAX_FILTER_COMPARISONS + 1)),
        'title eq "' + "a" * 70_000 + '"',
    ],
    ids=["and-chain", "or-chain", "not-nest", "paren-nest", "comparisons", "length"],
)
def test_filters_too_large_to_walk_are_invalid_filter(scim: ScimClient, text: str) -> None:
    # The and-chain and the nests were RecursionErrors (500).
    _error(scim.post("/Users/.search", {"filter": text}), 400, "invalidFilter")
    _error(scim.post("/.search", {"filter": text}), 400, "invalidFilter")


def test_filters_within_the_limits_are_served(scim: ScimClient) -> None:
    user = scim.user("x", title="x")
    within = " or ".join(['userName eq "x"'] * MAX_FILTER_COMPARISONS)
    nested = "(" * MAX_FILTER_DEPTH + "title pr" + ")" * MAX_FILTER_DEPTH
    for text in (within, nested):
        body = scim.post("/Users/.search", {"filter": text}).get_json()
        assert [r["id"] for r in body["Resources"]] == [user["id"]]


def test_a_lone_surrogate_in_a_filter_is_invalid_filter(scim: ScimClient) -> None:
    # "\ud800" inside the filter's own JSON string: the lexer made it a surrogate (500).
    response = scim.client.get(
        "/scim/v2/Users",
        query_string={"filter": 'userName eq "\\ud800"'},
        headers={"Authorization": f"Bearer {scim.token}"},
    )
    _error(response, 400, "invalidFilter")
    group = scim.group("g")
    patch = {
        "schemas": [PATCH],
        "Operations": [{"op": "remove", "path": 'members[value eq "\\udc00"]'}],
    }
    _error(scim.patch(f"/Groups/{group['id']}", patch), 400, "invalidPath")


def test_an_id_holding_nul_names_nothing(scim: ScimClient, app: Flask) -> None:
    # On PostgreSQL the id reached the database, which refused it: a whole /Bulk failed
    # (after the operations before it had committed) instead of its one operation.
    headers = {"Authorization": f"Bearer {scim.token}"}
    for method in ("GET", "DELETE", "PUT", "PATCH"):
        for kind in ("Users", "Groups"):
            response = scim.client.open(f"/scim/v2/{kind}/a%00b", method=method, headers=headers)
            _error(response, 404, None)
    body = {
        "schemas": [BULK],
        "Operations": [
            {"method": "DELETE", "path": "/Users/a\u0000b"},
            {"method": "POST", "path": "/Users", "bulkId": "u", "data": {"userName": "after"}},
        ],
    }
    response = scim.post("/Bulk", body)
    assert response.status_code == 200, response.get_json()
    assert [op["status"] for op in response.get_json()["Operations"]] == ["404", "201"]


def test_a_portal_user_name_holding_nul_is_a_wrong_sign_in(scim: ScimClient, app: Flask) -> None:
    # On PostgreSQL the name reached the database, which refused it: a 500 page.
    scim.user("portal@example.com", password="Portal-Pass-42!")
    client = app.test_client()
    for path, form in (
        ("/portal/login", {"username": "portal@example.com\x00", "password": "Portal-Pass-42!"}),
        (
            "/portal/password",
            {
                "username": "\x00portal@example.com",
                "current": "Portal-Pass-42!",
                "password": "Another-Pass-43!",
                "confirm": "Another-Pass-43!",
            },
        ),
    ):
        response = client.post(path, data=form)
        assert response.status_code == 401, response.get_data(as_text=True)[:300]
        assert response.content_type.startswith("text/html")


class InvalidChunkSize(Exception):
    """As gunicorn's: an Exception, neither an OSError nor a ValueError (werkzeug takes
    those two for a disconnected client)."""


class _GarbledBody:
    """A request body as a WSGI server hands over one it cannot read: gunicorn raises its
    InvalidChunkSize from read() for a malformed chunked encoding."""

    def read(self, *args: Any) -> bytes:
        raise InvalidChunkSize("Invalid chunk size: b'zz'")

    readline = read


def _post_garbled(app: Flask, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    environ = EnvironBuilder(path=path, method="POST", headers=headers).get_environ()
    environ["wsgi.input"] = _GarbledBody()
    environ["wsgi.input_terminated"] = True  # as gunicorn marks a chunked body
    body, status, response_headers = run_wsgi_app(app.wsgi_app, environ, buffered=True)
    return int(status.split()[0]), response_headers.get("Content-Type", ""), b"".join(body)


@pytest.mark.parametrize("path", ["/scim/v2/Users", "/scim/v2/Bulk", "/scim/v2/.search"])
def test_a_body_the_server_cannot_read_is_invalid_syntax(
    scim: ScimClient, app: Flask, path: str
) -> None:
    # The server's exception came out of request.get_data(): 500.
    headers = {
        "Authorization": f"Bearer {scim.token}",
        "Content-Type": SCIM,
        "Transfer-Encoding": "chunked",
    }
    status, content_type, body = _post_garbled(app, path, headers)
    assert (status, content_type) == (400, SCIM), body
    error = json.loads(body)
    assert (error["status"], error["scimType"]) == ("400", "invalidSyntax")


def test_a_portal_form_the_server_cannot_read_is_400(app: Flask) -> None:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Transfer-Encoding": "chunked",
    }
    status, content_type, _ = _post_garbled(app, "/portal/login", headers)
    assert status == 400
    assert content_type.startswith("text/html")
