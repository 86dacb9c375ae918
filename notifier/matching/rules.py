"""Pure rule matching: many subscribers' rules against one batch of papers, with the evidence for every match.

:meth:`RuleSet.compile` runs once, at config load. It parses every rule and folds all of them into one graph of
boolean operations whose leaves are *terms*; identical terms and identical sub-expressions are stored once however
many rules share them. The nodes are numbered by depth and kind, so that the graph is evaluated a *level* (all the
nodes of one depth and operation) at a time. The terms are compiled into a
:class:`~notifier.matching.lexicon.TermLexicon`.

:meth:`RuleSet.evaluate` indexes the batch (:class:`~notifier.matching.index.PaperIndex`), finds every term the selected
rules need with the lexicon's array look-ups, and evaluates the graph over rows of paper bits
(:mod:`notifier.matching.bitsets`), one NumPy operation per level. The resulting :class:`MatchBatch` holds each rule's
papers, and gives *why* (the :class:`~notifier.models.Hit` spans) only when asked, one rule at a time and only in
the papers asked about (a digest's). Its cost grows with papers, distinct terms, rules and matches, not with rules
times papers. :meth:`RuleSet.match` is both steps for every rule.

**A worked example.** The rule ``(gpu OR tpu) AND NOT survey`` has the terms 0 ``gpu``, 1 ``tpu`` and 2 ``survey``;
node 3 is ``0 OR 1`` (depth 1), node 4 is ``3 AND_NOT 2`` (depth 2), each a level of its own (the operations are
:class:`~notifier.matching.bitsets.Op`):

>>> rules = RuleSet.compile([("k", "my rule", "(gpu OR tpu) AND NOT survey")])
>>> [term.label for term in rules._terms]
['gpu', 'tpu', 'survey']
>>> [(Op(level.op).name, level.first, level.left.tolist(), level.right.tolist()) for level in rules._graph.levels]
[('OR', 3, [0], [1]), ('AND_NOT', 4, [3], [2])]

Over five papers, each node is a row of bits, bit *p* for paper *p* (printed with paper 0 on the right). The lexicon
sets the terms' bits (row 0: papers 0, 2, 3 hold "gpu"), and each level is one operation on whole rows:
row 3 = row 0 | row 1, row 4 = row 3 & ~row 2. The rule's papers are row 4's bits: 0 and 3.

>>> from notifier.models import Paper
>>> titles = ["GPU kernels", "A TPU survey", "Surveys of GPUs", "TPUs and GPUs", "Sparse attention"]
>>> papers = [Paper(f"2506.0000{n}", 1, title, "", ()) for n, title in enumerate(titles)]
>>> rows, steps, outputs, bits = rules._program(PaperIndex(papers), rules._roots)
>>> evaluator = bitsets.Evaluator(rows, steps, outputs, words=1)
>>> evaluator.run(*bits, bitsets.Block(start=0, size=5, words=1))  # (papers per output row, the papers)
(array([2]), array([0, 3]))
>>> [format(int(row[0]), "05b") for row in evaluator.matrix]  # rows 0 to 4
['01101', '01010', '00110', '01111', '01001']
>>> [match.paper.title for match in rules.match(papers)["k"]]
['GPU kernels', 'TPUs and GPUs']
"""

from __future__ import annotations

import gc
import itertools
import os
from array import array
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from notifier.errors import QuerySyntaxError
from notifier.matching import bitsets
from notifier.matching.bitsets import Ints, Op
from notifier.matching.index import PaperIndex
from notifier.matching.lexicon import TermLexicon
from notifier.matching.positions import Positions
from notifier.matching.query import And, Node, Not, Or, Term, parse_query
from notifier.models import Hit, Match, Paper

_MATRIX_BYTES = 32 * 2**20  # papers are evaluated in blocks that keep the bit matrices under this size
_WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
# Hits remembered per (rule, paper) and per (term, paper) while a batch is planned; past this many, they start over
# (a batch of 100,000 subscribers would otherwise keep gigabytes of them for papers no later digest shows).
HITS_KEPT = 100_000
_COMMUTATIVE = frozenset({Op.AND, Op.OR})  # operands put in one order, so that a OR b and b OR a are one node


@dataclass(frozen=True, slots=True)
class _Level:
    """Nodes ``first .. first + len(left) - 1``, all computed by ``op`` from their ``left``/``right`` nodes."""

    op: Op
    first: int
    left: Ints
    right: Ints


class _GraphBuilder:
    """Hash-consing construction of the rule graph.

    Trees are walked with a stack of their own, not by recursion, and the graph's depth is computed in one pass
    over the operations in the order they were made, so no rule, however deep, can exhaust the interpreter's stack.
    """

    def __init__(self) -> None:
        self.terms: dict[Term, int] = {}
        self.nodes: dict[tuple[Op, int, int], int] = {}
        self.ops: list[tuple[Op, int, int]] = []

    def term(self, term: Term) -> int:
        return self.terms.setdefault(term, len(self.terms))

    def node(self, op: Op, left: int, right: int) -> int:
        if op in _COMMUTATIVE and right < left:
            left, right = right, left
        key = (op, left, right)
        found = self.nodes.get(key)
        if found is None:
            found = self.nodes[key] = -1 - len(self.ops)  # negative until terms are numbered
            self.ops.append(key)
        return found

    def add(self, root: Node) -> int:
        """The graph node of the tree ``root``: its children first (left to right), then the node itself."""
        if isinstance(root, Term):
            return self.term(root)
        done: list[int] = []  # graph ids of the finished subtrees, in order
        pending: list[tuple[Node, bool]] = [(root, False)]  # (tree node, its children are done)
        while pending:
            node, ready = pending.pop()
            if isinstance(node, Term):
                done.append(self.term(node))
            elif isinstance(node, Not) and isinstance(node.child, Not):
                pending.append((node.child.child, False))
            elif not ready:
                pending.append((node, True))
                pending.extend((child, False) for child in reversed(_operands(node)))
            elif isinstance(node, Not):
                done.append(self.node(Op.NOT, done.pop(), -1))
            else:
                count = len(node.children)
                ids = done[-count:]
                del done[-count:]
                done.append(self._combine(node, ids))
        return done[0]

    def _combine(self, node: And | Or, ids: list[int]) -> int:
        """Fold the graph ids of ``node``'s operands (in :func:`_operands` order) into one node."""
        if isinstance(node, Or):
            acc = ids[0]
            for other in ids[1:]:
                acc = self.node(Op.OR, acc, other)
            return acc
        positives = sum(1 for child in node.children if not isinstance(child, Not))
        positive, negative = ids[:positives], ids[positives:]
        acc = positive[0] if positive else self.node(Op.NOT, negative.pop(0), -1)
        for other in positive[1:]:
            acc = self.node(Op.AND, acc, other)
        for other in negative:
            acc = self.node(Op.AND_NOT, acc, other)
        return acc

    def finish(self, roots: list[int]) -> tuple[list[Term], _Graph, Ints]:
        """Number terms first, then the other nodes by (depth, op); return the terms, graph and renumbered roots."""
        term_count = len(self.terms)

        def resolve(node: int) -> int:  # builder id -> provisional id: terms 0.., other nodes after them
            return node if node >= 0 else term_count + (-1 - node)

        unary = Op.NOT  # a local: looking a member up on the enum costs more than anything else in these loops
        depth = [0] * (term_count + len(self.ops))
        for number, (op, left, right) in enumerate(self.ops):  # children always come before their parents
            below = depth[resolve(left)] if op == unary else max(depth[resolve(left)], depth[resolve(right)])
            depth[term_count + number] = below + 1
        levels = len(Op) + 1  # (depth, op) as one int, depth * levels + op (codes run 1 .. len(Op)): ints sort fastest
        level = [depth[term_count + number] * levels + op for number, (op, _, _) in enumerate(self.ops)]
        order = sorted(range(len(self.ops)), key=level.__getitem__)
        final = list(range(term_count)) + [0] * len(self.ops)
        for position, number in enumerate(order):
            final[term_count + number] = term_count + position
        graph = _Graph(term_count)
        previous = -1
        for position, number in enumerate(order):
            op, left, right = self.ops[number]
            if level[number] != previous:
                previous = level[number]
                graph.starts.append((op, term_count + position))
            graph.add(op, final[resolve(left)], final[resolve(right)] if op != unary else 0)
        graph.freeze()
        terms = sorted(self.terms, key=self.terms.__getitem__)
        return terms, graph, np.fromiter((final[resolve(root)] for root in roots), np.int64, len(roots))


def _operands(node: Not | And | Or) -> list[Node]:
    """What ``node`` is built from: an AND takes its positive children, then what its NOT children negate."""
    if isinstance(node, Not):
        return [node.child]
    if isinstance(node, Or):
        return list(node.children)
    positive = [child for child in node.children if not isinstance(child, Not)]
    return positive + [child.child for child in node.children if isinstance(child, Not)]


class _Graph:
    """The compiled operations: flat arrays for look-ups, and levels for evaluating everything at once. Nodes
    ``0 .. term_count - 1`` are the terms themselves; the operations are numbered after them."""

    def __init__(self, term_count: int) -> None:
        self.term_count = term_count
        self.ops = array("b")
        self.left = array("i")
        self.right = array("i")
        self.starts: list[tuple[Op, int]] = []  # (op, first node) of each level, while building
        self.levels: list[_Level] = []

    def add(self, op: Op, left: int, right: int) -> None:
        self.ops.append(op)
        self.left.append(left)
        self.right.append(right)

    def freeze(self) -> None:
        """Cut the operations into levels of NumPy arrays."""
        left = np.frombuffer(self.left, dtype=np.int32).astype(np.int64)
        right = np.frombuffer(self.right, dtype=np.int32).astype(np.int64)
        bounds = [first - self.term_count for _, first in self.starts] + [len(self.ops)]
        self.levels = [
            _Level(Op(op), first, left[start:end], right[start:end])
            for (op, first), start, end in zip(self.starts, bounds, bounds[1:], strict=False)
        ]
        self.starts = []

    def needed(self, roots: Ints) -> np.ndarray[tuple[int], np.dtype[np.bool_]]:
        """Which nodes evaluating ``roots`` takes: the roots and everything below them."""
        needed = np.zeros(len(self), dtype=bool)
        needed[roots] = True
        for level in reversed(self.levels):
            wanted = needed[level.first : level.first + len(level.left)]
            if wanted.any():
                needed[level.left[wanted]] = True
                if level.op != Op.NOT:
                    needed[level.right[wanted]] = True
        return needed

    def __len__(self) -> int:
        return self.term_count + len(self.ops)

    def node(self, node: int) -> tuple[int, int, int]:
        """(op, left, right) of an operation node: the op's :class:`Op` code, as stored."""
        offset = node - self.term_count
        return self.ops[offset], self.left[offset], self.right[offset]


class RuleSet:
    """Every subscriber's rules, compiled once and matched against each batch of papers."""

    __slots__ = ("_graph", "_index_of", "_keys", "_lexicon", "_names", "_roots", "_terms")

    def __init__(
        self, index_of: dict[str, int], names: list[str], roots: Ints, terms: list[Term], graph: _Graph
    ) -> None:
        self._index_of = index_of
        self._keys = list(index_of)
        self._names = names
        self._roots = roots
        self._terms = terms
        self._graph = graph
        self._lexicon = TermLexicon.compile(terms)

    @classmethod
    def compile(
        cls, rules: Iterable[tuple[str, str, str]], inspect: Callable[[str, Node], None] | None = None
    ) -> RuleSet:
        """Compile ``(key, rule_name, query)`` triples; raise :class:`QuerySyntaxError` (with ``key``) on a bad one.

        ``inspect(query, tree)``, if given, sees each distinct query's syntax tree once, as it is parsed.
        """
        collecting = gc.isenabled()
        gc.disable()  # millions of small acyclic objects that mostly live on: collections would only cost time
        try:
            return cls._compile(rules, inspect)
        finally:
            if collecting:
                gc.enable()

    @classmethod
    def _compile(cls, rules: Iterable[tuple[str, str, str]], inspect: Callable[[str, Node], None] | None) -> RuleSet:
        builder = _GraphBuilder()
        by_query: dict[str, int] = {}
        names: dict[str, str] = {}
        index_of: dict[str, int] = {}
        rule_names: list[str] = []
        roots: list[int] = []
        for key, name, query in rules:
            if key in index_of:
                raise ValueError(f"duplicate rule key {key!r}")
            root = by_query.get(query)
            if root is None:
                try:
                    tree = parse_query(query)
                except QuerySyntaxError as exc:
                    exc.key = key
                    raise
                if inspect is not None:
                    inspect(query, tree)
                root = by_query[query] = builder.add(tree)
            index_of[key] = len(rule_names)
            rule_names.append(names.setdefault(name, name))
            roots.append(root)
        terms, graph, final_roots = builder.finish(roots)
        del builder, by_query, roots  # before the lexicon is compiled: the peak is what both hold at once
        return cls(index_of, rule_names, final_roots, terms, graph)

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def term_count(self) -> int:
        """How many distinct terms the rules use."""
        return len(self._terms)

    def evaluate(self, papers: Sequence[Paper], keys: Collection[str] | None = None) -> MatchBatch:
        """Which papers each rule (every rule, or those of ``keys`` that exist) selects; hits come on request."""
        if keys is None:
            selected = self._index_of
        else:
            selected = {key: self._index_of[key] for key in keys if key in self._index_of}
        collecting = gc.isenabled()
        gc.disable()  # indexing a batch allocates many small, acyclic objects: collections only cost time
        try:
            index = PaperIndex(papers)
            if not papers or not selected:
                return MatchBatch(self, index, selected, np.zeros(len(self._keys), np.int64), _ONE_EMPTY_ROW, _EMPTY)
            rules = np.fromiter(selected.values(), np.int64, len(selected))
            roots, row_of_selected = np.unique(self._roots[rules], return_inverse=True)
            offsets, found = self._postings(index, roots)
        finally:
            if collecting:
                gc.enable()
        row_of = np.zeros(len(self._keys), dtype=np.int64)
        row_of[rules] = row_of_selected
        return MatchBatch(self, index, selected, row_of, offsets, found)

    def match(self, papers: Sequence[Paper], keys: Collection[str] | None = None) -> dict[str, list[Match]]:
        """Key -> that rule's matches in paper order, with hits; rules without a match are left out."""
        batch = self.evaluate(papers, keys)
        matched = batch.keys()
        return {key: batch.matches(key) for key in matched}

    def _postings(self, index: PaperIndex, roots: Ints) -> tuple[Ints, Ints]:
        """The papers of each of ``roots``: evaluate the nodes below them, level by level, block by block."""
        rows, steps, outputs, bits = self._program(index, roots)
        return bitsets.evaluate(rows, steps, outputs, bits, len(index.papers), _MATRIX_BYTES, _WORKERS)

    def _program(self, index: PaperIndex, roots: Ints) -> tuple[int, list[bitsets.Step], Ints, tuple[Ints, Ints]]:
        """What evaluating ``roots`` over the batch takes: a matrix of so many rows (one per node needed, terms
        first), the steps (one per level), the rows of the roots, and the (row, paper) bits of the terms found."""
        graph = self._graph
        needed = graph.needed(roots)
        row = np.cumsum(needed) - 1  # node -> its row in the matrix, for the needed nodes
        terms, papers = self._lexicon.occurrences(index, needed[: graph.term_count])
        steps: list[bitsets.Step] = []
        for level in graph.levels:
            wanted = needed[level.first : level.first + len(level.left)]
            count = int(np.count_nonzero(wanted))
            if count:
                first = int(row[level.first + int(np.argmax(wanted))])
                left, right = row[level.left[wanted]], row[level.right[wanted]]
                steps.append(bitsets.Step(level.op, first, first + count, left, right))
        return int(row[-1]) + 1, steps, row[roots], (row[terms], papers)

    def _positive_terms(self, node: int) -> list[int]:
        """Distinct terms of ``node`` not under a NOT, in query order: the ones that can explain a match.

        A walk with a stack of its own (a rule's graph is as deep as its longest chain of ANDs), visiting each
        shared node once.
        """
        found: list[int] = []
        seen: set[int] = set()
        pending = [node]
        term_count = len(self._terms)
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            if current < term_count:
                found.append(current)
                continue
            op, left, right = self._graph.node(current)
            if op == Op.AND_NOT:
                pending.append(left)
            elif op != Op.NOT:
                pending += (right, left)
        return found


_EMPTY: Ints = np.empty(0, dtype=np.int64)
_ONE_EMPTY_ROW: Ints = np.zeros(2, dtype=np.int64)


class MatchBatch:
    """The outcome of :meth:`RuleSet.evaluate`: which papers each rule selects, and (lazily, per rule) why.

    Paper sets are slices of one array, shared by the rules with the same query. :meth:`matches` looks up hits
    only for the rule asked about, and only in the papers asked about (``within``: positions in the batch, see
    :meth:`positions`), and caches them per (rule query, paper) and per (term, paper), up to :data:`HITS_KEPT` of each.
    """

    __slots__ = (
        "_index", "_matches", "_offsets", "_papers", "_position_of", "_row_of", "_rows", "_rule_hits", "_rules",
        "_selected", "_starts", "_term_hits",
    )  # fmt: skip

    def __init__(
        self, rules: RuleSet, index: PaperIndex, selected: dict[str, int], row_of: Ints, offsets: Ints, papers: Ints
    ) -> None:
        self._rules = rules
        self._index = index
        self._selected = selected  # key -> rule number
        self._rows = row_of[np.fromiter(selected.values(), np.int64, len(selected))]  # of the selected, in order
        self._row_of: list[int] = row_of.tolist()  # rule number -> the row of its papers (for the selected rules)
        self._offsets = offsets
        self._starts: list[int] = offsets.tolist()
        self._papers = papers
        self._papers.flags.writeable = False
        self._matches: dict[str, list[Match]] = {}
        self._term_hits: dict[tuple[int, int], tuple[Hit, ...]] = {}
        self._rule_hits: dict[tuple[int, int], tuple[Hit, ...]] = {}
        self._position_of: dict[str, int] | None = None

    def keys(self) -> list[str]:
        """Keys of the evaluated rules that selected at least one paper, in rule order."""
        matched = self._offsets[self._rows + 1] > self._offsets[self._rows]
        return list(itertools.compress(self._selected, matched.tolist()))

    def paper_indices(self, key: str) -> Ints:
        """Positions in the batch of the papers that rule ``key`` selects, ascending, as a read-only array
        (KeyError if ``key`` was not evaluated)."""
        row = self._row_of[self._selected[key]]
        return self._papers[self._starts[row] : self._starts[row + 1]]

    def papers(self, key: str, within: Collection[int] | None = None) -> list[Paper]:
        """The papers that rule ``key`` selects, in batch order (only those at the positions ``within``, if
        given)."""
        papers = self._index.papers
        return [papers[i] for i in self._positions(key, within)]

    def position_of(self, arxiv_id: str) -> int:
        """The position in the batch of the paper ``arxiv_id`` (its first, if it came twice; KeyError if
        absent)."""
        return self._position_table()[arxiv_id]

    def positions(self, arxiv_ids: Iterable[str]) -> set[int]:
        """The positions in the batch of those of ``arxiv_ids`` that it holds: a ``within`` for :meth:`matches`."""
        table = self._position_table()
        return {table[arxiv_id] for arxiv_id in arxiv_ids if arxiv_id in table}

    def _position_table(self) -> dict[str, int]:
        if self._position_of is None:
            table: dict[str, int] = {}
            for position, paper in enumerate(self._index.papers):
                table.setdefault(paper.arxiv_id, position)
            self._position_of = table
        return self._position_of

    def _positions(self, key: str, within: Collection[int] | None) -> list[int]:
        """Positions of rule ``key``'s papers, ascending; only those in ``within``, if given."""
        selected = self.paper_indices(key)
        if within is None:
            every: list[int] = selected.tolist()
            return every
        if isinstance(within, Positions):
            among: list[int] = within.among(selected).tolist()
            return among
        if len(selected) <= len(within):
            return [paper for paper in selected.tolist() if paper in within]
        wanted = np.fromiter(within, np.int64, len(within))
        at = np.minimum(np.searchsorted(selected, wanted), len(selected) - 1)
        return sorted(set(wanted[selected[at] == wanted].tolist()))

    def matches(self, key: str, within: Collection[int] | None = None) -> list[Match]:
        """Rule ``key``'s matches in paper order, each with its hits; with ``within`` (positions in the batch),
        only the matches among those papers.

        Hits are computed once per (rule query, paper) and per (term, paper) for the whole batch, so a paper
        that many subscribers see is explained once however many digests show it.
        """
        if within is None:
            found = self._matches.get(key)
            if found is None:
                found = self._matches[key] = self._explain(key, self._positions(key, None))
            return list(found)
        return self._explain(key, self._positions(key, within))

    def _explain(self, key: str, positions: list[int]) -> list[Match]:
        collecting = gc.isenabled()
        gc.disable()  # hits and matches are many small acyclic objects: collections would only cost time
        try:
            return self._explained(key, positions)
        finally:
            if collecting:
                gc.enable()

    def _explained(self, key: str, positions: list[int]) -> list[Match]:
        rules, index = self._rules, self._index
        rule = self._selected[key]
        root = int(rules._roots[rule])
        explained: list[int] | None = None
        name = rules._names[rule]
        matches: list[Match] = []
        for paper in positions:
            hits = self._rule_hits.get((root, paper))
            if hits is None:
                if explained is None:
                    explained = rules._positive_terms(root)
                if len(self._rule_hits) >= HITS_KEPT:
                    self._rule_hits.clear()
                if len(self._term_hits) >= HITS_KEPT:
                    self._term_hits.clear()
                found: list[Hit] = []
                for term in explained:
                    cached = self._term_hits.get((term, paper))
                    if cached is None:
                        cached = self._term_hits[term, paper] = index.hits(rules._terms[term], paper)
                    found.extend(cached)
                hits = self._rule_hits[root, paper] = tuple(found)
            matches.append(Match(index.papers[paper], name, hits))
        return matches
