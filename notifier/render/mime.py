"""Digest email -> the RFC 5322 bytes that are sent: headers written from plain text, a multipart/alternative body.

What is built here is exactly what the SMTP channel sends and the outbox stores; the channel adds nothing to it.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import unicodedata
from datetime import UTC, datetime
from email.utils import format_datetime

from notifier.models import RenderedEmail
from notifier.render.headers import (
    MAX_LINE,
    literal_field,
    phrase_field,
    recipient_address,
    sender_mailbox,
    split_mailbox,
    text_field,
)
from notifier.render.highlight import utf8

# The List-Unsubscribe line is never folded (mail programs read the URL literally), so it must fit in 998 octets.
UNSUBSCRIBE_URL_MAX = MAX_LINE - len("List-Unsubscribe: <>")

_MESSAGE_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]+@[\x21-\x3b\x3d\x3f-\x7e]+>")
_LIST_LABEL_JUNK = re.compile(r"[^A-Za-z0-9_.-]+")
_PRINTABLE_URL = re.compile(r"[\x21-\x3b\x3d\x3f-\x7e]+")  # no space, no angle brackets
# Elements whose text is not read for character references (their closing tag ends them: no nesting).
_RAW_TEXT = re.compile(r"<(style|script)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TEXT_OCTETS = bytes(range(0x20, 0x7F)) + b"\t\r\n"  # a 7bit part holds no other control character
_C1_REFERENCE = re.compile(rb"&#1(?:2[89]|[3-5][0-9]);")  # HTML reads &#128; to &#159; as Windows-1252
# An HTML part is sized in UTF-8 under 100,000 octets for Gmail, which clips a message's HTML past 102 KB: its
# character references may add this much (a reference of 6 octets stands for 2 in UTF-8).
REFERENCES_MAX = 2048


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

    Every header is written by :mod:`notifier.render.headers` from plain text, so no text of a paper, a rule, a
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
    """The ``multipart/alternative`` body: a text/plain then a text/html part, UTF-8.

    The text is quoted-printable, which keeps it 7-bit clean (no 8BITMIME needed) and its lines within 76 octets; the
    HTML is 7-bit as it is, its characters beyond ASCII as character references, where that says the same (see
    :func:`_seven_bit_html`), else quoted-printable too. Line ends are CRLF. Quoted-printable never holds ``=_`` (an
    ``=`` is always followed by two hex digits or a line end), so a boundary that starts with ``=_`` cannot occur in
    it, and a 7-bit HTML part that holds the boundary is quoted-printable instead; the rest of the boundary comes
    from the Message-ID, so the same message is built to the same bytes.
    """
    boundary = "=_" + hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:32]
    out = [f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n'.encode("ascii")]
    html = _seven_bit_html(rendered.html)
    if html is not None and f"--{boundary}".encode("ascii") in html:
        html = None  # the HTML holds the boundary: quoted-printable cannot
    for subtype, body, encoding in (
        ("plain", _quoted_printable(rendered.text), "quoted-printable"),
        ("html", _quoted_printable(rendered.html), "quoted-printable") if html is None else ("html", html, "7bit"),
    ):
        out.append(
            f"\r\n--{boundary}\r\n"
            f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {encoding}\r\n\r\n".encode("ascii")
        )
        out.append(body)
    out.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)


def _seven_bit_html(html: str) -> bytes | None:
    """``html`` as it is, in lines ending in CRLF, each character beyond ASCII written as a numeric character reference
    (``é`` as ``&#233;``, which every HTML reader reads as the character): a part that needs no transfer encoding,
    where quoted-printable cost more than the rest of building the message.

    None where that would not say the same or not fit: a line over RFC 5322's 998 octets (a template that does not
    break its lines), a control character (those of U+0080 to U+009F too: HTML reads their references as
    Windows-1252), a character beyond ASCII inside ``<style>`` or ``<script>`` (which do not read references), or
    references that would add more than :data:`REFERENCES_MAX` octets to the part (it is sized in UTF-8 for Gmail's
    clipping, with that much to spare). The part is then quoted-printable.
    """
    html, encoded = utf8(html)
    if len(encoded) == len(html):
        data = encoded  # ASCII
    else:
        if any(not element.group().isascii() for element in _RAW_TEXT.finditer(html)):
            return None
        data = html.encode("ascii", "xmlcharrefreplace")
        if len(data) - len(encoded) > REFERENCES_MAX or _C1_REFERENCE.search(data):
            return None
    if data.translate(None, _TEXT_OCTETS):  # what is left is control characters
        return None
    lines = data.splitlines()
    if not lines or max(map(len, lines)) > MAX_LINE:
        return None
    return b"\r\n".join(lines) + b"\r\n"


def _quoted_printable(text: str) -> bytes:
    """``text`` in UTF-8 (lone surrogates as U+FFFD), quoted-printable, every line ending in CRLF."""
    lines = utf8(text)[1].splitlines()
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
