"""Every rule term, compiled once into exact keys, and found in a batch of papers with array operations.

A term is answered by *keys*: exact token sequences that, when present, mean the term holds in that paper.

- A plain word or a phrase of up to ``MAX_GRAM`` words, in a text field, is the set of token runs that spell it
  (each word by any of its plural variants): ``"neural networks"`` is ``neural network``, ``neural networks``. A
  run must sit within one field; ``title and abstract`` (no prefix) takes runs from either.
- ``au:"First Last"`` (two words, no ``*``) is the ordered pair of tokens within one author's name, either of which
  may be cut to its initial, as :class:`~notifier.matching.index.PaperIndex` indexes them.
- ``cat:cs.LG`` is the category.
- ``compil*`` (one word) is the prefix; the batch's own tokens that start with it are found when the batch comes.

:meth:`TermLexicon.compile` numbers the tokens and token runs (a run of length *n* is its first *n - 1* tokens'
run plus one token), and maps each key to the terms it answers. :meth:`TermLexicon.occurrences` reads the batch's
tokens as the :class:`~notifier.matching.index.PaperIndex` numbered them, turns them into run numbers with vectorised
look-ups, one run length at a time, takes each prefix's tokens as the range of the batch's sorted vocabulary it
starts, and returns (term, paper) pairs. Phrases no key can express (a ``*`` inside a phrase, more than
``MAX_GRAM`` words) are found all at once from the index's positional postings; ``au:`` with one or three words
and ``cat:cs.*`` are asked of the index one by one, from its postings of name tokens and categories.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from notifier.matching.bitsets import Ints, offsets_of
from notifier.matching.index import PaperIndex
from notifier.matching.query import Term
from notifier.matching.text import plural_variants
from notifier.models import Field

Mask: TypeAlias = npt.NDArray[np.bool_]

# Where a text term looks: no prefix (title or abstract), or one field.
_SCOPES: dict[Field | None, int] = {None: 0, Field.TITLE: 1, Field.ABSTRACT: 2, Field.COMMENT: 3}
_FIELD_SCOPES: tuple[tuple[Field, tuple[int, ...]], ...] = (
    (Field.TITLE, (0, 1)),
    (Field.ABSTRACT, (0, 2)),
    (Field.COMMENT, (3,)),
)
MAX_GRAM = 4  # phrases up to this many words are keys; longer ones are left to the PaperIndex
_NO_KEY = -1
_Key = TypeVar("_Key", tuple[int, str], tuple[str, str], str)
_CODE_RUN = (MAX_GRAM + 1) * len(_SCOPES)  # text key codes: run * _CODE_RUN + length * len(_SCOPES) + scope


@dataclass(frozen=True, slots=True)
class _Runs:
    """Token runs of one length > 1: run number -> (number of its first tokens' run) * vocabulary + last token."""

    codes: Ints  # ascending
    numbers: Ints  # the run number of each code
    ends: Mask  # token number -> whether some run of this length ends with it


@dataclass(frozen=True, slots=True)
class _NamePairs:
    """The ``(first, second)`` word pairs of ``au:"First Second"`` terms, as codes of numbered words."""

    words: dict[str, int]
    codes: Ints  # ascending: first * len(words) + second
    keys: Ints  # the key of each code

    @classmethod
    def of(cls, keys: dict[tuple[str, str], int]) -> _NamePairs:
        words: dict[str, int] = {}
        for pair in keys:
            for word in pair:
                words.setdefault(word, len(words))
        codes = np.fromiter((words[a] * len(words) + words[b] for a, b in keys), np.int64, len(keys))
        order = np.argsort(codes)
        return cls(words, codes[order], np.fromiter(keys.values(), np.int64, len(keys))[order])

    def look_up(self, first: Ints, second: Ints) -> tuple[Mask, Ints]:
        """Which of the pairs (numbered words) are codes, and their keys."""
        return _look_up(self.codes, first * len(self.words) + second, self.keys)


class TermLexicon:
    """Keys of every term of a rule set, and the look-up tables that find them in a batch."""

    __slots__ = (
        "_category_keys", "_key_offsets", "_key_terms", "_names", "_phrases", "_prefix_scopes",
        "_prefixes", "_runs", "_scope_keys", "_slow", "_terms", "_tokens",
    )  # fmt: skip

    def __init__(
        self,
        terms: Sequence[Term],
        tokens: dict[str, int],
        runs: list[_Runs],
        scope_keys: dict[int, list[Ints]],
        prefixes: dict[str, list[tuple[int, int]]],
        author_keys: dict[tuple[str, str], int],
        category_keys: dict[str, int],
        key_offsets: Ints,
        key_terms: Ints,
        phrases: list[int],
        slow: list[int],
    ) -> None:
        self._terms = terms
        self._tokens = tokens
        self._runs = runs
        self._scope_keys = scope_keys
        self._prefixes = prefixes
        self._prefix_scopes = {scope for scoped in prefixes.values() for scope, _ in scoped}
        self._names = _NamePairs.of(author_keys)
        self._category_keys = category_keys
        self._key_offsets = key_offsets
        self._key_terms = key_terms
        self._phrases = np.array(phrases, dtype=np.int64)
        self._slow = np.array(slow, dtype=np.int64)

    @classmethod
    def compile(cls, terms: Sequence[Term]) -> TermLexicon:
        tokens: dict[str, int] = {}
        runs: list[dict[int, int]] = [{} for _ in range(MAX_GRAM + 1)]  # by length: (run << 32 | token) -> run
        text_codes = array("q")  # of each (text key, term) entry: (run * (MAX_GRAM + 1) + length) * scopes + scope
        text_terms = array("q")
        author_keys: dict[tuple[str, str], int] = {}  # these three are few enough for dicts; numbered together
        category_keys: dict[str, int] = {}
        prefix_keys: dict[tuple[int, str], int] = {}
        other_of_entry = array("q")
        other_terms = array("q")
        phrases: list[int] = []
        slow: list[int] = []
        spellings: dict[str, list[int]] = {}

        def spellings_of(word: str) -> list[int]:
            """The numbers of the tokens that spell ``word``: itself and its plural variants."""
            found = spellings.get(word)
            if found is None:
                found = spellings[word] = [tokens.setdefault(v, len(tokens)) for v in sorted(plural_variants(word))]
            return found

        def other(table: dict[_Key, int], key: _Key, term: int) -> None:
            number = table.get(key)
            if number is None:
                number = table[key] = len(author_keys) + len(category_keys) + len(prefix_keys)
            other_of_entry.append(number)
            other_terms.append(term)

        for number, term in enumerate(terms):
            field, words = term.field, term.words
            if field is Field.AUTHORS:
                if len(words) == 2 and not term.prefix:
                    other(author_keys, (words[0], words[1]), number)
                else:
                    slow.append(number)
            elif field is Field.CATEGORIES:
                if term.prefix:
                    slow.append(number)
                else:
                    other(category_keys, words[0], number)
            elif term.prefix and len(words) == 1:
                other(prefix_keys, (_SCOPES[field], words[0]), number)
            elif term.prefix or len(words) > MAX_GRAM:
                phrases.append(number)
            else:
                heads = spellings_of(words[0])
                for length, word in enumerate(words[1:], start=2):
                    table = runs[length]
                    heads = [table.setdefault(h << 32 | t, len(table)) for h in heads for t in spellings_of(word)]
                tail = len(words) * len(_SCOPES) + _SCOPES[field]
                text_codes.extend([run * _CODE_RUN + tail for run in heads])
                text_terms.extend([number] * len(heads))

        vocabulary = len(tokens)
        compiled_runs = _compile_runs(runs, vocabulary)
        unique_codes, text_keys = np.unique(np.frombuffer(text_codes, np.int64), return_inverse=True)
        sizes = [0, vocabulary] + [len(table) for table in runs[2:]]
        scope_keys: dict[int, list[Ints]] = {}
        for scope in range(len(_SCOPES)):
            of_scope = np.flatnonzero(unique_codes % len(_SCOPES) == scope)
            if len(of_scope):
                tables = scope_keys[scope] = [np.full(n, _NO_KEY, np.int64) for n in sizes]
                lengths = unique_codes[of_scope] % _CODE_RUN // len(_SCOPES)
                for length in range(1, MAX_GRAM + 1):
                    at = of_scope[lengths == length]
                    tables[length][unique_codes[at] // _CODE_RUN] = at
        first_other = len(unique_codes)
        keys = np.concatenate([text_keys.astype(np.int64), np.frombuffer(other_of_entry, np.int64) + first_other])
        order = np.argsort(keys, kind="stable")
        other_count = len(author_keys) + len(category_keys) + len(prefix_keys)
        offsets = offsets_of(np.bincount(keys, minlength=first_other + other_count))
        key_terms = np.concatenate([np.frombuffer(text_terms, np.int64), np.frombuffer(other_terms, np.int64)])[order]
        prefixes: dict[str, list[tuple[int, int]]] = {}
        for (scope, prefix), number in prefix_keys.items():
            prefixes.setdefault(prefix, []).append((scope, first_other + number))
        return cls(
            terms,
            tokens,
            compiled_runs,
            scope_keys,
            prefixes,
            {pair: first_other + number for pair, number in author_keys.items()},
            {category: first_other + number for category, number in category_keys.items()},
            offsets,
            key_terms,
            phrases,
            slow,
        )

    def occurrences(self, index: PaperIndex, wanted: Mask | None = None) -> tuple[Ints, Ints]:
        """(term, paper) pairs, one or more for each paper that holds each term (of ``wanted`` terms, if given)."""
        keys: list[Ints] = []
        papers: list[Ints] = []
        self._text_keys(index, keys, papers)
        if self._names.words:
            self._pair_keys(index, keys, papers)
        if self._category_keys:
            found = [
                (key, paper)
                for paper, categories in enumerate(index.categories)
                for key in map(self._category_keys.get, categories)
                if key is not None
            ]
            _append_pairs(found, keys, papers)
        none = np.empty(0, dtype=np.int64)
        term_list, paper_list = self._expand(np.concatenate([none, *keys]), np.concatenate([none, *papers]), wanted)
        phrases = self._phrases if wanted is None else self._phrases[wanted[self._phrases]]
        if len(phrases):
            terms, holding = index.phrase_occurrences([(term, self._terms[term]) for term in phrases.tolist()])
            term_list.append(terms)
            paper_list.append(holding)
        slow = self._slow if wanted is None else self._slow[wanted[self._slow]]
        for term in slow.tolist():
            numbers = index.papers_holding(self._terms[term])
            if numbers:
                term_list.append(np.full(len(numbers), term, dtype=np.int64))
                paper_list.append(np.array(numbers, dtype=np.int64))
        return np.concatenate(term_list), np.concatenate(paper_list)

    def _text_keys(self, index: PaperIndex, keys: list[Ints], papers: list[Ints]) -> None:
        """Keys found in the text fields: each field's token runs (numbered by the batch, see
        :meth:`PaperIndex.field_tokens`) are looked up a length at a time, each extending the previous, and each
        prefix's tokens are the range of the batch's sorted vocabulary that it starts."""
        fields = [
            (scopes, index.field_tokens(field))
            for field, scopes in _FIELD_SCOPES
            if any(scope in self._scope_keys or scope in self._prefix_scopes for scope in scopes)
        ]
        if not fields:
            return
        if self._scope_keys:
            vocabulary = index.vocabulary
            known = np.fromiter(map(self._tokens.get, vocabulary, itertools.repeat(_NO_KEY)), np.int64, len(vocabulary))
            for scopes, field in fields:
                tables = [self._scope_keys[scope] for scope in scopes if scope in self._scope_keys]
                if tables:
                    self._run_keys(known[field.ids], field.paper_of, tables, keys, papers)
        if self._prefixes:
            starting = [
                (scope, key, np.arange(found.start, found.stop, dtype=np.int64))
                for prefix, scoped in self._prefixes.items()
                if (found := index.prefixed(prefix))
                for scope, key in scoped
            ]
            for scopes, field in fields:
                self._prefix_keys(starting, scopes, field.ids, field.paper_of, keys, papers)

    def _run_keys(
        self, ids: Ints, paper_of: Ints, tables: list[list[Ints]], keys: list[Ints], papers: list[Ints]
    ) -> None:
        """Keys of the token runs of one field, given its tokens' numbers in the lexicon (or ``_NO_KEY``)."""
        starts = np.flatnonzero(ids >= 0)
        runs = ids[starts]
        vocabulary = len(self._tokens)
        for length in range(1, MAX_GRAM + 1):
            if length == 2:
                longer = self._runs[1].ends[runs]  # tokens that start longer runs
                starts, runs = starts[longer], runs[longer]
            if length > 1:
                table = self._runs[length]
                following = ids[starts + length - 1]  # in range: each text ends with a separator
                known = following >= 0
                known[known] = table.ends[following[known]]
                found, runs = _look_up(table.codes, runs[known] * vocabulary + following[known], table.numbers)
                starts = starts[known][found]
            if not len(starts):
                return
            for scope_tables in tables:
                found_keys = scope_tables[length][runs]
                hit = found_keys != _NO_KEY
                keys.append(found_keys[hit])
                papers.append(paper_of[starts[hit]])

    @staticmethod
    def _prefix_keys(
        starting: list[tuple[int, int, Ints]],
        scopes: tuple[int, ...],
        ids: Ints,
        paper_of: Ints,
        keys: list[Ints],
        papers: list[Ints],
    ) -> None:
        """Keys of ``word*`` terms in one field, given its tokens' numbers in the batch."""
        found = [(key, tokens) for scope, key, tokens in starting if scope in scopes]
        if not found:
            return
        token_of_entry = np.concatenate([tokens for _, tokens in found])
        key_of_entry = np.repeat([key for key, _ in found], [len(tokens) for _, tokens in found])
        order = np.argsort(token_of_entry, kind="stable")
        offsets = offsets_of(np.bincount(token_of_entry, minlength=int(ids.max()) + 1))
        at = np.flatnonzero(offsets[ids + 1] > offsets[ids])
        pair, values = _spread(offsets, key_of_entry[order], ids[at])
        keys.append(values)
        papers.append(paper_of[at[pair]])

    def _pair_keys(self, index: PaperIndex, keys: list[Ints], papers: list[Ints]) -> None:
        """Keys of ``au:"A B"`` terms: ordered token pairs within one author's name, either cut to its initial."""
        names = self._names
        authors, name_of = index.authors
        ids = authors.ids
        if len(ids) <= 1:  # no author has a name token
            return
        get, absent = names.words.get, itertools.repeat(_NO_KEY)
        vocabulary = index.vocabulary
        whole = np.fromiter(map(get, vocabulary, absent), np.int64, len(vocabulary))
        initial = np.fromiter(map(get, [token[0] for token in vocabulary], absent), np.int64, len(vocabulary))
        forms = (whole[ids], initial[ids])  # the separator is no word of any term: _NO_KEY in both
        longest = int(np.diff(np.flatnonzero(ids == 0)).max()) - 1  # the most tokens in one name
        for gap in range(1, longest):
            at = np.flatnonzero(name_of[:-gap] == name_of[gap:])
            for first, second in itertools.product(forms, forms):
                a, b = first[at], second[at + gap]
                known = (a >= 0) & (b >= 0)
                found, key = names.look_up(a[known], b[known])
                keys.append(key)
                papers.append(authors.paper_of[at[known][found]])

    def _expand(self, keys: Ints, papers: Ints, wanted: Mask | None) -> tuple[list[Ints], list[Ints]]:
        """(key, paper) pairs -> (term, paper) pairs for every term each key answers."""
        offsets, key_terms = self._key_offsets, self._key_terms
        if wanted is not None and len(keys):
            entries = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            useful = np.zeros(len(offsets) - 1, dtype=bool)
            useful[entries[wanted[key_terms]]] = True
            keep = useful[keys]
            keys, papers = keys[keep], papers[keep]
        pair, terms = _spread(offsets, key_terms, keys)
        papers = papers[pair]
        if wanted is not None:
            keep = wanted[terms]
            terms, papers = terms[keep], papers[keep]
        return [terms], [papers]


def _append_pairs(found: list[tuple[int, int]], keys: list[Ints], papers: list[Ints]) -> None:
    if found:
        pairs = np.array(found, dtype=np.int64)
        keys.append(pairs[:, 0])
        papers.append(pairs[:, 1])


def _spread(offsets: Ints, values: Ints, rows: Ints) -> tuple[Ints, Ints]:
    """Every value of each of ``rows`` (compressed sparse rows): for each, its position in ``rows`` and the value."""
    first = offsets[rows]
    counts = offsets[rows + 1] - first
    position = np.repeat(np.arange(len(rows)), counts)
    within = np.arange(len(position)) - np.repeat(np.cumsum(counts) - counts, counts)
    return position, values[first[position] + within]


def _look_up(codes: Ints, wanted: Ints, values: Ints) -> tuple[Mask, Ints]:
    """Which of ``wanted`` are among the ascending ``codes``, and the ``values`` of those that are."""
    if not len(codes) or not len(wanted):
        return np.zeros(len(wanted), dtype=bool), values[:0]
    order = np.argsort(wanted)  # sorted queries walk the table in order: far fewer cache misses
    at = np.empty_like(order)
    at[order] = np.minimum(np.searchsorted(codes, wanted[order]), len(codes) - 1)
    found = codes[at] == wanted
    return found, values[at[found]]


def _compile_runs(runs: list[dict[int, int]], vocabulary: int) -> list[_Runs]:
    """Look-up tables of the token runs of each length (entries 0 and 1: the tokens that start longer runs)."""
    firsts = np.fromiter(runs[2], np.int64, len(runs[2])) >> 32
    heads = np.zeros(vocabulary, dtype=bool)
    heads[firsts] = True
    nothing = np.empty(0, np.int64)
    compiled = [_Runs(nothing, nothing, heads)] * 2  # ``ends`` of length 1: the tokens that runs start with
    for table in runs[2:]:
        pairs = np.fromiter(table, np.int64, len(table))
        last = pairs & 0xFFFFFFFF
        codes = (pairs >> 32) * vocabulary + last
        order = np.argsort(codes)
        ends = np.zeros(vocabulary, dtype=bool)
        ends[last] = True
        compiled.append(_Runs(codes[order], np.fromiter(table.values(), np.int64, len(table))[order], ends))
    return compiled
