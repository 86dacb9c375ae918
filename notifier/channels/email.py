"""Email: deliver RFC 5322 messages, as :mod:`notifier.render.mime` built them, over a small pool of reused SMTP
connections.

Only this module knows aiosmtplib; its exceptions are translated here into
:class:`~notifier.errors.TemporaryDeliveryError` and :class:`~notifier.errors.PermanentDeliveryError`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Literal

import aiosmtplib

from notifier.channels.base import Progress
from notifier.errors import DeliveryError, PermanentDeliveryError, TemporaryDeliveryError
from notifier.models import ChannelKind, Outgoing

log = logging.getLogger(__name__)

Security = Literal["starttls", "tls", "none"]

_AUTH_HINT = "check NOTIFIER_SMTP_USERNAME/PASSWORD"


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
