"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives, optionally with
STARTTLS or implicit TLS (SMTPS, RFC 8314) and a login, for the tests of outgoing email."""

from __future__ import annotations

import logging
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from scim_server.graph.emulator import tls


@dataclass
class Inbox:
    host: str
    port: int
    ca_bundle: str | None = None
    implicit_tls: bool = False
    messages: list[tuple[list[str], Message]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # recipients answered 550

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"

    def env(self, **extra: str) -> dict[str, str]:
        values = {
            "SMTP_HOST": self.host,
            "SMTP_PORT": str(self.port),
            "SMTP_FROM": "Directory <directory@example.com>",
            "SMTP_STARTTLS": "true" if self.ca_bundle and not self.implicit_tls else "false",
        }
        if self.implicit_tls:
            values["SMTP_SSL"] = "true"
        if self.ca_bundle:
            values["SMTP_CA_BUNDLE"] = self.ca_bundle
        return {**values, **extra}


class _Controller(Controller):
    def factory(self) -> Any:
        """aiosmtpd's SMTP for each connection (its documented override). Over SMTPS it
        warns of AUTH without TLS, which it cannot see: every byte is under TLS there."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return super().factory()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def smtp_server(
    tls_dir: Path | None = None,
    login: tuple[str, str] | None = None,
    *,
    implicit_tls: bool = False,
) -> Iterator[Inbox]:
    """With `tls_dir`, STARTTLS is offered and required, under a CA written there (and a
    certificate for 127.0.0.1 it signed, both made now); with `implicit_tls` too, TLS starts
    at the first byte instead (SMTP_SSL, port 465's protocol). With `login`, AUTH is required
    too and only that user name and password pass."""
    # aiosmtpd logs each message line at DEBUG: that is the recipient's mailbox speaking, not
    # the server under test, whose logs the secret scans read.
    logging.getLogger("mail.log").setLevel(logging.INFO)
    inbox = Inbox("127.0.0.1", _free_port())
    params: dict[str, Any] = {}
    if tls_dir is not None:
        files = tls.generate(tls_dir, "127.0.0.1")
        inbox.ca_bundle = str(files.ca_bundle)
        if implicit_tls:
            inbox.implicit_tls = True
            # aiosmtpd's Controller wraps the listening socket: SMTPS.
            params.update(ssl_context=files.server_context())
        else:
            params.update(tls_context=files.server_context(), require_starttls=True)
    if login is not None:

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> AuthResult:
            ok = (
                isinstance(auth_data, LoginPassword)
                and (
                    auth_data.login.decode(),
                    auth_data.password.decode(),
                )
                == login
            )
            if ok:
                inbox.logins.append(auth_data.login.decode())
            return AuthResult(success=ok, handled=False)

        # aiosmtpd knows only its own STARTTLS as TLS: over SMTPS it would hide AUTH, so it
        # is not asked to require TLS there (every byte is under TLS already).
        params.update(
            authenticator=authenticator, auth_required=True, auth_require_tls=not implicit_tls
        )
    if implicit_tls and tls_dir is None:
        raise ValueError("implicit TLS needs tls_dir")
    controller = _Controller(inbox, hostname=inbox.host, port=inbox.port, **params)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()
