"""The fast matcher agrees with the slow reference matcher on random papers and random queries."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.matching import rules as matching
from notifier.matching.query import parse_query
from notifier.matching.rules import RuleSet
from notifier.matching.text import SEPARATOR, plural_variants, tokenize, tokenize_all, tokenize_spans
from notifier.models import Field, Paper
from tests.reference_matcher import reference_match, same_word

CHECK = settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TEXT_WORDS = [
    "policy", "policies", "Policy", "compiler", "Compilers", "GPU", "GPUs", "process", "processes", "expert",
    "expertise", "Experts", "multi", "Multi", "agent", "agents", "graph", "learning", "LEARNING", "box", "boxes",
    "news", "new", "naïve", "naive", "Müller", "Mu\u0308ller", 'M\\"uller', "2d", "x", "ﬁne", "fine", "and", "or",
]  # fmt: skip
LATEX = [r"$\mathcal{O}(n)$", r"\emph{agent}", r"\textbf{graph}", r"$\log n$", r"Casta\~neda", r"{\"u}ber"]
SEPARATORS = [" ", "  ", "-", " - ", ", ", ". ", "/", ": ", " (", ") ", "—", "_", "'s ", "\n"]
NAMES = ["Yongle Zhang", "Wei Zhang", "Y. Li", "José Müller", "Jos\\'e M\\\"uller", "Anna-Lena Schmidt", "Li Wei"]
CATEGORIES = ["cs.LG", "cs.AI", "cs.DC", "stat.ML", "math.OC"]

QUERY_WORDS = [
    "policy", "policies", "compiler", "compilers", "gpu", "GPUs", "process", "processes", "expert", "expertise",
    "multi", "agent", "graph", "learning", "box", "new", "news", "naive", "Müller", "2d", "fine", "o", "n", "log",
    "uber", "castaneda", "and",
]  # fmt: skip
PREFIXES = ["comp*", "pol*", "gpu*", "multi*", "exp*", "proc*", "grap*", "mu*", "ne*"]
PHRASES = [
    '"multi agent"', '"multi-agent"', "multi-agent", '"graph learning"', '"compiler policy"', '"Müller naive"',
    '"o n"', '"expert multi*"', '"agent, graph"', '"new box"', '"multi agent graph"', '"policies, graph learning"',
    '"graph learning multi agent policy"', '"multi-agent graph comp*"',
]  # fmt: skip
AUTHOR_TERMS = [
    "au:Zhang", 'au:"Y Zhang"', 'au:"Yongle Zhang"', "au:muller", 'au:"J Muller"', "au:li", "au:schm*", "au:y",
    'au:"Anna Lena Schmidt"', 'au:"A Schmidt"', 'au:"A L Schm*"', 'au:"Lena Anna"', 'au:"Y Zh*"',
]  # fmt: skip
OTHER_TERMS = ["cat:cs.LG", "cat:cs.*", "cat:stat.ml", "co:accepted", "ti:graph", "abs:(compiler OR agent)"]


def text() -> st.SearchStrategy[str]:
    piece = st.sampled_from(TEXT_WORDS + LATEX)
    return st.lists(st.tuples(piece, st.sampled_from(SEPARATORS)), max_size=12).map(
        lambda pairs: "".join(word + sep for word, sep in pairs).strip()
    )


papers = st.builds(
    lambda number, title, abstract, authors, categories, comment: Paper(
        arxiv_id=f"2506.{number:05d}",
        version=1,
        title=title,
        abstract=abstract,
        authors=tuple(authors),
        categories=tuple(categories),
        comment=comment,
    ),
    st.just(0),
    text(),
    text(),
    st.lists(st.sampled_from(NAMES), max_size=3),
    st.lists(st.sampled_from(CATEGORIES), max_size=2, unique=True),
    st.none() | st.sampled_from(["accepted at ICML", "Accepted; 12 pages", "graph compilers"]),
)

leaves = st.sampled_from(QUERY_WORDS + PREFIXES + PHRASES + AUTHOR_TERMS + OTHER_TERMS)


def combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pairs = st.tuples(children, children)
    return st.one_of(
        pairs.map(lambda p: f"({p[0]} AND {p[1]})"),
        pairs.map(lambda p: f"({p[0]} OR {p[1]})"),
        pairs.map(lambda p: f"{p[0]} {p[1]}"),
        pairs.map(lambda p: f"{p[0]} OR {p[1]}"),
        children.map(lambda c: f"NOT {c}"),
        children.map(lambda c: f"ti:({c})" if ":" not in c else c),
    )


queries = st.recursive(leaves, combine, max_leaves=5)


def with_ids(found: list[Paper]) -> list[Paper]:
    return [
        Paper(f"2506.{n:05d}", 1, p.title, p.abstract, p.authors, p.categories, comment=p.comment)
        for n, p in enumerate(found)
    ]


@CHECK
@given(st.lists(papers, min_size=1, max_size=6).map(with_ids), st.lists(queries, min_size=1, max_size=8))
@pytest.mark.slow
def test_fast_and_reference_matchers_select_the_same_papers(batch, query_list):
    rules = [(f"r{n}", query) for n, query in enumerate(query_list)]
    fast = RuleSet.compile([(key, key, query) for key, query in rules]).match(batch)
    assert {key: [m.paper.arxiv_id for m in found] for key, found in fast.items()} == reference_match(rules, batch)


@CHECK
@given(st.lists(papers, min_size=1, max_size=6).map(with_ids), st.lists(queries, min_size=1, max_size=8))
@pytest.mark.slow
def test_batch_indices_and_lazy_matches_agree_with_match(batch, query_list):
    rules = RuleSet.compile([(f"r{n}", f"r{n}", query) for n, query in enumerate(query_list)])
    evaluated = rules.evaluate(batch)
    expected = rules.match(batch)
    assert evaluated.keys() == list(expected)
    for key, found in expected.items():
        assert evaluated.paper_indices(key).tolist() == [int(m.paper.arxiv_id[-5:]) for m in found]
        assert evaluated.matches(key) == found


@CHECK
@given(
    st.lists(papers, min_size=1, max_size=6).map(with_ids),
    st.lists(queries, min_size=1, max_size=8),
    st.lists(st.sets(st.integers(0, 5)), min_size=1, max_size=3),
)
@pytest.mark.slow
def test_matches_within_some_papers_are_the_whole_rules_matches_among_them(batch, query_list, subsets):
    """Whatever subsets are asked about first, and in what order, each gets the matches (hits included) that the
    whole rule has among those papers."""
    compiled = RuleSet.compile([(f"r{n}", f"r{n}", query) for n, query in enumerate(query_list)])
    whole = compiled.match(batch)
    evaluated = compiled.evaluate(batch)
    for subset in subsets:
        ids = {batch[i].arxiv_id for i in subset if i < len(batch)}
        for key, found in whole.items():
            expected = [m for m in found if m.paper.arxiv_id in ids]
            assert evaluated.matches(key, within=subset) == expected
            assert evaluated.papers(key, within=subset) == [m.paper for m in expected]


def spread(found: list[Paper], size: int = 150) -> list[Paper]:
    """``size`` papers cycling through ``found``: long enough to cross the boundaries of 64-paper blocks."""
    return with_ids([found[n % len(found)] for n in range(size)])


@settings(CHECK, max_examples=40)
@given(
    st.lists(papers, min_size=1, max_size=6).map(spread),
    st.lists(queries, min_size=1, max_size=8),
    st.sets(st.integers(0, 7)),
)
@pytest.mark.slow
def test_blocks_threads_and_rule_subsets_change_nothing(batch, query_list, subset):
    """Tiny blocks (one 64-bit word each) on three threads, and evaluating only some rules, select what the
    reference selects."""
    rules = [(f"r{n}", query) for n, query in enumerate(query_list)]
    compiled = RuleSet.compile([(key, key, query) for key, query in rules])
    expected = reference_match(rules, batch)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matching, "_MATRIX_BYTES", 1)
        patch.setattr(matching, "_WORKERS", 3)
        evaluated = compiled.evaluate(batch)
        chosen = [key for key, _ in rules if int(key[1:]) in subset]
        some = compiled.evaluate(batch, chosen)
    matched = evaluated.keys()
    found = {key: [batch[i].arxiv_id for i in evaluated.paper_indices(key).tolist()] for key in matched}
    assert found == expected
    assert some.keys() == [key for key in chosen if key in expected]
    for key in chosen:
        assert [m.paper.arxiv_id for m in some.matches(key)] == expected.get(key, [])


@CHECK
@given(st.lists(papers, min_size=1, max_size=4).map(with_ids), queries)
@pytest.mark.slow
def test_every_text_hit_spans_the_words_of_its_term(batch, query):
    terms = {}
    for node in _terms(parse_query(query)):
        terms[node.label] = node
    for match in RuleSet.compile([("k", "k", query)]).match(batch).get("k", []):
        for hit in match.hits:
            term = terms[hit.term]
            if hit.field in (Field.AUTHORS, Field.CATEGORIES):
                continue
            source = {Field.TITLE: match.paper.title, Field.ABSTRACT: match.paper.abstract}.get(
                hit.field, match.paper.comment or ""
            )
            tokens = tokenize(source[hit.start : hit.end])
            assert len(tokens) == len(term.words)
            for i, (token, word) in enumerate(zip(tokens, term.words, strict=True)):
                is_prefix = term.prefix and i == len(term.words) - 1
                assert token.startswith(word) if is_prefix else same_word(word, token)


def _terms(node):
    from notifier.matching.query import Term, iter_terms

    return [term for term, _ in iter_terms(node) if isinstance(term, Term)]


@CHECK
@given(st.text(alphabet="aeiouyshcxzbpt", min_size=1, max_size=8))
def test_plural_variants_are_symmetric_and_follow_the_singular_plural_rule(word):
    for variant in plural_variants(word):
        assert word in plural_variants(variant)
        assert same_word(word, variant)
    for suffix in ("s", "es", "ies", "ise", "ing"):
        assert (word + suffix in plural_variants(word)) == same_word(word, word + suffix)


@CHECK
@given(st.lists(text() | text().map(lambda source: source + SEPARATOR + "x"), max_size=8))
@pytest.mark.slow
def test_tokenizing_many_texts_at_once_gives_each_texts_tokens_in_turn(sources):
    expected = [token for source in sources for token in [*tokenize(source), SEPARATOR]]
    assert tokenize_all(sources) == expected


@CHECK
@given(text())
def test_fast_tokenizer_and_span_tokenizer_agree(source):
    tokens, spans = tokenize_spans(source)
    assert tokenize(source) == tokens
    assert all(0 <= start < end <= len(source) for start, end in spans)
