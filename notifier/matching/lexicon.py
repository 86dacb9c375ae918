"""Every rule term, compiled once into keys, and found in a batch of papers with array operations: the one way in
which terms become papers.

A term is answered by *keys*: a key found in a paper means that the term holds there. Each term has keys of one kind:

- **run keys**: a plain word or a phrase of up to ``MAX_GRAM`` words, in a text field, is the token runs that spell
  it (each word by any of its plural variants): ``"neural networks"`` is ``neural network``, ``neural networks``...
  A run lies within one field, and a key has a *scope*: no prefix (0: title or abstract), ``ti:`` (1), ``abs:`` (2),
  ``co:`` (3).
- **range keys**: one token of a range of the batch's sorted vocabulary: ``compil*`` (the tokens it starts),
  ``au:zhang`` (that token; ``au:y``, an initial, starts its range), ``cat:cs.LG`` and ``cat:cs.*`` (the batch's
  categories are tokens of its vocabulary too).
- **name keys**: ``au:"First Last"`` (two words, no ``*``) is the ordered pair of tokens within one author's name,
  either of which may be cut to its initial.
- **sequence keys**, the rest: a phrase with a ``*`` or more than ``MAX_GRAM`` words (consecutive tokens in one
  field), a name of three words or more, or with a ``*`` (tokens in order within one name), found all at once from
  the batch's positional postings (:meth:`~notifier.matching.index.FieldTokens.sequences`).

:meth:`TermLexicon.compile` numbers the keys (run keys first, then the others as they come) and maps each key to the
terms it answers. :meth:`TermLexicon.occurrences` finds every kind of key in a batch with vectorised look-ups, and
turns the (key, paper) pairs into (term, paper) pairs, the bits that :mod:`notifier.matching.rules` starts from.

**A worked example.** The terms 0 ``ti:transformer`` and 1 ``"graph neural"``. Each word's spellings are numbered as
they are met:

>>> from notifier.matching.query import parse_query
>>> lexicon = TermLexicon.compile([parse_query("ti:transformer"), parse_query('"graph neural"')])
>>> lexicon._tokens
{'transformer': 0, 'transformers': 1, 'graph': 2, 'graphs': 3, 'neural': 4, 'neurals': 5}

A run of one token is numbered by its token. A run of *n* > 1 tokens is coded ``r << 32 | t``, where ``r`` is the
run of its first *n* - 1 tokens and ``t`` its last token, and numbered in the table of its length: ``"graph neural"``
is four runs of two, ``graph neural`` (2 << 32 | 4) to ``graphs neurals`` (3 << 32 | 5):

>>> runs = lexicon._runs[2]
>>> runs.codes.tolist(), runs.numbers.tolist()
([8589934596, 8589934597, 12884901892, 12884901893], [0, 1, 2, 3])

Each (run, length, scope) that answers a term is packed as ``run * 20 + length * 4 + scope`` (``_CODE_RUN`` = 20:
``MAX_GRAM + 1`` lengths of 4 scopes), so that the keys shared by several terms are found with one ``np.unique``:

>>> _run_codes([0, 1], 1, _SCOPES[Field.TITLE]), _run_codes([0, 1, 2, 3], 2, _SCOPES[None])
([5, 25], [8, 28, 48, 68])

The sorted codes 5, 8, 25, 28, 48, 68 are the run keys 0 to 5. Unpacked, they are one table per scope and length, of
run -> key (-1: none): ti:, one token (transformer, transformers, ...); no prefix, two tokens (runs 0 to 3):

>>> lexicon._scope_keys[1][1].tolist(), lexicon._scope_keys[0][2].tolist()
([0, 2, -1, -1, -1, -1], [1, 3, 4, 5])
>>> lexicon._key_terms.tolist()  # key -> term, one each here (compressed rows: see ``_key_offsets``)
[0, 1, 0, 1, 1, 1]

In a batch, the title "Graph neural networks" of paper 0 reads as the lexicon's tokens 2, 4 and none. Token 2 starts
runs of two; with the token after it, it is code 2 << 32 | 4 = 8589934596: run 0 of length 2, key 1, term 1. The
title "Transformers on graphs" of paper 1 holds token 1, key 2 in scope ti:, term 0:

>>> from notifier.models import Paper
>>> papers = [Paper("2506.00001", 1, "Graph neural networks", "A transformer.", ()),
...           Paper("2506.00002", 1, "Transformers on graphs", "Neural nets.", ())]
>>> terms, found = lexicon.occurrences(PaperIndex(papers))
>>> sorted(zip(terms.tolist(), found.tolist()))  # (term, paper)
[(0, 1), (1, 0)]
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from notifier.matching.bitsets import Ints, offsets_of
from notifier.matching.index import DEFAULT_FIELDS, Group, PaperIndex
from notifier.matching.query import Term
from notifier.matching.text import plural_variants
from notifier.models import Field

Mask: TypeAlias = npt.NDArray[np.bool_]

# Where a run key looks: no prefix (title or abstract), or one text field; and the scopes each text field serves.
_SCOPES: dict[Field | None, int] = {None: 0, Field.TITLE: 1, Field.ABSTRACT: 2, Field.COMMENT: 3}
_FIELD_SCOPES: tuple[tuple[Field, tuple[int, ...]], ...] = (
    (Field.TITLE, (0, 1)),
    (Field.ABSTRACT, (0, 2)),
    (Field.COMMENT, (3,)),
)
MAX_GRAM = 4  # phrases of up to this many words are run keys; longer ones are sequences
_NO_KEY = -1
_SHIFT = 32  # a pair of numbers (a, b), each under 2**32, is coded a << 32 | b: a run, or two words of a name
_LOW = (1 << _SHIFT) - 1
_CODE_RUN = (MAX_GRAM + 1) * len(_SCOPES)  # a (run key, term) entry: run * _CODE_RUN + length * len(_SCOPES) + scope
_NONE: Ints = np.empty(0, dtype=np.int64)
_K = TypeVar("_K", bound=Hashable)

# A range key: (key, field, word, prefix); a sequence key: (key, field, words, prefix).
_RangeKey: TypeAlias = tuple[int, Field | None, str, bool]
_SequenceKey: TypeAlias = tuple[int, Field | None, tuple[str, ...], bool]
_Entry = TypeVar("_Entry", _RangeKey, _SequenceKey)


def _reads(field: Field | None) -> tuple[Field, ...]:
    """The fields a term of ``field`` looks in: no prefix is the title and the abstract."""
    return DEFAULT_FIELDS if field is None else (field,)


@dataclass(frozen=True, slots=True)
class _Runs:
    """Token runs of one length > 1: their codes (see ``_SHIFT``), ascending, and each code's run number."""

    codes: Ints  # ascending
    numbers: Ints  # the run number of each code
    ends: Mask  # token number -> whether some run of this length ends with it


@dataclass(frozen=True, slots=True)
class _NamePairs:
    """The ``(first, second)`` word pairs of ``au:"First Second"`` terms, as codes of numbered words."""

    words: dict[str, int]
    codes: Ints  # ascending: first << _SHIFT | second
    keys: Ints  # the key of each code

    @classmethod
    def of(cls, keys: dict[tuple[str, str], int]) -> _NamePairs:
        words: dict[str, int] = {}
        for pair in keys:
            for word in pair:
                words.setdefault(word, len(words))
        codes = np.fromiter((words[a] << _SHIFT | words[b] for a, b in keys), np.int64, len(keys))
        order = np.argsort(codes)
        return cls(words, codes[order], np.fromiter(keys.values(), np.int64, len(keys))[order])


class TermLexicon:
    """Keys of every term of a rule set, and the look-ups that find them in a batch: the one way terms become
    papers."""

    __slots__ = ("_key_offsets", "_key_terms", "_names", "_ranges", "_runs", "_scope_keys", "_sequences", "_tokens")

    def __init__(
        self,
        tokens: dict[str, int],
        runs: list[_Runs],
        scope_keys: dict[int, list[Ints]],
        ranges: list[_RangeKey],
        names: _NamePairs,
        sequences: list[_SequenceKey],
        key_offsets: Ints,
        key_terms: Ints,
    ) -> None:
        self._tokens = tokens
        self._runs = runs
        self._scope_keys = scope_keys
        self._ranges = ranges
        self._names = names
        self._sequences = sequences
        self._key_offsets = key_offsets
        self._key_terms = key_terms

    @classmethod
    def compile(cls, terms: Sequence[Term]) -> TermLexicon:
        """Number every term's keys, and map each key to the terms it answers."""
        tokens: dict[str, int] = {}
        runs: list[dict[int, int]] = [{} for _ in range(MAX_GRAM + 1)]  # by length: run code -> run number
        text_codes = array("q")  # of each (run key, term) entry, see _CODE_RUN
        text_terms = array("q")
        range_keys: dict[tuple[Field | None, str, bool], int] = {}  # these three numbered together, after run keys
        name_keys: dict[tuple[str, str], int] = {}
        sequence_keys: dict[tuple[Field | None, tuple[str, ...], bool], int] = {}
        other_of_entry = array("q")
        other_terms = array("q")
        spellings: dict[str, list[int]] = {}

        def spellings_of(word: str) -> list[int]:
            """The numbers of the tokens that spell ``word``: itself and its plural variants."""
            found = spellings.get(word)
            if found is None:
                found = spellings[word] = [tokens.setdefault(v, len(tokens)) for v in sorted(plural_variants(word))]
            return found

        def other(table: dict[_K, int], key: _K, term: int) -> None:
            number = table.get(key)
            if number is None:
                number = table[key] = len(range_keys) + len(name_keys) + len(sequence_keys)
            other_of_entry.append(number)
            other_terms.append(term)

        authors, categories = Field.AUTHORS, Field.CATEGORIES  # locals: the loop runs once per distinct term
        for number, term in enumerate(terms):
            field, words = term.field, term.words
            if field is categories or (len(words) == 1 and (term.prefix or field is authors)):
                other(range_keys, (field, words[0], term.prefix), number)
            elif field is authors and len(words) == 2 and not term.prefix:
                other(name_keys, (words[0], words[1]), number)
            elif field is authors or term.prefix or len(words) > MAX_GRAM:
                other(sequence_keys, (field, words, term.prefix), number)
            else:
                heads = spellings_of(words[0])
                for length, word in enumerate(words[1:], start=2):
                    table = runs[length]
                    heads = [table.setdefault(h << _SHIFT | t, len(table)) for h in heads for t in spellings_of(word)]
                text_codes.extend(_run_codes(heads, len(words), _SCOPES[field]))
                text_terms.extend([number] * len(heads))

        vocabulary = len(tokens)
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
        other_count = len(range_keys) + len(name_keys) + len(sequence_keys)
        offsets = offsets_of(np.bincount(keys, minlength=first_other + other_count))
        key_terms = np.concatenate([np.frombuffer(text_terms, np.int64), np.frombuffer(other_terms, np.int64)])[order]
        return cls(
            tokens,
            _compile_runs(runs, vocabulary),
            scope_keys,
            [(first_other + key, field, word, prefix) for (field, word, prefix), key in range_keys.items()],
            _NamePairs.of({pair: first_other + key for pair, key in name_keys.items()}),
            [(first_other + key, field, words, prefix) for (field, words, prefix), key in sequence_keys.items()],
            offsets,
            key_terms,
        )

    def occurrences(self, index: PaperIndex, wanted: Mask | None = None) -> tuple[Ints, Ints]:
        """(term, paper) pairs, one or more for each paper that holds each term (of ``wanted`` terms, if given)."""
        useful = None if wanted is None else self._useful(wanted)
        keys: list[Ints] = [_NONE]
        papers: list[Ints] = [_NONE]
        if self._scope_keys:
            self._run_keys(index, keys, papers)
        if self._ranges:
            self._range_keys(index, _chosen(self._ranges, useful), keys, papers)
        if self._names.words:
            self._name_keys(index, keys, papers)
        if self._sequences:
            self._sequence_keys(index, _chosen(self._sequences, useful), keys, papers)
        return self._expand(np.concatenate(keys), np.concatenate(papers), useful, wanted)

    def _run_keys(self, index: PaperIndex, keys: list[Ints], papers: list[Ints]) -> None:
        """Run keys in the text fields: each field's tokens, numbered in the lexicon, looked up a length at a time."""
        vocabulary = index.vocabulary
        known = np.fromiter(map(self._tokens.get, vocabulary, itertools.repeat(_NO_KEY)), np.int64, len(vocabulary))
        for field, scopes in _FIELD_SCOPES:
            tables = [self._scope_keys[scope] for scope in scopes if scope in self._scope_keys]
            if tables:
                tokens = index.field_tokens(field)
                self._field_runs(known[tokens.ids], tokens.paper_of, tables, keys, papers)

    def _field_runs(
        self, ids: Ints, paper_of: Ints, tables: list[list[Ints]], keys: list[Ints], papers: list[Ints]
    ) -> None:
        """Keys of the token runs of one field, given its tokens' numbers in the lexicon (or ``_NO_KEY``): the runs
        of each length are those of the length before, extended by the token that follows."""
        starts = np.flatnonzero(ids >= 0)
        runs = ids[starts]
        for length in range(1, MAX_GRAM + 1):
            if length == 2:
                longer = self._runs[1].ends[runs]  # tokens that start longer runs
                starts, runs = starts[longer], runs[longer]
            if length > 1:
                table = self._runs[length]
                following = ids[starts + length - 1]  # in range: each text ends with a separator
                known = following >= 0
                known[known] = table.ends[following[known]]
                found, runs = _look_up(table.codes, runs[known] << _SHIFT | following[known], table.numbers)
                starts = starts[known][found]
            if not len(starts):
                return
            for scope_tables in tables:
                found_keys = scope_tables[length][runs]
                hit = found_keys != _NO_KEY
                keys.append(found_keys[hit])
                papers.append(paper_of[starts[hit]])

    @staticmethod
    def _range_keys(index: PaperIndex, chosen: list[_RangeKey], keys: list[Ints], papers: list[Ints]) -> None:
        """Range keys: each is one token of a range of the batch's sorted vocabulary, in the fields it reads."""
        by_field: dict[Field, list[tuple[int, range]]] = {}
        for key, field, word, prefix in chosen:
            if field is Field.AUTHORS:
                found = index.name_options(word, prefix)
            else:
                found = index.prefixed(word) if prefix else index.exact(word)
            if found:
                for read in _reads(field):
                    by_field.setdefault(read, []).append((key, found))
        for field, ranges in by_field.items():
            tokens = index.field_tokens(field)
            ids = tokens.ids
            token_of_entry = np.concatenate([np.arange(found.start, found.stop, dtype=np.int64) for _, found in ranges])
            key_of_entry = np.repeat([key for key, _ in ranges], [len(found) for _, found in ranges])
            order = np.argsort(token_of_entry, kind="stable")
            offsets = offsets_of(np.bincount(token_of_entry, minlength=int(ids.max()) + 1))
            at = np.flatnonzero(offsets[ids + 1] > offsets[ids])
            pair, values = _spread(offsets, key_of_entry[order], ids[at])
            keys.append(values)
            papers.append(tokens.paper_of[at[pair]])

    def _name_keys(self, index: PaperIndex, keys: list[Ints], papers: list[Ints]) -> None:
        """Name keys: ordered pairs of tokens within one author's name, either cut to its initial."""
        names = self._names
        authors = index.field_tokens(Field.AUTHORS)
        ids = authors.ids
        if len(ids) <= 1:  # no author has a name token
            return
        get, absent = names.words.get, itertools.repeat(_NO_KEY)
        vocabulary = index.vocabulary
        whole = np.fromiter(map(get, vocabulary, absent), np.int64, len(vocabulary))
        initial = np.fromiter(map(get, [token[0] for token in vocabulary], absent), np.int64, len(vocabulary))
        forms = (whole[ids], initial[ids])  # the separator is no word of any term: _NO_KEY in both
        name_of = np.cumsum(ids == 0)  # two tokens are in one name if no separator lies between them
        longest = int(np.diff(np.flatnonzero(ids == 0)).max()) - 1  # the most tokens in one name
        for gap in range(1, longest):
            at = np.flatnonzero(name_of[:-gap] == name_of[gap:])
            for first, second in itertools.product(forms, forms):
                a, b = first[at], second[at + gap]
                known = (a >= 0) & (b >= 0)
                found, key = _look_up(names.codes, a[known] << _SHIFT | b[known], names.keys)
                keys.append(key)
                papers.append(authors.paper_of[at[known][found]])

    @staticmethod
    def _sequence_keys(index: PaperIndex, chosen: list[_SequenceKey], keys: list[Ints], papers: list[Ints]) -> None:
        """Sequence keys: consecutive tokens in a text field, or tokens in order within one author's name."""
        by_field: dict[Field, list[tuple[int, list[Group]]]] = {}
        for key, field, words, prefix in chosen:
            last = len(words) - 1
            options: Callable[[str, bool], Group] = index.name_options if field is Field.AUTHORS else index.options
            groups = [options(word, prefix and i == last) for i, word in enumerate(words)]
            if all(groups):
                for read in _reads(field):
                    by_field.setdefault(read, []).append((key, groups))
        for field, wanted in by_field.items():
            found, holding = index.field_tokens(field).sequences(wanted, gaps=field is Field.AUTHORS)
            keys.append(found)
            papers.append(holding)

    def _useful(self, wanted: Mask) -> Mask:
        """Which keys answer at least one ``wanted`` term."""
        offsets = self._key_offsets
        entries = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        useful = np.zeros(len(offsets) - 1, dtype=bool)
        useful[entries[wanted[self._key_terms]]] = True
        return useful

    def _expand(self, keys: Ints, papers: Ints, useful: Mask | None, wanted: Mask | None) -> tuple[Ints, Ints]:
        """(key, paper) pairs -> (term, paper) pairs for every (wanted) term each key answers."""
        if useful is not None:
            keep = useful[keys]
            keys, papers = keys[keep], papers[keep]
        pair, terms = _spread(self._key_offsets, self._key_terms, keys)
        papers = papers[pair]
        if wanted is not None:
            keep = wanted[terms]
            terms, papers = terms[keep], papers[keep]
        return terms, papers


def _run_codes(runs: list[int], length: int, scope: int) -> list[int]:
    """The codes of a term's run keys: ``run * _CODE_RUN + length * len(_SCOPES) + scope`` for each of ``runs``."""
    tail = length * len(_SCOPES) + scope
    return [run * _CODE_RUN + tail for run in runs]


def _chosen(found: list[_Entry], useful: Mask | None) -> list[_Entry]:
    """The entries of ``found`` (each with its key first) whose keys are useful; all of them without ``useful``."""
    if useful is None:
        return found
    numbers = np.fromiter((entry[0] for entry in found), np.int64, len(found))
    return [found[i] for i in np.flatnonzero(useful[numbers]).tolist()]


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
    firsts = np.fromiter(runs[2], np.int64, len(runs[2])) >> _SHIFT
    heads = np.zeros(vocabulary, dtype=bool)
    heads[firsts] = True
    compiled = [_Runs(_NONE, _NONE, heads)] * 2  # ``ends`` of length 1: the tokens that runs start with
    for table in runs[2:]:
        codes = np.fromiter(table, np.int64, len(table))
        order = np.argsort(codes)
        ends = np.zeros(vocabulary, dtype=bool)
        ends[codes & _LOW] = True
        compiled.append(_Runs(codes[order], np.fromiter(table.values(), np.int64, len(table))[order], ends))
    return compiled
