"""The query language v1: what parses to what, what is refused and where, and which rules get a warning."""

from __future__ import annotations

import pytest

from notifier.errors import ConfigError, QuerySyntaxError
from notifier.matching.query import (
    MAX_DEPTH,
    MAX_QUERY_LENGTH,
    MAX_TERMS,
    And,
    Node,
    Not,
    Or,
    Term,
    iter_terms,
    parse_query,
    query_warnings,
)
from notifier.models import Field


def word(text: str, field: Field | None = None, label: str | None = None) -> Term:
    prefix = text.endswith("*")
    return Term(field, tuple(text.rstrip("*").split()), prefix, label or text)


def test_adjacent_terms_are_anded_and_operators_are_upper_case_only():
    assert parse_query("graph neural") == And((word("graph"), word("neural")))
    assert parse_query("cats and dogs") == And((word("cats"), word("and"), word("dogs")))
    assert parse_query("not or") == And((word("not"), word("or")))


def test_precedence_is_not_then_and_then_or():
    assert parse_query("a OR b AND NOT c") == Or((word("a"), And((word("b"), Not(word("c"))))))
    assert parse_query("(a OR b) c") == And((Or((word("a"), word("b"))), word("c")))
    assert parse_query("NOT NOT a") == Not(Not(word("a")))


def test_phrases_hyphens_and_punctuation_become_token_sequences():
    assert parse_query('"Multi-Agent  Systems"') == Term(
        None, ("multi", "agent", "systems"), False, '"Multi-Agent  Systems"'
    )
    assert parse_query("multi-agent") == Term(None, ("multi", "agent"), False, "multi-agent")
    assert parse_query("GPU's") == Term(None, ("gpu", "s"), False, "GPU's")


def test_trailing_star_makes_a_prefix():
    assert parse_query("compil*") == Term(None, ("compil",), True, "compil*")
    assert parse_query('"graph neural net*"') == Term(None, ("graph", "neural", "net"), True, '"graph neural net*"')


def test_field_prefix_applies_to_the_next_term_or_group():
    assert parse_query("ti:compiler") == word("compiler", Field.TITLE, "ti:compiler")
    assert parse_query("ti:(a OR abs:b) c") == And(
        (Or((word("a", Field.TITLE, "ti:a"), word("b", Field.ABSTRACT, "abs:b"))), word("c"))
    )
    assert parse_query('au:"Y Zhang"') == Term(Field.AUTHORS, ("y", "zhang"), False, 'au:"Y Zhang"')
    assert parse_query("co:accepted") == word("accepted", Field.COMMENT, "co:accepted")
    assert parse_query("TI:x") == word("x", Field.TITLE, "ti:x")


def test_categories_are_whole_case_folded_tokens_with_optional_prefix():
    assert parse_query("cat:cs.LG") == Term(Field.CATEGORIES, ("cs.lg",), False, "cat:cs.LG")
    assert parse_query("cat:cs.*") == Term(Field.CATEGORIES, ("cs.",), True, "cat:cs.*")
    assert parse_query("cat:(cs.DC OR cs.PF)") == Or(
        (
            Term(Field.CATEGORIES, ("cs.dc",), False, "cat:cs.DC"),
            Term(Field.CATEGORIES, ("cs.pf",), False, "cat:cs.PF"),
        )
    )


def test_query_text_is_normalised_like_paper_text():
    assert parse_query("au:Müller") == Term(Field.AUTHORS, ("muller",), False, "au:Müller")
    assert parse_query(r"au:Mart\'{\i}nez").words == ("martinez",)
    assert parse_query("Ｆｕｌｌｗｉｄｔｈ").words == ("fullwidth",)


@pytest.mark.parametrize(
    ("query", "column", "expected"),
    [
        ("", 1, "empty query; expected a term"),
        ("   ", 1, "empty query"),
        ('""', 1, 'empty phrase ""'),
        ('a "  "', 3, 'empty phrase ""'),
        ('a "open', 3, "unterminated phrase; expected a closing '\"'"),
        ("NOT", 1, "expected a term, a \"phrase\" or '(' after 'NOT', found the end of the query"),
        ("a AND", 3, "after 'AND', found the end of the query"),
        ("a OR", 3, "after 'OR', found the end of the query"),
        ("a OR OR b", 3, "after 'OR', found 'OR'"),
        ("AND a", 1, "expected a term, a \"phrase\" or '(', found 'AND'"),
        ("(a OR b", 1, "expected ')' to close the '(' at column 1, found the end of the query"),
        ("a)", 2, "unexpected ')'; no '(' is open"),
        ("a ()", 3, "empty parentheses"),
        ("xx:foo", 1, "unknown field prefix 'xx:'; expected one of ti:, abs:, au:, cat:, co:"),
        ("a all:b", 3, "unknown field prefix 'all:'"),
        ("ti:", 1, "expected a term, a \"phrase\" or '(' right after 'ti:', found the end of the query"),
        ("ti:NOT a", 1, "right after 'ti:', found 'NOT'"),
        ("a -survey", 3, "'-survey': to exclude a word write NOT survey"),
        ("a ---", 3, "'---' has no letters or digits"),
        ("c*mpiler", 1, "'*' may only end a word"),
        ("a*", 1, "prefix 'a*' is too short"),
        ("cat:*", 5, "expected a category such as cs.LG"),
    ],
)
def test_bad_queries_name_the_column_and_what_was_expected(query, column, expected):
    with pytest.raises(QuerySyntaxError) as caught:
        parse_query(query)
    assert expected in caught.value.message
    assert caught.value.query_column == column
    assert caught.value.query == query
    assert isinstance(caught.value, ConfigError)


def test_a_single_very_common_word_gets_a_warning():
    assert query_warnings(parse_query("learning")) == [
        'rule is the single very common word "learning"; it will match most papers'
    ]
    assert query_warnings(parse_query("Models"))[0].startswith('rule is the single very common word "models"')
    assert query_warnings(parse_query('"reinforcement learning"')) == []
    assert query_warnings(parse_query("compiler")) == []
    assert query_warnings(parse_query("learning AND compiler")) == []


def test_pure_negations_and_short_prefixes_get_a_warning():
    assert query_warnings(parse_query("NOT survey")) == ["rule only excludes (survey); it will match every other paper"]
    assert query_warnings(parse_query("co* AND compiler")) == [
        "prefix co* is short; it will match many unrelated words"
    ]
    assert query_warnings(parse_query("compil*")) == []
    assert query_warnings(parse_query("cat:cs.*")) == []


def test_a_query_may_nest_parentheses_and_nots_up_to_the_depth_limit():
    assert parse_query("(" * (MAX_DEPTH - 1) + "NOT a" + ")" * (MAX_DEPTH - 1)) == Not(word("a"))
    assert parse_query("NOT " * MAX_DEPTH + "a") is not None
    for query, column in [
        ("(" * MAX_DEPTH + "NOT a" + ")" * MAX_DEPTH, MAX_DEPTH + 1),
        ("(" * 999 + "a" + ")" * 999, MAX_DEPTH + 1),
        ("NOT " * 499 + "a", 4 * MAX_DEPTH + 1),
        ("a OR " + "NOT (" * 300 + "b" + ")" * 300, 6 + 5 * (MAX_DEPTH // 2)),  # each "NOT (" is two levels
    ]:
        with pytest.raises(QuerySyntaxError) as caught:
            parse_query(query)
        assert f"nests parentheses and NOTs more than {MAX_DEPTH} deep" in caught.value.message
        assert caught.value.query_column == column


def test_a_query_holds_at_most_the_term_limit_and_the_length_limit():
    assert parse_query(" ".join(["a"] * MAX_TERMS)) == And(tuple([word("a")] * MAX_TERMS))
    with pytest.raises(QuerySyntaxError) as caught:
        parse_query(" ".join(["a"] * 999))
    assert caught.value.message == f"the query has more than {MAX_TERMS} terms; split it into several rules"
    assert caught.value.query_column == 2 * MAX_TERMS + 1
    with pytest.raises(QuerySyntaxError) as caught:
        parse_query("a" * (MAX_QUERY_LENGTH + 1))
    assert f"at most {MAX_QUERY_LENGTH:,} are allowed" in caught.value.message


def test_terms_of_a_tree_of_any_depth_are_listed_without_recursion():
    tree: Node = word("deep")
    for _ in range(10_000):
        tree = Not(And((word("x"), tree)))
    terms = iter_terms(tree)
    assert len(terms) == 10_001 and terms[-1] == (word("deep"), False) and terms[0] == (word("x"), True)
    assert query_warnings(tree) == []
