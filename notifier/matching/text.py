"""Text as matching sees it: tokens of normalised words, each tied to a span of the display text.

Matching sees a text as a list of *tokens*, each tied to a span of the display text:

- LaTeX is reduced to its words: formatting and symbol commands (``\\mathcal``, ``\\emph``, ``\\times``) vanish,
  their arguments stay (``$\\mathcal{O}(n)$`` -> ``o n``, ``\\emph{foo}`` -> ``foo``); other commands become their
  name (``\\log`` -> ``log``); accent commands join their letter (``M\\"uller`` -> ``muller``).
- Each token is NFKC-normalised and case-folded, and its accents are folded (``Müller`` -> ``muller``).
- Everything that is not a letter or a digit separates tokens: punctuation, hyphens, ``$``, braces, whitespace.

HTML entities are not decoded here: display text (:mod:`notifier.arxiv.display`) already had them decoded
exactly once.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

# A character that glues the pieces of a LaTeX accent (``\"{u}``) into one token and is dropped from its text.
_JOIN = "\x00"

# A word: letters and digits, plus combining marks (decomposed accents) and the LaTeX glue.
_TOKEN = re.compile(r"[\w\u0300-\u036f\x00]+")  # on text whose "_" became spaces: [^\W_] is a slower class
_ASCII_TOKEN = re.compile(r"[a-z0-9]+")
_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")
_TOKEN_OR_SEPARATOR = re.compile(r"[\w\u0300-\u036f\x00]+|\x01")
_SUBTOKEN = re.compile(r"[^\W_]+")

_ACCENT_SYMBOL = re.compile(r"\{?\\[`'^\"~=.]\s*\{?\x00*([A-Za-z])\x00*\}?\}?")
_ACCENT_LETTER = re.compile(r"\{?\\[uvHckrbd](?:\{([A-Za-z])\}|\s+([A-Za-z]))\}?")
_SPECIAL_LETTER = re.compile(r"\{\\(o|O|l|L|ae|AE|oe|OE|ss|aa|AA|i|j)\}|\\([ij])(?![A-Za-z])")
_COMMAND = re.compile(r"\\([A-Za-z]+)\*?")

# Commands that only format or stand for a symbol: they carry no word of their own.
_SILENT_COMMANDS = frozenset(
    """
    mathcal mathbf mathrm mathit mathsf mathtt mathbb mathfrak mathscr boldsymbol bm emph textbf textit texttt
    textrm textsf textsc textup textsl textnormal text mbox hbox operatorname mathop displaystyle textstyle
    scriptstyle left right big Big bigg Bigg bigl bigr Bigl Bigr cite citep citet ref eqref label url href
    footnote textsuperscript textsubscript frac dfrac tfrac sqrt hat tilde bar vec dot ddot overline underline
    widehat widetilde times cdot cdots ldots dots geq ge leq le neq approx sim simeq equiv propto in notin
    subset subseteq cup cap to rightarrow leftarrow Rightarrow Leftarrow mapsto pm mp quad qquad infty partial
    nabla forall exists mid vert lvert rvert lceil rceil lfloor rfloor langle rangle prime
    """.split()
)

# Letters that Unicode does not decompose into base letter + accent.
_FOLD_LETTERS = str.maketrans({"ø": "o", "ł": "l", "đ": "d", "ð": "d", "æ": "ae", "œ": "oe", "ı": "i", "þ": "th"})


def _glue(match: re.Match[str]) -> str:
    """Keep the matched letter(s) in place and turn the rest of the match into glue, preserving length."""
    text = match.group(0)
    for group in range(1, (match.lastindex or 0) + 1):
        if match.group(group) is not None:
            start, end = match.start(group) - match.start(), match.end(group) - match.start()
            return _JOIN * start + text[start:end] + _JOIN * (len(text) - end)
    return " " * len(text)  # pragma: no cover - every pattern above captures a letter


def _command(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in _SILENT_COMMANDS:
        return " " * len(match.group(0))
    return " " + name + " " * (len(match.group(0)) - len(name) - 1)


def _unlatex(text: str) -> str:
    """Same-length copy of ``text`` with LaTeX accents glued to their letter and command names handled."""
    text = _SPECIAL_LETTER.sub(_glue, text)
    text = _ACCENT_SYMBOL.sub(_glue, text)
    text = _ACCENT_LETTER.sub(_glue, text)
    return _COMMAND.sub(_command, text)


def fold(word: str) -> str:
    """NFKC, case folding and accent folding of one word (the result may contain separators, e.g. for '½')."""
    if word.isascii():
        return word.lower().replace(_JOIN, "")
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch) and ch != _JOIN)
    return unicodedata.normalize("NFKC", bare.translate(_FOLD_LETTERS)).casefold()


def _is_plain(text: str) -> bool:
    return text.isascii() and "\\" not in text and _JOIN not in text


# What :func:`tokenize_all` puts after each text's tokens: never a token, and sorted before every token.
SEPARATOR = "\x01"
# Plain text as bytes: letters lower-cased, digits and the separator kept, everything else a space.
_PLAIN_BYTES = bytes(
    code + 32 if 65 <= code <= 90 else code if 48 <= code <= 57 or 97 <= code <= 122 or code == 1 else 32
    for code in range(256)
)


def tokenize_all(texts: Iterable[str]) -> list[str]:
    """The tokens of each text (as :func:`tokenize` gives them), one text after the other, each followed by
    :data:`SEPARATOR`.

    Texts are read in bulk: all the plain ASCII ones (the common case) by one byte translation that turns every
    character but letters and digits into a space, and one split; the others by one pass of the LaTeX clean-up
    and of the word pattern over all of them (joined, they stay apart: no pattern spans the separator). The cost
    per text is a few string checks.
    """
    texts = list(texts)
    plain: list[str] = []
    rich: list[str] = []
    kinds: list[int] = []
    for text in texts:
        if _is_plain(text) and SEPARATOR not in text:
            plain.append(text)
            kinds.append(_PLAIN)
        elif SEPARATOR not in text:
            rich.append(text)
            kinds.append(_RICH)
        else:
            kinds.append(_OTHER)
    if not rich and len(plain) == len(texts):
        return _plain_tokens(plain)
    read = {_PLAIN: iter(_plain_texts(plain)), _RICH: iter(_rich_tokens(rich))}
    flat: list[str] = []
    for kind, text in zip(kinds, texts, strict=True):
        if kind == _OTHER:
            flat += tokenize(text)
        else:
            flat += next(read[kind])
        flat.append(SEPARATOR)
    return flat


_PLAIN, _RICH, _OTHER = 0, 1, 2


def _rich_tokens(texts: list[str]) -> list[list[str]]:
    """The tokens of each of ``texts`` (which hold no separator)."""
    found: list[list[str]] = []
    tokens: list[str] = []
    for word in _TOKEN_OR_SEPARATOR.findall(_prepare(f" {SEPARATOR} ".join(texts))):
        if word == SEPARATOR:
            found.append(tokens)
            tokens = []
        else:
            tokens += _word_tokens(word)
    found.append(tokens)
    return found if texts else []


def _plain_tokens(texts: list[str]) -> list[str]:
    """The tokens of plain texts (ASCII, no LaTeX, no separator), each text's followed by the separator."""
    if not texts:
        return []
    tokens = _translated(texts).split()
    tokens.append(SEPARATOR)
    return tokens


def _plain_texts(texts: list[str]) -> list[list[str]]:
    """The tokens of each of the plain ``texts``."""
    return [text.split() for text in _translated(texts).split(SEPARATOR)] if texts else []


def _translated(texts: list[str]) -> str:
    return f" {SEPARATOR} ".join(texts).encode("ascii").translate(_PLAIN_BYTES).decode("ascii")


def _prepare(text: str) -> str:
    """A same-length copy of ``text`` for :data:`_TOKEN`: underscores and stray glue as spaces, LaTeX handled."""
    text = text.replace(_JOIN, " ").replace("_", " ")
    return _unlatex(text) if "\\" in text else text


@lru_cache(maxsize=1 << 16)
def _word_tokens(word: str) -> tuple[str, ...]:
    """The tokens of one word of :data:`_TOKEN` (folding may split it, e.g. for '½')."""
    folded = fold(word)
    if folded.isascii() and folded.isalnum():
        return (folded,)
    return tuple(_SUBTOKEN.findall(folded))


def tokenize(text: str) -> list[str]:
    """The normalised tokens of a display text, in order (the tokens of :func:`tokenize_spans`, faster)."""
    if _is_plain(text):
        return _ASCII_TOKEN.findall(text.lower())
    tokens: list[str] = []
    for word in _TOKEN.findall(_prepare(text)):
        tokens += _word_tokens(word)
    return tokens


def token_spans(text: str) -> list[tuple[int, int]]:
    """The spans of :func:`tokenize_spans` alone (for plain text, without making the tokens)."""
    if _is_plain(text):
        return list(map(re.Match.span, _ASCII_WORD.finditer(text)))
    return tokenize_spans(text)[1]


def tokenize_spans(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    """The normalised tokens of a display text and, for each, its ``(start, end)`` span in that text."""
    tokens: list[str] = []
    spans: list[tuple[int, int]] = []
    if _is_plain(text):
        for match in _ASCII_TOKEN.finditer(text.lower()):
            tokens.append(match.group())
            spans.append(match.span())
        return tokens, spans
    prepared = _prepare(text)
    for match in _TOKEN.finditer(prepared):
        span = match.span()
        if _JOIN in match.group():  # glue at the edges of a word is not part of it
            word = match.group()
            span = (span[0] + len(word) - len(word.lstrip(_JOIN)), span[1] - len(word) + len(word.rstrip(_JOIN)))
        for piece in _word_tokens(match.group()):
            tokens.append(piece)
            spans.append(span)
    return tokens, spans


_SIBILANT_ENDINGS = ("s", "x", "z", "ch", "sh")
_VOWELS = "aeiou"


def _plural_of(word: str) -> str | None:
    """The regular English plural of ``word``, or None for words too short or ending in a digit."""
    if len(word) < 3 or not word[-1].isalpha():
        return None
    if word.endswith("y") and word[-2] not in _VOWELS:
        return word[:-1] + "ies"
    if word.endswith(_SIBILANT_ENDINGS):
        return word + "es"
    return word + "s"


def plural_variants(word: str) -> frozenset[str]:
    """``word`` with its regular plural and the singulars it could be the plural of.

    The relation is symmetric (``b in plural_variants(a)`` exactly when ``a in plural_variants(b)``) and
    deliberately limited: ``policy``/``policies``, ``gpu``/``gpus``, ``process``/``processes``, but never
    ``expert``/``expertise``.
    """
    variants = {word}
    plural = _plural_of(word)
    if plural is not None:
        variants.add(plural)
    for cut, suffix in ((3, "y"), (2, ""), (1, "")):
        if len(word) > cut:
            singular = word[:-cut] + suffix
            if _plural_of(singular) == word:
                variants.add(singular)
    return frozenset(variants)
