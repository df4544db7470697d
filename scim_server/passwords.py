"""The directory's password policy, which is Microsoft 365's: a password Graph would refuse
is refused at the SCIM request (400), not found later as a dead letter.

Entra's rules (learn.microsoft.com/entra/identity/authentication/concept-sspr-policy):
8 to 256 characters, printable ASCII only, and three of four classes: lower-case letters,
upper-case letters, digits, symbols.
"""

from __future__ import annotations

import secrets
import string

from scim_server.errors import InvalidValue

MIN_LENGTH, MAX_LENGTH = 8, 256


def check(password: str) -> None:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise InvalidValue(
            f"password must be {MIN_LENGTH} to {MAX_LENGTH} characters long (Microsoft 365's "
            "password policy)."
        )
    if any(not (" " <= c <= "~") for c in password):
        raise InvalidValue(
            "password may hold only printable ASCII characters (Microsoft 365's password policy)."
        )
    classes = (
        any(c.islower() for c in password),
        any(c.isupper() for c in password),
        any(c.isdigit() for c in password),
        any(not c.isalnum() for c in password),
    )
    if sum(classes) < 3:
        raise InvalidValue(
            "password must mix three of: lower-case letters, upper-case letters, digits and "
            "symbols (Microsoft 365's password policy)."
        )


def generate(length: int = 16) -> str:
    """A strong random password that meets the policy: all four classes, `length` long."""
    alphabet = string.ascii_letters + string.digits + "!#%+-=?@^_"
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if (
            any(c.islower() for c in candidate)
            and any(c.isupper() for c in candidate)
            and any(c.isdigit() for c in candidate)
            and any(not c.isalnum() for c in candidate)
        ):
            return candidate
