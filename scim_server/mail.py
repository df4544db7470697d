"""Outgoing email (activation links) through an SMTP relay, configured by SMTP_* variables."""

from __future__ import annotations

import os
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid

from scim_server.config import ConfigError, env_int


class MailError(RuntimeError):
    """The relay refused or could not be reached; the message names the relay, never the
    credentials."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    starttls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None  # a private CA for STARTTLS; the system's by default
    timeout: float = 30.0

    @classmethod
    def from_env(cls) -> SmtpSettings:
        host = os.environ.get("SMTP_HOST", "").strip()
        sender = os.environ.get("SMTP_FROM", "").strip()
        if not host or not sender:
            raise ConfigError(
                "email needs an SMTP relay: set SMTP_HOST and SMTP_FROM "
                "(and SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD, SMTP_STARTTLS as it requires)"
            )
        raw_tls = os.environ.get("SMTP_STARTTLS", "true").strip().lower()
        if raw_tls not in {"true", "false", "1", "0", "yes", "no"}:
            raise ConfigError(f"SMTP_STARTTLS must be true or false, got {raw_tls!r}")
        starttls = raw_tls in {"true", "1", "yes"}
        port = env_int("SMTP_PORT", 587 if starttls else 25)
        username = os.environ.get("SMTP_USERNAME") or None
        password = os.environ.get("SMTP_PASSWORD") or None
        if username and not starttls:
            # Credentials in the clear over the network: refuse rather than leak them.
            raise ConfigError("SMTP_USERNAME is set but SMTP_STARTTLS is false")
        return cls(
            host=host,
            port=port,
            sender=sender,
            starttls=starttls,
            username=username,
            password=password,
            ca_bundle=os.environ.get("SMTP_CA_BUNDLE") or None,
        )


def message(sender: str, to: str, subject: str, text: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    # Plain 7-bit when the text allows: quoted-printable would cut the link across lines for
    # anyone reading the raw message (a relay's log, a test server's output).
    msg.set_content(text, cte="7bit" if text.isascii() else "quoted-printable")
    return msg


def send(settings: SmtpSettings, msg: EmailMessage) -> None:
    where = f"{settings.host}:{settings.port}"
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout) as smtp:
            if settings.starttls:
                context = ssl.create_default_context(cafile=settings.ca_bundle)
                smtp.starttls(context=context)
            if settings.username:
                smtp.login(settings.username, settings.password or "")
            smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError:
        raise MailError(f"the SMTP relay {where} refused SMTP_USERNAME/SMTP_PASSWORD") from None
    except smtplib.SMTPNotSupportedError:
        raise MailError(f"the SMTP relay {where} does not offer STARTTLS") from None
    except ssl.SSLError as exc:
        raise MailError(f"TLS with the SMTP relay {where} failed: {exc.reason}") from None
    except smtplib.SMTPException as exc:
        raise MailError(f"the SMTP relay {where} refused the message: {exc}") from None
    except OSError as exc:
        raise MailError(f"cannot reach the SMTP relay {where}: {exc.strerror or exc}") from None
