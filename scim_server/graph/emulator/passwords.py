"""Entra's password rules for cloud users, and how the emulator keeps passwords (hashed).

https://learn.microsoft.com/en-us/entra/identity/authentication/concept-password-ban-bad-combined-policy
(8 to 256 characters, 3 of 4 classes: lowercase, uppercase, digits, symbols) and
https://learn.microsoft.com/en-us/entra/identity/authentication/concept-sspr-policy
(characters allowed: A-Z a-z 0-9, the ASCII symbols and a blank space; not allowed: Unicode
characters).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import string

COMPLEXITY_MESSAGE = (
    "The specified password does not comply with password complexity requirements. "
    "Please provide a different password."
)

_SYMBOLS = set("@#$%^&*-_!+=[]{}|\\:',.?/`~\"();<> ")


def is_complex(password: str) -> bool:
    if not 8 <= len(password) <= 256:
        return False
    # The allowed characters are exactly printable ASCII: no Unicode, no control characters.
    if any(not " " <= c <= "~" for c in password):
        return False
    classes = [
        any(c in string.ascii_lowercase for c in password),
        any(c in string.ascii_uppercase for c in password),
        any(c in string.digits for c in password),
        any(c in _SYMBOLS for c in password),
    ]
    return sum(classes) >= 3


# An emulator needs no slow hash, only one that never keeps the password in clear.
_N, _R, _P = 2**12, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    _, salt_hex, digest_hex = stored.split("$")
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=_N, r=_R, p=_P)
    return hmac.compare_digest(digest.hex(), digest_hex)
