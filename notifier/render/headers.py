"""Mail header fields written from plain text by our own encoder, never through the email package's header parser.

The email package takes a header value for text that may already be RFC 2047 encoded, and decodes it: a rule named
``=?utf-8?q?=0D=0ABcc:_x?=`` would become a real line break, and so a real ``Bcc:``, on output. So every field here
is written from its plain text, and what is written is checked:

- control and format characters (CR, LF, NUL, U+2028, ...) become spaces, runs of white space one space;
- ``=?`` becomes ``= ?``, so that no mail program takes any part of our text for an encoded word;
- a word that is not printable ASCII, or too long for a line, becomes RFC 2047 encoded words (UTF-8, Q or B,
  whichever is shorter), which decode to exactly that text;
- lines are folded only between words, at 78 octets where the words allow, and never over 998 octets;
- values that mail programs read literally (List-Unsubscribe, List-Id, Message-ID, addresses) are never encoded;
- an address is used only when it is an RFC 5322 ``local@domain`` in printable ASCII, else it is an
  :class:`~notifier.errors.AddressError` naming it and the problem.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Callable

from email_validator import EmailNotValidError, validate_email

from notifier.addresses import validate_address
from notifier.errors import AddressError

LINE = 78  # RFC 5322: lines SHOULD be at most 78 octets
MAX_LINE = 998  # RFC 5322: lines MUST be at most 998 octets
_ENCODED_WORD = 75  # RFC 2047: an encoded word is at most 75 characters
_CHROME = len("=?utf-8?q??=")
_SPACES = re.compile(r"\s+")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_FIELD_TEXT = re.compile(r"[\x20-\x7e]*")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"  # RFC 5322 atext
_ATEXT = re.compile(_ATOM)
_DOT_ATOM = rf"{_ATOM}(?:\.{_ATOM})*"
_ADDR_SPEC = re.compile(
    rf'(?:{_DOT_ATOM}|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*")@(?:{_DOT_ATOM}|\[[\x21-\x5a\x5e-\x7e]*\])'
)
# "Display Name <address>": the address is the last bracketed part, the name everything before it.
_MAILBOX = re.compile(r"(?P<name>.*?)\s*<(?P<address>[^<>]*)>\s*", re.DOTALL)
_RECIPIENT_HINT = "fix the address in subscribers.yaml"
_SENDER_HINT = "check NOTIFIER_MAIL_FROM"
# Octets that stand for themselves in a Q-encoded word, in any position (RFC 2047 section 5, rule 3).
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")


def clean_header_text(text: str) -> str:
    """One line of text: control, format and separator characters (and lone surrogates) become a space, white space
    runs collapse to one space, and the ends are stripped."""
    chars = (" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") else ch for ch in text)
    return _SPACES.sub(" ", "".join(chars)).strip()


def inert_text(text: str) -> str:
    """:func:`clean_header_text`, with ``=?`` written ``= ?`` so that it can never start an encoded word."""
    return clean_header_text(text).replace("=?", "= ?")


def literal_field(name: str, value: str) -> str:
    """``Name: value`` on one line, exactly as given: for values that must not be folded or encoded.

    Raises :class:`ValueError` unless ``value`` is printable ASCII (spaces allowed) and the line fits in 998 octets.
    """
    line = f"{name}: {value}"
    if not _FIELD_TEXT.fullmatch(value):
        raise ValueError(f"the {name} header can only hold printable ASCII, not {value!r}")
    if len(line) > MAX_LINE:
        raise ValueError(f"the {name} header would be {len(line)} octets long, over the {MAX_LINE} a line can hold")
    return line + "\r\n"


def text_field(name: str, text: str) -> str:
    """An unstructured field (Subject) showing ``text`` as :func:`inert_text` makes it."""
    folder = _Folder(name)
    words = [word for word in inert_text(text).split(" ") if word]
    _add_words(folder, words, lambda word: bool(_PRINTABLE.fullmatch(word)) and len(word) <= folder.first_room)
    return folder.result()


def phrase_field(name: str, phrase: str, tail: str | None = None) -> str:
    """A field of an RFC 5322 phrase (a display name, a list name) then ``tail`` (``<address>``) written as is.

    Words of atom characters are written as they are, any other run of words as encoded words, so the field never
    holds a quoted string and reads the same parsed as a structured or as an unstructured field.
    """
    folder = _Folder(name)
    words = [word for word in inert_text(phrase).split(" ") if word]
    _add_words(folder, words, lambda word: bool(_ATEXT.fullmatch(word)) and len(word) <= folder.first_room)
    if tail is not None:
        folder.add(tail)
    return folder.result()


def split_mailbox(text: str) -> tuple[str, str]:
    """``"Name <address>"`` as ``(name, address)`` (a quoted name unquoted); a bare address as ``("", address)``."""
    found = _MAILBOX.fullmatch(text)
    if found is None:
        return "", text
    name = found["name"].strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1], flags=re.DOTALL)
    return name, found["address"]


def recipient_address(text: str) -> str:
    """A subscriber's address as a header and the SMTP envelope carry it: valid as subscribers.yaml requires, and
    ASCII (an international domain in its ``xn--`` form). Raises :class:`AddressError` naming it and the problem."""

    def refuse(problem: str) -> AddressError:
        return AddressError(f"cannot send a digest to {text!r}: {problem}", hint=_RECIPIENT_HINT)

    try:
        address = validate_address(text)
    except ValueError as exc:
        raise refuse(_reason(exc)) from None
    if not address.isascii():
        try:
            ascii_form = validate_email(
                address,
                check_deliverability=False,
                allow_domain_literal=True,
                allow_quoted_local=True,
                test_environment=True,
            ).ascii_email
        except EmailNotValidError as exc:
            raise refuse(str(exc)) from None
        if ascii_form is None:
            raise refuse("a non-ASCII local part needs SMTPUTF8, which is not used")
        address = ascii_form
    return _addr_spec(address, refuse)


def sender_mailbox(text: str) -> tuple[str, str]:
    """The From setting (``"Name <address>"`` or an address) as ``(name, address)``; the address must be one a
    header can carry (a local domain such as ``localhost`` is fine). Raises :class:`AddressError` otherwise."""
    name, address = split_mailbox(text)

    def refuse(problem: str) -> AddressError:
        return AddressError(f"cannot send from {text!r}: {problem}", hint=_SENDER_HINT)

    return name, _addr_spec(address.strip(), refuse)


def _addr_spec(address: str, refuse: Callable[[str], AddressError]) -> str:
    """``address`` when it is an RFC 5322 addr-spec of printable ASCII with no ``=?`` in it."""
    if not _ADDR_SPEC.fullmatch(address):
        raise refuse(f"{address!r} is not an address a mail header can carry (local@domain, printable ASCII)")
    if "=?" in address:
        raise refuse("mail programs would read its '=?' as the start of an encoded word")
    return address


def _reason(error: ValueError) -> str:
    message = str(error)
    return message.split(": ", 1)[1] if ": " in message else message


def _add_words(folder: _Folder, words: list[str], literal: Callable[[str], bool]) -> None:
    """Each word as it is when ``literal(word)``; each run of the other words (with the spaces between them) as
    encoded words, since decoders drop the white space between two encoded words."""
    run: list[str] = []
    for word in words:
        if literal(word):
            if run:
                folder.encoded(" ".join(run))
                run = []
            folder.add(word)
        else:
            run.append(word)
    if run:
        folder.encoded(" ".join(run))


class _Folder:
    """Builds one header field from words, folding before a word that would pass :data:`LINE`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines = [f"{name}:"]
        self.first_room = LINE - len(name) - 2  # what fits after "Name: " on the first line
        self._empty = True

    def _room(self) -> int:
        return LINE - len(self.lines[-1]) - 1

    def add(self, word: str) -> None:
        """A word that must not be split: on this line if it fits (or the line has no word yet), else the next."""
        if len(word) > self._room() and not self._empty:
            self.lines.append("")
        self.lines[-1] += " " + word
        self._empty = False

    def encoded(self, text: str) -> None:
        """``text`` as encoded words, as many characters in each as fit in its line; a run that a fresh line would
        hold in fewer words starts on the next line."""
        while text:
            chunk = _longest_encodable(text, min(self._room(), _ENCODED_WORD))
            fresh = self._empty or not self.lines[-1]
            if not chunk or (not fresh and chunk != text and chunk != _longest_encodable(text, _ENCODED_WORD)):
                self.lines.append("")
                continue
            self.lines[-1] += " " + _encode(chunk)
            self._empty = False
            text = text[len(chunk) :]

    def result(self) -> str:
        for line in self.lines:
            if len(line) > MAX_LINE:
                raise ValueError(f"the {self.name} header has a word too long for a line of {MAX_LINE} octets")
            if not _FIELD_TEXT.fullmatch(line):
                raise ValueError(f"the {self.name} header would hold a character it cannot carry")
        return "\r\n".join(self.lines) + "\r\n"


def _longest_encodable(text: str, room: int) -> str:
    """The longest prefix of ``text`` (whole characters) whose encoded word is at most ``room`` characters, cut
    after a space in its second half if it has one, so that a reader that does not join encoded words (Python's
    address parser keeps the blank between them) splits no word."""
    q_length = b_bytes = 0
    end = 0
    for ch in text:
        data = ch.encode("utf-8")
        q_length += sum(1 if byte in _Q_SAFE or byte == 0x20 else 3 for byte in data)
        b_bytes += len(data)
        if _CHROME + min(q_length, 4 * -(-b_bytes // 3)) > room:
            break
        end += 1
    if end < len(text):
        space = text.rfind(" ", end // 2, end)
        end = space + 1 if space > 0 else end
    return text[:end]


def _encode(text: str) -> str:
    data = text.encode("utf-8")
    q = "".join(chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in data)
    b = base64.b64encode(data).decode("ascii")
    return f"=?utf-8?q?{q}?=" if len(q) <= len(b) else f"=?utf-8?b?{b}?="
