"""Access and ID tokens the emulator issues (JWTs signed with a per-run HMAC key), the RS256
keys it publishes and signs Entra provisioning tokens with, and the check of a certificate
client assertion.

Entra's tokens are RS256 JWTs; nothing in the project validates them, it only sends them back,
so an HMAC key that never leaves the process is enough to tell the emulator's own tokens apart.
Client assertions follow
https://learn.microsoft.com/en-us/entra/identity-platform/certificate-credentials
(RS256 or PS256, `aud` the token endpoint, `iss` = `sub` = the client id).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GRAPH_RESOURCE = "https://graph.microsoft.com"
ACCESS_TOKEN_LIFETIME = 3599  # msal treats a token with under 5 minutes left as expired


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenError(Exception):
    """A token that is missing, malformed, forged or expired; the message says which."""


class TokenIssuer:
    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or os.urandom(32)

    def _sign(self, signing_input: bytes) -> str:
        return b64url(hmac.new(self._key, signing_input, hashlib.sha256).digest())

    def encode(self, claims: dict[str, Any]) -> str:
        header = b64url(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
        payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        return f"{header}.{payload}.{self._sign(signing_input)}"

    def access_token(
        self, *, tenant_id: str, app_id: str, issuer: str, user_id: str | None = None
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": GRAPH_RESOURCE,
            "iss": issuer,
            "iat": now,
            "nbf": now,
            "exp": now + ACCESS_TOKEN_LIFETIME,
            "tid": tenant_id,
            "appid": app_id,
            "idtyp": "user" if user_id else "app",
            "uti": uuid.uuid4().hex,
        }
        if user_id:
            claims["oid"] = user_id
        return self.encode(claims)

    def verify(self, token: str) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise TokenError("IDX14100: JWT is not well formed.")
        signing_input = f"{parts[0]}.{parts[1]}".encode()
        # Bytes, not str: compare_digest refuses a str with a non-ASCII character.
        if not hmac.compare_digest(self._sign(signing_input).encode(), parts[2].encode()):
            raise TokenError("Access token validation failure. Invalid signature.")
        try:
            claims: dict[str, Any] = json.loads(b64url_decode(parts[1]))
        except ValueError as e:
            raise TokenError("IDX14100: JWT is not well formed.") from e
        if claims.get("aud") != GRAPH_RESOURCE:
            raise TokenError("Access token validation failure. Invalid audience.")
        if int(claims.get("exp", 0)) <= time.time():
            raise TokenError("Lifetime validation failed, the token is expired.")
        return claims


# The token Entra's provisioning service sends a non-gallery app when its Secret Token is
# blank (entra-docs, use-scim-to-provision-users-and-groups.md): issuer sts.windows.net, the
# custom-app template id as audience, RS256 with a key from the tenant's JWKS.
PROVISIONING_AUDIENCE = "8adf8e6e-67b2-4cf2-a259-e3dc5476c621"
PUBLISHED_KEYS = 3  # Entra publishes several keys at once; the newest signs


class SigningKeys:
    """RSA keys published at the tenant's `jwks_uri`, made on first use (a 2048-bit key takes
    tens of milliseconds). `rotate` adds a newer key that signs from then on, as Entra's
    key roll-over does; the older ones stay published for a while."""

    def __init__(self) -> None:
        self._keys: list[tuple[str, rsa.RSAPrivateKey]] = []
        self._lock = threading.Lock()

    def _current(self) -> tuple[str, rsa.RSAPrivateKey]:
        with self._lock:
            if not self._keys:
                self._keys.append(_new_key())
            return self._keys[-1]

    def rotate(self) -> str:
        with self._lock:
            self._keys.append(_new_key())
            del self._keys[:-PUBLISHED_KEYS]
            return self._keys[-1][0]

    def jwks(self) -> dict[str, Any]:
        self._current()
        with self._lock:
            keys = list(self._keys)
        return {"keys": [_jwk(kid, key.public_key()) for kid, key in keys]}

    def provisioning_token(
        self,
        tenant_id: str,
        *,
        expires_in: int = ACCESS_TOKEN_LIFETIME,
        not_before_in: int = 0,
        audience: str = PROVISIONING_AUDIENCE,
        issuer: str | None = None,
        unpublished_key: bool = False,
        algorithm: str = "RS256",
    ) -> str:
        now = int(time.time())
        claims = {
            "aud": audience,
            "iss": issuer or f"https://sts.windows.net/{tenant_id}/",
            "iat": now,
            "nbf": now + not_before_in,
            "exp": now + expires_in,
            "tid": tenant_id,
            "appid": PROVISIONING_AUDIENCE,
            "idtyp": "app",
            "uti": uuid.uuid4().hex,
        }
        if algorithm == "HS256":  # a token no published key can have signed
            return jwt.encode(claims, os.urandom(32), algorithm="HS256")
        kid, key = _new_key() if unpublished_key else self._current()
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def _new_key() -> tuple[str, rsa.RSAPrivateKey]:
    return uuid.uuid4().hex[:16], rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(kid: str, public: rsa.RSAPublicKey) -> dict[str, Any]:
    numbers = public.public_numbers()

    def b64int(value: int) -> str:
        return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "use": "sig", "kid": kid, "n": b64int(numbers.n), "e": b64int(numbers.e)}


def verify_client_assertion(
    assertion: str, certificate: x509.Certificate, client_id: str, token_endpoint: str
) -> str | None:
    """None if the assertion is good, else the reason (for an AADSTS description)."""
    parts = assertion.split(".")
    if len(parts) != 3:
        return "The client assertion is not a well-formed JWT."
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError:
        return "The client assertion is not a well-formed JWT."
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return "Only RSA certificates are supported."
    signing_input = f"{parts[0]}.{parts[1]}".encode()
    alg = header.get("alg")
    try:
        if alg == "RS256":
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "PS256":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
            key.verify(signature, signing_input, pss, hashes.SHA256())
        else:
            return f"Unsupported client assertion algorithm {alg!r}."
    except InvalidSignature:
        return "Client assertion contains an invalid signature."
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        return "Client assertion application identifier doesn't match 'client_id' parameter."
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if token_endpoint not in audiences:
        return "Client assertion audience claim does not match Realm issuer."
    if int(claims.get("exp", 0)) <= time.time():
        return "Client assertion is expired."
    return None
