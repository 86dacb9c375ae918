"""Untrusted XML from arXiv, screened before anything parses it: the feeds (:mod:`.rss`) and the API (:mod:`.api`)."""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeET

from notifier.arxiv.display import clean_display
from notifier.arxiv.gate import DEFAULT_MAX_BYTES
from notifier.errors import FeedParseError

RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
ATOM_NS = "http://www.w3.org/2005/Atom"
FEED_ROOTS = frozenset({"rss", f"{{{RDF_NS}}}RDF", f"{{{ATOM_NS}}}feed"})
_HTML_SNIFF = re.compile(rb"<!doctype\s+html|<html[\s>]", re.IGNORECASE)
_HTML_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_DECLARATION = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


class MalformedXML(FeedParseError):
    """The body is not well-formed XML (kept apart so the RSS parser can tolerate a complete but sloppy feed)."""


def safe_xml_root(body: bytes, *, what: str, max_bytes: int = DEFAULT_MAX_BYTES) -> Element:
    """Screen untrusted XML and return its root element, or raise :class:`FeedParseError` saying what is wrong.

    Rejects bodies over ``max_bytes``, empty bodies, HTML pages, any DTD or entity declaration (so entities are
    never expanded), malformed XML, and roots that are not RSS, RDF or Atom.
    """
    if len(body) > max_bytes:
        raise FeedParseError(f"{what}: body of {len(body)} bytes exceeds the {max_bytes}-byte limit")
    if not body.strip():
        raise FeedParseError(f"{what}: empty body where a feed was expected")
    head = body[:4096]
    if _HTML_SNIFF.search(head):
        title = _HTML_TITLE.search(body[:65536])
        detail = f" ({clean_display(title.group(1).decode('utf-8', 'replace'))})" if title else ""
        raise FeedParseError(f"{what}: arXiv sent an HTML page instead of a feed{detail}")
    if _DECLARATION.search(body):
        raise FeedParseError(f"{what}: the XML declares a DTD or entities; refused (possible entity-expansion bomb)")
    try:
        root: Element = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise FeedParseError(f"{what}: the XML declares a DTD or entities; refused ({exc})") from exc
    except ParseError as exc:
        raise MalformedXML(f"{what}: malformed XML ({exc})") from exc
    if root.tag not in FEED_ROOTS:
        raise FeedParseError(f"{what}: root element <{root.tag}> is not an RSS, RDF or Atom feed")
    return root
