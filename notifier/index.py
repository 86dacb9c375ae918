"""An index over one batch of papers: which papers hold which tokens, and where.

Paper sets are Python ints used as bitsets (bit ``i`` is paper ``i`` of the batch), so AND, OR and NOT over a
whole batch cost one integer operation. Token positions and display-text spans are computed only for the papers
that a phrase or a hit needs.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Sequence

from notifier.models import Field, Hit, Paper
from notifier.query import Term
from notifier.text import plural_variants, tokenize, tokenize_spans

DEFAULT_FIELDS = (Field.TITLE, Field.ABSTRACT)
TEXT_FIELDS = (Field.TITLE, Field.ABSTRACT, Field.COMMENT)


def bit_indices(bits: int) -> list[int]:
    """The positions of the set bits of ``bits``, ascending."""
    digits = format(bits, "b")[::-1]
    found: list[int] = []
    position = digits.find("1")
    while position >= 0:
        found.append(position)
        position = digits.find("1", position + 1)
    return found


def _bits_of(indices: list[int]) -> int:
    bits = 0
    for index in indices:
        bits |= 1 << index
    return bits


def _key(field: Field, number: int) -> int:
    """A cheap cache key for (field, term id or paper number): Enum members hash slowly."""
    slot = 0 if field is Field.TITLE else 1 if field is Field.ABSTRACT else 2 if field is Field.COMMENT else 3
    return number * 4 + slot


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


class _Vocabulary:
    """Token -> papers for one field, with the token list sorted for prefix look-ups."""

    def __init__(self) -> None:
        self.papers: defaultdict[str, list[int]] = defaultdict(list)
        self._bits: dict[str, int] = {}
        self._sorted: list[str] | None = None

    def add(self, paper: int, tokens: Sequence[str]) -> None:
        for token in set(tokens):
            self.papers[token].append(paper)

    def bits(self, token: str) -> int:
        bits = self._bits.get(token)
        if bits is None:
            bits = self._bits[token] = _bits_of(self.papers.get(token, []))
        return bits

    def starting_with(self, prefix: str) -> frozenset[str]:
        if self._sorted is None:
            self._sorted = sorted(self.papers)
        start = bisect.bisect_left(self._sorted, prefix)
        end = bisect.bisect_left(self._sorted, prefix + "\U0010ffff")
        return frozenset(self._sorted[start:end])

    def text_options(self, word: str, prefix: bool) -> frozenset[str]:
        """Tokens of this field that a query word matches: its plural variants, or everything it starts."""
        if prefix:
            return self.starting_with(word)
        return frozenset(variant for variant in plural_variants(word) if variant in self.papers)

    def name_options(self, word: str, prefix: bool) -> frozenset[str]:
        if prefix or len(word) == 1:
            return self.starting_with(word)
        return frozenset([word]) if word in self.papers else frozenset()


class PaperIndex:
    """Everything matching needs to know about one batch of papers."""

    def __init__(self, papers: Sequence[Paper]) -> None:
        self.papers = papers
        self.everything = (1 << len(papers)) - 1
        self._tokens: dict[Field, list[list[str]]] = {field: [] for field in TEXT_FIELDS}
        self._vocab: dict[Field, _Vocabulary] = {field: _Vocabulary() for field in (*TEXT_FIELDS, Field.AUTHORS)}
        self._names: list[list[list[str]]] = []
        self._categories: list[list[str]] = []
        self._category_vocab = _Vocabulary()
        for number, paper in enumerate(papers):
            for field in TEXT_FIELDS:
                tokens = tokenize(display_text(paper, field))
                self._tokens[field].append(tokens)
                self._vocab[field].add(number, tokens)
            names = [tokenize(author) for author in paper.authors]
            self._names.append(names)
            self._vocab[Field.AUTHORS].add(number, [token for name in names for token in name])
            categories = [category.casefold() for category in paper.categories]
            self._categories.append(categories)
            self._category_vocab.add(number, categories)
        self._pairs: dict[Field, _Vocabulary] = {}
        self._field_bits: dict[int, int] = {}
        self._positions: dict[int, dict[str, list[int]]] = {}
        self._spans: dict[int, list[tuple[int, int]]] = {}
        self._options: dict[int, list[frozenset[str]]] = {}  # keyed by field and id(term)

    # -- which papers ------------------------------------------------------------------------------------------

    def bits(self, term: Term) -> int:
        """The papers of the batch that hold ``term``, as a bitset."""
        if term.field is Field.AUTHORS:
            return self._name_bits(term)
        if term.field is Field.CATEGORIES:
            return self._union(self._category_vocab, self._category_options(term))
        bits = 0
        for field in DEFAULT_FIELDS if term.field is None else (term.field,):
            bits |= self._text_bits(field, term)
        return bits

    def _union(self, vocab: _Vocabulary, tokens: frozenset[str]) -> int:
        bits = 0
        for token in tokens:
            bits |= vocab.bits(token)
        return bits

    def _candidates(self, vocab: _Vocabulary, options: list[frozenset[str]]) -> int:
        bits = self.everything
        for tokens in options:
            bits &= self._union(vocab, tokens)
            if not bits:
                break
        return bits

    def _text_options(self, field: Field, term: Term) -> list[frozenset[str]]:
        options = self._options.get(_key(field, id(term)))
        if options is None:
            last = len(term.words) - 1
            vocab = self._vocab[field]
            options = [vocab.text_options(word, term.prefix and i == last) for i, word in enumerate(term.words)]
            self._options[_key(field, id(term))] = options
        return options

    def _text_bits(self, field: Field, term: Term) -> int:
        bits = self._field_bits.get(_key(field, id(term)))
        if bits is None:
            options = self._text_options(field, term)
            if len(options) == 1 or not all(options):
                bits = self._candidates(self._vocab[field], options)
            else:
                candidates = (
                    self._candidates(self._vocab[field], options)
                    if term.prefix
                    else self._pair_candidates(field, options)
                )
                if len(options) > 2 or term.prefix:
                    verified = [
                        paper for paper in bit_indices(candidates) if self._phrase_starts(field, paper, options)
                    ]
                    candidates = _bits_of(verified)
                bits = candidates
            self._field_bits[_key(field, id(term))] = bits
        return bits

    def _pair_candidates(self, field: Field, options: list[frozenset[str]]) -> int:
        """Papers holding every adjacent pair of the phrase: exactly the phrase's papers when it has two words."""
        pairs = self._pairs.get(field)
        if pairs is None:
            pairs = self._pairs[field] = _Vocabulary()
            for paper, tokens in enumerate(self._tokens[field]):
                pairs.add(paper, [f"{a} {b}" for a, b in itertools.pairwise(tokens)])
        bits = self.everything
        for first, second in itertools.pairwise(options):
            bits &= self._union(pairs, frozenset(f"{a} {b}" for a in first for b in second))
            if not bits:
                break
        return bits

    def _name_options(self, term: Term) -> list[frozenset[str]]:
        options = self._options.get(_key(Field.AUTHORS, id(term)))
        if options is None:
            last = len(term.words) - 1
            vocab = self._vocab[Field.AUTHORS]
            options = [vocab.name_options(word, term.prefix and i == last) for i, word in enumerate(term.words)]
            self._options[_key(Field.AUTHORS, id(term))] = options
        return options

    def _name_bits(self, term: Term) -> int:
        last = len(term.words) - 1
        options = [
            tokens
            for i, (word, tokens) in enumerate(zip(term.words, self._name_options(term), strict=True))
            if len(word) > 1 or (term.prefix and i == last)
        ]  # initials only narrow the candidates down a little, and cost a long union
        candidates = self._candidates(self._vocab[Field.AUTHORS], options)
        if not candidates or (len(term.words) == 1 and len(options) == 1):
            return candidates  # one whole name token: its postings are the answer
        return _bits_of(
            [
                paper
                for paper in bit_indices(candidates)
                if any(_first_name_match(term.words, term.prefix, name) for name in self._names[paper])
            ]
        )

    def _category_options(self, term: Term) -> frozenset[str]:
        if term.prefix:
            return self._category_vocab.starting_with(term.words[0])
        return frozenset(term.words) & self._category_vocab.papers.keys()

    # -- where -------------------------------------------------------------------------------------------------

    def _positions_of(self, field: Field, paper: int) -> dict[str, list[int]]:
        positions = self._positions.get(_key(field, paper))
        if positions is None:
            positions = defaultdict(list)
            for position, token in enumerate(self._tokens[field][paper]):
                positions[token].append(position)
            self._positions[_key(field, paper)] = positions
        return positions

    def _phrase_starts(self, field: Field, paper: int, options: list[frozenset[str]]) -> list[int]:
        """Token positions in one field of one paper where the term's words occur consecutively."""
        positions = self._positions_of(field, paper)

        def where(tokens: frozenset[str]) -> set[int]:
            if len(tokens) > len(positions):
                return {p for token, found in positions.items() if token in tokens for p in found}
            return {p for token in tokens for p in positions.get(token, ())}

        if len(options) == 1 and len(options[0]) <= len(positions):
            return sorted(p for token in options[0] for p in positions.get(token, ()))
        starts = sorted(where(options[0]))
        for offset, tokens in enumerate(options[1:], start=1):
            if not starts:
                break
            later = where(tokens)
            starts = [start for start in starts if start + offset in later]
        return starts

    def _spans_of(self, field: Field, paper: int) -> list[tuple[int, int]]:
        spans = self._spans.get(_key(field, paper))
        if spans is None:
            spans = self._spans[_key(field, paper)] = tokenize_spans(display_text(self.papers[paper], field))[1]
        return spans

    def hits(self, term: Term, paper: int) -> tuple[Hit, ...]:
        """Where ``term`` occurs in paper number ``paper``, as spans of the display text."""
        if term.field is Field.AUTHORS:
            return self._name_hits(term, paper)
        if term.field is Field.CATEGORIES:
            tokens = self._category_options(term)
            return tuple(
                Hit(term.label, Field.CATEGORIES, 0, len(self.papers[paper].categories[i]), i)
                for i, category in enumerate(self._categories[paper])
                if category in tokens
            )
        found: list[Hit] = []
        width = len(term.words) - 1
        for field in DEFAULT_FIELDS if term.field is None else (term.field,):
            if not self._text_bits(field, term) >> paper & 1:
                continue
            starts = self._phrase_starts(field, paper, self._text_options(field, term))
            if starts:
                spans = self._spans_of(field, paper)
                found.extend(Hit(term.label, field, spans[s][0], spans[s + width][1]) for s in starts)
        return tuple(found)

    def _name_hits(self, term: Term, paper: int) -> tuple[Hit, ...]:
        found: list[Hit] = []
        for number, name in enumerate(self._names[paper]):
            place = _first_name_match(term.words, term.prefix, name)
            if place is not None:
                author = self.papers[paper].authors[number]
                spans = tokenize_spans(author)[1]
                found.append(Hit(term.label, Field.AUTHORS, spans[place[0]][0], spans[place[1]][1], number))
        return tuple(found)
