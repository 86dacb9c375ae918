"""An index over one batch of papers: its normalised tokens, where each token occurs, and the terms that
:mod:`notifier.matching.lexicon` cannot look up by key.

Each paper's text fields and author names are tokenised once, here, in bulk; the lexicon reads the result. The
batch's tokens are numbered in sorted order (:attr:`PaperIndex.vocabulary`), so a prefix's tokens are one range of
numbers, found by bisecting. Each text field, and the author names, are one array of token numbers
(:class:`FieldTokens`) with positional postings made on first use. A phrase the lexicon leaves here (a prefix
inside it, or more words than it looks up) starts from the positions of its rarest word and checks the other words
at their offsets; an author term reads only the names that hold its rarest word, where a one-letter word is an
initial. Either way the cost grows with that word's occurrences, never with the batch. :meth:`PaperIndex.hits`
gives the spans of a term in one paper's display text, for the digests, reading only that paper.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

import numpy as np

from notifier.matching.bitsets import Ints, offsets_of
from notifier.matching.query import Term
from notifier.matching.text import SEPARATOR, plural_variants, token_spans, tokenize_all
from notifier.models import Field, Hit, Paper

DEFAULT_FIELDS = (Field.TITLE, Field.ABSTRACT)
TEXT_FIELDS = (Field.TITLE, Field.ABSTRACT, Field.COMMENT)

Group: TypeAlias = range | tuple[int, ...]  # token numbers a query word matches: a prefix's range, or variants
_NO_PAPERS: Ints = np.empty(0, dtype=np.int64)


def _is(vocabulary: list[str], number: int, token: str) -> bool:
    return number < len(vocabulary) and vocabulary[number] == token


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
    """Key -> the ascending numbers of the papers holding it."""

    def __init__(self) -> None:
        self.papers: dict[str, list[int]] = {}
        self._sorted: list[str] | None = None

    def add(self, paper: int, keys: Iterable[str]) -> None:
        papers = self.papers
        for key in keys:
            found = papers.get(key)
            if found is None:
                papers[key] = [paper]
            elif found[-1] != paper:
                found.append(paper)

    def answer(self, keys: Sequence[str]) -> list[int]:
        """The papers holding any of ``keys``, ascending (shared when one key holds them all: do not modify)."""
        present = [self.papers[key] for key in keys if key in self.papers]
        if len(present) <= 1:
            return present[0] if present else []
        return sorted(set().union(*present))

    def starting_with(self, prefix: str) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.papers)
        start = bisect.bisect_left(self._sorted, prefix)
        end = bisect.bisect_left(self._sorted, prefix + "\U0010ffff", start)
        return self._sorted[start:end]


@dataclass(frozen=True, slots=True)
class FieldTokens:
    """One text field of every paper of a batch (or every author name), as one array of batch token numbers.

    ``ids[0]`` is the separator (0, the number of :data:`~notifier.matching.text.SEPARATOR`, never a token), and each
    paper's (or name's) tokens are followed by another, so that no token run crosses from one paper into the next
    and a look-up clipped at either end lands on a separator. ``paper_of`` gives each position's paper. The
    positional postings (:meth:`postings`) are made on first use: one stable sort puts every token's positions,
    ascending, side by side, and because the batch's tokens are numbered in sorted order, the tokens that start
    with a prefix are one contiguous slice.
    """

    ids: Ints
    paper_of: Ints
    # Made on first use: (offsets by token number, positions), and where the separators are.
    _postings: list[tuple[Ints, Ints]] = dataclasses.field(default_factory=list)
    _bounds: list[int] = dataclasses.field(default_factory=list)

    def postings(self) -> tuple[Ints, Ints]:
        """Positional postings: the positions of token ``t`` are ``order[offsets[t] : offsets[t + 1]]``."""
        if not self._postings:
            narrow = self.ids.astype(np.uint16) if len(self.ids) and self.ids.max() < 2**16 else self.ids
            order = np.argsort(narrow, kind="stable")  # a radix sort, in linear time, for 16-bit numbers
            self._postings.append((offsets_of(np.bincount(self.ids)), order))
        return self._postings[0]

    def bounds(self) -> list[int]:
        """Where the separators are: paper ``p``'s tokens lie between ``bounds[p]`` and ``bounds[p + 1]``."""
        if not self._bounds:
            self._bounds.extend(np.flatnonzero(self.ids == 0).tolist())
        return self._bounds

    def positions(self, group: Group) -> Ints:
        """The positions of the tokens of ``group``."""
        offsets, order = self.postings()
        size = len(offsets) - 1
        if isinstance(group, range):
            return order[offsets[min(group.start, size)] : offsets[min(group.stop, size)]]
        slices = [order[offsets[token] : offsets[token + 1]] for token in group if token < size]
        return np.concatenate([_NO_PAPERS, *slices])

    def phrases(self, wanted: Sequence[tuple[int, Sequence[Group]]]) -> tuple[Ints, Ints]:
        """(number, paper) pairs, one or more per paper where a token of each group follows one of the previous
        group, for each ``(number, groups)`` of ``wanted``; all the phrases at once, with array operations.

        Each phrase starts from its group with the fewest positions and checks the others at their offsets from
        it: the work grows with that group's occurrences, never with the batch. A group is held as a few ranges
        of token numbers (a prefix is one range, each plural variant a range of one).
        """
        offsets, order = self.postings()
        size = len(offsets) - 1
        ranges = max(len(group) if isinstance(group, tuple) else 1 for _, groups in wanted for group in groups)
        low = np.zeros((sum(len(groups) for _, groups in wanted), ranges), dtype=np.int64)
        high = np.zeros_like(low)
        entry = 0
        firsts: list[int] = []
        for _, groups in wanted:
            firsts.append(entry)
            for group in groups:
                if isinstance(group, range):
                    low[entry, 0], high[entry, 0] = group.start, group.stop
                else:
                    low[entry, : len(group)] = group
                    high[entry, : len(group)] = np.add(group, 1)
                entry += 1
        np.minimum(low, size, out=low)
        np.minimum(high, size, out=high)
        counts = (offsets[high] - offsets[low]).sum(axis=1).tolist()
        anchors: list[int] = []
        for first, (_, groups) in zip(firsts, wanted, strict=True):
            own = counts[first : first + len(groups)]
            anchors.append(own.index(min(own)))
        anchor_entries = np.add(firsts, anchors)
        slice_first = offsets[low[anchor_entries]].reshape(-1)
        slice_size = offsets[high[anchor_entries]].reshape(-1) - slice_first
        phrase = np.repeat(np.arange(len(wanted)), ranges)
        total = int(slice_size.sum())
        within = np.arange(total) - np.repeat(np.cumsum(slice_size) - slice_size, slice_size)
        candidate = np.repeat(phrase, slice_size)
        starts = order[np.repeat(slice_first, slice_size) + within] - np.asarray(anchors, dtype=np.int64)[candidate]
        first_entry = np.asarray(firsts, dtype=np.int64)
        lengths = np.array([len(groups) for _, groups in wanted], dtype=np.int64)
        for offset in range(int(lengths.max())):
            if not len(starts):
                break
            entries = np.minimum(first_entry[candidate] + offset, len(low) - 1)
            found = np.take(self.ids, starts + offset, mode="clip")  # out of range: a separator, never a token
            keep = (lengths[candidate] <= offset) | (entries == anchor_entries[candidate])
            for j in range(ranges):
                keep |= (low[entries, j] <= found) & (found < high[entries, j])
            starts, candidate = starts[keep], candidate[keep]
        numbers = np.array([number for number, _ in wanted], dtype=np.int64)
        return numbers[candidate], self.paper_of[starts]


def _phrase_starts(text: _Text, groups: Sequence[Group]) -> list[int]:
    """Positions in one text where a token of each group follows one of the previous group, in order."""
    head, rest = groups[0], groups[1:]
    positions = text.positions
    if isinstance(head, range) and len(head) > len(positions):
        heads = [start for token, found in positions.items() if token in head for start in found]
    else:
        heads = [start for token in head for start in positions.get(token, ())]
    if len(heads) > 1 and len(head) > 1:
        heads.sort()
    if not rest or not heads:
        return heads
    numbers = text.numbers
    stop = len(numbers) - len(rest)
    return [
        start
        for start in heads
        if start < stop and all(numbers[start + i] in group for i, group in enumerate(rest, start=1))
    ]


@dataclass(slots=True)
class _Text:
    """One field of one paper, as read for its hits: its token numbers, where each occurs, and the tokens' spans
    in the display text once a hit needs them. Made once per paper and field, read for every term asked."""

    numbers: list[int]
    positions: dict[int, list[int]]
    spans: list[tuple[int, int]] | None = None

    @classmethod
    def of(cls, numbers: list[int]) -> _Text:
        positions: dict[int, list[int]] = {}
        for position, number in enumerate(numbers):
            found = positions.get(number)
            if found is None:
                positions[number] = [position]
            else:
                found.append(position)
        return cls(numbers, positions)


class PaperIndex:
    """Everything matching needs to know about one batch of papers."""

    def __init__(self, papers: Sequence[Paper]) -> None:
        self.papers = papers
        self._vocabulary: list[str] = []
        self._fields: dict[Field, FieldTokens] = {}
        self._authors: FieldTokens
        self._author_flat: list[str]
        self._name_of: Ints
        self._name_ends: list[int]
        self._first_name: list[int]
        self._number_tokens()
        self._options: dict[tuple[str, bool], Group] = {}
        self._term_groups: dict[tuple[tuple[str, ...], bool], list[Group]] = {}
        self._categories = [[category.casefold() for category in paper.categories] for paper in papers]
        self._category_index: _Postings | None = None
        self._answers: dict[tuple[int, tuple[str, ...], bool], list[int]] = {}  # id(field): enums hash slowly
        self._texts: dict[tuple[int, int], _Text] = {}  # keyed by id(field), paper
        self._author_spans: dict[int, list[tuple[int, int]]] = {}  # by name number

    # -- the batch's tokens, numbered ---------------------------------------------------------------------------

    @property
    def vocabulary(self) -> list[str]:
        """Every token of the batch's text fields and author names, sorted, after :data:`SEPARATOR` (number 0)."""
        return self._vocabulary

    def field_tokens(self, field: Field) -> FieldTokens:
        """The tokens of one text field of every paper, numbered by :attr:`vocabulary`."""
        return self._fields[field]

    def _number_tokens(self) -> None:
        """Tokenise every text field and author name of the batch, and number the tokens in sorted order."""
        flats = {field: [SEPARATOR, *tokenize_all(display_text(paper, field) for paper in self.papers)]
                 for field in TEXT_FIELDS}  # fmt: skip
        names = [SEPARATOR, *tokenize_all(author for paper in self.papers for author in paper.authors)]
        number: defaultdict[str, int] = defaultdict(itertools.count().__next__)
        number[SEPARATOR]  # 0 for now, and first once sorted: every token sorts after it
        first_seen = {
            field: np.fromiter(map(number.__getitem__, flat), np.int64, len(flat)) for field, flat in flats.items()
        }
        seen_names = np.fromiter(map(number.__getitem__, names), np.int64, len(names))
        unsorted = list(number)
        order = sorted(range(len(unsorted)), key=unsorted.__getitem__)
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order), dtype=np.int64)
        self._vocabulary = [unsorted[n] for n in order]
        last = max(len(self.papers) - 1, 0)
        for field, seen in first_seen.items():
            ids = rank[seen]
            paper_of = np.cumsum(ids == 0) - 1  # a token's paper: the separators before it, less the first
            self._fields[field] = FieldTokens(ids, np.minimum(paper_of, last))
        ids = rank[seen_names]
        self._name_ends = np.flatnonzero(ids == 0).tolist()  # name k: the tokens between separators k and k + 1
        self._name_of = np.minimum(np.cumsum(ids == 0) - 1, max(len(self._name_ends) - 2, 0))
        counts = [len(paper.authors) for paper in self.papers]
        self._first_name = list(itertools.accumulate(counts, initial=0))  # paper p's names: from this number on
        paper_of_name = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        paper_of = paper_of_name[self._name_of] if len(paper_of_name) else np.zeros(len(ids), dtype=np.int64)
        self._authors = FieldTokens(ids, paper_of)
        self._author_flat = names

    def options(self, word: str, prefix: bool) -> Group:
        """The batch's token numbers that a query word matches: the range of the tokens it starts (bisecting the
        sorted vocabulary), or the numbers of its plural variants that occur."""
        found = self._options.get((word, prefix))
        if found is None:
            vocabulary = self.vocabulary
            if prefix:
                found = self.prefixed(word)
            else:
                at = [bisect.bisect_left(vocabulary, variant) for variant in _variants(word)]
                found = tuple(n for n, variant in zip(at, _variants(word), strict=True) if _is(vocabulary, n, variant))
            self._options[word, prefix] = found
        return found

    def prefixed(self, word: str) -> range:
        """The numbers of the batch's tokens that start with ``word``: one range, as they are numbered sorted."""
        vocabulary = self.vocabulary
        start = bisect.bisect_left(vocabulary, word)
        return range(start, bisect.bisect_left(vocabulary, word + "\U0010ffff", start))

    def phrase_occurrences(self, terms: Sequence[tuple[int, Term]]) -> tuple[Ints, Ints]:
        """(number, paper) pairs, each once, for the papers where each ``(number, term)``'s words (title,
        abstract or comment terms) occur consecutively within one field; all the terms at once, from the
        positional postings (:meth:`FieldTokens.phrases`)."""
        by_field: dict[Field, list[tuple[int, list[Group]]]] = {}
        for number, term in terms:
            last = len(term.words) - 1
            groups = [self.options(word, term.prefix and i == last) for i, word in enumerate(term.words)]
            if all(groups):
                for field in DEFAULT_FIELDS if term.field is None else (term.field,):
                    by_field.setdefault(field, []).append((number, groups))
        found = [self.field_tokens(field).phrases(wanted) for field, wanted in by_field.items()]
        if not found:
            return _NO_PAPERS, _NO_PAPERS
        numbers = np.concatenate([numbers for numbers, _ in found])
        papers = np.concatenate([papers for _, papers in found])
        width = len(self.papers)
        pairs = np.unique(numbers * width + papers)
        return pairs // width, pairs % width

    # -- which papers ------------------------------------------------------------------------------------------

    @property
    def _category_postings(self) -> _Postings:
        if self._category_index is None:
            self._category_index = _Postings()
            for paper, categories in enumerate(self._categories):
                self._category_index.add(paper, set(categories))
        return self._category_index

    def papers_holding(self, term: Term) -> list[int]:
        """The numbers of the papers that hold ``term``, ascending (computed once per batch per distinct term)."""
        key = (id(term.field), term.words, term.prefix)
        found = self._answers.get(key)
        if found is None:
            if term.field is Field.AUTHORS:
                found = self._author_papers(term)
            elif term.field is Field.CATEGORIES:
                found = self._category_postings.answer(self._category_options(term))
            else:
                found = self.phrase_occurrences([(0, term)])[1].tolist()
            self._answers[key] = found
        return list(found)

    # -- what matching reads -----------------------------------------------------------------------------------

    @property
    def authors(self) -> tuple[FieldTokens, Ints]:
        """The tokens of every author's name, numbered by :attr:`vocabulary`, name after name, each name
        followed by the separator (the ``paper_of`` of :class:`FieldTokens` is the name's paper); and the number
        of the name that each position belongs to."""
        return self._authors, self._name_of

    def _author_papers(self, term: Term) -> list[int]:
        """Papers with an author whose name holds the term's words in order (a one-letter word an initial): the
        names holding its rarest full word (or, with initials only, its rarest initial) are read one by one."""
        words, last = term.words, len(term.words) - 1
        narrowing = [i for i, word in enumerate(words) if len(word) > 1 or (term.prefix and i == last)]
        groups: list[Group] = []
        for i in narrowing or range(len(words)):
            word = words[i]
            if len(word) == 1 or (term.prefix and i == last):
                groups.append(self.prefixed(word))
            else:
                at = bisect.bisect_left(self._vocabulary, word)
                groups.append((at,) if _is(self._vocabulary, at, word) else ())
        if not all(groups):
            return []
        rarest = min((self._authors.positions(group) for group in groups), key=len)
        ends, flat = self._name_ends, self._author_flat
        papers = self._authors.paper_of
        return sorted(
            {
                int(papers[ends[name] + 1])
                for name in np.unique(self._name_of[rarest]).tolist()
                if _first_name_match(words, term.prefix, flat[ends[name] + 1 : ends[name + 1]])
            }
        )

    @property
    def categories(self) -> list[list[str]]:
        """Per paper, its categories, case-folded (shared: do not modify)."""
        return self._categories

    def _category_options(self, term: Term) -> list[str]:
        if term.prefix:
            return self._category_postings.starting_with(term.words[0])
        return [term.words[0]] if term.words[0] in self._category_postings.papers else []

    # -- where -------------------------------------------------------------------------------------------------

    def _text(self, field: Field, paper: int) -> _Text:
        found = self._texts.get((id(field), paper))
        if found is None:
            tokens = self._fields[field]
            bounds = tokens.bounds()
            found = self._texts[id(field), paper] = _Text.of(tokens.ids[bounds[paper] + 1 : bounds[paper + 1]].tolist())
        return found

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
        groups = self._term_groups.get((term.words, term.prefix))
        if groups is None:
            groups = self._term_groups[term.words, term.prefix] = [
                self.options(word, term.prefix and i == width) for i, word in enumerate(term.words)
            ]
        for field in DEFAULT_FIELDS if term.field is None else (term.field,):
            text = self._text(field, paper)
            starts = _phrase_starts(text, groups)
            if starts:
                if text.spans is None:
                    text.spans = token_spans(display_text(self.papers[paper], field))
                spans = text.spans
                found.extend(Hit(term.label, field, spans[s][0], spans[s + width][1]) for s in starts)
        return tuple(found)

    def _name_hits(self, term: Term, paper: int) -> tuple[Hit, ...]:
        found: list[Hit] = []
        ends, flat, first = self._name_ends, self._author_flat, self._first_name[paper]
        for number, author in enumerate(self.papers[paper].authors):
            name = first + number
            place = _first_name_match(term.words, term.prefix, flat[ends[name] + 1 : ends[name + 1]])
            if place is not None:
                spans = self._author_spans.get(name)
                if spans is None:
                    spans = self._author_spans[name] = token_spans(author)
                found.append(Hit(term.label, Field.AUTHORS, spans[place[0]][0], spans[place[1]][1], number))
        return tuple(found)
