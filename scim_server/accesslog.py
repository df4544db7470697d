"""gunicorn's access log, without the credentials that can ride in a request line: an
activation link's token is replaced by `[redacted]` wherever the log format puts it."""

from __future__ import annotations

import re
from typing import Any

from gunicorn.glogging import Logger

_ACTIVATION = re.compile(r"(/portal/activate/)[^/?#\s\"]+")


def redact(text: str) -> str:
    return _ACTIVATION.sub(r"\1[redacted]", text)


class RedactingLogger(Logger):  # type: ignore[misc]
    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for key, value in atoms.items():
            if isinstance(value, str):
                atoms[key] = redact(value)
        atoms["{authorization}i"] = "-"  # never a bearer token, whatever the format says
        return atoms
