"""Sealing secrets that must wait in the outbox (a password on its way to Microsoft 365):
Fernet (AES-128-CBC with HMAC-SHA256, from the `cryptography` package) under keys from the
configuration, so the plaintext never rests in the database in the clear.

The keys are SCIM_ENCRYPTION_KEYS, a comma-separated list of Fernet keys (32 url-safe base64
bytes each, made with `scim-server keygen`): the first seals, every one opens
(`cryptography`'s MultiFernet), so a key is rotated by putting a new one first, re-sealing
what waits (`scim-server sync reseal`), then dropping the old one. SCIM_ENCRYPTION_KEY, one
key, is still read when the list is unset. Without either, a key file in the instance folder
is made on first use and shared by the processes of one machine; several machines need the
variable.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from scim_server.config import ConfigError

_lock = threading.Lock()
_keys: dict[tuple[str, ...], MultiFernet] = {}


class SealBroken(Exception):
    """A sealed value cannot be opened: the key changed, or the value was tampered with."""


def new_key() -> str:
    return Fernet.generate_key().decode()


def _configured() -> tuple[str, tuple[str, ...]]:
    """(the variable, its keys), or ("", ()) when neither variable is set."""
    many = os.environ.get("SCIM_ENCRYPTION_KEYS", "").strip()
    one = os.environ.get("SCIM_ENCRYPTION_KEY", "").strip()
    if many and one:
        raise ConfigError(
            "Set SCIM_ENCRYPTION_KEYS or SCIM_ENCRYPTION_KEY, not both "
            "(SCIM_ENCRYPTION_KEYS takes the old key after the new one)"
        )
    if many:
        return "SCIM_ENCRYPTION_KEYS", tuple(k.strip() for k in many.split(",") if k.strip())
    if one:
        return "SCIM_ENCRYPTION_KEY", (one,)
    return "", ()


def fernet(instance_path: str) -> MultiFernet:
    """The keys in force: the first seals, every one opens."""
    _name, raw = _configured()
    cache_key = raw or (instance_path,)
    with _lock:
        found = _keys.get(cache_key)
        if found is None:
            keys = [Fernet(k.encode()) for k in raw] or [Fernet(_key_file(instance_path))]
            found = _keys[cache_key] = MultiFernet(keys)
        return found


def check_key() -> None:
    """The configured keys must be Fernet keys: said at start, not at first use. The message
    names the variable and the key's place in the list, never the key."""
    name, raw = _configured()
    for place, key in enumerate(raw, start=1):
        try:
            Fernet(key.encode())
        except ValueError:
            which = f" (key {place} of {len(raw)})" if len(raw) > 1 else ""
            raise ConfigError(
                f"{name} must hold Fernet keys (32 url-safe base64-encoded bytes each){which}; "
                "make one with `scim-server keygen`"
            ) from None


def _key_file(instance_path: str) -> bytes:
    path = Path(instance_path) / "encryption.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as out:
        out.write(new_key())
    return path.read_bytes().strip()


def seal(instance_path: str, secret: str) -> str:
    return fernet(instance_path).encrypt(secret.encode()).decode()


def unseal(instance_path: str, token: str) -> str:
    try:
        return fernet(instance_path).decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        raise SealBroken(_BROKEN) from None


def reseal(instance_path: str, token: str) -> str:
    """The same secret, sealed under the first key (MultiFernet.rotate)."""
    try:
        return fernet(instance_path).rotate(token.encode()).decode()
    except (InvalidToken, ValueError):
        raise SealBroken(_BROKEN) from None


_BROKEN = (
    "A sealed password cannot be opened: none of the keys in SCIM_ENCRYPTION_KEYS (or "
    "SCIM_ENCRYPTION_KEY, or the instance key file) is the one it was sealed with."
)
