"""Access and ID tokens the emulator issues (JWTs signed with a per-run HMAC key), and the
check of a certificate client assertion.

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
import time
import uuid
from typing import Any

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
