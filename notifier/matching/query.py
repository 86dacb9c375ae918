"""The rule query language (v1): parsing into a small tree, and warnings about rules that will misfire.

Grammar, loosest binding first::

    query   := or
    or      := and ("OR" and)*
    and     := unary (["AND"] unary)*          adjacent terms are ANDed
    unary   := "NOT" unary | primary
    primary := [prefix] (word | "phrase" | "(" or ")")
    prefix  := "ti:" | "abs:" | "au:" | "cat:" | "co:"

- ``AND``, ``OR`` and ``NOT`` are operators only in upper case; ``and``/``or``/``not`` are plain words.
- A word is a run of characters other than whitespace, parentheses and ``"``. Punctuation and hyphens inside it
  separate its tokens, so ``multi-agent`` is the phrase ``"multi agent"``. A trailing ``*`` makes the last token a
  prefix (``compil*``, ``"graph neural net*"``); the prefix needs at least two letters.
- Without a prefix a term looks at the title and the abstract. A prefix applies to the term or parenthesised group
  right after it (``ti:(compiler OR interpreter)``); inside a group, a prefix on a term overrides the group's.
  Prefix names are case-insensitive; any other ``name:`` is an error (``all:`` is not supported: leave the prefix
  out instead).
- ``au:`` terms are names: their tokens must occur in that order (other tokens such as middle names may sit between)
  within one author's name, and a one-letter token is an initial (``au:"Y Zhang"`` matches "Yongle Zhang").
- ``cat:`` terms are whole categories compared without case (``cat:cs.LG``); ``cat:cs.*`` is a prefix.
- ``NOT`` may stand alone: ``NOT survey`` selects every paper without "survey". Negated terms never produce hits.

Limits, so that no query can exhaust the stack or the rule graph: a query is at most :data:`MAX_QUERY_LENGTH`
characters, holds at most :data:`MAX_TERMS` terms, and nests parentheses and ``NOT`` at most :data:`MAX_DEPTH`
deep (``NOT (a OR NOT b)`` is 3 deep). The parser counts the depth before it descends, so its recursion is bounded;
the walks over a parsed tree (:func:`iter_terms`) use no recursion at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, TypeAlias

from notifier.errors import QuerySyntaxError
from notifier.matching.text import plural_variants, tokenize
from notifier.models import Field

PREFIXES: dict[str, Field] = {
    "ti": Field.TITLE,
    "abs": Field.ABSTRACT,
    "au": Field.AUTHORS,
    "cat": Field.CATEGORIES,
    "co": Field.COMMENT,
}
_EXPECTED_PREFIXES = ", ".join(f"{name}:" for name in PREFIXES)
_MIN_PREFIX_LETTERS = 2
MAX_QUERY_LENGTH = 2000  # characters
MAX_TERMS = 200  # words, phrases and names in one query
MAX_DEPTH = 32  # parentheses and NOTs, nested


@dataclass(frozen=True, slots=True)
class Term:
    """One word, phrase or name to look for.

    ``words`` are normalised tokens (for ``cat:`` the one category, case-folded). ``prefix`` makes the last word
    a prefix. ``field`` None means title and abstract. ``label`` is the term as written, with its field prefix.
    """

    field: Field | None
    words: tuple[str, ...]
    prefix: bool
    label: str


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


Node: TypeAlias = Term | Not | And | Or

_LEXEME = re.compile(  # each lexeme with the whitespace before it
    r"""
    \s*(?:
    (?P<open>\()
  | (?P<close>\))
  | (?P<phrase>"[^"]*")
  | (?P<unclosed>")
  | (?P<prefix>[A-Za-z]+:)
  | (?P<word>[^\s()"]+)
    )""",
    re.VERBOSE,
)
_OPERATORS = ("AND", "OR", "NOT")
# An operator word in any case, as a whole word: a query without one not in upper case needs no closer look.
_ANY_CASE_OPERATOR = re.compile(r"\b(?:and|or|not)\b", re.IGNORECASE)
_STARTS = frozenset({"open", "phrase", "prefix", "word", "NOT"})
_EXPECT_TERM = "a term, a \"phrase\" or '('"


class _Lexeme(NamedTuple):
    kind: str  # open, close, phrase, prefix, word, AND, OR, NOT, end
    text: str
    column: int  # 1-based


def _describe(lexeme: _Lexeme) -> str:
    return "the end of the query" if lexeme.kind == "end" else f"'{lexeme.text}'"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        if len(text) > MAX_QUERY_LENGTH:
            raise self.error(
                f"the query is {len(text):,} characters long; at most {MAX_QUERY_LENGTH:,} are allowed (split it "
                "into several rules)",
                MAX_QUERY_LENGTH + 1,
            )
        self.lexemes = self._lex(text)
        self.pos = 0
        self.depth = 0  # parentheses and NOTs open at the current lexeme
        self.terms = 0

    def error(self, message: str, column: int) -> QuerySyntaxError:
        return QuerySyntaxError(message, query=self.text, column=column)

    def _lex(self, text: str) -> list[_Lexeme]:
        lexemes: list[_Lexeme] = []
        for match in _LEXEME.finditer(text):
            kind = match.lastgroup or "word"
            value = match.group(kind)
            column = match.start(kind) + 1
            if kind == "unclosed":
                raise self.error("unterminated phrase; expected a closing '\"'", column)
            lexemes.append(_Lexeme(value if kind == "word" and value in _OPERATORS else kind, value, column))
        lexemes.append(_Lexeme("end", "", len(text) + 1))
        return lexemes

    @property
    def current(self) -> _Lexeme:
        return self.lexemes[self.pos]

    def advance(self) -> _Lexeme:
        lexeme = self.lexemes[self.pos]
        self.pos += 1
        return lexeme

    def expect_start(self, after: _Lexeme) -> None:
        if self.current.kind not in _STARTS:
            raise self.error(
                f"expected {_EXPECT_TERM} after '{after.text}', found {_describe(self.current)}", after.column
            )

    def parse(self) -> Node:
        if self.current.kind == "end":
            raise self.error(f"empty query; expected {_EXPECT_TERM}", 1)
        node = self.parse_or(None)
        if self.current.kind == "close":
            raise self.error("unexpected ')'; no '(' is open", self.current.column)
        if self.current.kind != "end":  # pragma: no cover - parse_and consumes every lexeme that can start a term
            raise self.error(f"unexpected {_describe(self.current)}", self.current.column)
        return node

    def parse_or(self, field: Field | None) -> Node:
        children = [self.parse_and(field)]
        while self.current.kind == "OR":
            self.expect_start(self.advance())
            children.append(self.parse_and(field))
        return children[0] if len(children) == 1 else Or(tuple(children))

    def parse_and(self, field: Field | None) -> Node:
        children = [self.parse_unary(field)]
        while True:
            if self.current.kind == "AND":
                self.expect_start(self.advance())
            elif self.current.kind not in _STARTS:
                break
            children.append(self.parse_unary(field))
        return children[0] if len(children) == 1 else And(tuple(children))

    def parse_unary(self, field: Field | None) -> Node:
        if self.current.kind == "NOT":
            operator = self.advance()
            self.expect_start(operator)
            self.descend(operator)
            node = Not(self.parse_unary(field))
            self.depth -= 1
            return node
        return self.parse_primary(field)

    def descend(self, lexeme: _Lexeme) -> None:
        """Enter one more level of parentheses or NOT, refusing to go deeper than :data:`MAX_DEPTH`."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(
                f"the query nests parentheses and NOTs more than {MAX_DEPTH} deep at '{lexeme.text}'; "
                "simplify it or split it into several rules",
                lexeme.column,
            )

    def parse_primary(self, field: Field | None) -> Node:
        lexeme = self.current
        if lexeme.kind == "prefix":
            self.advance()
            name = lexeme.text[:-1].lower()
            if name not in PREFIXES:
                raise self.error(
                    f"unknown field prefix '{lexeme.text}'; expected one of {_EXPECTED_PREFIXES}", lexeme.column
                )
            if self.current.kind not in ("open", "phrase", "word"):
                raise self.error(
                    f"expected {_EXPECT_TERM} right after '{lexeme.text}', found {_describe(self.current)}",
                    lexeme.column,
                )
            return self.parse_primary(PREFIXES[name])
        if lexeme.kind == "open":
            self.advance()
            if self.current.kind == "close":
                raise self.error(f"empty parentheses; expected {_EXPECT_TERM}", lexeme.column)
            self.descend(lexeme)
            node = self.parse_or(field)
            self.depth -= 1
            if self.current.kind != "close":
                raise self.error(
                    f"expected ')' to close the '(' at column {lexeme.column}, found {_describe(self.current)}",
                    lexeme.column,
                )
            self.advance()
            return node
        if lexeme.kind in ("phrase", "word"):
            self.advance()
            return self.make_term(lexeme, field)
        raise self.error(f"expected {_EXPECT_TERM}, found {_describe(lexeme)}", lexeme.column)

    def make_term(self, lexeme: _Lexeme, field: Field | None) -> Term:
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self.error(f"the query has more than {MAX_TERMS} terms; split it into several rules", lexeme.column)
        term = _make_term(lexeme.kind, lexeme.text, field)
        if isinstance(term, str):
            raise self.error(term, lexeme.column)
        return term


_FIELD_NAMES = {field: name for name, field in PREFIXES.items()}


@lru_cache(maxsize=1 << 16)
def _make_term(kind: str, text: str, field: Field | None) -> Term | str:
    """The term a word or phrase lexeme stands for, or why it cannot be one (the same lexeme, with the same
    field, recurs across many rules: it is made once)."""
    raw = text[1:-1] if kind == "phrase" else text
    label = raw if kind == "word" else text
    if field is not None:
        label = _FIELD_NAMES[field] + ":" + label
    if kind == "phrase" and not raw.strip():
        return 'empty phrase ""; expected words between the quotes'
    if kind == "word" and raw.startswith("-") and raw[1:2].isalnum():
        return f"'{raw}': to exclude a word write NOT {raw[1:]}"
    prefix = raw.endswith("*")
    body = raw.rstrip("*") if prefix else raw
    if "*" in body:
        return f"'*' may only end a word, as in 'compil*' (in {text})"
    described = "the end of the query" if kind == "end" else f"'{text}'"
    if field is Field.CATEGORIES:
        words: tuple[str, ...] = (body.strip().casefold(),)
        if not words[0]:
            return f"expected a category such as cs.LG, found {described}"
    else:
        words = tuple(tokenize(body))
        if not words:
            return f"{described} has no letters or digits; expected a word"
        if prefix and (body[-1:].isspace() or len(words[-1]) < _MIN_PREFIX_LETTERS):
            return f"prefix '{text}' is too short; put at least {_MIN_PREFIX_LETTERS} letters before '*'"
    return Term(field, words, prefix, label)


def parse_query(text: str) -> Node:
    """Parse a rule query; raise :class:`QuerySyntaxError` with a 1-based column and what was expected."""
    return _Parser(text).parse()


def iter_terms(node: Node, *, negated: bool = False) -> list[tuple[Term, bool]]:
    """Every term of ``node`` in query order, each with whether it sits under an odd number of NOTs."""
    if isinstance(node, Term):
        return [(node, negated)]
    found: list[tuple[Term, bool]] = []
    pending: list[tuple[Node, bool]] = [(node, negated)]  # a stack, not recursion: a tree may be made deep
    while pending:
        current, flipped = pending.pop()
        if isinstance(current, Term):
            found.append((current, flipped))
        elif isinstance(current, Not):
            pending.append((current.child, not flipped))
        else:
            pending.extend((child, flipped) for child in reversed(current.children))
    return found


COMMON_WORDS = frozenset(
    """
    learning model network data method approach result paper based using deep neural system analysis algorithm
    problem study framework task training performance large language information time experiment dataset
    efficient novel propose proposed new show work art state use application process design evaluation
    """.split()
)
_MIN_USEFUL_PREFIX = 4


def _is_common(word: str) -> bool:
    return any(variant in COMMON_WORDS for variant in plural_variants(word))


def query_warnings(node: Node, terms: list[tuple[Term, bool]] | None = None) -> list[str]:
    """Advice about a rule that parses but will probably not do what its author wants (``terms``: its
    :func:`iter_terms`, when the caller has them already)."""
    warnings: list[str] = []
    terms = iter_terms(node) if terms is None else terms
    if all(negated for _, negated in terms):
        words = " ".join(term.label for term, _ in terms)
        warnings.append(f"rule only excludes ({words}); it will match every other paper")
    if (
        isinstance(node, Term)
        and node.field in (None, Field.TITLE, Field.ABSTRACT, Field.COMMENT)
        and len(node.words) == 1
        and not node.prefix
        and _is_common(node.words[0])
    ):
        warnings.append(f'rule is the single very common word "{node.words[0]}"; it will match most papers')
    for term, _ in terms:
        if term.prefix and term.field is not Field.CATEGORIES and len(term.words[-1]) < _MIN_USEFUL_PREFIX:
            warnings.append(f"prefix {term.label} is short; it will match many unrelated words")
    return warnings


def lowercase_operators(text: str) -> tuple[list[tuple[str, int]], str] | None:
    """The words ``and``, ``or`` and ``not`` written in lower (or mixed) case where an operator was probably meant
    (``and``/``or`` between two terms, ``not`` before one), each with its 1-based column, and the query with them in
    upper case; None when there are none, or when the query does not lex."""
    if all(word.group() in _OPERATORS for word in _ANY_CASE_OPERATOR.finditer(text)):
        return None  # most queries: lexing them would find nothing
    try:
        lexemes = _Parser(text).lexemes
    except QuerySyntaxError:
        return None
    found: list[tuple[str, int]] = []
    ends = frozenset({"phrase", "word", "close"})
    for before, lexeme, after in zip([None, *lexemes], lexemes, lexemes[1:], strict=False):
        if lexeme.kind != "word" or lexeme.text.upper() not in _OPERATORS or after.kind not in _STARTS:
            continue
        if lexeme.text.upper() == "NOT" or (before is not None and before.kind in ends):
            found.append((lexeme.text, lexeme.column))
    if not found:
        return None
    upper = text
    for word, column in found:
        upper = upper[: column - 1] + word.upper() + upper[column - 1 + len(word) :]
    return found, upper
