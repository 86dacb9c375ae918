"""Header fields from untrusted text: the bytes a real SMTP server receives carry exactly the headers we meant.

Rule names, paper text, subscriber names and settings reach the message. Whatever they hold (line breaks, control
characters, RFC 2047 encoded words that decode to line breaks, header-looking text), the raw message must parse,
with any policy, to the same header fields, with the hostile text only as inert text in a subject or a body.
"""

from __future__ import annotations

import asyncio
import base64
import html.parser
import re
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from html import unescape
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from notifier.channels.email import SmtpChannel
from notifier.errors import AddressError, PermanentDeliveryError
from notifier.models import Outgoing, Paper, RenderedEmail
from notifier.render.mime import UNSUBSCRIBE_URL_MAX, build_email, make_message_id
from notifier.render.renderer import Renderer
from tests.digest_factory import build_digest, load_papers
from tests.smtp_server import SmtpServer

SENDER = "arXiv digest <digest@notifier.example.org>"
RECIPIENT = "ada@example.org"
NOW = datetime(2025, 6, 3, 6, 30, tzinfo=UTC)
LIST_ID = "ada.notifier.example.org"
UNSUBSCRIBE = "https://notifier.example.org/unsubscribe?s=ada&a=ada%40example.org&t=q1w2e3r4t5y6u7i8o9p0aa"
# The header fields of every digest email, in order; nothing else may appear.
FIELDS = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "List-Id",
    "Auto-Submitted",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Content-Type",
]
REPLY_TO_WORD = "=?UTF-8?Q?=0D=0AReply-To:_attacker@evil.example?="
END_OF_HEADERS_WORD = "=?UTF-8?Q?=0D=0A=0D=0A<h1>Hello</h1>?="
# The tags of our own HTML template: hostile text must never add another.
TEMPLATE_TAGS = {"html", "head", "meta", "title", "style", "body", "table", "tbody", "tr", "td", "p", "h1", "h2", "h3"}
TEMPLATE_TAGS |= {"a", "br", "ul", "li", "mark", "span"}


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def deliver(server: SmtpServer, payload: bytes) -> bytes:
    """``payload`` sent through our SMTP channel; the bytes the server received."""

    async def send() -> None:
        channel = SmtpChannel(
            host=server.host,
            port=server.port,
            security="none",
            username=None,
            password=None,
            sender="digest@notifier.example.org",
            pool_size=1,
            timeout=5.0,
        )
        message_id = f"<{len(server.messages)}@notifier.example.org>"
        try:
            await channel.send(Outgoing("d", "ada", "email", RECIPIENT, message_id, payload))
        finally:
            await channel.aclose()

    count = len(server.messages)
    asyncio.run(send())
    return server.wait_for(count + 1)[count].data


def message(content: RenderedEmail, **changes: Any) -> bytes:
    arguments: dict[str, Any] = {
        "sender": SENDER,
        "recipient": RECIPIENT,
        "message_id": make_message_id("hostile", "notifier.example.org"),
        "date": NOW,
        "list_id": LIST_ID,
        "unsubscribe_url": UNSUBSCRIBE,
    }
    return build_email(content, **{**arguments, **changes})


def plain_content(subject: str = "3 new papers") -> RenderedEmail:
    return RenderedEmail(subject=subject, text="Three papers.\n", html="<p>Three papers.</p>")


def head(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def field_names(raw: bytes) -> list[str]:
    """The header field names of the raw message, as any reader splits them (folded lines start with a blank)."""
    return [line.split(b":", 1)[0].decode() for line in head(raw).split(b"\r\n") if line[:1] not in (b" ", b"\t")]


def raw_field(raw: bytes, name: str) -> str:
    """The value of field ``name`` exactly as written, unfolded (the CRLF before each fold removed)."""
    found = re.search(rb"^" + name.encode() + rb": ?((?:[^\r]|\r\n[ \t])*)\r\n", head(raw) + b"\r\n", re.M)
    assert found, name
    return found[1].replace(b"\r\n", b"").decode("ascii")


def display_name(raw: bytes) -> str:
    """The From display name as an RFC 2047 reader shows it: the blank between two encoded words is dropped.

    (Python's address parser keeps that blank, against RFC 2047 section 6.2, so it is not used here.)
    """
    value = raw_field(raw, "From")
    phrase = value[: value.rindex("<")].strip()
    return str(make_header(decode_header(phrase)))


def parsed(raw: bytes, with_policy: Any = policy.default) -> EmailMessage:
    msg = BytesParser(policy=with_policy).parsebytes(raw)
    assert isinstance(msg, Message)
    return msg  # type: ignore[return-value]


def inert(text: str) -> str:
    """What a reader of the headers sees of ``text``: control and format characters as spaces, white space runs as
    one space, and ``=?`` broken up so that no mail program takes it for an encoded word."""
    blanked = "".join(" " if ch.isspace() or _is_control(ch) else ch for ch in text)
    return " ".join(blanked.split()).replace("=?", "= ?")


def _is_control(ch: str) -> bool:
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")


def assert_intended(raw: bytes, *, unsubscribe: bool = True) -> EmailMessage:
    """The raw message is 7-bit, CRLF only, lines within RFC 5322's limit, with exactly our header fields."""
    raw.decode("ascii")
    assert b"\r" not in raw.replace(b"\r\n", b"") and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    expected = [name for name in FIELDS if unsubscribe or not name.startswith("List-Unsubscribe")]
    assert field_names(raw) == expected
    for with_policy in (policy.default, policy.compat32, policy.strict):
        msg = parsed(raw, with_policy)
        assert list(msg.keys()) == expected
        assert msg.get_content_type() == "multipart/alternative"
        assert [part.get_content_type() for part in msg.get_payload()] == ["text/plain", "text/html"]  # type: ignore[union-attr]
    msg = parsed(raw)
    assert MESSAGE_ID.fullmatch(msg["Message-ID"])
    assert msg["MIME-Version"] == "1.0"
    return msg


MESSAGE_ID = re.compile(r"<[0-9a-f]{32}@notifier\.example\.org>")


# ------------------------------------------------------------------------------------- encoded words in the subject


def test_an_encoded_line_break_in_a_rule_name_adds_no_reply_to(smtp):
    digest = build_digest(load_papers()[:20], {REPLY_TO_WORD: ['"speech"']})
    content = Renderer().email(digest, unsubscribe_url=UNSUBSCRIBE)
    raw = deliver(smtp, message(content))
    msg = assert_intended(raw)
    assert msg["Reply-To"] is None
    assert "=?" not in msg["Subject"] and "= ?UTF-8?Q?=0D=0AReply-To:_attacker@evil.example?=" in msg["Subject"]


def test_an_encoded_blank_line_does_not_end_the_header_block(smtp):
    raw = deliver(smtp, message(plain_content(f"Papers {END_OF_HEADERS_WORD} today")))
    msg = assert_intended(raw)
    assert msg["Subject"] == "Papers = ?UTF-8?Q?=0D=0A=0D=0A<h1>Hello</h1>?= today"
    assert normal_lines(msg.get_body(("plain",)).get_content()) == "Three papers.\n"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "word",
    [
        "=?utf-8?b?DQpCY2M6IHZpY3RpbUBleGFtcGxlLm9yZw==?=",  # base64 of CRLF "Bcc: victim@example.org"
        "=?iso-8859-1?q?=0ABcc:_victim@example.org?=",
        "x=?utf-8?q?=0D=0ABcc:_victim@example.org?=y",  # glued to a word
        "=?utf-8*en?q?=0D=0ABcc:_victim@example.org?=",  # with an RFC 2231 language
        "=?utf-8?q?=0D=0A?= =?utf-8?q?Bcc:_victim@example.org?=",  # two words whose gap decoders drop
    ],
)
def test_no_flavour_of_encoded_word_adds_a_header(smtp, word):
    raw = deliver(smtp, message(plain_content(f"Papers {word}")))
    msg = assert_intended(raw)
    assert msg["Bcc"] is None and "=?" not in msg["Subject"]


def test_non_ascii_and_long_subjects_are_encoded_words_that_decode_to_the_text():
    subject = "Über λ-calculus · " + "Quantenverschränkung " * 12 + "x" * 150
    raw = message(plain_content(subject))
    msg = assert_intended(raw)
    assert msg["Subject"] == subject.strip()
    assert all(len(line) <= 78 for line in head(raw).split(b"\r\n") if not line.startswith(b"List-Unsubscribe:"))


# ------------------------------------------------------------------------------ List-Unsubscribe and List-Id as written


def test_list_unsubscribe_is_the_literal_url_even_when_long(smtp):
    url = "https://notifier.example.org/unsubscribe?s=systems-lab&a=ada%40example.org&t=" + "Ab9_-" * 80
    raw = deliver(smtp, message(plain_content(), unsubscribe_url=url))
    assert_intended(raw)
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in head(raw)
    assert b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in head(raw)


def test_mailto_list_unsubscribe_is_literal_and_has_no_one_click():
    raw = message(plain_content(), unsubscribe_url="mailto:unsubscribe@example.org?subject=ada")
    assert b"\r\nList-Unsubscribe: <mailto:unsubscribe@example.org?subject=ada>\r\n" in head(raw)
    assert "List-Unsubscribe-Post" not in field_names(raw)


def test_an_unsubscribe_url_that_cannot_be_one_header_line_is_refused():
    longest = "https://notifier.example.org/u?t=" + "a" * (UNSUBSCRIBE_URL_MAX - 33)
    raw = message(plain_content(), unsubscribe_url=longest)
    assert len(f"List-Unsubscribe: <{longest}>") == 998
    assert raw_field(raw, "List-Unsubscribe") == f"<{longest}>"
    with pytest.raises(ValueError, match="unsubscribe URL has 979 characters"):
        message(plain_content(), unsubscribe_url=longest + "a")
    with pytest.raises(ValueError, match="unsubscribe"):
        message(plain_content(), unsubscribe_url="https://notifier.example.org/u?t=a b")


def test_list_id_is_literal_with_its_name_as_a_phrase(smtp):
    raw = deliver(smtp, message(plain_content()))
    assert f"\r\nList-Id: <{LIST_ID}>\r\n".encode() in head(raw)
    raw = deliver(smtp, message(plain_content(), list_id=f"Ada Lovelace {REPLY_TO_WORD} <{LIST_ID}>"))
    msg = assert_intended(raw)
    assert raw_field(raw, "List-Id").endswith(f" <{LIST_ID}>")
    assert msg["List-Id"] == f"Ada Lovelace {inert(REPLY_TO_WORD)} <{LIST_ID}>"


def test_a_list_id_that_is_not_a_dot_atom_is_made_one():
    raw = message(plain_content(), list_id="systems lab.[127.0.0.1]")
    assert b"\r\nList-Id: <systems-lab.127.0.0.1>\r\n" in head(raw)


# ------------------------------------------------------------------------------------------------ addresses


@pytest.mark.parametrize(
    "recipient",
    [
        "ann@[lab.example",
        "ann@lab.example\r\nBcc: victim@example.org",
        "ann\x00@lab.example",
        "Ann <ann@lab.example>",
        "not an address",
        "=?utf-8?q?=0D=0ABcc:_x?=@lab.example",
        "",
    ],
)
def test_a_recipient_the_message_cannot_carry_is_a_permanent_address_error(recipient):
    with pytest.raises(AddressError) as info:
        message(plain_content(), recipient=recipient)
    assert isinstance(info.value, PermanentDeliveryError) and isinstance(info.value, ValueError)
    assert repr(recipient) in str(info.value)
    assert info.value.hint is not None and "subscribers.yaml" in info.value.hint


@pytest.mark.parametrize(
    "sender", ["digest@[lab.example", "Digest <digest@lab.example", "Digest <>", "Digest <d\r\n@x>"]
)
def test_a_sender_the_message_cannot_carry_is_an_address_error_naming_the_setting(sender):
    with pytest.raises(AddressError) as info:
        message(plain_content(), sender=sender)
    assert info.value.hint is not None and "NOTIFIER_MAIL_FROM" in info.value.hint


def test_the_default_sender_on_a_local_domain_is_fine():
    raw = message(plain_content(), sender="arxiv-notifier <arxiv-notifier@localhost>")
    assert raw_field(raw, "From") == "arxiv-notifier <arxiv-notifier@localhost>"
    raw = message(plain_content(), sender="digest@notifier.example.org")
    assert raw_field(raw, "From") == "<digest@notifier.example.org>"


def test_display_names_and_international_domains_are_written_safely():
    raw = message(plain_content(), sender=f'"Lab, {REPLY_TO_WORD} Ünï" <digest@notifier.example.org>')
    msg = assert_intended(raw)
    assert display_name(raw) == f"Lab, {inert(REPLY_TO_WORD)} Ünï"
    assert msg["From"].addresses[0].addr_spec == "digest@notifier.example.org"
    raw = message(plain_content(), recipient="ann@bücher.example")
    assert raw_field(raw, "To") == "ann@xn--bcher-kva.example"
    with pytest.raises(AddressError, match="SMTPUTF8"):
        message(plain_content(), recipient="jörg@bücher.example")


# ------------------------------------------------------------------------------------------ generated hostile text


def _encoded_word(charset: str, encoding: str, payload: str) -> str:
    data = payload.encode("utf-8" if charset.startswith("utf-8") else "latin-1", "replace")
    if encoding in "bB":
        text = base64.b64encode(data).decode("ascii")
    else:
        text = "".join(chr(b) if chr(b).isalnum() else f"={b:02X}" for b in data)
    return f"=?{charset}?{encoding}?{text}?="


PAYLOADS = st.sampled_from(
    ["\r\nBcc: victim@example.org", "\r\n\r\n<h1>body</h1>", "\nReply-To: a@evil.example", "\r", "\x00", "Ü ok"]
) | st.text(max_size=12)
ENCODED_WORDS = st.builds(
    _encoded_word,
    st.sampled_from(["UTF-8", "utf-8", "iso-8859-1", "us-ascii", "utf-8*en"]),
    st.sampled_from("QqBb"),
    PAYLOADS,
)
CONTROLS = st.sampled_from(
    ["\r", "\n", "\r\n", "\r\n ", "\x00", "\x0b", "\x0c", "\x1b[31m", "\x7f", "\x85", "\u2028", "\u2029"]
) | st.sampled_from(["\u200b", "\ufeff", "\u202e", "\t", "\ud800", "\udfff"])
HEADER_LOOKING = st.sampled_from(
    ["\r\nBcc: x@evil.example", "\nTo: y@evil.example", "\r\n\r\n", "Subject: again", "=?", "?=", "<", ">", '"', "\\"]
)
LONG_WORDS = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=70, max_size=240) | st.text(
    st.characters(min_codepoint=0xA0, max_codepoint=0x2FFFF, exclude_categories=["Cs"]), min_size=30, max_size=120
)
PIECES = st.one_of(
    ENCODED_WORDS,
    CONTROLS,
    HEADER_LOOKING,
    LONG_WORDS,
    st.text(max_size=15),
    st.text(st.characters(exclude_categories=[]), max_size=15),  # anything, lone surrogates too
    st.sampled_from([" ", "  ", "Über", "λ-calculus", "数据", "😀", "e\u0301"]),
)
HOSTILE = st.lists(PIECES, min_size=1, max_size=6).map("".join)
PROPERTY = settings(max_examples=100, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hostile_paper(title: str, authors: list[str], abstract: str) -> Paper:
    real = load_papers()[0]
    return Paper(
        arxiv_id="2506.99911",
        version=1,
        title=title,
        abstract=abstract + " speech enhancement",
        authors=tuple(authors),
        categories=("cs.SD",),
        announced=real.announced,
    )


def sender_with_name(name: str) -> str:
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <digest@notifier.example.org>'


def normal_lines(text: str) -> str:
    """``text`` with every line ending as ``\\n`` and a final one (a MIME text part always ends with a line end)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").removesuffix("\n") + "\n"


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.handlers += [name for name, _ in attrs if name.startswith("on")]


def assert_inert_html(page: str) -> None:
    tags = _Tags()
    tags.feed(page)
    tags.close()
    assert tags.tags <= TEMPLATE_TAGS and not tags.handlers


@PROPERTY
@given(
    title=HOSTILE,
    authors=st.lists(HOSTILE, min_size=1, max_size=3),
    abstract=HOSTILE,
    rule=HOSTILE,
    subscriber=HOSTILE,
    subject=HOSTILE,
    sender_name=HOSTILE,
    list_name=HOSTILE,
)
@example(
    title=END_OF_HEADERS_WORD,
    authors=[REPLY_TO_WORD],
    abstract="\r\nBcc: x@evil.example",
    rule=REPLY_TO_WORD,
    subscriber=END_OF_HEADERS_WORD,
    subject=REPLY_TO_WORD,
    sender_name=REPLY_TO_WORD,
    list_name=END_OF_HEADERS_WORD,
)
@pytest.mark.slow
def test_hostile_text_anywhere_leaves_exactly_the_intended_headers(
    smtp, title, authors, abstract, rule, subscriber, subject, sender_name, list_name
):
    paper = hostile_paper(title, authors, abstract)
    digest = build_digest([paper, *load_papers()[:3]], {rule: ['"speech enhancement"']}, subscriber=subscriber)
    content = Renderer().email(digest, unsubscribe_url=UNSUBSCRIBE)
    content = RenderedEmail(subject=f"{content.subject} {subject}", text=content.text, html=content.html)
    raw = deliver(
        smtp,
        message(content, sender=sender_with_name(sender_name), list_id=f"{list_name} <{LIST_ID}>"),
    )
    msg = assert_intended(raw)
    assert msg["Subject"] == inert(content.subject)
    assert display_name(raw) == inert(sender_name)
    assert msg["From"].addresses[0].addr_spec == "digest@notifier.example.org"
    assert msg["To"] == RECIPIENT
    assert msg["List-Id"] == f"{inert(list_name)} <{LIST_ID}>".lstrip()
    assert raw_field(raw, "List-Unsubscribe") == f"<{UNSUBSCRIBE}>"
    text = msg.get_body(("plain",))
    page = msg.get_body(("html",))
    assert text is not None and page is not None
    assert normal_lines(text.get_content()) == normal_lines(content.text)
    assert normal_lines(unescape(page.get_content())) == normal_lines(unescape(content.html))  # references read
    assert_inert_html(page.get_content())


@PROPERTY
@given(
    local=HOSTILE | st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,30}", fullmatch=True) | st.just('"a b"'),
    domain=st.sampled_from(["example.org", "[lab.example", "[127.0.0.1]", "bücher.example", "", "ex ample.org"]),
)
def test_a_hostile_recipient_is_an_address_error_or_a_clean_message(local, domain):
    try:
        raw = message(plain_content(), recipient=f"{local}@{domain}")
    except AddressError as error:
        assert repr(f"{local}@{domain}") in str(error)
        return
    msg = assert_intended(raw)
    assert len(msg["To"].addresses) == 1 and "=?" not in str(msg["To"])
