"""Email: build RFC 5322 digest messages, and deliver them over a small pool of reused SMTP connections.

Only this module knows aiosmtplib; its exceptions are translated here into
:class:`~notifier.errors.TemporaryDeliveryError` and :class:`~notifier.errors.PermanentDeliveryError`.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import logging
import re
import ssl
import unicodedata
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Literal

import aiosmtplib

from notifier.channels.base import Progress
from notifier.channels.headers import (
    MAX_LINE,
    literal_field,
    phrase_field,
    recipient_address,
    sender_mailbox,
    split_mailbox,
    text_field,
)
from notifier.errors import DeliveryError, PermanentDeliveryError, TemporaryDeliveryError
from notifier.models import ChannelKind, Outgoing, RenderedEmail

log = logging.getLogger(__name__)

Security = Literal["starttls", "tls", "none"]

# The List-Unsubscribe line is never folded (mail programs read the URL literally), so it must fit in 998 octets.
UNSUBSCRIBE_URL_MAX = MAX_LINE - len("List-Unsubscribe: <>")

_AUTH_HINT = "check NOTIFIER_SMTP_USERNAME/PASSWORD"
_MESSAGE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")
_LIST_LABEL_JUNK = re.compile(r"[^A-Za-z0-9_.-]+")
_SURROGATE = re.compile("[\ud800-\udfff]")
_PRINTABLE_URL = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")  # no space, no angle brackets


def make_message_id(key: str, domain: str) -> str:
    """A Message-ID that is the same for the same ``key``, so a retried delivery keeps its identity."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def build_email(
    rendered: RenderedEmail,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    date: datetime,
    list_id: str,
    unsubscribe_url: str | None,
) -> bytes:
    """A multipart/alternative message (text, then HTML), UTF-8, 7-bit, with CRLF line ends.

    Every header is written by :mod:`notifier.channels.headers` from plain text, so no text of a paper, a rule, a
    subscriber or a setting can add, end or break a header (see there). ``sender`` is ``"Name <address>"`` or an
    address; ``list_id`` is ``"Name <id.example.org>"`` or the bare id. ``unsubscribe_url`` must be https (it then
    also gets the RFC 8058 one-click header) or mailto, and is written literally on one line.

    A recipient or sender that no message can carry raises :class:`~notifier.errors.AddressError` (a permanent
    delivery error, and a ``ValueError``); other unusable values (Message-ID, unsubscribe URL) raise ``ValueError``.

    The MIME structure is fixed, so it is written directly (see :func:`_alternative`) rather than through
    :mod:`email.message`, whose generator costs more than rendering the digest.
    """
    to = recipient_address(recipient)
    sender_name, from_address = sender_mailbox(sender)
    fields = [
        phrase_field("From", sender_name, f"<{from_address}>"),
        literal_field("To", to),
        text_field("Subject", rendered.subject),
        literal_field("Date", format_datetime(date if date.tzinfo is not None else date.replace(tzinfo=UTC))),
        literal_field("Message-ID", _message_id(message_id)),
        literal_field("MIME-Version", "1.0"),
        _list_id_field(list_id),
        literal_field("Auto-Submitted", "auto-generated"),
        *_unsubscribe_fields(unsubscribe_url),
    ]
    return "".join(fields).encode("ascii") + _alternative(rendered, message_id)


def _alternative(rendered: RenderedEmail, message_id: str) -> bytes:
    """The ``multipart/alternative`` body: a text/plain then a text/html part, UTF-8, quoted-printable.

    Quoted-printable keeps the body 7-bit clean (no 8BITMIME needed) and its lines within 76 octets; line ends are
    CRLF. Its output never holds ``=_`` (an ``=`` is always followed by two hex digits or a line end), so a boundary
    that starts with ``=_`` cannot occur in a part; the rest of it comes from the Message-ID, so the same message is
    built to the same bytes.
    """
    boundary = "=_" + hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:32]
    out = [f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode("ascii")]
    for subtype, text in (("plain", rendered.text), ("html", rendered.html)):
        out.append(
            f"\r\n--{boundary}\r\n"
            f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n".encode("ascii")
        )
        out.append(_quoted_printable(text))
    out.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)


def _quoted_printable(text: str) -> bytes:
    """``text`` in UTF-8 (lone surrogates as U+FFFD), quoted-printable, every line ending in CRLF."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: rare, so looked for only then
        data = _valid_unicode(text).encode("utf-8")
    lines = data.splitlines()
    return binascii.b2a_qp(b"\r\n".join(lines) + b"\r\n", istext=True) if lines else b""


def _message_id(message_id: str) -> str:
    value = message_id if message_id.startswith("<") else f"<{message_id}>"
    if not _MESSAGE_ID.fullmatch(value):
        raise ValueError(f"{message_id!r} is not a Message-ID (<left@right>, printable ASCII)")
    return value


def _list_id_field(list_id: str) -> str:
    """``List-Id: Name <label.domain>`` (RFC 2919); characters a list id cannot hold become ``-``."""
    name, identifier = split_mailbox(list_id)
    ascii_id = unicodedata.normalize("NFKD", identifier).encode("ascii", "ignore").decode("ascii")
    labels = [label.strip("-") for label in _LIST_LABEL_JUNK.sub("-", ascii_id).split(".")]
    label = ".".join(label for label in labels if label)
    if not label:
        raise ValueError(f"{list_id!r} has no list id (expected 'Name <label.example.org>' or 'label.example.org')")
    return phrase_field("List-Id", name, f"<{label}>")


def _unsubscribe_fields(url: str | None) -> list[str]:
    """List-Unsubscribe as the literal ``<URL>`` mail programs look for (RFC 2369), never encoded or folded."""
    if url is None:
        return []
    if not url.startswith(("https://", "mailto:")):
        raise ValueError(f"unsubscribe_url must be an https or mailto URL, not {url!r}")
    if not _PRINTABLE_URL.fullmatch(url):
        raise ValueError(f"the unsubscribe URL must be printable ASCII without spaces or angle brackets: {url!r}")
    if len(url) > UNSUBSCRIBE_URL_MAX:
        raise ValueError(
            f"the unsubscribe URL has {len(url)} characters, more than the {UNSUBSCRIBE_URL_MAX} that fit in one "
            f"header line: {url[:60]}..."
        )
    fields = [literal_field("List-Unsubscribe", f"<{url}>")]
    if url.startswith("https://"):
        fields.append(literal_field("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    return fields


def _valid_unicode(text: str) -> str:
    """``text`` with each lone surrogate (which UTF-8 cannot carry) as U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


class _StaleConnection(Exception):
    """A reused connection turned out to be closed before the message was started: reconnect and resend."""


class SmtpChannel:
    """Delivers email through up to ``pool_size`` SMTP connections, each reused for many messages.

    Each message has one recipient (``message.recipient``), used for the envelope. A connection the server closed
    while idle is detected on the first command of the next message, reopened once and the message resent; a
    connection lost after the message was started is a temporary failure (the outbox retries; the Message-ID stays).
    """

    kind: ChannelKind = "email"

    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: Security,
        username: str | None,
        password: str | None,
        sender: str,
        pool_size: int = 3,
        timeout: float = 30.0,
        validate_certs: bool = True,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if security not in ("starttls", "tls", "none"):
            raise ValueError(f"security must be starttls, tls or none, not {security!r}")
        self.host = host
        self.port = port
        self.security: Security = security
        self.sender = sender
        self.pool_size = pool_size
        self.timeout = timeout
        self._clients = [
            aiosmtplib.SMTP(
                hostname=host,
                port=port,
                username=username,
                password=password,
                timeout=timeout,
                use_tls=security == "tls",
                start_tls=security == "starttls",
                validate_certs=validate_certs,
                tls_context=tls_context,
            )
            for _ in range(pool_size)
        ]
        self._idle: asyncio.LifoQueue[aiosmtplib.SMTP] | None = None
        self._closed = False

    def _pool(self) -> asyncio.LifoQueue[aiosmtplib.SMTP]:
        # Created on first use so that the queue belongs to the running loop. LIFO: the warmest connection first.
        if self._idle is None:
            self._idle = asyncio.LifoQueue()
            for client in self._clients:
                self._idle.put_nowait(client)
        return self._idle

    async def send(self, message: Outgoing, progress: Progress | None = None) -> None:
        if self._closed:
            raise TemporaryDeliveryError("the SMTP channel is closed")
        pool = self._pool()
        client = await pool.get()
        try:
            await self._send_on(client, message)
        except DeliveryError:
            raise  # the connection was reset or closed where the failure was found
        except BaseException:
            client.close()  # cancelled mid-command: its state is unknown, so the next user reconnects
            raise
        finally:
            if self._closed:
                client.close()
            pool.put_nowait(client)
        log.info("smtp %s:%d accepted %s for %s", self.host, self.port, message.message_id, message.recipient)

    async def _send_on(self, client: aiosmtplib.SMTP, message: Outgoing) -> None:
        reused = client.is_connected
        if not reused:
            await self._connect(client)
        try:
            await self._transaction(client, message, reused=reused)
        except _StaleConnection:
            log.info("smtp %s:%d closed an idle connection; reconnecting", self.host, self.port)
            client.close()
            await self._connect(client)
            await self._transaction(client, message, reused=False)

    async def _connect(self, client: aiosmtplib.SMTP) -> None:
        where = f"{self.host}:{self.port}"
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()  # so the first message already knows the server's extensions (SIZE)
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise PermanentDeliveryError(
                f"SMTP login to {where} refused: {exc.code} {exc.message}", hint=_AUTH_HINT
            ) from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            client.close()
            raise TemporaryDeliveryError(
                f"connecting to SMTP server {where} timed out", hint="is the server reachable?"
            ) from exc
        except aiosmtplib.SMTPConnectError as exc:
            client.close()
            raise TemporaryDeliveryError(
                f"cannot connect to SMTP server {where}: {exc}", hint="check NOTIFIER_SMTP_HOST/PORT and that it is up"
            ) from exc
        except ssl.SSLError as exc:
            client.close()
            raise TemporaryDeliveryError(
                f"TLS with SMTP server {where} failed: {exc}",
                hint="the server certificate must verify for this host name (or give a CA bundle / tls_context)",
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise TemporaryDeliveryError(f"SMTP server {where} refused the session: {exc.code} {exc.message}") from exc
        except aiosmtplib.SMTPException as exc:  # STARTTLS or AUTH not offered, and the like
            client.close()
            raise PermanentDeliveryError(
                f"SMTP server {where} cannot be used as configured: {exc}",
                hint="check the security mode (starttls/tls/none) and whether the server needs a login",
            ) from exc
        except OSError as exc:
            client.close()
            raise TemporaryDeliveryError(f"cannot connect to SMTP server {where}: {exc}") from exc
        log.info("smtp connected to %s (%s)", where, self.security)

    async def _transaction(self, client: aiosmtplib.SMTP, message: Outgoing, *, reused: bool) -> None:
        payload = message.payload
        stage = "MAIL FROM"
        try:
            options = [f"SIZE={len(payload)}"] if client.supports_extension("size") else []
            await client.mail(self.sender, options=options)
            stage = "RCPT TO"
            await client.rcpt(message.recipient)
            stage = "DATA"
            await client.data(payload)
        except aiosmtplib.SMTPServerDisconnected as exc:
            client.close()
            if reused and stage == "MAIL FROM":
                raise _StaleConnection from exc
            raise TemporaryDeliveryError(
                f"SMTP server {self.host}:{self.port} dropped the connection during {stage} of {message.message_id}"
            ) from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            client.close()
            raise TemporaryDeliveryError(
                f"SMTP server {self.host}:{self.port} did not answer {stage} within {self.timeout:g}s"
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            raise _response_error(exc, stage, message.recipient) from exc
        except OSError as exc:
            client.close()
            raise TemporaryDeliveryError(
                f"connection to SMTP server {self.host}:{self.port} failed during {stage}: {exc}"
            ) from exc
        except ValueError as exc:  # aiosmtplib refuses addresses it cannot send safely
            await _reset(client)
            raise PermanentDeliveryError(
                f"cannot send to {message.recipient!r}: {exc}", hint="fix the address in subscribers.yaml"
            ) from exc

    async def aclose(self) -> None:
        """QUIT the idle connections; one still sending is closed as soon as its message is done."""
        if self._closed:
            return
        self._closed = True
        while self._idle is not None and not self._idle.empty():
            client = self._idle.get_nowait()
            if not client.is_connected:
                continue
            try:
                await client.quit(timeout=min(self.timeout, 5.0))
            except (aiosmtplib.SMTPException, OSError):
                client.close()
        log.info("smtp pool for %s:%d closed", self.host, self.port)


async def _reset(client: aiosmtplib.SMTP) -> None:
    """Clear the envelope after a refusal so the connection can carry the next message."""
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


def _response_error(
    exc: aiosmtplib.SMTPResponseException, stage: str, recipient: str
) -> TemporaryDeliveryError | PermanentDeliveryError:
    reply = f"{exc.code} {exc.message}".strip()
    if 400 <= exc.code < 500:
        return TemporaryDeliveryError(f"SMTP server deferred {stage} for {recipient}: {reply}")
    if stage == "RCPT TO":
        return PermanentDeliveryError(
            f"SMTP server refused recipient {recipient}: {reply}", hint="check the address in subscribers.yaml"
        )
    if stage == "MAIL FROM":
        return PermanentDeliveryError(
            f"SMTP server refused the sender address: {reply}", hint="check the sender address setting"
        )
    return PermanentDeliveryError(f"SMTP server rejected the message for {recipient} at {stage}: {reply}")
