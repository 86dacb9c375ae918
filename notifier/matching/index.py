"""One batch of papers, tokenised and numbered once; and where a term occurs in one paper (the hit spans).

Each paper's text fields, author names and categories are tokenised once, here, in bulk. The batch's tokens are
numbered in sorted order (:attr:`PaperIndex.vocabulary`), so a prefix's tokens are one range of numbers, found by
bisecting. Each field is one array of token numbers (:class:`FieldTokens`) with positional postings made on first
use. :mod:`notifier.matching.lexicon` resolves every term to papers from these arrays, with
:meth:`FieldTokens.sequences` for the terms that are sequences of tokens (phrases no key fits, names of several
words). :meth:`PaperIndex.hits` gives the spans of a term in one paper's display text, for the digests, reading only
that paper.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
from array import array
from collections import defaultdict
from collections.abc import Sequence
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
# Rows of the candidates' state in FieldTokens.sequences: the sequence, its anchor's position and entry, how many
# words lie before and after the anchor, and the earliest and the latest position found so far.
_SEQUENCE, _AT, _ANCHOR, _BEFORE, _AFTER, _EARLIEST, _LATEST = range(7)


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


@dataclass(frozen=True, slots=True)
class FieldTokens:
    """One field of every paper of a batch (a text field, the author names, or the categories), as one array of
    batch token numbers.

    ``ids[0]`` is the separator (0, the number of :data:`~notifier.matching.text.SEPARATOR`, never a token), and each
    paper's (or author name's) tokens are followed by another, so that no token run crosses from one paper (or name)
    into the next and a look-up clipped at either end lands on a separator. ``paper_of`` gives each position's
    paper. The positional postings (:meth:`postings`) are made on first use: one stable sort puts every token's
    positions, ascending, side by side, and because the batch's tokens are numbered in sorted order, the tokens that
    start with a prefix are one contiguous slice.
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

    def sequences(self, wanted: Sequence[tuple[int, Sequence[Group]]], gaps: bool) -> tuple[Ints, Ints]:
        """(number, paper) pairs, one or more per paper where a token of each group follows one of the previous
        group, for each ``(number, groups)`` of ``wanted``; all the sequences at once, with array operations.

        Without ``gaps`` the tokens must be consecutive within one paper's field (a phrase); with ``gaps`` other
        tokens may sit between them within one author's name (a name with middle names). Each sequence starts from its
        group with the fewest positions, the *anchor*, and looks for the other groups' tokens outwards from it, one
        word a step: the previous word at the nearest position before the earliest found so far, the next word at
        the nearest after the latest. Nearest is right: if any tokens in order fit around the anchor, the nearest
        ones do. The work grows with the anchors' occurrences (times the longest name, with ``gaps``), never with
        the batch. A group is held as a few ranges of token numbers (a prefix is one range, each plural variant a
        range of one).
        """
        offsets, order = self.postings()
        size = len(offsets) - 1
        ranges = max(len(group) if isinstance(group, tuple) else 1 for _, groups in wanted for group in groups)
        lows: list[int] = []  # each group's ranges, ``ranges`` of them (empty ones to fill), one entry after another
        highs: list[int] = []
        firsts: list[int] = []
        for _, groups in wanted:
            firsts.append(len(lows) // ranges)
            for group in groups:
                if isinstance(group, range):
                    lows.append(group.start)
                    highs.append(group.stop)
                    empty = ranges - 1
                else:
                    lows += group
                    highs += [token + 1 for token in group]
                    empty = ranges - len(group)
                lows += [0] * empty
                highs += [0] * empty
        low = np.minimum(np.array(lows, dtype=np.int64).reshape(-1, ranges), size)
        high = np.minimum(np.array(highs, dtype=np.int64).reshape(-1, ranges), size)
        counts = (offsets[high] - offsets[low]).sum(axis=1).tolist()
        anchors: list[int] = []
        for first, (_, groups) in zip(firsts, wanted, strict=True):
            own = counts[first : first + len(groups)]
            anchors.append(own.index(min(own)))
        anchor_entries = np.add(firsts, anchors)
        slice_first = offsets[low[anchor_entries]].reshape(-1)
        slice_size = offsets[high[anchor_entries]].reshape(-1) - slice_first
        within = np.arange(int(slice_size.sum())) - np.repeat(np.cumsum(slice_size) - slice_size, slice_size)
        at = order[np.repeat(slice_first, slice_size) + within]  # each candidate's anchor position
        sequence = np.repeat(np.repeat(np.arange(len(wanted)), ranges), slice_size)
        before = np.asarray(anchors, dtype=np.int64)[sequence]  # words before the anchor
        after = np.array([len(groups) for _, groups in wanted], dtype=np.int64)[sequence] - 1 - before
        anchor = np.repeat(np.repeat(anchor_entries, ranges), slice_size)
        state = np.stack([sequence, at, anchor, before, after, at, at])  # one column per candidate; rows: _SEQUENCE..
        reach = int(np.diff(np.flatnonzero(self.ids == 0)).max()) - 1 if gaps else 1
        done = [state[:2, :0]]
        step = 0
        while state.shape[1]:
            finished = np.maximum(state[_BEFORE], state[_AFTER]) <= step
            if finished.any():
                done.append(state[:2, finished])
                state = state[:, ~finished]
            step += 1
            for words, end, direction in ((_BEFORE, _EARLIEST, -1), (_AFTER, _LATEST, 1)):
                asked = np.flatnonzero(state[words] >= step)
                if len(asked):
                    entries = state[_ANCHOR, asked] + direction * step
                    found = self._nearest(state[end, asked], entries, low, high, direction, reach)
                    state[end, asked] = found
                    if (found < 0).any():
                        state = state[:, state[end] >= 0]
        held = np.concatenate(done, axis=1)
        numbers = np.array([number for number, _ in wanted], dtype=np.int64)
        return numbers[held[_SEQUENCE]], self.paper_of[held[_AT]]

    def _nearest(self, starts: Ints, entries: Ints, low: Ints, high: Ints, direction: int, reach: int) -> Ints:
        """From each of ``starts``, the nearest position in ``direction`` (at most ``reach`` away, in the same paper
        or name) whose token lies in a range of its entry of ``low``/``high``; -1 where there is none."""
        found = np.full(len(starts), -1, dtype=np.int64)
        alive = np.arange(len(starts))
        probe = starts + direction
        for distance in range(1, reach + 1):
            tokens = np.take(self.ids, probe, mode="clip")  # a clipped look-up lands on a separator
            rows = entries if distance == 1 else entries[alive]
            hit = (low[rows, 0] <= tokens) & (tokens < high[rows, 0])
            for j in range(1, low.shape[1]):
                hit |= (low[rows, j] <= tokens) & (tokens < high[rows, j])
            found[alive[hit]] = probe[hit]
            if distance == reach:
                break
            going = ~hit & (tokens != 0)  # no token of a group is the separator that ends a paper or a name
            alive, probe = alive[going], probe[going] + direction
            if not len(alive):
                break
        return found


def _phrase_starts(text: _Text, groups: Sequence[Group]) -> list[int]:
    """Positions in one text where a token of each group follows one of the previous group, in order."""
    head, rest = groups[0], groups[1:]
    heads = text.where(head)
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
    """One field of one paper, as read for its hits: its token numbers, the same sorted (with their positions), and
    the tokens' spans in the display text once a hit needs them. Made once per paper and field, read for every term
    asked. Flat arrays of 32-bit numbers, for a plan keeps the texts of every paper its digests show: as lists,
    dicts and tuples of ints they took about 90 MB at 10,000 subscribers."""

    numbers: array[int]  # token numbers, in the text's order
    ordered: array[int]  # the same, ascending
    where_ordered: array[int]  # the position of each of ``ordered`` in the text (ascending for one number)
    bounds: tuple[array[int], array[int]] | None = None  # where each token starts and ends in the display text

    @classmethod
    def of(cls, numbers: Ints) -> _Text:
        order = np.argsort(numbers, kind="stable")
        return cls(_int32s(numbers), _int32s(numbers[order]), _int32s(order))

    def where(self, group: Group) -> list[int]:
        """The positions of the tokens numbered in ``group``, ascending."""
        ordered, where = self.ordered, self.where_ordered
        if isinstance(group, range):  # consecutive numbers (a prefix's), so consecutive in ``ordered``
            low = bisect.bisect_left(ordered, group.start)
            found = where[low : bisect.bisect_left(ordered, group.stop, low)].tolist()
        else:
            found = []
            for number in group:
                low = bisect.bisect_left(ordered, number)
                found += where[low : bisect.bisect_right(ordered, number, low)]
        if len(group) > 1 and len(found) > 1:
            found.sort()
        return found

    def spans(self, display: str) -> tuple[array[int], array[int]]:
        """Where each token starts and ends in ``display``, the field's display text (worked out once)."""
        if self.bounds is None:
            flat = array("i", itertools.chain.from_iterable(token_spans(display)))
            self.bounds = flat[0::2], flat[1::2]
        return self.bounds


def _int32s(numbers: Ints) -> array[int]:
    return array("i", numbers.astype(np.int32).tobytes())


class PaperIndex:
    """Everything matching needs to know about one batch of papers."""

    def __init__(self, papers: Sequence[Paper]) -> None:
        self.papers = papers
        self._vocabulary: list[str] = []
        self._fields: dict[Field, FieldTokens] = {}
        self._categories = [[category.casefold() for category in paper.categories] for paper in papers]
        self._author_flat: list[str]
        self._name_ends: list[int]
        self._first_name: list[int]
        self._number_tokens()
        self._options: dict[tuple[str, bool], Group] = {}
        self._term_groups: dict[tuple[tuple[str, ...], bool], list[Group]] = {}
        self._texts: dict[tuple[int, int], _Text] = {}  # keyed by id(field), paper
        self._author_spans: dict[int, list[tuple[int, int]]] = {}  # by name number

    # -- the batch's tokens, numbered ---------------------------------------------------------------------------

    @property
    def vocabulary(self) -> list[str]:
        """Every token of the batch's text fields and author names, and every category (case-folded), sorted, after
        :data:`SEPARATOR` (number 0)."""
        return self._vocabulary

    def field_tokens(self, field: Field) -> FieldTokens:
        """The tokens of one field of every paper, numbered by :attr:`vocabulary`: of a text field, of the author
        names (each name followed by the separator; ``paper_of`` gives the name's paper), or the categories."""
        return self._fields[field]

    def _number_tokens(self) -> None:
        """Tokenise every text field and author name of the batch, and number the tokens and categories in sorted
        order."""
        flats = {field: [SEPARATOR, *tokenize_all(display_text(paper, field) for paper in self.papers)]
                 for field in TEXT_FIELDS}  # fmt: skip
        flats[Field.CATEGORIES] = [SEPARATOR, *(c for categories in self._categories for c in (*categories, SEPARATOR))]
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
        name_of = np.minimum(np.cumsum(ids == 0) - 1, max(len(self._name_ends) - 2, 0))
        counts = [len(paper.authors) for paper in self.papers]
        self._first_name = list(itertools.accumulate(counts, initial=0))  # paper p's names: from this number on
        paper_of_name = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        paper_of = paper_of_name[name_of] if len(paper_of_name) else np.zeros(len(ids), dtype=np.int64)
        self._fields[Field.AUTHORS] = FieldTokens(ids, paper_of)
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

    def name_options(self, word: str, prefix: bool) -> range:
        """The batch's token numbers that a word of an ``au:`` term matches (as :func:`name_token_matches`): the
        tokens it starts if it is a prefix or one letter (an initial), else the token itself."""
        return self.prefixed(word) if prefix or len(word) == 1 else self.exact(word)

    def exact(self, word: str) -> range:
        """The number of the token ``word`` as a range of one, or an empty range if the batch has no such token."""
        at = bisect.bisect_left(self.vocabulary, word)
        return range(at, at + 1 if _is(self.vocabulary, at, word) else at)

    # -- where -------------------------------------------------------------------------------------------------

    def _text(self, field: Field, paper: int) -> _Text:
        found = self._texts.get((id(field), paper))
        if found is None:
            tokens = self._fields[field]
            bounds = tokens.bounds()
            found = self._texts[id(field), paper] = _Text.of(tokens.ids[bounds[paper] + 1 : bounds[paper + 1]])
        return found

    def hits(self, term: Term, paper: int) -> tuple[Hit, ...]:
        """Where ``term`` occurs in paper number ``paper``, as spans of the display text."""
        if term.field is Field.AUTHORS:
            return self._name_hits(term, paper)
        if term.field is Field.CATEGORIES:
            word = term.words[0]
            return tuple(
                Hit(term.label, Field.CATEGORIES, 0, len(self.papers[paper].categories[i]), i)
                for i, category in enumerate(self._categories[paper])
                if category == word or (term.prefix and category.startswith(word))
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
                begin, end = text.spans(display_text(self.papers[paper], field))
                found.extend(Hit(term.label, field, begin[s], end[s + width]) for s in starts)
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
