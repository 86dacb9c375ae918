"""Matching behaviour: what a rule selects, and the evidence it gives for each paper."""

from __future__ import annotations

import contextlib
import doctest
import inspect
import itertools
import sys
from collections.abc import Iterator

import numpy as np
import pytest

import notifier.matching.lexicon
import notifier.matching.rules
from notifier.arxiv.display import clean_display
from notifier.errors import QuerySyntaxError
from notifier.matching.positions import Positions
from notifier.matching.query import MAX_TERMS
from notifier.matching.rules import RuleSet
from notifier.matching.text import plural_variants, tokenize, tokenize_spans
from notifier.models import Field, Hit, Match, Paper

_ids = itertools.count(1)


def paper(title: str = "", abstract: str = "", *, authors=(), categories=(), comment=None) -> Paper:
    return Paper(
        arxiv_id=f"2506.{next(_ids):05d}",
        version=1,
        title=title,
        abstract=abstract,
        authors=tuple(authors),
        categories=tuple(categories),
        comment=comment,
    )


def matches(query: str, *papers: Paper) -> list[Match]:
    return RuleSet.compile([("k", "my rule", query)]).match(papers).get("k", [])


def selected(query: str, *papers: Paper) -> list[Paper]:
    return [match.paper for match in matches(query, *papers)]


def display(match: Match, hit: Hit) -> str:
    p = match.paper
    texts = {
        Field.TITLE: (p.title,),
        Field.ABSTRACT: (p.abstract,),
        Field.COMMENT: (p.comment or "",),
        Field.AUTHORS: p.authors,
        Field.CATEGORIES: p.categories,
    }[hit.field]
    return texts[hit.index][hit.start : hit.end]


def evidence(query: str, p: Paper) -> list[tuple[str, Field, str]]:
    (match,) = matches(query, p)
    return [(hit.term, hit.field, display(match, hit)) for hit in match.hits]


# -- normalisation ---------------------------------------------------------------------------------------------


def test_tokens_are_case_folded_words_with_punctuation_and_hyphens_as_spaces():
    assert tokenize("Multi-Agent RL: GPUs, (fast)!") == ["multi", "agent", "rl", "gpus", "fast"]
    assert tokenize("snake_case  and\tline\nfolds") == ["snake", "case", "and", "line", "folds"]


def test_latex_is_reduced_to_its_words():
    assert tokenize(r"An $\mathcal{O}(n \log n)$ bound for \emph{sparse} graphs") == [
        "an", "o", "n", "log", "n", "bound", "for", "sparse", "graphs",
    ]  # fmt: skip
    assert tokenize(r"$10\times$ faster") == ["10", "faster"]


def test_accents_are_folded_whether_composed_decomposed_or_latex():
    for name in ("Müller", "Mu\u0308ller", 'M\\"uller', 'M{\\"u}ller', "MÜLLER", "Muller"):
        assert tokenize(name) == ["muller"], name
    assert tokenize(r"Mart\'{\i}nez Cruz-Casta\~neda S{\o}ren Ødegaard") == [
        "martinez", "cruz", "castaneda", "soren", "odegaard",
    ]  # fmt: skip


def test_spans_point_back_at_the_display_text():
    text = r"Cruz-Casta\~neda and M\"uller: Ｎｅｔ"
    tokens, spans = tokenize_spans(text)
    assert tokens == ["cruz", "castaneda", "and", "muller", "net"]
    assert [text[a:b] for a, b in spans] == ["Cruz", r"Casta\~neda", "and", r"M\"uller", "Ｎｅｔ"]


def test_html_entities_are_not_decoded_a_second_time():
    title = clean_display("Fish &amp;amp; Chips")  # double-encoded on the wire, decoded once for display
    assert title == "Fish &amp; Chips"
    assert tokenize(title) == ["fish", "amp", "chips"]


def test_plural_folding_is_symmetric_and_limited():
    assert "policies" in plural_variants("policy")
    assert "policy" in plural_variants("policies")
    assert "processes" in plural_variants("process")
    assert "gpus" in plural_variants("gpu")
    assert "expertise" not in plural_variants("expert")
    assert plural_variants("ai") == {"ai"}


# -- what a rule selects ---------------------------------------------------------------------------------------


def test_terms_match_whole_words_in_title_or_abstract_regardless_of_case():
    a, b, c = paper("A Compiler for Tensors"), paper(abstract="we build a COMPILER"), paper("Compilation tricks")
    assert selected("compiler", a, b, c) == [a, b]


def test_hyphens_and_punctuation_count_as_spaces_in_phrases():
    a, b, c, d = paper("Multi-Agent RL"), paper(abstract="multi agent"), paper("multi, agent"), paper("agent multi")
    assert selected('"multi-agent"', a, b, c, d) == [a, b, c]
    assert selected("multi-agent", a, b, c, d) == [a, b, c]


@pytest.mark.parametrize(
    ("query", "text"),
    [("compiler", "compilers"), ("compilers", "compiler"), ("policy", "policies"), ("policies", "policy"),
     ("GPU", "GPUs"), ("process", "processes"), ("processes", "process")],
)  # fmt: skip
def test_a_word_matches_its_plural_and_its_singular(query, text):
    assert selected(query, p := paper(text)) == [p]


def test_plurals_are_not_a_stemmer_and_prefixes_cover_the_rest():
    expertise, expert = paper("Domain expertise"), paper("Mixture of experts")
    assert selected("expert", expertise, expert) == [expert]
    assert selected("expert*", expertise, expert) == [expertise, expert]
    compilation = paper("Compilation and compilers")
    assert evidence("compil*", compilation) == [
        ("compil*", Field.TITLE, "Compilation"), ("compil*", Field.TITLE, "compilers"),
    ]  # fmt: skip


def test_phrases_need_consecutive_tokens_within_one_field():
    across = paper("Deep reinforcement", "learning for robots")
    inside = paper("Robots", "Deep reinforcement-learning for robots")
    assert selected('"reinforcement learning"', across, inside) == [inside]
    assert selected("reinforcement learning", across, inside) == [across, inside]


def test_field_prefixes_restrict_where_a_term_looks():
    p = paper("Graph compilers", "We study schedulers.", comment="Accepted at PLDI 2026", categories=["cs.PL"])
    assert selected("ti:compiler", p) == [p]
    assert selected("abs:compiler", p) == []
    assert selected("co:pldi", p) == [p]
    assert selected("pldi", p) == []
    assert selected("ti:(schedulers OR graph) AND abs:scheduler", p) == [p]


def test_categories_match_exactly_or_by_prefix():
    lg, dc, math = paper(categories=["cs.LG", "stat.ML"]), paper(categories=["cs.DC"]), paper(categories=["math.OC"])
    assert selected("cat:cs.LG", lg, dc, math) == [lg]
    assert selected("cat:cs.L", lg, dc, math) == []
    assert selected("cat:cs.*", lg, dc, math) == [lg, dc]
    assert selected("cat:stat.ml", lg, dc, math) == [lg]
    assert evidence("cat:cs.*", lg) == [("cat:cs.*", Field.CATEGORIES, "cs.LG")]


def test_authors_match_one_name_at_a_time_with_initials_and_without_accents():
    zhang = paper(authors=["Yongle Zhang", "Wei Li"])
    split = paper(authors=["Yongle Li", "Wei Zhang"])
    muller = paper(authors=["Jos\\'e M\\\"uller"])
    assert selected("au:Zhang", zhang, split) == [zhang, split]
    assert selected('au:"Y Zhang"', zhang, split) == [zhang]
    assert selected('au:"Yongle Zhang"', zhang, split) == [zhang]
    assert selected('au:"Zhang Yongle"', zhang, split) == []
    assert selected("au:Müller", muller) == selected("au:muller", muller) == [muller]
    assert evidence('au:"Y Zhang"', zhang) == [('au:"Y Zhang"', Field.AUTHORS, "Yongle Zhang")]
    assert evidence("au:muller", muller) == [("au:muller", Field.AUTHORS, 'M\\"uller')]


def test_author_names_may_have_middle_names_between_the_query_tokens():
    p = paper(authors=["Yongle M. Zhang"])
    assert selected('au:"Y Zhang"', p) == [p]
    assert selected('au:"Yongle M Zhang"', p) == selected('au:"Y M Zh*"', p) == [p]
    assert selected('au:"M Yongle Zhang"', p) == selected('au:"Y Zhang M"', p) == []
    assert selected("au:zh*", p) == [p]
    assert selected("au:zha", p) == []
    assert evidence('au:"Y M Zh*"', p) == [('au:"Y M Zh*"', Field.AUTHORS, "Yongle M. Zhang")]


def test_not_excludes_papers_and_a_lone_not_selects_all_others():
    rl, survey, other = paper("RL for compilers"), paper("A survey of RL compilers"), paper("Graphs")
    assert selected("compiler AND NOT survey", rl, survey, other) == [rl]
    assert selected("compiler NOT survey", rl, survey, other) == [rl]
    assert selected("NOT survey", rl, survey, other) == [rl, other]
    assert [m.hits for m in matches("NOT survey", rl, survey, other)] == [(), ()]
    assert selected("NOT (survey OR graph)", rl, survey, other) == [rl]
    assert selected("graph OR NOT compiler", rl, survey, other) == [other]


def test_hits_come_only_from_positive_terms():
    p = paper("Compilers, not interpreters", "A compiler.")
    assert evidence("compiler AND NOT abs:interpreter", p) == [
        ("compiler", Field.TITLE, "Compilers"),
        ("compiler", Field.ABSTRACT, "compiler"),
    ]


def test_hits_point_at_the_display_text_after_latex_entities_and_accents():
    p = paper(
        title=r"Fast $\mathcal{O}(n)$ \emph{Multi-Agent} Planning &amp; Müller's Solvers",
        abstract="We solve Schro\u0308dinger equations.",
    )
    assert evidence('"multi agent planning" amp muller solver schrodinger', p) == [
        ('"multi agent planning"', Field.TITLE, "Multi-Agent} Planning"),
        ("amp", Field.TITLE, "amp"),
        ("muller", Field.TITLE, "Müller"),
        ("solver", Field.TITLE, "Solvers"),
        ("schrodinger", Field.ABSTRACT, "Schro\u0308dinger"),
    ]


# -- the rule set ----------------------------------------------------------------------------------------------


def test_results_are_keyed_by_rule_in_paper_order_without_rules_that_matched_nothing():
    a, b, c = paper("compilers"), paper("graphs"), paper("graph compilers")
    rules = RuleSet.compile([("s1/0", "compilers", "compiler"), ("s1/1", "graphs", "graph"), ("s2/0", "x", "zebra")])
    result = rules.match([a, b, c])
    assert {key: [m.paper for m in found] for key, found in result.items()} == {"s1/0": [a, c], "s1/1": [b, c]}
    assert {m.rule for m in result["s1/1"]} == {"graphs"}


def test_keys_limit_which_rules_are_evaluated():
    a = paper("graph compilers")
    rules = RuleSet.compile([("one", "r", "compiler"), ("two", "r", "graph"), ("three", "r", "NOT zebra")])
    assert set(rules.match([a], keys=["two", "three", "unknown"])) == {"two", "three"}
    assert rules.match([a], keys=["two"])["two"][0].hits == (Hit("graph", Field.TITLE, 0, 5),)
    assert rules.match([a], keys=[]) == {}


def test_identical_terms_and_rules_are_compiled_once():
    rules = RuleSet.compile([(f"s{i}", "r", '"reinforcement learning" AND NOT survey') for i in range(1000)])
    assert len(rules) == 1000
    assert rules.term_count == 2
    p = paper("Reinforcement learning")
    assert len(rules.match([p])) == 1000


def test_a_bad_rule_is_reported_with_its_key():
    with pytest.raises(QuerySyntaxError) as caught:
        RuleSet.compile([("ok/0", "fine", "compiler"), ("lab/3", "broken", "graph AND")])
    assert caught.value.key == "lab/3"  # type: ignore[attr-defined]
    assert caught.value.query_column == 7


def test_duplicate_keys_are_refused():
    with pytest.raises(ValueError, match="duplicate rule key 'a'"):
        RuleSet.compile([("a", "r", "x"), ("a", "r", "y")])


def test_no_papers_or_no_rules_give_no_matches():
    assert RuleSet.compile([("a", "r", "NOT x")]).match([]) == {}
    assert RuleSet.compile([]).match([paper("x")]) == {}


def test_a_phrase_matches_when_only_one_of_its_plural_spellings_occurs():
    a, b, c = paper("policy agent"), paper("policies graph"), paper("policies agents")
    assert selected('"policy agent"', a, b, c) == [a, c]
    assert selected('"graph policy"', a, b, c) == []
    assert selected('"policy graph"', a, b, c) == [b]
    assert selected('"policies agent"', a, b, c) == [a, c]


def test_phrases_longer_than_the_looked_up_runs_are_checked_by_position():
    hit, gap = paper("one two three four five six"), paper("one two three four x five six")
    assert selected('"one two three four five six"', hit, gap) == [hit]
    assert selected('"two three four five"', hit, gap) == [hit]
    assert evidence('"two three four five"', hit) == [('"two three four five"', Field.TITLE, "two three four five")]


@pytest.mark.parametrize(
    "module", [notifier.matching.lexicon, notifier.matching.rules], ids=["term keys", "rule graph bits"]
)
def test_the_worked_examples_in_the_module_docstrings_are_what_the_code_computes(module):
    outcome = doctest.testmod(module)
    assert outcome.attempted > 0
    assert outcome.failed == 0


# -- the batch API ---------------------------------------------------------------------------------------------

BATCH_RULES = [
    ("a/0", "compilers", "compiler"),
    ("a/1", "not survey", "NOT survey"),
    ("b/0", "rl", '"reinforcement learning" OR au:"Y Zhang"'),
    ("b/1", "none", "zebra"),
    ("c/0", "graph minus survey", "(graph OR compil*) AND NOT survey"),
]


def batch_papers() -> list[Paper]:
    return [
        paper("A compiler for graphs", authors=["Wei Li"]),
        paper("A survey of compilers"),
        paper("Reinforcement learning", "for graph compilation", authors=["Yongle Zhang"]),
        paper("Zebrafish? no", "plain text"),
    ]


def test_batch_indices_agree_with_match_and_hits_are_identical():
    rules = RuleSet.compile(BATCH_RULES)
    papers = batch_papers()
    batch = rules.evaluate(papers)
    expected = rules.match(papers)
    assert batch.keys() == list(expected) == ["a/0", "a/1", "b/0", "c/0"]
    for key, found in expected.items():
        assert [papers[i] for i in batch.paper_indices(key).tolist()] == [m.paper for m in found]
        assert batch.papers(key) == [m.paper for m in found]
        assert batch.matches(key) == found
    assert batch.paper_indices("b/1").tolist() == []
    assert batch.matches("b/1") == []


def test_batch_hits_are_computed_lazily_per_rule_and_cached():
    rules = RuleSet.compile(BATCH_RULES)
    batch = rules.evaluate(batch_papers())
    assert batch._matches == {}  # nothing explained until asked
    batch.paper_indices("a/0")
    assert batch._matches == {}
    first = batch.matches("c/0")
    assert set(batch._matches) == {"c/0"}
    assert batch.matches("c/0") == first
    assert [hit.term for match in first for hit in match.hits] == ["graph", "compil*", "graph", "compil*"]


def test_batch_results_cannot_be_changed_by_their_readers():
    rules = RuleSet.compile(BATCH_RULES)
    batch = rules.evaluate(batch_papers())
    with pytest.raises(ValueError, match="read-only"):
        batch.paper_indices("a/0")[0] = 3
    batch.matches("a/0").clear()
    assert batch.paper_indices("a/0").tolist() == [0, 1]
    assert len(batch.matches("a/0")) == 2


def test_batch_keys_limit_the_rules_evaluated():
    rules = RuleSet.compile(BATCH_RULES)
    papers = batch_papers()
    batch = rules.evaluate(papers, keys=["b/0", "b/1", "unknown"])
    assert batch.keys() == ["b/0"]
    assert batch.paper_indices("b/0").tolist() == [2]
    assert batch.paper_indices("b/1").tolist() == []
    with pytest.raises(KeyError):
        batch.paper_indices("a/0")
    assert rules.match(papers, keys=["b/0", "b/1"]) == {"b/0": batch.matches("b/0")}


def test_matches_within_some_papers_are_those_of_the_whole_rule_among_them():
    rules = RuleSet.compile(BATCH_RULES)
    papers = batch_papers()
    batch = rules.evaluate(papers)
    everything = rules.evaluate(papers).matches("c/0")  # papers 0 and 2
    assert [m.paper for m in everything] == [papers[0], papers[2]]
    assert batch.matches("c/0", within={2}) == [everything[1]]
    assert batch.matches("c/0", within={3, 2, 1, 0}) == everything  # more positions than matches
    assert batch.matches("c/0", within=[2, 0]) == everything  # any collection; results stay in batch order
    assert batch.matches("c/0", within={1, 3}) == []
    assert batch.matches("c/0", within=set()) == []
    assert batch.papers("c/0", within={0, 1}) == [papers[0]]
    assert batch.papers("b/1", within={0, 1, 2, 3}) == []


def test_positions_kept_as_a_mask_select_the_same_matches_as_a_set_of_them():
    rules = RuleSet.compile(BATCH_RULES)
    papers = batch_papers()
    batch = rules.evaluate(papers)
    for subset in [set(), {2}, {1, 3}, {0, 1, 2, 3}]:
        within = Positions.of(subset, len(papers))
        assert set(within) == subset and len(within) == len(subset)
        assert batch.matches("c/0", within=within) == batch.matches("c/0", within=subset)
        assert batch.papers("c/0", within=within) == batch.papers("c/0", within=subset)


def test_positions_are_a_set_of_ints_in_ascending_order():
    odd, low = Positions.of([5, 1, 3], 6), Positions.of([0, 1, 2], 6)
    assert list(odd) == [1, 3, 5]
    assert 3 in odd and 2 not in odd and 6 not in odd and -1 not in odd and "3" not in odd
    assert list(odd | low) == [0, 1, 2, 3, 5] and list(odd & low) == [1]
    assert Positions.union([odd, low], 6) == odd | low and len(Positions.union([], 6)) == 0
    assert odd.among(np.array([0, 1, 4, 5])).tolist() == [1, 5]


def test_hits_are_worked_out_only_for_the_papers_asked_about_and_once_per_term_and_paper():
    rules = RuleSet.compile([("one", "r", "graph OR survey"), ("two", "r", "graph AND compil*")])
    papers = batch_papers()
    batch = rules.evaluate(papers)
    first = batch.matches("one", within={2})
    assert {paper for _, paper in batch._term_hits} == {2}
    again = batch.matches("two", within={2})  # shares "graph" in paper 2: found in the cache
    assert {paper for _, paper in batch._term_hits} == {2}
    assert first[0].hits[0] is again[0].hits[0]
    assert [m.paper for m in batch.matches("one")] == [papers[0], papers[1], papers[2]]


def test_papers_are_found_in_the_batch_by_arxiv_id():
    papers = batch_papers()
    batch = RuleSet.compile(BATCH_RULES).evaluate(papers)
    assert [batch.position_of(p.arxiv_id) for p in papers] == [0, 1, 2, 3]
    assert batch.positions([papers[3].arxiv_id, "2601.99999", papers[1].arxiv_id]) == {1, 3}
    with pytest.raises(KeyError):
        batch.position_of("2601.99999")
    within = batch.positions([papers[2].arxiv_id])
    assert [m.paper for m in batch.matches("b/0", within=within)] == [papers[2]]


def test_an_empty_batch_selects_nothing():
    batch = RuleSet.compile(BATCH_RULES).evaluate([])
    assert batch.keys() == []
    assert batch.paper_indices("a/1").tolist() == []
    assert batch.matches("a/1") == []


@contextlib.contextmanager
def stack_of(frames: int) -> Iterator[None]:
    """Allow only ``frames`` more Python frames than the caller's depth inside the block."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def test_rules_at_the_term_limit_are_matched_and_explained_on_a_shallow_stack():
    words = [f"w{i}" for i in range(MAX_TERMS)]
    rules = RuleSet.compile(
        [
            ("same", "one letter", " ".join(["a"] * MAX_TERMS)),
            ("all", "every word", " ".join(words)),
            ("any", "any word", " OR ".join(words)),
            ("but", "all but", " ".join(words[:-1]) + " NOT zz"),
        ]
    )
    p = paper("a title", " ".join(words))
    with stack_of(60):  # the graph of each rule is a chain about MAX_TERMS deep
        batch = rules.evaluate([p])
        matched = batch.keys()
        explained = {key: batch.matches(key) for key in matched}
    assert sorted(explained) == ["all", "any", "but", "same"]
    assert [hit.term for hit in explained["all"][0].hits][:3] == ["w0", "w1", "w2"]
    assert len(explained["any"][0].hits) == MAX_TERMS
    assert {hit.term for hit in explained["same"][0].hits} == {"a"}
