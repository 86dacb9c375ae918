"""Pure rule matching: many subscribers' rules against one batch of papers, with the evidence for every match.

:meth:`RuleSet.compile` runs once, at config load. It parses every rule and folds all of them into one graph of
boolean operations whose leaves are *terms*; identical terms and identical sub-expressions are stored once however
many rules share them. The nodes are numbered by depth and kind, so that evaluating the graph is a handful of list
comprehensions over Python ints used as bitsets of papers.

:meth:`RuleSet.evaluate` indexes the batch (:class:`~notifier.index.PaperIndex`), computes each distinct term's
paper set once and evaluates the graph level by level (map over C-level int operations). The resulting
:class:`MatchBatch` answers *which* papers a rule selects straight from the bitsets (or from the postings they came
from), and *why* (the :class:`~notifier.models.Hit` spans) only when asked, one rule at a time. Its cost grows with
papers, distinct terms and rules, not with rules times papers. :meth:`RuleSet.match` is both steps for every rule.
"""

from __future__ import annotations

import gc
from array import array
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from operator import and_, invert, or_
from typing import Any

from notifier.errors import QuerySyntaxError
from notifier.index import PaperIndex, bit_indices
from notifier.models import Hit, Match, Paper
from notifier.query import Node, Not, Or, Term, parse_query

# Operations of the graph. Nodes below the number of terms are the terms themselves.
_AND, _OR, _AND_NOT, _NOT = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class _Level:
    """Nodes ``first .. first + len(left) - 1``, all computed by ``op`` from their ``left``/``right`` nodes."""

    op: int
    first: int
    left: array[int]
    right: array[int]


class _GraphBuilder:
    """Hash-consing construction of the rule graph."""

    def __init__(self) -> None:
        self.terms: dict[Term, int] = {}
        self.nodes: dict[tuple[int, int, int], int] = {}
        self.ops: list[tuple[int, int, int]] = []

    def node(self, op: int, left: int, right: int) -> int:
        if op in (_AND, _OR) and right < left:
            left, right = right, left
        key = (op, left, right)
        found = self.nodes.get(key)
        if found is None:
            found = self.nodes[key] = -1 - len(self.ops)  # negative until terms are numbered
            self.ops.append(key)
        return found

    def add(self, node: Node) -> int:
        if isinstance(node, Term):
            return self.terms.setdefault(node, len(self.terms))
        if isinstance(node, Not):
            if isinstance(node.child, Not):
                return self.add(node.child.child)
            return self.node(_NOT, self.add(node.child), -1)
        if isinstance(node, Or):
            ids = [self.add(child) for child in node.children]
            acc = ids[0]
            for other in ids[1:]:
                acc = self.node(_OR, acc, other)
            return acc
        positive = [self.add(child) for child in node.children if not isinstance(child, Not)]
        negative = [self.add(child.child) for child in node.children if isinstance(child, Not)]
        acc = positive[0] if positive else self.node(_NOT, negative.pop(0), -1)
        for other in positive[1:]:
            acc = self.node(_AND, acc, other)
        for other in negative:
            acc = self.node(_AND_NOT, acc, other)
        return acc

    def finish(self, roots: list[int]) -> tuple[list[Term], _Graph, array[int]]:
        """Number terms first, then the other nodes by (depth, op); return the terms, graph and renumbered roots."""
        term_count = len(self.terms)

        def resolve(node: int) -> int:  # builder id -> provisional id: terms 0.., other nodes after them
            return node if node >= 0 else term_count + (-1 - node)

        depth = [0] * (term_count + len(self.ops))
        for number, (op, left, right) in enumerate(self.ops):  # children always come before their parents
            below = depth[resolve(left)] if op == _NOT else max(depth[resolve(left)], depth[resolve(right)])
            depth[term_count + number] = below + 1
        order = sorted(range(len(self.ops)), key=lambda n: (depth[term_count + n], self.ops[n][0]))
        final = list(range(term_count)) + [0] * len(self.ops)
        for position, number in enumerate(order):
            final[term_count + number] = term_count + position
        graph = _Graph(term_count)
        previous: tuple[int, int] | None = None
        for position, number in enumerate(order):
            op, left, right = self.ops[number]
            if (depth[term_count + number], op) != previous:
                previous = (depth[term_count + number], op)
                graph.levels.append(_Level(op, term_count + position, array("i"), array("i")))
            graph.add(op, final[resolve(left)], final[resolve(right)] if op != _NOT else 0)
        terms = sorted(self.terms, key=self.terms.__getitem__)
        return terms, graph, array("i", (final[resolve(root)] for root in roots))


class _Graph:
    """The compiled operations: flat arrays for look-ups, and levels for evaluating everything at once."""

    def __init__(self, term_count: int) -> None:
        self.term_count = term_count
        self.ops = array("b")
        self.left = array("i")
        self.right = array("i")
        self.levels: list[_Level] = []

    def add(self, op: int, left: int, right: int) -> None:
        self.ops.append(op)
        self.left.append(left)
        self.right.append(right)
        self.levels[-1].left.append(left)
        self.levels[-1].right.append(right)

    def __len__(self) -> int:
        return self.term_count + len(self.ops)

    def node(self, node: int) -> tuple[int, int, int]:
        """(op, left, right) of an operation node."""
        offset = node - self.term_count
        return self.ops[offset], self.left[offset], self.right[offset]


class RuleSet:
    """Every subscriber's rules, compiled once and matched against each batch of papers."""

    __slots__ = ("_graph", "_index_of", "_keys", "_names", "_roots", "_terms")

    def __init__(
        self, index_of: dict[str, int], names: list[str], roots: array[int], terms: list[Term], graph: _Graph
    ) -> None:
        self._index_of = index_of
        self._keys = list(index_of)
        self._names = names
        self._roots = roots
        self._terms = terms
        self._graph = graph

    @classmethod
    def compile(cls, rules: Iterable[tuple[str, str, str]]) -> RuleSet:
        """Compile ``(key, rule_name, query)`` triples; raise :class:`QuerySyntaxError` (with ``key``) on a bad one."""
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
                    root = by_query[query] = builder.add(parse_query(query))
                except QuerySyntaxError as exc:
                    exc.key = key
                    raise
            index_of[key] = len(rule_names)
            rule_names.append(names.setdefault(name, name))
            roots.append(root)
        terms, graph, final_roots = builder.finish(roots)
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
        gc.disable()  # a batch allocates millions of short-lived, acyclic objects: collections only cost time
        try:
            index = PaperIndex(papers)
            values: Sequence[int] | dict[int, int]
            if not papers or not selected:
                values = _NOTHING
            elif keys is None:
                values = self._evaluate_all(index)
            else:
                values = self._evaluate_some(index, [self._roots[rule] for rule in selected.values()])
        finally:
            if collecting:
                gc.enable()
        return MatchBatch(self, index, values, selected)

    def match(self, papers: Sequence[Paper], keys: Collection[str] | None = None) -> dict[str, list[Match]]:
        """Key -> that rule's matches in paper order, with hits; rules without a match are left out."""
        batch = self.evaluate(papers, keys)
        matched = batch.keys()
        return {key: batch.matches(key) for key in matched}

    def _evaluate_all(self, index: PaperIndex) -> list[int]:
        values = index.bits_of(self._terms)
        values.extend([0] * (len(self._graph) - len(values)))
        everything = index.everything
        value = values.__getitem__
        for level in self._graph.levels:
            left = map(value, level.left)
            if level.op == _AND:
                result = list(map(and_, left, map(value, level.right)))
            elif level.op == _OR:
                result = list(map(or_, left, map(value, level.right)))
            elif level.op == _AND_NOT:
                result = list(map(and_, left, map(invert, map(value, level.right))))
            else:
                result = list(map(everything.__xor__, left))
            values[level.first : level.first + len(result)] = result
        return values

    def _evaluate_some(self, index: PaperIndex, roots: list[int]) -> dict[int, int]:
        values: dict[int, int] = {}

        def value(node: int) -> int:
            found = values.get(node)
            if found is None:
                if node < len(self._terms):
                    found = index.bits(self._terms[node])
                else:
                    op, left, right = self._graph.node(node)
                    if op == _AND:
                        found = value(left) & value(right)
                    elif op == _OR:
                        found = value(left) | value(right)
                    elif op == _AND_NOT:
                        found = value(left) & ~value(right)
                    else:
                        found = index.everything ^ value(left)
                values[node] = found
            return found

        for root in roots:
            value(root)
        return values

    def _positive_terms(self, node: int) -> list[int]:
        """Terms of ``node`` not under a NOT, in query order: the ones that can explain a match."""
        if node < len(self._terms):
            return [node]
        op, left, right = self._graph.node(node)
        if op == _NOT:
            return []
        if op == _AND_NOT:
            return self._positive_terms(left)
        return self._positive_terms(left) + self._positive_terms(right)


class _Nothing:
    """The value of every node when there is nothing to match."""

    def __getitem__(self, node: int) -> int:
        return 0


_NOTHING: Any = _Nothing()
_SMALL = 8  # sets this small are decoded from their bits directly


class MatchBatch:
    """The outcome of :meth:`RuleSet.evaluate`: which papers each rule selects, and (lazily, per rule) why.

    Paper sets are read straight from the evaluated bitsets. :meth:`matches` looks up hits only for the rule
    asked about, and caches them (and the hits of each term in each paper) for the rest of the batch.
    """

    __slots__ = (
        "_index", "_matches", "_nodes", "_roots", "_rule_hits", "_rules", "_selected", "_term_hits", "_values",
    )  # fmt: skip

    def __init__(
        self, rules: RuleSet, index: PaperIndex, values: Sequence[int] | dict[int, int], selected: dict[str, int]
    ) -> None:
        self._rules = rules
        self._roots = rules._roots
        self._index = index
        self._values = values
        self._selected = selected
        self._nodes: dict[int, Sequence[int]] = {}  # posting lists as they are, or arrays (not tracked by the gc)
        self._matches: dict[str, list[Match]] = {}
        self._term_hits: dict[tuple[int, int], tuple[Hit, ...]] = {}
        self._rule_hits: dict[tuple[int, int], tuple[Hit, ...]] = {}

    def keys(self) -> list[str]:
        """Keys of the evaluated rules that selected at least one paper, in rule order."""
        values, roots = self._values, self._rules._roots
        return [key for key, rule in self._selected.items() if values[roots[rule]]]

    def paper_indices(self, key: str) -> list[int]:
        """Positions in the batch of the papers that rule ``key`` selects, ascending (KeyError if not evaluated)."""
        node = self._roots[self._selected[key]]
        found = self._nodes.get(node)
        return list(self._indices(node) if found is None else found)

    def papers(self, key: str) -> list[Paper]:
        papers = self._index.papers
        return [papers[i] for i in self._indices(self._rules._roots[self._selected[key]])]

    def matches(self, key: str) -> list[Match]:
        """Rule ``key``'s matches in paper order, each with its hits (computed on the first call for this rule)."""
        found = self._matches.get(key)
        if found is None:
            collecting = gc.isenabled()
            gc.disable()  # hits and matches are many small acyclic objects: collections would only cost time
            try:
                found = self._matches[key] = self._explain(self._selected[key])
            finally:
                if collecting:
                    gc.enable()
        return list(found)

    def _indices(self, node: int) -> Sequence[int]:
        """Paper numbers of a node, from its children's when that is cheaper than reading its bits."""
        found = self._nodes.get(node)
        if found is not None:
            return found
        rules, values = self._rules, self._values
        if node < rules._graph.term_count:
            found = self._nodes[node] = self._index.indices(rules._terms[node], values[node])
            return found
        bits = values[node]
        op, left, right = rules._graph.node(node)
        numbers: Iterable[int]
        if op == _OR and bits.bit_count() > _SMALL:
            numbers = sorted(set(self._indices(left)).union(self._indices(right)))
        elif op == _AND_NOT and bits.bit_count() > _SMALL:
            excluded = set(self._indices(right))
            numbers = [i for i in self._indices(left) if i not in excluded]
        else:
            numbers = bit_indices(bits)
        found = self._nodes[node] = array("i", numbers)
        return found

    def _explain(self, rule: int) -> list[Match]:
        rules = self._rules
        root = rules._roots[rule]
        if not self._values[root]:
            return []
        values, index, papers = self._values, self._index, self._index.papers
        explained = list(dict.fromkeys(rules._positive_terms(root)))
        name = rules._names[rule]
        matches: list[Match] = []
        for paper in self._indices(root):
            hits = self._rule_hits.get((root, paper))
            if hits is None:
                found: list[Hit] = []
                for term in explained:
                    if values[term] >> paper & 1:
                        cached = self._term_hits.get((term, paper))
                        if cached is None:
                            cached = self._term_hits[term, paper] = index.hits(rules._terms[term], paper)
                        found.extend(cached)
                hits = self._rule_hits[root, paper] = tuple(found)
            matches.append(Match(papers[paper], name, hits))
        return matches
