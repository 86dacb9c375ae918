"""A slow, obviously correct matcher to check the fast one against.

It normalises each field to one string of space-separated tokens (whole-string Unicode and LaTeX handling, no
offsets), turns each term into a regular expression, and evaluates the query tree paper by paper.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from notifier.matching.query import And, Node, Not, Or, Term, parse_query
from notifier.matching.text import _SILENT_COMMANDS
from notifier.models import Field, Paper

_SPECIAL = re.compile(r"\{\\(o|O|l|L|ae|AE|oe|OE|ss|aa|AA|i|j)\}|\\([ij])(?![A-Za-z])")
_ACCENT = re.compile(r"\{?\\[`'^\"~=.]\s*\{?([A-Za-z])\}?\}?")
_LETTER_ACCENT = re.compile(r"\{?\\[uvHckrbd](?:\{([A-Za-z])\}|\s+([A-Za-z]))\}?")
_COMMAND = re.compile(r"\\([A-Za-z]+)\*?")
_FOLD = str.maketrans({"ø": "o", "ł": "l", "đ": "d", "ð": "d", "æ": "ae", "œ": "oe", "ı": "i", "þ": "th"})


def _first_group(match: re.Match[str]) -> str:
    return next(group for group in match.groups() if group is not None)


def normalise(text: str) -> str:
    """' tok tok tok ': the tokens of a field, each surrounded by single spaces."""
    text = _SPECIAL.sub(_first_group, text)
    text = _ACCENT.sub(_first_group, text)
    text = _LETTER_ACCENT.sub(_first_group, text)
    text = _COMMAND.sub(lambda m: " " if m.group(1) in _SILENT_COMMANDS else " " + m.group(1), text)
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).translate(_FOLD)
    text = unicodedata.normalize("NFKC", text).casefold()
    return " " + " ".join(re.findall(r"[^\W_]+", text)) + " "


def plural(word: str) -> str | None:
    """The regular English plural: policy -> policies, process -> processes, gpu -> gpus."""
    if len(word) < 3 or not word[-1].isalpha():
        return None
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


def same_word(query_word: str, token: str) -> bool:
    """A token matches a query word when one is the other or the plural of the other."""
    return token == query_word or plural(query_word) == token or plural(token) == query_word


def _word_pattern(word: str, prefix: bool) -> str:
    if prefix:
        return re.escape(word) + r"[^ ]*"
    candidates = {word, plural(word) or word, word[:-1], word[:-2], word[:-3] + "y"}
    return "(?:" + "|".join(re.escape(c) for c in sorted(candidates) if c and same_word(word, c)) + ")"


def _name_pattern(word: str, prefix: bool) -> str:
    return re.escape(word) + (r"[^ ]*" if prefix or len(word) == 1 else "")


@lru_cache(maxsize=100_000)
def term_regex(term: Term) -> re.Pattern[str]:
    last = len(term.words) - 1
    if term.field is Field.AUTHORS:
        pieces = [_name_pattern(word, term.prefix and i == last) for i, word in enumerate(term.words)]
        return re.compile(" " + "(?: [^ ]+)*? ".join(pieces) + " ")
    pieces = [_word_pattern(word, term.prefix and i == last) for i, word in enumerate(term.words)]
    return re.compile(" " + " ".join(pieces) + " ")


@dataclass(frozen=True)
class NormalPaper:
    """A paper's fields, normalised once."""

    title: str
    abstract: str
    comment: str
    authors: tuple[str, ...]
    categories: tuple[str, ...]

    @classmethod
    def of(cls, paper: Paper) -> NormalPaper:
        return cls(
            normalise(paper.title),
            normalise(paper.abstract),
            normalise(paper.comment or ""),
            tuple(normalise(author) for author in paper.authors),
            tuple(category.casefold() for category in paper.categories),
        )


def has_term(term: Term, paper: NormalPaper) -> bool:
    if term.field is Field.CATEGORIES:
        word = term.words[0]
        return any(c.startswith(word) if term.prefix else c == word for c in paper.categories)
    regex = term_regex(term)
    if term.field is Field.AUTHORS:
        return any(regex.search(author) for author in paper.authors)
    texts = {
        None: (paper.title, paper.abstract),
        Field.TITLE: (paper.title,),
        Field.ABSTRACT: (paper.abstract,),
        Field.COMMENT: (paper.comment,),
    }[term.field]
    return any(regex.search(text) for text in texts)


def evaluate(node: Node, paper: NormalPaper) -> bool:
    if isinstance(node, Term):
        return has_term(node, paper)
    if isinstance(node, Not):
        return not evaluate(node.child, paper)
    if isinstance(node, And):
        return all(evaluate(child, paper) for child in node.children)
    assert isinstance(node, Or)
    return any(evaluate(child, paper) for child in node.children)


def reference_match(rules: Sequence[tuple[str, str]], papers: Sequence[Paper]) -> dict[str, list[str]]:
    """Key -> matched arXiv ids in paper order, for ``(key, query)`` rules; keys without a match are left out."""
    normal = [NormalPaper.of(paper) for paper in papers]
    return match_normalised(rules, papers, normal)


def match_normalised(
    rules: Sequence[tuple[str, str]], papers: Sequence[Paper], normal: Sequence[NormalPaper]
) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    for key, query in rules:
        node = parse_query(query)
        ids = [paper.arxiv_id for paper, n in zip(papers, normal, strict=True) if evaluate(node, n)]
        if ids:
            result[key] = ids
    return result
