"""Small HTTP helpers shared by the views: SCIM JSON responses, query parameters."""

from __future__ import annotations

import json
import math
import re
from typing import Any, NoReturn

from flask import Response, current_app, request

from scim_server.errors import InvalidSyntax, InvalidValue, UnsupportedMediaType

SCIM_CONTENT_TYPE = "application/scim+json"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_write_request() -> bool:
    """Whether the current request may change the directory (a read-only token may not make
    one). POST /.search only reads: it is a POST to keep the filter out of URLs (RFC 7644
    §3.4.3)."""
    is_search = request.method == "POST" and request.path.rstrip("/").endswith("/.search")
    return request.method not in READ_METHODS and not is_search


def scim_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    response = Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status=status,
        content_type=_content_type(),
    )
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


_CONTENT_TYPES: dict[str, str] = {}


def _content_type() -> str:
    """application/scim+json (RFC 7644 §3.1), unless the client asks for application/json
    only: OneLogin's SCIM connector documents that it wants application/json answers."""
    # A client sends the same Accept header every time: parse each one once.
    accept = request.environ.get("HTTP_ACCEPT", "")
    found = _CONTENT_TYPES.get(accept)
    if found is None:
        offered = (SCIM_CONTENT_TYPE, "application/json")
        best = request.accept_mimetypes.best_match(offered, default=SCIM_CONTENT_TYPE)
        found = "application/json" if best == "application/json" else SCIM_CONTENT_TYPE
        if len(_CONTENT_TYPES) >= 256:  # client input: keep the map small
            _CONTENT_TYPES.clear()
        _CONTENT_TYPES[accept] = found
    return found


_BASE_URLS: dict[tuple[str, str], str] = {}


def base_url() -> str:
    # A pure function of scheme and host; werkzeug's host_url costs ~10 µs a request.
    key = (request.scheme, request.host)
    url = _BASE_URLS.get(key)
    if url is None:
        if len(_BASE_URLS) >= 256:  # Host headers are client input: keep the map small
            _BASE_URLS.clear()
        url = _BASE_URLS[key] = request.host_url.rstrip("/") + "/scim/v2"
    return url


# RFC 7644 §3.8 names application/scim+json; OneLogin sends application/json.
JSON_MEDIA_TYPES = frozenset({SCIM_CONTENT_TYPE, "application/json"})
# A SCIM message nests under ten levels (a /Bulk operation carrying a PatchOp whose value
# holds a multi-valued attribute is nine); anything much deeper is not SCIM, and would only
# exhaust the stack of whatever walks it next (the decoder itself stops near 1,000).
MAX_JSON_DEPTH = 64
# An escape that may stand for a surrogate code point (\uD800 to \uDFFF).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def json_body() -> Any:
    """The request body as JSON, decoded by `parse_json`: the one way every SCIM view reads
    a body."""
    media_type = request.mimetype
    # A body that names no type is read as JSON (a client that forgets the header is still
    # speaking SCIM); one that names another type is refused.
    if media_type and media_type not in JSON_MEDIA_TYPES:
        raise UnsupportedMediaType(
            f"The request body must be {SCIM_CONTENT_TYPE} (or application/json), not {media_type}."
        )
    charset = request.mimetype_params.get("charset")
    if charset is not None and charset.lower().replace("-", "") != "utf8":
        # RFC 8259 §8.1: JSON exchanged between systems is UTF-8.
        raise UnsupportedMediaType(f"The request body must be UTF-8, not {charset}.")
    return parse_json(request.get_data(cache=True))


def parse_json(raw: bytes) -> Any:
    """Decode a request body as I-JSON (RFC 7493), or raise 400 invalidSyntax.

    UTF-8 only (§2.1), no lone surrogates (§2.1: they cannot be stored or sent on), no
    duplicate member names (§2.3), finite numbers only (§2.2: no NaN, Infinity or 1e400),
    and at most MAX_JSON_DEPTH levels of arrays and objects.
    """
    if not raw:
        raise InvalidSyntax("The request body is empty.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSyntax(
            f"The request body is not valid UTF-8 (byte {exc.start} cannot be decoded)."
        ) from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise _too_deep() from None
    except json.JSONDecodeError as exc:
        raise InvalidSyntax(f"The request body is not valid JSON: {exc}") from None
    except ValueError:  # int()'s limit of 4300 digits
        raise InvalidSyntax("The request body holds a number with too many digits.") from None
    # The walk costs a few µs per value: skip it when the text shows it cannot find anything
    # (fewer brackets than the depth limit, no escape that could make a surrogate).
    deep = raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH
    surrogates = _SURROGATE_ESCAPE.search(raw) is not None
    if deep or surrogates:
        _check_tree(value, surrogates)
    return value


def _refuse_constant(name: str) -> NoReturn:
    raise InvalidSyntax(f"The request body is not valid JSON: {name} is not a JSON number.")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise InvalidSyntax(f"The number {text[:40]} is too large.")
    return number


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidSyntax(f"The member name {key!r} appears twice in one object.")
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_names, parse_float=_finite_float, parse_constant=_refuse_constant
)


def _too_deep() -> InvalidSyntax:
    return InvalidSyntax(f"The request body nests more than {MAX_JSON_DEPTH} levels deep.")


def _check_tree(value: Any, surrogates: bool) -> None:
    """Depth and lone surrogates, without recursion (the value may be a thousand levels deep
    only if the decoder allowed it; it stops near Python's recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise _too_deep()
            if isinstance(item, dict):
                if surrogates:
                    for key in item:
                        _check_text(key)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        elif surrogates and isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    if _SURROGATE.search(text):
        raise InvalidSyntax(
            "The request body holds a lone surrogate (such as \\ud800): not a Unicode string."
        )


# The largest startIndex served: its OFFSET (startIndex - 1) must fit the signed 64-bit
# integer that SQLite and PostgreSQL take.
MAX_START_INDEX = 2**63 - 1


def int_param(raw: Any, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except (TypeError, ValueError, OverflowError):
        shown = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:40] + "…"
        raise InvalidValue(f"{name} must be an integer, got {shown}.") from None


def paging(start_raw: Any, count_raw: Any) -> tuple[int, int]:
    """RFC 7644 §3.4.2.4: startIndex < 1 means 1; count < 0 means 0; count is capped at the
    advertised maximum page size. A startIndex past the last result is an empty page, so one
    past what a database OFFSET holds is served as MAX_START_INDEX (an empty page too)."""
    start = int_param(start_raw, "startIndex") or 1
    count = int_param(count_raw, "count")
    maximum = int(current_app.config["SCIM_MAX_PAGE_SIZE"])
    if count is None:
        count = int(current_app.config["SCIM_DEFAULT_PAGE_SIZE"])
    return min(max(start, 1), MAX_START_INDEX), min(max(count, 0), maximum)
