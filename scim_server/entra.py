"""The JWT that Microsoft Entra's provisioning service sends when the app's Secret Token is
left blank, checked against the tenant's published signing keys. Off unless
SCIM_ENTRA_TENANT_ID is set.

Microsoft's SCIM tutorial ("Integrate your SCIM endpoint with the Microsoft Entra
provisioning service", entra-docs docs/identity/app-provisioning/
use-scim-to-provision-users-and-groups.md) describes the token: issuer
`https://sts.windows.net/{tenant id}/`, audience the custom-app template id
`8adf8e6e-67b2-4cf2-a259-e3dc5476c621`; and says leaving the field blank "is primarily
available for testing purposes".

Checks, after https://learn.microsoft.com/en-us/entra/identity-platform/access-tokens
(validate tokens): the signature (RS256 only, a key from the tenant's `jwks_uri`, found
through its OpenID configuration), `iss`, `aud`, `exp` and `nbf` (all four required). Keys
are cached for a day and fetched again when a token names an unknown `kid` (Entra rolls its
keys), at most once a minute, so tokens with made-up `kid`s cannot make this server hammer
the authority. Requests that arrive during a fetch wait for it rather than start another;
day-old keys are fetched again in the background while a known `kid` keeps being answered.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import jwt
import requests

from scim_server.auth import AuthError, BadCredentials, Expired, Principal

log = logging.getLogger("scim_server.entra")

EXTENSION = "scim_entra"
# The application template id of every non-gallery ("custom") app: the token's audience.
AUDIENCE = "8adf8e6e-67b2-4cf2-a259-e3dc5476c621"
KEYS_MAX_AGE_SECONDS = 86400.0
REFRESH_MIN_INTERVAL_SECONDS = 60.0
LEEWAY_SECONDS = 60  # clock skew between Entra and this server
PRINCIPAL_NAME = "entra"


class NotYetValid(AuthError):
    """A token whose `nbf` is still ahead."""


class Unverifiable(AuthError):
    """The signing keys could not be fetched: not the client's fault, so not counted."""


class EntraVerifier:
    def __init__(
        self,
        tenant_id: str,
        authority_host: str,
        ca_bundle: str | None = None,
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        self.tenant_id = tenant_id
        self.issuer = f"https://sts.windows.net/{tenant_id}/"
        # The v1.0 OpenID configuration: its issuer is the sts.windows.net one above.
        self.discovery_url = (
            f"{authority_host.rstrip('/')}/{tenant_id}/.well-known/openid-configuration"
        )
        self.verify_tls: str | bool = ca_bundle or True
        self.timeout = timeout
        if session is None:
            session = requests.Session()
            session.trust_env = False  # REQUESTS_CA_BUNDLE must not override verify
        self.session = session
        self._keys: dict[str, Any] = {}
        self._fetched_at = -float("inf")  # when the keys we hold were fetched
        self._attempted_at = -float("inf")  # when a fetch last began: one a minute at most
        self._inflight: threading.Event | None = None  # a fetch under way
        self._lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise BadCredentials("The access token is not valid.") from None
        if header.get("alg") != "RS256":
            raise BadCredentials("The access token is not signed with RS256.")
        kid = header.get("kid")
        key = self._key(kid) if isinstance(kid, str) else None
        if key is None:
            raise BadCredentials("The access token is signed with an unknown key.")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                audience=AUDIENCE,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "nbf", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Expired("The access token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise NotYetValid("The access token is not valid yet.") from None
        except jwt.InvalidTokenError:
            raise BadCredentials("The access token is not valid.") from None
        return Principal(None, PRINCIPAL_NAME, False, "entra", float(claims["exp"]))

    @property
    def refreshing(self) -> bool:
        """A fetch of the keys is under way."""
        return self._inflight is not None

    def _key(self, kid: str) -> Any:
        """The key `kid` names, or None. A known key is answered at once, even a day old:
        the keys are then fetched again in the background, and no request waits on Entra.
        An unknown `kid` waits for a fetch (at most one a minute, shared by every request
        that asks meanwhile)."""
        waited = False
        while True:
            with self._lock:
                now = time.monotonic()
                may_fetch = now - self._attempted_at >= REFRESH_MIN_INTERVAL_SECONDS
                known = self._keys.get(kid)
                if known is not None:
                    aged = now - self._fetched_at >= KEYS_MAX_AGE_SECONDS
                    if aged and may_fetch and self._inflight is None:
                        threading.Thread(
                            target=self._refresh,
                            args=(self._begin_fetch(),),
                            daemon=True,
                            name="entra-keys",
                        ).start()
                    return known
                inflight = self._inflight
                if waited or (inflight is None and not may_fetch):
                    if not self._keys:
                        # The last fetch failed: the token is not at fault, not counted.
                        raise Unverifiable("The tenant's signing keys are not available.")
                    return None
                mine = None
                if inflight is None:
                    mine = inflight = self._begin_fetch()
            if mine is not None:
                self._refresh(mine)
            else:
                inflight.wait(2 * self.timeout + 1)  # discovery, then the keys
            waited = True

    def _begin_fetch(self) -> threading.Event:
        """Under the lock: mark a fetch under way (a failure waits its turn too)."""
        self._attempted_at = time.monotonic()
        self._inflight = threading.Event()
        return self._inflight

    def _refresh(self, done: threading.Event) -> None:
        """Fetch the keys; on a failure keep those we had (a request after a minute tries
        again)."""
        started = time.monotonic()
        keys: dict[str, Any] = {}
        try:
            keys = self._fetch()
        except Unverifiable:
            pass
        finally:
            with self._lock:
                if keys:
                    self._keys, self._fetched_at = keys, started
                self._inflight = None
            done.set()

    def _fetch(self) -> dict[str, Any]:
        try:
            config = self._get(self.discovery_url)
            if config.get("issuer") != self.issuer:
                log.error(
                    "Entra OpenID configuration names issuer %r, not %r: is "
                    "SCIM_ENTRA_TENANT_ID the tenant's directory id?",
                    config.get("issuer"),
                    self.issuer,
                )
                raise Unverifiable("The tenant's signing keys are not available.")
            document = self._get(str(config["jwks_uri"]))
            keys: dict[str, Any] = {}
            for jwk in document.get("keys", []):
                if jwk.get("kty") != "RSA" or jwk.get("use", "sig") != "sig" or "kid" not in jwk:
                    continue
                keys[str(jwk["kid"])] = jwt.PyJWK(jwk, algorithm="RS256").key
        except (requests.RequestException, ValueError, KeyError, TypeError, jwt.PyJWKError) as exc:
            log.warning("Entra signing keys could not be fetched: %s", type(exc).__name__)
            raise Unverifiable("The tenant's signing keys are not available.") from None
        log.info("Entra signing keys fetched: %d key(s)", len(keys))
        return keys

    def _get(self, url: str) -> dict[str, Any]:
        response = self.session.get(url, timeout=self.timeout, verify=self.verify_tls)
        response.raise_for_status()
        body = response.json()
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        return body


def install(app: Any) -> None:
    """Turn the check on for `app` when SCIM_ENTRA_TENANT_ID is set (keys are fetched at
    the first such token, not at start)."""
    tenant = app.config.get("SCIM_ENTRA_TENANT_ID")
    if not tenant:
        return
    from scim_server.graph.settings import identity_endpoint

    host, ca_bundle, timeout = identity_endpoint()
    app.extensions[EXTENSION] = EntraVerifier(tenant, host, ca_bundle, timeout)
