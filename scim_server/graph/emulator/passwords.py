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


# An emulator needs no slow hash, only one that never keeps the password in clear: scrypt at
# n=2**10 costs ~4 ms, where 2**12 cost ~15 ms, which at a sped-up write budget made the
# emulator, not the sync engine, what benchmarks/sync_drain.py measured on two cores.
_N, _R, _P = 2**10, 8, 1
_OLD_N = 2**12  # hashes written as scrypt$salt$digest (sandbox state files of earlier versions)


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return f"scrypt${_N}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    parts = stored.split("$")
    n, salt_hex, digest_hex = (
        (int(parts[1]), parts[2], parts[3]) if len(parts) == 4 else (_OLD_N, parts[1], parts[2])
    )
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=n, r=_R, p=_P)
    return hmac.compare_digest(digest.hex(), digest_hex)
