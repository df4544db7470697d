"""Outgoing email (activation links), through one of two transports that MAIL_TRANSPORT
chooses: an SMTP relay (SMTP_*, STARTTLS or implicit TLS), or Microsoft Graph's sendMail as
the tenant mailbox MAIL_SENDER, with the sync's msal + requests client (GRAPH_*).

MailError                   the mail did not go; one line for the admin, never a credential
├── RecipientRefused        this recipient was refused (the next message may go): SMTP's
│                           refused RCPT, Graph's 400 ErrorInvalidRecipients
├── MailboxNotFound         Graph: MAIL_SENDER is no user, or has no Exchange Online mailbox
├── SendDenied              Graph: the app may not send as MAIL_SENDER (ErrorSendAsDenied, an
│                           application access policy or RBAC scope, Mail.Send not granted)
└── MailThrottled           Graph: still 429 after the retries; run again later

Each transport's `send` takes a `Mail` and returns once the relay or Graph accepted it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Protocol

from scim_server.config import ConfigError, env_choice, env_int
from scim_server.graph import settings as graph_settings
from scim_server.graph.client import GraphClient
from scim_server.graph.errors import AuthError, GraphError, NotFound, Throttled
from scim_server.sync.policy import GiveUp, Policy

log = logging.getLogger("scim_server.mail")

TRANSPORTS = ("smtp", "graph")


class MailError(RuntimeError):
    """The mail did not go; the message names the relay or mailbox, never the credentials."""


class RecipientRefused(MailError):
    """This recipient was refused; other messages may still go."""


class MailboxNotFound(MailError):
    pass


class SendDenied(MailError):
    pass


class MailThrottled(MailError):
    pass


@dataclass(frozen=True)
class Mail:
    """One plain-text message to one recipient; the transport supplies the sender."""

    to: str
    subject: str
    text: str


class Transport(Protocol):
    @property
    def sender(self) -> str: ...  # the From address, for the admin's messages

    def send(self, mail: Mail) -> None: ...


# ---------------------------------------------------------------------------- settings

_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return None
    if raw not in _BOOLEANS:
        raise ConfigError(f"{name} must be true or false, got {raw!r}")
    return _BOOLEANS[raw]


# An address as MAIL_SENDER takes it: the mailbox's userPrincipalName or primary SMTP
# address, one `@`, no spaces or display name (Graph names the mailbox in the URL path).
_ADDRESS = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


def is_address(value: str) -> bool:
    return bool(_ADDRESS.match(value)) and ".." not in value


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    starttls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_bundle: str | None = None  # a private CA for TLS; the system's by default
    timeout: float = 30.0
    implicit_tls: bool = False  # SMTP_SSL: TLS from the first byte (port 465, RFC 8314)

    @property
    def tls(self) -> bool:
        return self.starttls or self.implicit_tls

    @classmethod
    def from_env(cls) -> SmtpSettings:
        host = os.environ.get("SMTP_HOST", "").strip()
        sender = os.environ.get("SMTP_FROM", "").strip()
        if not host or not sender:
            raise ConfigError(
                "email needs an SMTP relay: set SMTP_HOST and SMTP_FROM "
                "(and SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD, SMTP_STARTTLS or SMTP_SSL as it "
                "requires), or MAIL_TRANSPORT=graph"
            )
        implicit = _env_bool("SMTP_SSL") or False
        starttls_set = _env_bool("SMTP_STARTTLS")
        if implicit and starttls_set:
            raise ConfigError(
                "SMTP_SSL and SMTP_STARTTLS are both true: choose implicit TLS (SMTP_SSL, port "
                "465) or STARTTLS (port 587)"
            )
        starttls = (not implicit) if starttls_set is None else starttls_set
        port = env_int("SMTP_PORT", 465 if implicit else 587 if starttls else 25)
        username = os.environ.get("SMTP_USERNAME") or None
        password = os.environ.get("SMTP_PASSWORD") or None
        if username and not (starttls or implicit):
            # Credentials in the clear over the network: refuse rather than leak them.
            raise ConfigError("SMTP_USERNAME is set but neither SMTP_STARTTLS nor SMTP_SSL is")
        ca_bundle = os.environ.get("SMTP_CA_BUNDLE") or None
        if ca_bundle is not None and not os.path.isfile(ca_bundle):
            raise ConfigError(f"SMTP_CA_BUNDLE is not a file: {ca_bundle}")
        return cls(
            host=host,
            port=port,
            sender=sender,
            starttls=starttls,
            username=username,
            password=password,
            ca_bundle=ca_bundle,
            implicit_tls=implicit,
        )


@dataclass(frozen=True)
class GraphMailSettings:
    sender: str  # MAIL_SENDER: the mailbox (UPN or SMTP address) the mail is sent as


def rate_per_minute() -> int:
    """MAIL_RATE_PER_MINUTE: the most messages a bulk send sends a minute (0: unpaced).
    Exchange Online takes 30 a minute from one mailbox ("Sending limits",
    https://learn.microsoft.com/office365/servicedescriptions/exchange-online-service-description/exchange-online-limits#sending-limits-1);
    past it, mail is refused after Graph or the relay accepted it."""
    return env_int("MAIL_RATE_PER_MINUTE", 30, minimum=0)


def transport_name() -> str:
    return env_choice("MAIL_TRANSPORT", "smtp", TRANSPORTS).lower()


def settings_from_env() -> SmtpSettings | GraphMailSettings:
    """The chosen transport's settings; ConfigError (one line) for the first thing wrong."""
    sender = os.environ.get("MAIL_SENDER", "").strip()
    if transport_name() == "smtp":
        if sender:
            # Most likely MAIL_TRANSPORT=graph was meant: say so rather than ignore it.
            raise ConfigError(
                "MAIL_SENDER is set but MAIL_TRANSPORT is smtp (the SMTP sender is SMTP_FROM): "
                "set MAIL_TRANSPORT=graph, or unset MAIL_SENDER"
            )
        return SmtpSettings.from_env()
    if not sender:
        raise ConfigError(
            "MAIL_TRANSPORT=graph needs MAIL_SENDER, the mailbox the mail is sent as "
            "(e.g. directory@contoso.com)"
        )
    if not is_address(sender):
        raise ConfigError(f"MAIL_SENDER must be an email address, got {sender!r}")
    if graph_settings.from_env() is None:
        raise ConfigError(
            "MAIL_TRANSPORT=graph sends through the tenant's Microsoft Graph: set "
            "GRAPH_TENANT_ID and the app's GRAPH_* credentials (the sandbox tenant sends no mail)"
        )
    return GraphMailSettings(sender=sender)


def transport_from_env() -> Transport:
    settings = settings_from_env()
    if isinstance(settings, SmtpSettings):
        return SmtpTransport(settings)
    graph = graph_settings.from_env()
    assert graph is not None  # settings_from_env checked it
    return GraphTransport(settings.sender, GraphClient(graph))


# ---------------------------------------------------------------------------- SMTP


def message(sender: str, to: str, subject: str, text: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2].rstrip(">") or None)
    # Plain 7-bit when the text allows: quoted-printable would cut the link across lines for
    # anyone reading the raw message (a relay's log, a test server's output).
    msg.set_content(text, cte="7bit" if text.isascii() else "quoted-printable")
    return msg


def send(settings: SmtpSettings, msg: EmailMessage) -> None:
    where = f"{settings.host}:{settings.port}"
    try:
        context = ssl.create_default_context(cafile=settings.ca_bundle) if settings.tls else None
        smtp: smtplib.SMTP
        if settings.implicit_tls:
            # RFC 8314 §3: TLS from the first byte ("SMTPS", port 465).
            smtp = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with smtp:
            if settings.starttls:
                smtp.starttls(context=context)
            if settings.username:
                smtp.login(settings.username, settings.password or "")
            smtp.send_message(msg)
    except smtplib.SMTPAuthenticationError:
        raise MailError(f"the SMTP relay {where} refused SMTP_USERNAME/SMTP_PASSWORD") from None
    except smtplib.SMTPNotSupportedError:
        raise MailError(f"the SMTP relay {where} does not offer STARTTLS") from None
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(sorted(exc.recipients))
        raise RecipientRefused(f"the SMTP relay {where} refused the recipient {refused}") from None
    except ssl.SSLError as exc:
        raise MailError(f"TLS with the SMTP relay {where} failed: {exc.reason}") from None
    except smtplib.SMTPException as exc:
        raise MailError(f"the SMTP relay {where} refused the message: {exc}") from None
    except OSError as exc:
        raise MailError(f"cannot reach the SMTP relay {where}: {exc.strerror or exc}") from None


@dataclass
class SmtpTransport:
    settings: SmtpSettings

    @property
    def sender(self) -> str:
        return self.settings.sender

    def send(self, mail: Mail) -> None:
        send(self.settings, message(self.settings.sender, mail.to, mail.subject, mail.text))


# ---------------------------------------------------------------------------- Graph

# Tries of one sendMail (the first included) before a 429 or 5xx is the admin's to see, and
# the longest Retry-After waited for: a CLI should not hang for minutes.
GRAPH_MAIL_ATTEMPTS = 4
GRAPH_MAIL_MAX_WAIT_SECONDS = 60.0
MAILBOX_NOT_FOUND = ("ErrorInvalidUser", "MailboxNotEnabledForRESTAPI", "ResourceNotFound")


def sendmail_body(mail: Mail) -> dict[str, object]:
    """The JSON body of POST /users/{sender}/sendMail (user-sendmail.md,
    microsoftgraph/microsoft-graph-docs-contrib api-reference/v1.0/api/user-sendmail.md):
    `message` (subject, body {contentType Text|HTML, content}, toRecipients [{emailAddress
    {address}}]) and `saveToSentItems`. The page gives saveToSentItems as a Boolean, default
    true; false here: an activation link must not sit in the sender's Sent Items, readable
    by whoever can open that mailbox, while it still works."""
    return {
        "message": {
            "subject": mail.subject,
            "body": {"contentType": "Text", "content": mail.text},
            "toRecipients": [{"emailAddress": {"address": mail.to}}],
        },
        "saveToSentItems": False,
    }


@dataclass
class GraphTransport:
    """Mail sent as `sender` through Graph's sendMail, with the sync's GraphClient, retried on
    429 and 5xx by the sync's own retry policy (scim_server/sync/policy.py)."""

    sender: str
    client: GraphClient
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def send(self, mail: Mail) -> None:
        client = self.client
        # The sync's policy: Retry-After on a 429, full-jitter backoff on 5xx and timeouts,
        # anything else at once to the admin. Its 429s never count toward giving up (the sync
        # may wait for ever); a CLI stops after GRAPH_MAIL_ATTEMPTS tries of any kind.
        policy = Policy(max_attempts=GRAPH_MAIL_ATTEMPTS, base_seconds=1.0, cap_seconds=16.0)
        counted = 0
        for attempt in range(1, GRAPH_MAIL_ATTEMPTS + 1):
            try:
                client.send_mail(self.sender, sendmail_body(mail))
                return
            except GraphError as error:
                now = datetime.now(UTC)
                decision = policy.decide(error, counted, now, self.rng)
                if isinstance(decision, GiveUp) or attempt == GRAPH_MAIL_ATTEMPTS:
                    raise self._typed(error, attempt) from None
                wait = max((decision.at - now).total_seconds(), 0.0)
                if wait > GRAPH_MAIL_MAX_WAIT_SECONDS:
                    raise self._typed(error, attempt) from None
                counted += 1 if decision.counts else 0
                log.warning(
                    "sendMail as %s: %s; trying again in %.1f s",
                    self.sender,
                    error.code or error.status or type(error).__name__,
                    wait,
                )
                self.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _typed(self, error: GraphError, attempts: int) -> MailError:
        """One line for the admin: what Graph said and what to do about it."""
        who = self.sender
        code = error.code
        rid = f" (request-id {error.request_id})" if error.request_id else ""
        if isinstance(error, Throttled):
            after = f"; Graph asks to wait {error.retry_after:g} s" if error.retry_after else ""
            return MailThrottled(
                f"Graph throttled sendMail as {who} ({attempts} tries){after}: run the command "
                f"again later{rid}"
            )
        # 404 for an unknown sender: ErrorInvalidUser "The requested user '…' is invalid."
        # (microsoftgraph/microsoft-graph-docs#7580, on user-sendmail.md), ResourceNotFound
        # for a user with no mailbox (microsoft-graph-docs#5143), and
        # MailboxNotEnabledForRESTAPI for one whose mailbox is not in Exchange Online.
        if isinstance(error, NotFound) or code in MAILBOX_NOT_FOUND:
            return MailboxNotFound(
                f"MAIL_SENDER {who}: no such mailbox in the tenant (Graph {error.status} "
                f"{code or 'NotFound'}): give the UPN or primary address of a user or shared "
                f"mailbox with an Exchange Online mailbox{rid}"
            )
        # 403 ErrorSendAsDenied (concepts/outlook-send-mail-from-other-user.md), ErrorAccessDenied
        # "Access to OData is disabled." from an application access policy
        # (concepts/auth-limit-mailbox-access.md), Authorization_RequestDenied or
        # ErrorAccessDenied without the Mail.Send application permission.
        if isinstance(error, AuthError) and error.status == 403:
            reason = {
                "ErrorSendAsDenied": "send-as denied",
                "ErrorAccessDenied": "access denied (an Exchange application access policy or "
                "RBAC scope that leaves this mailbox out, or no Mail.Send)",
            }.get(code, "denied (grant the app the Mail.Send application permission)")
            return SendDenied(
                f"Graph refused to send as {who}: {reason} (Graph 403 {code or 'Forbidden'}: "
                f"{error.message}){rid}"
            )
        if error.status == 400 and code == "ErrorInvalidRecipients":
            return RecipientRefused(
                f"Graph refused the recipient (400 ErrorInvalidRecipients): {error.message}{rid}"
            )
        return MailError(f"Graph sendMail as {who} failed: {error}")
