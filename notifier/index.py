"""An index over one batch of papers: its normalised tokens, where each term occurs, and the terms that
:mod:`notifier.lexicon` cannot look up by key.

Each paper's fields are tokenised once, here; the lexicon reads those tokens. Everything else is built on first
use. :meth:`PaperIndex.hits` gives the spans of a term in one paper's display text, for the digests. For the
terms the lexicon leaves to it (prefixes inside phrases, very long phrases, other author forms),
:meth:`PaperIndex.papers_holding` answers from token postings, with Python ints as bitsets of papers: a long
phrase intersects the postings of its adjacent token pairs first and checks token positions only in the papers
that survive; an author term narrows down by its words, then checks each name, where a one-letter word is an
initial.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from operator import add
from typing import TypeAlias

from notifier.models import Field, Hit, Paper
from notifier.query import Term
from notifier.text import plural_variants, tokenize, tokenize_spans

DEFAULT_FIELDS = (Field.TITLE, Field.ABSTRACT)
TEXT_FIELDS = (Field.TITLE, Field.ABSTRACT, Field.COMMENT)

_SPARSE = 256  # up to this many set bits, peeling the top bit off beats formatting the whole int


Answer: TypeAlias = tuple[int, list[int] | None]  # papers as a bitset and, when known, as ascending numbers
_NONE: Answer = (0, [])


def bit_indices(bits: int) -> list[int]:
    """The positions of the set bits of ``bits``, ascending."""
    if bits.bit_count() <= _SPARSE:
        found: list[int] = []
        while bits:
            top = bits.bit_length() - 1
            found.append(top)
            bits ^= 1 << top
        found.reverse()
        return found
    pieces = format(bits, "b")[::-1].split("1")
    pieces.pop()
    positions = itertools.accumulate([len(piece) + 1 for piece in pieces], add, initial=-1)
    next(positions)
    return list(positions)


def _bits_of(indices: Iterable[int]) -> int:
    bits = 0
    for index in indices:
        bits |= 1 << index
    return bits


@lru_cache(maxsize=1 << 16)
def _variants(word: str) -> tuple[str, ...]:
    return tuple(sorted(plural_variants(word)))


def display_text(paper: Paper, field: Field) -> str:
    if field is Field.TITLE:
        return paper.title
    if field is Field.ABSTRACT:
        return paper.abstract
    return paper.comment or ""


def name_token_matches(word: str, prefix: bool, token: str) -> bool:
    """Whether one token of an author's name matches one token of an ``au:`` term (one letter is an initial)."""
    return token == word or ((prefix or len(word) == 1) and token.startswith(word))


def _first_name_match(words: tuple[str, ...], prefix: bool, name: list[str]) -> tuple[int, int] | None:
    """The first and last name-token positions where ``words`` occur in order within ``name``, or None."""
    wanted = 0
    first = 0
    last_word = len(words) - 1
    for position, token in enumerate(name):
        if name_token_matches(words[wanted], prefix and wanted == last_word, token):
            if wanted == 0:
                first = position
            if wanted == last_word:
                return first, position
            wanted += 1
    return None


class _Postings:
    """Key -> the ascending numbers of the papers holding it, with bitsets made on demand."""

    def __init__(self) -> None:
        self.papers: dict[object, list[int]] = {}
        self._bits: dict[object, int] = {}
        self._sorted: list[str] | None = None

    def add(self, paper: int, keys: Iterable[object]) -> None:
        papers = self.papers
        for key in keys:
            found = papers.get(key)
            if found is None:
                papers[key] = [paper]
            elif found[-1] != paper:
                found.append(paper)

    def bits(self, key: object) -> int:
        bits = self._bits.get(key)
        if bits is None:
            bits = self._bits[key] = _bits_of(self.papers.get(key, ()))
        return bits

    def union(self, keys: Iterable[object]) -> int:
        bits = 0
        for key in keys:
            if key in self.papers:
                bits |= self.bits(key)
        return bits

    def answer(self, keys: Sequence[object]) -> Answer:
        """The papers holding any of ``keys``: as a bitset, and as paper numbers (shared: do not modify)."""
        if len(keys) == 1:
            return self.bits(keys[0]), self.papers.get(keys[0], [])
        papers = self.papers
        present = [key for key in keys if key in papers]
        if len(present) <= 1:
            return (self.bits(present[0]), self.papers[present[0]]) if present else _NONE
        return self.union(present), sorted(set().union(*[self.papers[key] for key in present]))

    def starting_with(self, prefix: str) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(key for key in self.papers if isinstance(key, str))
        start = bisect.bisect_left(self._sorted, prefix)
        end = bisect.bisect_left(self._sorted, prefix + "\U0010ffff", start)
        return self._sorted[start:end]


class _TextIndex:
    """Tokens of one or more text fields (title and abstract together for plain terms), and the pairs asked for.

    Word postings cover the whole vocabulary. Pair postings (two consecutive tokens within one field) cover only
    the pairs that phrases ask for: :meth:`cover` adds them, with one set intersection per text.
    """

    def __init__(
        self,
        fields: tuple[Field, ...],
        tokens: dict[Field, list[list[str]]],
        positions: Callable[[Field, int], dict[str, list[int]]],
    ) -> None:
        self.fields = fields
        self.tokens = tokens  # per field, per paper
        self.positions = positions
        self.words = _Postings()
        for paper, texts in enumerate(zip(*[tokens[field] for field in fields], strict=True)):
            self.words.add(paper, set().union(*texts))
        self.grams = _Postings()
        self._covered: set[tuple[str, ...]] = set()
        self._present: dict[str, tuple[str, ...]] = {}
        self._prefixed: dict[str, tuple[str, ...]] = {}

    def options(self, word: str, prefix: bool) -> tuple[str, ...]:
        """Tokens of these fields that a query word matches: its plural variants, or everything it starts."""
        if prefix:
            found = self._prefixed.get(word)
            if found is None:
                found = self._prefixed[word] = tuple(self.words.starting_with(word))
            return found
        found = self._present.get(word)
        if found is None:
            papers = self.words.papers
            found = self._present[word] = tuple(v for v in _variants(word) if v in papers)
        return found

    def cover(self, keys: Iterable[tuple[str, ...]]) -> None:
        """Make sure the postings of these token runs are known."""
        new = set(keys).difference(self._covered)
        if not new:
            return
        self._covered |= new
        by_length: dict[int, set[tuple[str, ...]]] = {}
        for key in new:
            by_length.setdefault(len(key), set()).add(key)
        wanted = sorted(by_length.items())
        add = self.grams.add
        for paper, texts in enumerate(zip(*[self.tokens[field] for field in self.fields], strict=True)):
            found: set[tuple[str, ...]] = set()
            for length, keys_of_length in wanted:
                for tokens in texts:
                    if len(tokens) >= length:
                        found.update(
                            keys_of_length.intersection(zip(*[tokens[i:] for i in range(length)], strict=False))
                        )
            if found:
                add(paper, found)

    def answer(self, words: tuple[str, ...], prefix: bool) -> Answer:
        """Papers where the words occur consecutively in one field."""
        if len(words) == 1:
            return self.words.answer(self.options(words[0], prefix))
        last = len(words) - 1
        options = [self.options(word, prefix and i == last) for i, word in enumerate(words)]
        if not all(options):
            return _NONE
        pairs: list[list[tuple[str, ...]]] = [list(itertools.product(a, b)) for a, b in itertools.pairwise(options)]
        self.cover(pair for pair_keys in pairs for pair in pair_keys)
        candidates = -1
        for pair_keys in pairs:
            candidates &= self.grams.union(pair_keys)
            if not candidates:
                return _NONE
        groups = [frozenset(tokens) for tokens in options]
        verified = 0
        for paper in bit_indices(candidates):
            for field in self.fields:
                tokens = self.tokens[field][paper]
                if _phrase_starts(tokens, self.positions(field, paper), groups, first_only=True):
                    verified |= 1 << paper
                    break
        return verified, None


def positions_of(tokens: list[str]) -> dict[str, list[int]]:
    """Token -> its ascending positions in ``tokens``."""
    positions: dict[str, list[int]] = {}
    for position, token in enumerate(tokens):
        found = positions.get(token)
        if found is None:
            positions[token] = [position]
        else:
            found.append(position)
    return positions


def _phrase_starts(
    tokens: list[str], positions: dict[str, list[int]], groups: list[frozenset[str]], *, first_only: bool = False
) -> list[int]:
    """Positions in ``tokens`` where a token of each group follows one of the previous group, in order."""
    head = groups[0]
    if len(head) == 1:
        (token,) = head
        heads: Iterable[int] = positions.get(token, ())
    elif len(head) > len(positions):
        heads = sorted(p for token, found in positions.items() if token in head for p in found)
    else:
        heads = sorted(p for token in head for p in positions.get(token, ()))
    if len(groups) == 1:
        return list(heads)
    stop = len(tokens) - len(groups) + 1
    starts: list[int] = []
    for start in heads:
        if start >= stop:
            break
        if all(tokens[start + offset] in group for offset, group in enumerate(groups[1:], start=1)):
            starts.append(start)
            if first_only:
                break
    return starts


class _NameIndex:
    """Author-name tokens per paper and per name (``au:"First Last"`` itself is a key of the lexicon)."""

    def __init__(self, names: list[list[list[str]]]) -> None:
        self.names = names  # per paper, per author
        self.words = _Postings()
        for paper, authors in enumerate(names):
            self.words.add(paper, {token for name in authors for token in name})

    def options(self, word: str, prefix: bool) -> list[str]:
        if prefix or len(word) == 1:
            return self.words.starting_with(word)
        return [word] if word in self.words.papers else []

    def answer(self, words: tuple[str, ...], prefix: bool) -> Answer:
        if len(words) == 1:
            return self.words.answer(self.options(words[0], prefix))
        candidates = -1
        for i, word in enumerate(words):
            if len(word) > 1 or (prefix and i == len(words) - 1):  # an initial narrows down little, at a cost
                candidates &= self.words.union(self.options(word, prefix and i == len(words) - 1))
        found = [
            paper
            for paper in bit_indices(candidates)
            if any(_first_name_match(words, prefix, name) for name in self.names[paper])
        ]
        return _bits_of(found), found


class PaperIndex:
    """Everything matching needs to know about one batch of papers."""

    def __init__(self, papers: Sequence[Paper]) -> None:
        self.papers = papers
        self.everything = (1 << len(papers)) - 1
        self._tokens: dict[Field, list[list[str]]] = {
            field: [tokenize(display_text(paper, field)) for paper in papers] for field in TEXT_FIELDS
        }
        self._texts: dict[int, _TextIndex] = {}
        self._name_index: _NameIndex | None = None
        self._categories = [[category.casefold() for category in paper.categories] for paper in papers]
        self._category_index: _Postings | None = None
        self._answers: dict[tuple[int, tuple[str, ...], bool], Answer] = {}  # id(field): enums hash slowly
        self._positions: dict[tuple[int, int], dict[str, list[int]]] = {}  # keyed by id(field), paper
        self._spans: dict[tuple[int, int], list[tuple[int, int]]] = {}
        self._author_spans: dict[tuple[int, int], list[tuple[int, int]]] = {}

    # -- which papers ------------------------------------------------------------------------------------------

    def _text(self, field: Field | None) -> _TextIndex:
        found = self._texts.get(id(field))
        if found is None:
            fields = DEFAULT_FIELDS if field is None else (field,)
            found = self._texts[id(field)] = _TextIndex(fields, self._tokens, self._positions_of)
        return found

    @property
    def _names(self) -> _NameIndex:
        if self._name_index is None:
            names = [[tokenize(author) for author in paper.authors] for paper in self.papers]
            self._name_index = _NameIndex(names)
        return self._name_index

    @property
    def _category_postings(self) -> _Postings:
        if self._category_index is None:
            self._category_index = _Postings()
            for paper, categories in enumerate(self._categories):
                self._category_index.add(paper, set(categories))
        return self._category_index

    def _answer(self, term: Term) -> Answer:
        key = (id(term.field), term.words, term.prefix)
        found = self._answers.get(key)
        if found is None:
            if term.field is Field.AUTHORS:
                found = self._names.answer(term.words, term.prefix)
            elif term.field is Field.CATEGORIES:
                found = self._category_postings.answer(self._category_options(term))
            else:
                found = self._text(term.field).answer(term.words, term.prefix)
            self._answers[key] = found
        return found

    def papers_holding(self, term: Term) -> list[int]:
        """The numbers of the papers that hold ``term``, ascending (computed once per batch per distinct term)."""
        bits, numbers = self._answer(term)
        return list(numbers) if numbers is not None else bit_indices(bits)

    # -- what matching reads -----------------------------------------------------------------------------------

    def tokens(self, field: Field) -> list[list[str]]:
        """The normalised tokens of one text field, per paper (shared: do not modify)."""
        return self._tokens[field]

    @property
    def author_tokens(self) -> list[list[list[str]]]:
        """Per paper, per author, the tokens of the name (shared: do not modify)."""
        return self._names.names

    @property
    def categories(self) -> list[list[str]]:
        """Per paper, its categories, case-folded (shared: do not modify)."""
        return self._categories

    def _category_options(self, term: Term) -> list[str]:
        if term.prefix:
            return self._category_postings.starting_with(term.words[0])
        return [term.words[0]] if term.words[0] in self._category_postings.papers else []

    # -- where -------------------------------------------------------------------------------------------------

    def _positions_of(self, field: Field, paper: int) -> dict[str, list[int]]:
        positions = self._positions.get((id(field), paper))
        if positions is None:
            positions = self._positions[id(field), paper] = positions_of(self._tokens[field][paper])
        return positions

    def _spans_of(self, field: Field, paper: int) -> list[tuple[int, int]]:
        spans = self._spans.get((id(field), paper))
        if spans is None:
            spans = self._spans[id(field), paper] = tokenize_spans(display_text(self.papers[paper], field))[1]
        return spans

    def hits(self, term: Term, paper: int) -> tuple[Hit, ...]:
        """Where ``term`` occurs in paper number ``paper``, as spans of the display text."""
        if term.field is Field.AUTHORS:
            return self._name_hits(term, paper)
        if term.field is Field.CATEGORIES:
            tokens = set(self._category_options(term))
            return tuple(
                Hit(term.label, Field.CATEGORIES, 0, len(self.papers[paper].categories[i]), i)
                for i, category in enumerate(self._categories[paper])
                if category in tokens
            )
        found: list[Hit] = []
        width = len(term.words) - 1
        text = self._text(term.field)
        last = len(term.words) - 1
        groups = [frozenset(text.options(word, term.prefix and i == last)) for i, word in enumerate(term.words)]
        for field in DEFAULT_FIELDS if term.field is None else (term.field,):
            starts = _phrase_starts(self._tokens[field][paper], self._positions_of(field, paper), groups)
            if starts:
                spans = self._spans_of(field, paper)
                found.extend(Hit(term.label, field, spans[s][0], spans[s + width][1]) for s in starts)
        return tuple(found)

    def _name_hits(self, term: Term, paper: int) -> tuple[Hit, ...]:
        found: list[Hit] = []
        for number, name in enumerate(self._names.names[paper]):
            place = _first_name_match(term.words, term.prefix, name)
            if place is not None:
                spans = self._author_spans.get((paper, number))
                if spans is None:
                    spans = self._author_spans[paper, number] = tokenize_spans(self.papers[paper].authors[number])[1]
                found.append(Hit(term.label, Field.AUTHORS, spans[place[0]][0], spans[place[1]][1], number))
        return tuple(found)
