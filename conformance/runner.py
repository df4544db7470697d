# The replay runner: sends a client's documented request sequence to a SCIM base URL and checks
# what the client relies on. Standard library only, so it runs anywhere Python 3.11 does.
# The sources each replay was written from are listed at the top of its own file.
"""Runner for the client replays in this folder.

A replay is a list of steps. A step sends requests exactly as one client does and raises
`StepFail` with a short reason when the answer is not what that client relies on. The runner
goes through a transport, a callable `send(method, path, headers, body) -> (status, headers,
body)`, where `path` is relative to the SCIM base URL and carries its query string. `http_transport`
talks to a server over HTTP; the tests plug in Flask's test client.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Transport = Callable[[str, str, dict[str, str], bytes | None], tuple[int, dict[str, str], bytes]]

SCIM = "application/scim+json"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
CORE_USER = "urn:ietf:params:scim:schemas:core:2.0:User"
CORE_GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


class StepFail(Exception):
    """The answer is not what the client relies on; the message says why, briefly."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        if not self.raw:
            return None
        try:
            return json.loads(self.raw)
        except ValueError:
            return None

    def brief(self) -> str:
        """Status and, for an error, the SCIM detail: enough to see why at a glance."""
        body = self.json
        if isinstance(body, dict) and ("detail" in body or "scimType" in body):
            kind = f" {body['scimType']}" if body.get("scimType") else ""
            return f"{self.status}{kind}: {str(body.get('detail', ''))[:160]}"
        return str(self.status)


@dataclass
class Step:
    name: str
    run: Callable[[Ctx], str | None]


@dataclass
class Replay:
    client: str
    description: str
    steps: list[Step]
    headers: dict[str, str] = field(default_factory=dict)
    # A query parameter the client appends to every request (Entra's `aadOptscim062020`).
    flag: str | None = None


@dataclass
class Ctx:
    """What a replay's steps share: the transport, the run's unique suffix and ids made so far."""

    send: Transport
    token: str
    base_url: str
    replay: Replay
    suffix: str = field(default_factory=lambda: secrets.token_hex(4))
    ids: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    # -------------------------------------------------------------- requests

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Iterable[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
        raw_query: str | None = None,
    ) -> Response:
        """Send one request the way the replay's client does.

        `query` pairs are percent-encoded as a client's HTTP library would (spaces as %20);
        `raw_query` is appended as it is. The client's flag, if any, comes first.
        """
        parts: list[str] = []
        if self.replay.flag:
            parts.append(self.replay.flag)
        if raw_query:
            parts.append(raw_query)
        parts.extend(
            f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}" for k, v in query
        )
        full = path + ("?" + "&".join(parts) if parts else "")
        h = {"Authorization": f"Bearer {self.token}", **self.replay.headers}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", SCIM)
        h.update(headers or {})
        status, resp_headers, raw = self.send(method, full, h, data)
        return Response(status, resp_headers, raw)

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Response:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Response:
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, operations: list[dict[str, Any]], **kw: Any) -> Response:
        return self.request("PATCH", path, {"schemas": [PATCH_OP], "Operations": operations}, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)

    # -------------------------------------------------------------- state

    def need(self, key: str) -> str:
        if key not in self.ids:
            raise StepFail(f"needs {key}, which an earlier step did not produce")
        return self.ids[key]

    def name(self, stem: str) -> str:
        """A name unique to this run, so a replay can run against a server that has data."""
        return f"{stem}.{self.suffix}"

    def email(self, stem: str) -> str:
        return f"{stem}.{self.suffix}@example.com"


# ------------------------------------------------------------------ checks


def expect(resp: Response, *statuses: int) -> Any:
    if resp.status not in statuses:
        wanted = " or ".join(str(s) for s in statuses)
        raise StepFail(f"expected {wanted}, got {resp.brief()}")
    return resp.json


def check(condition: bool, reason: str) -> None:
    if not condition:
        raise StepFail(reason)


def resources(resp: Response) -> list[dict[str, Any]]:
    """The Resources of a ListResponse, after checking it is one."""
    body = expect(resp, 200)
    check(isinstance(body, dict), "the answer is not a JSON object")
    check(LIST_RESPONSE in (body.get("schemas") or []), "the answer is not a ListResponse")
    check(isinstance(body.get("totalResults"), int), "totalResults is not an integer")
    found = body.get("Resources", [])
    check(isinstance(found, list), "Resources is not a list")
    return list(found)


def one(resp: Response, ident: str | None = None) -> dict[str, Any]:
    found = resources(resp)
    check(len(found) == 1, f"expected exactly one result, got {len(found)}")
    if ident is not None:
        check(found[0].get("id") == ident, f"found {found[0].get('id')!r}, not {ident!r}")
    return found[0]


def eq_filter(attr: str, value: str) -> tuple[str, str]:
    return ("filter", f'{attr} eq "{value}"')


def work_email(doc: dict[str, Any]) -> str | None:
    for email in doc.get("emails") or []:
        if isinstance(email, dict) and email.get("type") == "work":
            return str(email.get("value"))
    return None


def members_of(doc: dict[str, Any]) -> set[str]:
    return {str(m.get("value")) for m in doc.get("members") or [] if isinstance(m, dict)}


def random_guid() -> str:
    return str(uuid.uuid4())


# ------------------------------------------------------------------ running


@dataclass
class Outcome:
    client: str
    passed: int
    failed: int
    lines: list[str]


def run_replay(replay: Replay, send: Transport, token: str, base_url: str) -> Outcome:
    ctx = Ctx(send, token, base_url.rstrip("/"), replay)
    lines: list[str] = []
    passed = failed = 0
    for number, step in enumerate(replay.steps, start=1):
        label = f"{replay.client} {number:02d} {step.name}"
        try:
            note = step.run(ctx)
        except StepFail as exc:
            failed += 1
            lines.append(f"FAIL {label}: {exc}")
        except Exception as exc:  # a bug or a transport error: report it as this step's failure
            failed += 1
            lines.append(f"FAIL {label}: {type(exc).__name__}: {exc}")
        else:
            passed += 1
            lines.append(f"PASS {label}" + (f": {note}" if note else ""))
    return Outcome(replay.client, passed, failed, lines)


def http_transport(base_url: str, timeout: float = 30.0) -> Transport:
    """A transport over HTTP(S) with urllib; a non-2xx answer is returned, not raised."""
    base = base_url.rstrip("/")

    def send(
        method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(base + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers.items()), err.read()

    return send


def replays() -> dict[str, Replay]:
    """Every client's replay, by the name used on the command line."""
    from conformance import replay_entra, replay_jumpcloud, replay_okta, replay_onelogin

    found = [
        replay_entra.default_dialect(),
        replay_entra.compliant_dialect(),
        replay_okta.replay(),
        replay_onelogin.replay(),
        replay_jumpcloud.replay(),
    ]
    return {r.client: r for r in found}
