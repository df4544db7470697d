"""The Microsoft Graph client: msal for tokens, one `requests.Session` for calls.

One code path for graph.microsoft.com and for the emulator: only `GraphSettings` differ.
Every call has an explicit timeout. Failures raise the types in `errors`; nothing is retried
here (the sync engine decides). Facts relied on are in shared/reference/graph.md; each
operation names its Graph documentation page.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import msal
import requests

from scim_server.graph.errors import (
    AuthError,
    GraphError,
    NotFound,
    TlsError,
    Transient,
    classify,
    from_response,
)
from scim_server.graph.settings import GraphSettings
from scim_server.logs import is_guid

BATCH_LIMIT = 20  # https://learn.microsoft.com/graph/json-batching
BIND_LIMIT = 20  # members@odata.bind: https://learn.microsoft.com/graph/api/group-update


class GraphSession(requests.Session):
    """A session whose every request carries a timeout and the TLS trust of the settings.

    `verify` is passed per request and `trust_env` is off: otherwise `REQUESTS_CA_BUNDLE` in
    the environment silently overrides a session's trust. msal uses this session too, so its
    discovery and token calls get the same timeout and trust.
    """

    def __init__(self, verify: str | bool, timeout: float) -> None:
        super().__init__()
        self._graph_verify = verify
        self._graph_timeout = timeout
        # Nothing from the environment but its proxies: no REQUESTS_CA_BUNDLE replacing the
        # trust, no ~/.netrc replacing the bearer token with Basic auth.
        self.trust_env = False
        self.proxies.update(urllib.request.getproxies())

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._graph_timeout
        if kwargs.get("verify") is None:
            kwargs["verify"] = self._graph_verify
        return super().request(method, url, *args, **kwargs)


def _credential(settings: GraphSettings) -> str | dict[str, Any]:
    if settings.client_secret is not None:
        return settings.client_secret
    assert settings.cert_path is not None
    path = Path(settings.cert_path)
    if path.suffix.lower() in (".pfx", ".p12"):
        credential: dict[str, Any] = {"private_key_pfx_path": str(path)}
        if settings.cert_passphrase:
            credential["passphrase"] = settings.cert_passphrase
        return credential
    return _pem_credential(path.read_bytes(), settings.cert_passphrase)


def _pem_credential(pem: bytes, passphrase: str | None) -> dict[str, Any]:
    """A PEM file holding the private key and its certificate, as msal wants it: the key, the
    certificate's SHA-1 thumbprint, and the certificate itself."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    password = passphrase.encode() if passphrase else None
    key = serialization.load_pem_private_key(pem, password=password)
    cert = x509.load_pem_x509_certificate(pem)
    return {
        "private_key": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        # msal sends the certificate's SHA-1 thumbprint as the assertion's x5t header.
        "thumbprint": cert.fingerprint(hashes.SHA1()).hex(),
        "public_certificate": cert.public_bytes(serialization.Encoding.PEM).decode(),
    }


class TokenProvider:
    """One msal ConfidentialClientApplication per provider (keep one per process): msal's
    token cache then serves tokens until 5 minutes before they expire.

    The app is built at the first token, because msal reads the authority's OpenID
    configuration when it is built. msal also caches some failures (a 400 for 60 s, a 429 or
    5xx for Retry-After): a fixed configuration needs a new provider to be tried at once.
    """

    def __init__(self, settings: GraphSettings, session: requests.Session) -> None:
        self._settings = settings
        self._session = session
        self._app: msal.ConfidentialClientApplication | None = None
        self._lock = threading.Lock()

    def _application(self) -> msal.ConfidentialClientApplication:
        with self._lock:
            if self._app is None:
                s = self._settings
                self._app = msal.ConfidentialClientApplication(
                    s.client_id,
                    client_credential=_credential(s),
                    authority=s.authority,
                    http_client=self._session,
                    # msal asks login.microsoftonline.com about any other host unless told
                    # not to; the emulator and sovereign test hosts are not on its list.
                    instance_discovery=s.instance_discovery,
                )
            return self._app

    def token(self) -> str:
        try:
            result = self._application().acquire_token_for_client(scopes=[self._settings.scope])
        except requests.exceptions.SSLError:
            raise TlsError(f"TLS verification failed for {self._settings.authority}") from None
        except requests.RequestException as exc:
            raise Transient(f"Token endpoint unreachable: {type(exc).__name__}") from None
        except msal.exceptions.MsalServiceError as exc:  # msal raises on a 5xx
            raise Transient(f"Token endpoint failed: {exc}") from None
        except ValueError as exc:  # msal: the authority's discovery document was unusable
            raise AuthError(f"Authority {self._settings.authority} refused: {exc}") from None
        if not isinstance(result, dict) or "access_token" not in result:
            error = result.get("error", "unknown_error") if isinstance(result, dict) else "?"
            description = result.get("error_description", "") if isinstance(result, dict) else ""
            # The description names the AADSTS code and never carries the secret.
            first_line = description.splitlines()[0] if description else ""
            message = f"Token request failed: {error}: {first_line}"
            if error in ("temporarily_unavailable", "server_error"):  # 429 and 5xx bodies
                raise Transient(message)
            raise AuthError(message)
        token: str = result["access_token"]
        return token


@dataclass(frozen=True)
class BatchRequest:
    """One part of a JSON batch. `url` is relative to the version root (`/users`)."""

    id: str
    method: str
    url: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "method": self.method, "url": self.url}
        headers = dict(self.headers)
        if self.body is not None:
            out["body"] = self.body
            headers.setdefault("Content-Type", "application/json")
        if headers:
            out["headers"] = headers
        if self.depends_on:
            out["dependsOn"] = list(self.depends_on)
        return out


@dataclass(frozen=True)
class BatchResult:
    id: str
    status: int
    headers: dict[str, str]
    body: Any
    error: GraphError | None  # the typed error of a failed part (424, 429, 4xx, 5xx)


@dataclass(frozen=True)
class DeltaPage:
    """All changes since the last delta link, and the link to ask for the next ones."""

    items: list[dict[str, Any]]
    delta_link: str


def _merge_delta_item(merged: dict[str, dict[str, Any]], item: dict[str, Any]) -> None:
    """Fold a delta item into the one already seen for its object: later values win, and
    `…@delta` collections (members@delta, manager@delta) are joined."""
    key = str(item.get("id"))
    seen = merged.get(key)
    if seen is None:
        merged[key] = dict(item)
        return
    for name, value in item.items():
        if name.endswith("@delta") and isinstance(value, list) and isinstance(seen.get(name), list):
            seen[name] = [*seen[name], *value]
        else:
            seen[name] = value


def _odata_string(value: str) -> str:
    """An OData string literal: single quotes doubled (OData ABNF, `SQUOTE-in-string`)."""
    return "'" + value.replace("'", "''") + "'"


class GraphStats:
    """What a process's Graph clients did, for /metrics: calls by HTTP status (`error` when
    none came: a timeout, a refused or dropped connection) and the 429s among them and among
    the parts of $batch calls. Shared by the clients of a process; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.throttled = 0

    def count(self, status: int | None) -> None:
        key = str(status) if status else "error"
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + 1
            if status == 429:
                self.throttled += 1

    def count_throttled_parts(self, parts: int) -> None:
        if parts:
            with self._lock:
                self.throttled += parts

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"graph_requests": dict(self.requests), "graph_throttled": self.throttled}


class GraphClient:
    def __init__(
        self,
        settings: GraphSettings,
        session: requests.Session | None = None,
        tokens: TokenProvider | None = None,
        stats: GraphStats | None = None,
    ) -> None:
        self.settings = settings
        self.session = session or GraphSession(settings.verify, settings.timeout)
        self.tokens = tokens or TokenProvider(settings, self.session)
        self.stats = stats or GraphStats()
        parts = urlsplit(settings.graph_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self.last_request_id: str | None = None
        # The client-request-id Graph echoed for the last call (what `correlated` sent).
        self.last_client_request_id: str | None = None
        self._correlation: str | None = None

    @contextmanager
    def correlated(self, request_id: str | None) -> Iterator[None]:
        """Send `request_id` as the `client-request-id` of every call made in the block, so
        Graph's logs (and its `innerError`) name the SCIM request that caused them. Graph
        takes a GUID there: another id is not sent (the worker's log still pairs it with
        Graph's request-id)."""
        previous = self._correlation
        self._correlation = request_id if is_guid(request_id) else None
        # What the block's calls answer, not an earlier block's.
        self.last_request_id = self.last_client_request_id = None
        try:
            yield
        finally:
            self._correlation = previous

    # ------------------------------------------------------------ transport

    def _url(self, path: str) -> str:
        return path if path.startswith(("https://", "http://")) else self.settings.graph_url + path

    def object_url(self, object_id: str) -> str:
        """The `@odata.id` of a directory object, as `$ref` and `@odata.bind` want it."""
        return f"{self.settings.graph_url}/directoryObjects/{quote(object_id, safe='')}"

    def user_ref(self, upn: str) -> str:
        """The `@odata.id` of a user named by its userPrincipalName, for a `$batch` part that
        cannot know the id another part creates. group-post-members documents "a reference by
        ID" (https://learn.microsoft.com/graph/api/group-post-members); a Microsoft Graph team
        member's answer shows `users/{userPrincipalName}` working there too
        (https://stackoverflow.com/questions/47653515). The UPN is one path segment: all but
        the `@` and RFC 3986's unreserved characters is percent-encoded (`#` would start a
        fragment, `^` is not allowed in a URL)."""
        return f"{self.settings.graph_url}/users/{quote(upn, safe='@')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        member_add: bool = False,
    ) -> requests.Response:
        """One Graph call; a failure raises its typed GraphError."""
        url = self._url(path)
        if not url.startswith(self._origin + "/"):
            # A next or delta link pointing elsewhere must not receive the bearer token.
            raise GraphError(f"{method} {url}: not under GRAPH_URL; refused")
        sent = {"Authorization": f"Bearer {self.tokens.token()}", **(headers or {})}
        if self._correlation is not None:
            sent.setdefault("client-request-id", self._correlation)
        try:
            response = self.session.request(method, url, json=json, params=params, headers=sent)
        except requests.exceptions.SSLError:
            self.stats.count(None)
            raise TlsError(f"{method} {path}: TLS verification failed") from None
        except requests.Timeout:
            self.stats.count(None)
            raise Transient(f"{method} {path}: timed out") from None
        except requests.RequestException as exc:  # refused, reset, a body cut short
            self.stats.count(None)
            raise Transient(f"{method} {path}: connection failed ({type(exc).__name__})") from None
        self.stats.count(response.status_code)
        # For the logs: the request id Graph gave the last call of this client, and the
        # client-request-id it echoed.
        self.last_request_id = response.headers.get("request-id")
        self.last_client_request_id = response.headers.get("client-request-id")
        if response.status_code >= 400:
            raise from_response(response, member_add=member_add)
        return response

    @staticmethod
    def _json(response: requests.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise Transient(f"Graph answered {response.status_code} without JSON") from None
        if not isinstance(body, dict):
            raise Transient(f"Graph answered {response.status_code} with unexpected JSON")
        return body

    def _get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        return self._json(self.request("GET", path, params=params))

    def _pages(
        self, path: str, params: dict[str, str] | None, headers: dict[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Follow `@odata.nextLink` as given: its `$skiptoken` is opaque."""
        page = self._json(self.request("GET", path, params=params, headers=headers))
        while True:
            yield page
            link = page.get("@odata.nextLink")
            if not link:
                return
            page = self._get(link)

    # ------------------------------------------------------------ users
    # https://learn.microsoft.com/graph/api/resources/user

    def create_user(self, user: dict[str, Any]) -> dict[str, Any]:
        """POST /users (user-post-users): `accountEnabled`, `displayName`, `mailNickname`,
        `userPrincipalName` and `passwordProfile` are required."""
        return self._json(self.request("POST", "/users", json=user))

    def get_user(self, user_id: str, select: Sequence[str] = ()) -> dict[str, Any]:
        params = {"$select": ",".join(select)} if select else None
        return self._get(f"/users/{quote(user_id, safe='@')}", params)

    def find_user(self, upn: str, select: Sequence[str] = ()) -> dict[str, Any] | None:
        """The user whose userPrincipalName is `upn` (case-insensitive in Graph), or None."""
        params = {"$filter": f"userPrincipalName eq {_odata_string(upn)}"}
        if select:
            params["$select"] = ",".join(select)
        values = self._get("/users", params).get("value") or []
        return values[0] if values else None

    def list_users(
        self,
        *,
        filter: str | None = None,
        select: Sequence[str] = (),
        top: int | None = None,
        on_count: Callable[[int], None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """GET /users, every page (user-list). `top` is 1-999 per page. With `on_count`, the
        first page also asks for the total ($count=true, which needs ConsistencyLevel:
        eventual: aad-advanced-queries) and hands it over before the first user."""
        params: dict[str, str] = {}
        if filter:
            params["$filter"] = filter
        if select:
            params["$select"] = ",".join(select)
        if top is not None:
            if not 1 <= top <= 999:
                raise ValueError("$top must be 1-999")
            params["$top"] = str(top)
        headers = None
        if on_count is not None:
            params["$count"] = "true"
            headers = {"ConsistencyLevel": "eventual"}
        for page in self._pages("/users", params or None, headers):
            if on_count is not None and "@odata.count" in page:
                on_count(int(page["@odata.count"]))
            yield from page.get("value") or []

    def update_user(self, user_id: str, changes: dict[str, Any]) -> None:
        """PATCH /users/{id} (user-update): 204."""
        self.request("PATCH", f"/users/{quote(user_id, safe='')}", json=changes)

    def set_password(self, user_id: str, password: str, *, force_change: bool) -> None:
        """A password reset through `passwordProfile`, on its own: a refused reset must not take
        other changes down with it (graph.md)."""
        profile = {"password": password, "forceChangePasswordNextSignIn": force_change}
        self.update_user(user_id, {"passwordProfile": profile})

    def delete_user(self, user_id: str) -> None:
        """DELETE /users/{id}: a soft delete, restorable for 30 days (user-delete)."""
        self.request("DELETE", f"/users/{quote(user_id, safe='')}")

    def restore_deleted(self, object_id: str) -> dict[str, Any]:
        """POST /directory/deletedItems/{id}/restore (directory-deleteditems-restore)."""
        path = f"/directory/deletedItems/{quote(object_id, safe='')}/restore"
        return self._json(self.request("POST", path))

    def deleted_user_ids(self, pace: Callable[[], None] | None = None) -> Iterator[str]:
        """The ids of the users in directory/deletedItems, restorable (directory-deleteditems-
        list: `GET /directory/deletedItems/microsoft.graph.user`)."""
        if pace is not None:
            pace()
        page = self._get("/directory/deletedItems/microsoft.graph.user", {"$select": "id"})
        while True:
            for user in page.get("value") or []:
                yield str(user["id"])
            link = page.get("@odata.nextLink")
            if not link:
                return
            if pace is not None:
                pace()
            page = self._get(str(link))

    def revoke_sign_in_sessions(self, user_id: str) -> None:
        """POST /users/{id}/revokeSignInSessions (user-revokesigninsessions)."""
        self.request("POST", f"/users/{quote(user_id, safe='')}/revokeSignInSessions")

    def users_delta(
        self,
        delta_link: str | None = None,
        select: Sequence[str] = (),
        *,
        pace: Callable[[], None] | None = None,
        page_size: int | None = None,
    ) -> DeltaPage:
        """GET /users/delta, every page, to the new delta link (user-delta). Removed users come
        as `{"id", "@removed": {"reason"}}`: "changed" while restorable, "deleted" once gone.
        `select` may name `manager`, answered as `manager@delta`."""
        return self.delta("/users/delta", delta_link, select, pace=pace, page_size=page_size)

    def groups_delta(
        self,
        delta_link: str | None = None,
        select: Sequence[str] = ("displayName", "mailNickname", "members"),
        *,
        pace: Callable[[], None] | None = None,
        page_size: int | None = None,
    ) -> DeltaPage:
        """GET /groups/delta, every page, to the new delta link (group-delta). With `members`
        selected each group carries `members@delta`: all its members in the first round,
        then those added, and those removed with `"@removed": {"reason": "deleted"}`."""
        return self.delta("/groups/delta", delta_link, select, pace=pace, page_size=page_size)

    def delta(
        self,
        path: str,
        delta_link: str | None,
        select: Sequence[str],
        *,
        pace: Callable[[], None] | None = None,
        page_size: int | None = None,
    ) -> DeltaPage:
        """One round of a delta query (delta-query-overview): from `path` with `$select` (a
        first round) or from a saved `@odata.deltaLink`, following each `@odata.nextLink`
        as given, to the next `@odata.deltaLink`. Query parameters go only on the first
        request: Graph encodes them into its links. `pace` is called before each request
        (the caller's read budget); `page_size` asks for pages that large with
        `Prefer: odata.maxpagesize`. One object may come on several pages (a large group's
        members): its items are merged, its `…@delta` lists joined."""
        params = {"$select": ",".join(select)} if select and not delta_link else None
        headers = {"Prefer": f"odata.maxpagesize={page_size}"} if page_size else None
        merged: dict[str, dict[str, Any]] = {}
        url: str = delta_link or path
        while True:
            if pace is not None:
                pace()
            page = self._json(self.request("GET", url, params=params, headers=headers))
            params = None
            for item in page.get("value") or []:
                _merge_delta_item(merged, item)
            if page.get("@odata.deltaLink"):
                return DeltaPage(list(merged.values()), str(page["@odata.deltaLink"]))
            link = page.get("@odata.nextLink")
            if not link:
                raise GraphError(f"{path} ended without a deltaLink")
            url = str(link)

    def set_manager(self, user_id: str, manager_id: str) -> None:
        """PUT /users/{id}/manager/$ref (user-post-manager)."""
        path = f"/users/{quote(user_id, safe='')}/manager/$ref"
        self.request("PUT", path, json={"@odata.id": self.object_url(manager_id)})

    def manager(self, user_id: str) -> dict[str, Any] | None:
        """GET /users/{id}/manager (user-list-manager); None when there is none (404)."""
        try:
            return self._get(f"/users/{quote(user_id, safe='')}/manager")
        except NotFound:
            return None

    def remove_manager(self, user_id: str) -> None:
        """DELETE /users/{id}/manager/$ref (user-delete-manager)."""
        self.request("DELETE", f"/users/{quote(user_id, safe='')}/manager/$ref")

    # ------------------------------------------------------------ groups
    # https://learn.microsoft.com/graph/api/resources/group

    def create_security_group(
        self,
        display_name: str,
        mail_nickname: str,
        *,
        description: str | None = None,
        member_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        """POST /groups (group-post-groups): a security group, with up to 20 members bound."""
        body: dict[str, Any] = {
            "displayName": display_name,
            "mailEnabled": False,
            "mailNickname": mail_nickname,
            "securityEnabled": True,
            "groupTypes": [],
        }
        if description:
            body["description"] = description
        if member_ids:
            body["members@odata.bind"] = self._binds(member_ids)
        return self._json(self.request("POST", "/groups", json=body))

    def get_group(self, group_id: str, select: Sequence[str] = ()) -> dict[str, Any]:
        params = {"$select": ",".join(select)} if select else None
        return self._get(f"/groups/{quote(group_id, safe='')}", params)

    def update_group(self, group_id: str, changes: dict[str, Any]) -> None:
        self.request("PATCH", f"/groups/{quote(group_id, safe='')}", json=changes)

    def delete_group(self, group_id: str) -> None:
        self.request("DELETE", f"/groups/{quote(group_id, safe='')}")

    def add_member(self, group_id: str, object_id: str) -> None:
        """POST /groups/{id}/members/$ref (group-post-members). A member already there raises
        Conflict; an unknown object raises NotFound."""
        self.request(
            "POST",
            f"/groups/{quote(group_id, safe='')}/members/$ref",
            json={"@odata.id": self.object_url(object_id)},
            member_add=True,
        )

    def add_members(self, group_id: str, object_ids: Sequence[str]) -> None:
        """Up to 20 members in one PATCH with `members@odata.bind` (group-update). One bad
        entry and none are added."""
        self.request(
            "PATCH",
            f"/groups/{quote(group_id, safe='')}",
            json={"members@odata.bind": self._binds(object_ids)},
            member_add=True,
        )

    def remove_member(self, group_id: str, object_id: str) -> None:
        """DELETE /groups/{id}/members/{member}/$ref (group-delete-members). Always with
        `/$ref`: without it Graph deletes the member object itself."""
        path = f"/groups/{quote(group_id, safe='')}/members/{quote(object_id, safe='')}/$ref"
        self.request("DELETE", path)

    def member_ids(self, group_id: str) -> Iterator[str]:
        """Every member's id, page by page (group-list-members), 999 a page (`$top`: 100 by
        default), so a drift repair of a 2,000-member group reads it in 3 pages, not 20."""
        path = f"/groups/{quote(group_id, safe='')}/members"
        for page in self._pages(path, {"$select": "id", "$top": "999"}):
            for member in page.get("value") or []:
                yield str(member["id"])

    def _binds(self, object_ids: Sequence[str]) -> list[str]:
        if len(object_ids) > BIND_LIMIT:
            raise ValueError(f"members@odata.bind takes at most {BIND_LIMIT} members")
        return [self.object_url(i) for i in object_ids]

    # ------------------------------------------------------------ mail

    def send_mail(self, sender: str, body: dict[str, Any]) -> None:
        """POST /users/{id | userPrincipalName}/sendMail (user-sendmail.md,
        microsoftgraph/microsoft-graph-docs-contrib api-reference/v1.0/api/user-sendmail.md):
        `body` is `{"message": …, "saveToSentItems": …}`; an app needs the application
        permission Mail.Send. Success is 202 Accepted with no body: accepted for delivery,
        which Exchange Online's own limits may still delay. Failures raise as every call's;
        another 2xx is taken as accepted too (sending again could deliver the mail twice)."""
        self.request("POST", f"/users/{quote(sender, safe='@')}/sendMail", json=body)

    # ------------------------------------------------------------ domains and batches

    def domains(self) -> list[dict[str, Any]]:
        """GET /domains (domain-list): `id`, `isDefault`, `isVerified`, `authenticationType`."""
        return [d for page in self._pages("/domains", None) for d in page.get("value") or []]

    def batch(self, parts: Sequence[BatchRequest]) -> list[BatchResult]:
        """POST /$batch (json-batching): at most 20 parts; results in the order of `parts`.
        Each part's failure is typed in its result, never raised."""
        if not parts:
            return []
        if len(parts) > BATCH_LIMIT:
            raise ValueError(f"A batch takes at most {BATCH_LIMIT} requests")
        body = {"requests": [p.to_json() for p in parts]}
        answer = self._json(self.request("POST", "/$batch", json=body))
        by_id = {str(r.get("id")): r for r in answer.get("responses") or []}
        results = []
        for part in parts:
            raw = by_id.get(part.id)
            if raw is None:
                missing = Transient(f"$batch answered nothing for part {part.id}")
                results.append(BatchResult(part.id, 0, {}, None, missing))
                continue
            status = int(raw.get("status", 0))
            headers = {str(k): str(v) for k, v in (raw.get("headers") or {}).items()}
            payload = raw.get("body")
            error = (
                classify(status, payload, headers, member_add="/members/$ref" in part.url)
                if status >= 400 or status == 0
                else None
            )
            results.append(BatchResult(part.id, status, headers, payload, error))
        self.stats.count_throttled_parts(sum(1 for r in results if r.status == 429))
        return results
