"""A subscriber's ``like:`` and ``dislike:`` entries: arXiv ids, authors, and BibTeX files (a Zotero export), read
into :class:`~notifier.config.subscribers.Likes` with every mistake placed at its file and line.

An entry is one of:

- an arXiv id, new style or old, with or without its version: ``2401.01234``, ``2401.01234v2``, ``math/0601001``;
- an author, ``au:"Tianyin Xu"`` (or ``au:Xu``): their papers, fetched through the arXiv API;
- a BibTeX file, a path ending in ``.bib`` (relative to subscribers.yaml): each entry is matched to arXiv by its
  arXiv id (``eprint``, an arxiv.org URL, a ``journal`` of "arXiv preprint arXiv:..."), its DOI (arXiv's own DOIs
  name the id), or else its title.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import bibtexparser.model
from bibtexparser.entrypoint import parse_string

from notifier.config.yaml_source import read_bounded

logging.getLogger("bibtexparser").setLevel(logging.ERROR)  # it logs each bad block; the error we raise says it

MAX_BIB_BYTES = 20 * 2**20  # a Zotero library of tens of thousands of entries

_NEW_ID = r"\d{4}\.\d{4,5}"
_OLD_ID = r"[a-z][a-z-]*(?:\.[A-Z]{2})?/\d{7}"
ARXIV_ID = re.compile(rf"^(?:arXiv:)?({_NEW_ID}|{_OLD_ID})(?:v\d+)?$", re.IGNORECASE)
_AUTHOR = re.compile(r'^au:\s*(?:"([^"]+)"|(\S+))$')
_ID_IN_TEXT = re.compile(rf"(?:arxiv\.org/(?:abs|pdf)/|arXiv[:.]\s*)({_NEW_ID}|{_OLD_ID})", re.IGNORECASE)
_ARXIV_DOI = re.compile(rf"^10\.48550/arxiv\.({_NEW_ID}|{_OLD_ID})$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``like:`` entry, read: exactly one of its fields is set."""

    arxiv_id: str | None = None
    author: str | None = None
    bib_file: Path | None = None


def read_entry(text: str) -> Entry:
    """What a ``like:`` entry names; ValueError, in the words shown to the user, when it is none of the forms."""
    text = text.strip()
    if found := ARXIV_ID.match(text):
        return Entry(arxiv_id=found[1])
    if found := _AUTHOR.match(text):
        name = " ".join((found[1] or found[2]).split())
        if name:
            return Entry(author=name)
    if text.lower().endswith(".bib"):
        return Entry(bib_file=Path(text).expanduser())
    raise ValueError(
        f'{text!r} is not an arXiv id (2401.01234), an author (au:"Tianyin Xu") or a BibTeX file (ending in .bib)'
    )


@dataclass(frozen=True, slots=True)
class BibEntry:
    """A BibTeX entry as far as finding it on arXiv goes."""

    key: str
    line: int  # from 1
    arxiv_id: str | None
    doi: str | None
    title: str | None


class BibError(ValueError):
    """A BibTeX file that cannot be read; ``line`` (from 1) where it goes wrong, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def read_bib(path: Path) -> list[BibEntry]:
    """The entries of the BibTeX file ``path``. Raises :class:`BibError` for a file that cannot be read, has a
    block that is not valid BibTeX, or has no entries."""
    try:
        with path.open("rb") as file:
            data = read_bounded(file, MAX_BIB_BYTES)
    except OSError as exc:
        raise BibError(f"cannot read the BibTeX file: {exc.strerror or exc}") from None
    if data is None:
        raise BibError(f"the BibTeX file is larger than {MAX_BIB_BYTES // 2**20} MB")
    library = parse_string(data.decode("utf-8", errors="replace"))
    for block in library.failed_blocks:
        first = " ".join(str(block.raw).split())[:40]
        reason = " ".join(str(block.error).split()) or "a brace, quote or comma is missing or out of place"
        raise BibError(f"not valid BibTeX: {first!r}: {reason}", _line(block.start_line))
    entries = [_entry(entry) for entry in library.entries]
    if not entries:
        raise BibError("the BibTeX file has no entries")
    return entries


def _entry(entry: bibtexparser.model.Entry) -> BibEntry:
    fields = {name.lower(): _plain(str(field.value)) for name, field in entry.fields_dict.items()}
    arxiv_id = None
    eprint = fields.get("eprint", "")
    if ARXIV_ID.match(eprint) and fields.get("archiveprefix", "arxiv").lower() == "arxiv":
        arxiv_id = ARXIV_ID.match(eprint)[1]  # type: ignore[index]
    for name in ("url", "journal", "note", "howpublished"):
        if arxiv_id is None and (found := _ID_IN_TEXT.search(fields.get(name, ""))):
            arxiv_id = found[1]
    doi = fields.get("doi") or None
    if arxiv_id is None and doi and (found := _ARXIV_DOI.match(doi)):
        arxiv_id = found[1]
    return BibEntry(entry.key, _line(entry.start_line) or 1, arxiv_id, doi, fields.get("title") or None)


def _line(start: int | None) -> int | None:
    return None if start is None else start + 1


def _plain(value: str) -> str:
    """A BibTeX value as text: braces that protect case dropped, whitespace collapsed."""
    return " ".join(value.replace("{", "").replace("}", "").split())


def bib_entries(entries: Sequence[BibEntry]) -> tuple[list[str], list[BibEntry]]:
    """The arXiv ids the entries name, and the entries that name none (to be found by DOI or title)."""
    ids = [entry.arxiv_id for entry in entries if entry.arxiv_id]
    rest = [entry for entry in entries if not entry.arxiv_id and (entry.doi or entry.title)]
    return ids, rest
