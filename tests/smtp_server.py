"""A local SMTP server for tests: records what it receives and misbehaves on request.

In a test::

    with SmtpServer() as smtp:                     # 127.0.0.1, a free port, in a background thread
        smtp.faults.fail_next = 2                  # 451 for the next two messages
        ...
        smtp.wait_for(3)
        assert smtp.messages[0].message_id == "<...>"

Standalone, for subprocess tests (one ``.eml`` file per received message in ``--maildir``)::

    python -m tests.smtp_server --port 0 --maildir /tmp/mail [--delay 0.2]   # prints "READY <port>"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class Received:
    """One message as the server accepted it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    message_id: str | None


@dataclass
class Faults:
    """Fault modes, switchable while the server runs (set them from the test thread)."""

    fail_next: int = 0  # answer ``fail_reply`` at the end of DATA for the next N messages
    fail_reply: str = "451 4.3.0 Try again later"  # or e.g. "554 5.6.0 Message refused"
    reject: set[str] = field(default_factory=set)  # addresses refused with 550 at RCPT TO
    drop_next: int = 0  # drop the connection after the message content, before the reply, for the next N messages
    stall: float = 0.0  # wait this many seconds before answering DATA
    close_after_each: bool = False  # close the connection right after each accepted message
    delay: float = 0.0  # time taken to accept each message (a slow but healthy server)


class RecordingHandler:
    """An aiosmtpd handler that keeps every accepted message, and optionally writes each to ``maildir``."""

    def __init__(self, maildir: Path | None = None) -> None:
        self.faults = Faults()
        self.messages: list[Received] = []
        self.maildir = maildir
        self._cond = threading.Condition()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in {a.lower() for a in self.faults.reject}:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        faults = self.faults
        if faults.drop_next > 0:
            faults.drop_next -= 1
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()
            await asyncio.Event().wait()  # cancelled by aiosmtpd when it sees the connection is gone
        if faults.stall:
            await asyncio.sleep(faults.stall)
        if faults.delay:
            await asyncio.sleep(faults.delay)
        if faults.fail_next > 0:
            faults.fail_next -= 1
            return faults.fail_reply
        data = envelope.original_content or b""
        headers = BytesHeaderParser(policy=default_policy).parsebytes(data)
        message_id = headers["Message-ID"]
        received = Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=data,
            message_id=str(message_id) if message_id is not None else None,
        )
        with self._cond:
            self.messages.append(received)
            seq = len(self.messages)
            self._cond.notify_all()
        if self.maildir is not None:
            tmp = self.maildir / f".{seq:06d}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, self.maildir / f"{seq:06d}.eml")
        if faults.close_after_each and server.transport is not None:
            server.loop.call_soon(server.transport.close)  # after the "250" below is written
        return "250 2.0.0 Message accepted"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(f"expected {count} messages, got {len(self.messages)}")
            return list(self.messages)


class _Controller(Controller):
    """aiosmtpd's threaded controller, bound to a free port when ``port=0``, counting connections."""

    connections = 0

    def _create_server(self) -> Any:
        return self._bind()

    async def _bind(self) -> asyncio.AbstractServer:
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
        )
        self.port = server.sockets[0].getsockname()[1]
        return server

    def factory(self) -> SMTP:
        self.connections += 1
        smtp: SMTP = super().factory()  # type: ignore[no-untyped-call]
        return smtp


class SmtpServer:
    """A recording aiosmtpd server on 127.0.0.1 in a background thread; use as a context manager.

    ``starttls_context`` offers STARTTLS; ``implicit_tls_context`` speaks TLS from the first byte; ``login`` makes
    the server accept AUTH with exactly that user name and password (and refuse others with 535).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        starttls_context: ssl.SSLContext | None = None,
        implicit_tls_context: ssl.SSLContext | None = None,
        login: tuple[str, str] | None = None,
        maildir: Path | None = None,
    ) -> None:
        self.handler = RecordingHandler(maildir)
        self._login = login
        kwargs: dict[str, Any] = {}
        if starttls_context is not None:
            kwargs["tls_context"] = starttls_context
        if login is not None:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        self._controller = _Controller(
            self.handler, hostname="127.0.0.1", port=port, ssl_context=implicit_tls_context, **kwargs
        )
        self.host = "127.0.0.1"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self._login is not None
            and (auth_data.login.decode(), auth_data.password.decode()) == self._login
        )
        return AuthResult(success=ok, handled=False)

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def faults(self) -> Faults:
        return self.handler.faults

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    @property
    def connections(self) -> int:
        """Client connections since start (the controller's own start-up probe is not counted)."""
        return int(self._controller.connections)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        return self.handler.wait_for(count, timeout)

    def start(self) -> SmtpServer:
        self._controller.start()
        self._controller.connections = 0
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` (IP or name) made with the openssl CLI: (cert.pem, key.pem)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    san = f"IP:{host}" if host.replace(".", "").isdigit() else f"DNS:{host}"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={host}"),
            *("-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A recording SMTP server for tests.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--maildir", type=Path, help="write each received message to DIR/NNNNNN.eml")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds taken to accept each message")
    parser.add_argument("--close-after-each", action="store_true", help="close the connection after each message")
    args = parser.parse_args(argv)
    if args.maildir is not None:
        args.maildir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with SmtpServer(port=args.port, maildir=args.maildir) as server:
        server.faults.delay = args.delay
        server.faults.close_after_each = args.close_after_each
        print(f"READY {server.port}", flush=True)
        while not stop.wait(0.2):
            pass
        print(f"received {len(server.messages)} messages", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
