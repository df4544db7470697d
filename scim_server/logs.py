"""Logging for every entry point, in one place: `configure(level, fmt)`.

`text` writes `time level logger message`; `json` writes one JSON object a line (time, level,
logger, message, and the request's fields when a record carries them as `extra=`: the
access log's and the sync worker's). Whatever the format, what is written goes through
`redact`: a bearer token or an activation link that reached a message (a library's debug
line, an exception's text) is written as `[redacted]`.

A stdlib formatter rather than python-json-logger: it is thirty lines, the keys are fixed
here, and the redaction must see the final line, which a formatter subclass gives us anyway.
"""

from __future__ import annotations

import json
import logging
import random
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

# The fields a record may carry (`extra=`) that the JSON format writes, in this order. The
# access log (logger `scim_server.access`) sets the first ten; the sync worker the others.
FIELDS = (
    "request_id",
    "method",
    "path",
    "route",
    "status",
    "duration_ms",
    "token_name",
    "remote_addr",
    "user_agent",
    "resource",
    "request_ids",
    "client_request_id",
    "graph_request_id",
    "worker",
)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# Credentials that can ride in a line: a bearer token or Basic credentials (an Authorization
# header a library logs at DEBUG), an activation link's token (a request path), and our own
# secret formats.
_SECRETS = (
    (re.compile(r"(?i)(bearer\s+)[^\s\"'\\,;]+"), r"\1[redacted]"),
    # (Basic: base64 of at least 12 characters with a digit or + / =, not a word.)
    (re.compile(r"(?i)(basic\s+)(?=[A-Za-z]*[0-9+/=])[A-Za-z0-9+/=]{12,}"), r"\1[redacted]"),
    (re.compile(r"(/portal/activate/)[^/?#\s\"'\\]+"), r"\1[redacted]"),
    # scim_, scimat_ or scimcs_ and 43 URL-safe characters: auth.new_secret's 32 random bytes
    # (tokens and Basic passwords, OAuth access tokens, OAuth client secrets).
    (
        re.compile(r"(?<![A-Za-z0-9_-])scim(?:at|cs)?_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"),
        "[redacted]",
    ),
)


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the FIELDS a
    record carries, and `exception` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(out, default=str, ensure_ascii=False))


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler `configure` installs, told apart from the handlers of others (pytest's)."""


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send every logger's records at `level` and above to stderr in `fmt` (text | json).
    Called again, it replaces its own handler; handlers others installed stay."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic reports each migration step at INFO; an upgrade with nothing to do says nothing.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))


# ---------------------------------------------------------------- request ids

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def request_id(sent: str | None) -> str:
    """The id of a request: the client's `X-Request-Id` when it is up to 64 safe characters
    (letters, digits, `.` `_` `:` `-`), else a new one. A new one is a random UUID (the form
    Graph's client-request-id takes), made without a system call (uuid4 reads os.urandom
    each time; the random module is reseeded in every forked worker)."""
    if sent and _REQUEST_ID.fullmatch(sent):
        return sent
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def is_guid(value: str | None) -> bool:
    return bool(value) and _GUID.fullmatch(value or "") is not None
