"""Sealing secrets that must wait in the outbox (a password on its way to Microsoft 365):
Fernet (AES-128-CBC with HMAC-SHA256, from the `cryptography` package) under a key from the
configuration, so the plaintext never rests in the database in the clear.

The key is SCIM_ENCRYPTION_KEY (a Fernet key: 32 url-safe base64 bytes, made with
`scim-server keygen`); without it, a key file in the instance folder is made on first use and
shared by the processes of one machine. Several machines need the variable.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from scim_server.config import ConfigError

_lock = threading.Lock()
_keys: dict[str, Fernet] = {}


class SealBroken(Exception):
    """A sealed value cannot be opened: the key changed, or the value was tampered with."""


def new_key() -> str:
    return Fernet.generate_key().decode()


def fernet(instance_path: str) -> Fernet:
    raw = os.environ.get("SCIM_ENCRYPTION_KEY", "").strip()
    cache_key = raw or instance_path
    with _lock:
        found = _keys.get(cache_key)
        if found is None:
            found = _keys[cache_key] = Fernet(raw.encode() if raw else _key_file(instance_path))
        return found


def check_key() -> None:
    """SCIM_ENCRYPTION_KEY, when set, must be a Fernet key: said at start, not at first use."""
    raw = os.environ.get("SCIM_ENCRYPTION_KEY", "").strip()
    if raw:
        try:
            Fernet(raw.encode())
        except ValueError:
            raise ConfigError(
                "SCIM_ENCRYPTION_KEY must be a Fernet key (32 url-safe base64-encoded bytes); "
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
        raise SealBroken(
            "A sealed password cannot be opened: SCIM_ENCRYPTION_KEY (or the instance key "
            "file) changed since it was sealed."
        ) from None
