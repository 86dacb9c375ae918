"""The HTML templates: their stylesheet written into their tags once, when a template is loaded, and how text is
escaped in them.

Mail clients drop or ignore much of a ``<style>`` block, so every element carries its own ``style`` attribute.
Rather than inlining each rendered message, :class:`InlinedLoader` inlines the template *source*: each literal start
tag gets the declarations of the rules that match it, and the template renders with them already in place.

Escaping is that of an HTML serializer: text escapes ``&``, ``<`` and ``>`` (:func:`escape_text`, the environment's
``finalize``), and an expression inside a tag, such as an attribute value, also escapes both quotes (the loader adds
the ``e`` filter to it). Apostrophes and quotes in titles, abstracts and queries so stay one byte each.

What a rule can be matched against is what the template source shows: a tag name, literal classes, and the
ancestors written in the same file. So a rule is inlined when its selectors are type and class selectors joined by
descendant combinators (``td``, ``.title a``, ``p.meta``); any other rule, and every at-rule (``@media``), is kept
for the ``<style>`` block (:attr:`Stylesheet.kept`), as mail clients that read one need it there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jinja2
from jinja2.nodes import EvalContext
from markupsafe import Markup

__all__ = ["InlinedLoader", "Stylesheet", "escape_text", "html_text", "inline_source"]

_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
_COMPOUND = re.compile(r"(?P<tag>[a-zA-Z][a-zA-Z0-9]*|\*)?(?P<classes>(?:\.[A-Za-z_][\w-]*)*)")
_DECLARATION = re.compile(r"""(?:[^;"'(]|"[^"]*"|'[^']*'|\([^)]*\))+""")
# Jinja expressions, statements and comments, swapped for inert tokens while the tags around them are read.
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_TOKEN = re.compile("\x00(\\d+)\x00")
_EXPRESSION = re.compile(r"\{\{([-+]?)(.*?)([-+]?)\}\}", re.DOTALL)
_MARKUP = re.compile(
    r"<!--.*?-->|<!.*?>|<(?P<close>/)?(?P<name>[a-zA-Z][a-zA-Z0-9]*)(?P<attrs>(?:\s+[^\s=>/]+"
    r"""(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?)*)\s*(?P<empty>/)?>""",
    re.DOTALL,
)
_ATTRIBUTE = re.compile(r"""\s+(?P<name>[^\s=>/]+)(?:\s*=\s*(?P<value>"[^"]*"|'[^']*'|[^\s"'=<>`]+))?""")
_VOID = frozenset("area base br col embed hr img input link meta source track wbr".split())
_RAW_TEXT = frozenset(("style", "script", "title", "textarea"))

Element = tuple[str, frozenset[str]]  # tag name (lower case) and classes


@dataclass(frozen=True, slots=True)
class _Compound:
    tag: str | None  # None matches any tag
    classes: frozenset[str]

    def matches(self, element: Element) -> bool:
        return (self.tag is None or self.tag == element[0]) and self.classes <= element[1]


@dataclass(frozen=True, slots=True)
class _Rule:
    compounds: tuple[_Compound, ...]  # outermost first; joined by descendant combinators
    specificity: tuple[int, int]  # (classes, tags)
    order: int
    declarations: tuple[tuple[str, str, bool], ...]  # (property, value, important)

    def matches(self, element: Element, ancestors: Sequence[Element]) -> bool:
        if not self.compounds[-1].matches(element):
            return False
        position = len(ancestors)
        for compound in reversed(self.compounds[:-1]):
            position -= 1
            while position >= 0 and not compound.matches(ancestors[position]):
                position -= 1
            if position < 0:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Stylesheet:
    """A CSS text split into rules that can be inlined and the text that stays in ``<style>``."""

    rules: tuple[_Rule, ...]
    kept: str

    @classmethod
    def parse(cls, css: str) -> Stylesheet:
        css = _COMMENT.sub("", css)
        rules: list[_Rule] = []
        kept: list[str] = []
        position = 0
        while True:
            start = css.find("{", position)
            if start < 0:
                break
            end = _block_end(css, start)
            prelude, body = css[position:start].strip(), css[start + 1 : end - 1]
            if prelude.startswith("@"):
                kept.append(css[position:end].strip())
            else:
                plain: list[str] = []
                for selector in prelude.split(","):
                    compounds = _compounds(selector)
                    if compounds is None:
                        plain.append(selector.strip())
                        continue
                    classes = sum(len(c.classes) for c in compounds)
                    tags = sum(c.tag is not None for c in compounds)
                    rules.append(_Rule(compounds, (classes, tags), len(rules), _declarations(body)))
                if plain:
                    kept.append(f"{', '.join(plain)} {{{body}}}")
            position = end
        return cls(tuple(rules), "\n".join(kept))

    def style(self, element: Element, ancestors: Sequence[Element]) -> str:
        """The declarations for ``element`` inside ``ancestors`` (outermost first), as a ``style`` attribute value.

        Later and more specific rules win, ``!important`` above all; each property appears once, where it first did.
        """
        found = sorted(
            (rule for rule in self.rules if rule.matches(element, ancestors)),
            key=lambda rule: (rule.specificity, rule.order),
        )
        values: dict[str, tuple[str, bool]] = {}
        for rule in found:
            for prop, value, important in rule.declarations:
                if important or not values.get(prop, ("", False))[1]:
                    values[prop] = (value, important)
        return ";".join(
            f"{prop}:{value}{' !important' if important else ''}" for prop, (value, important) in values.items()
        )


def _block_end(css: str, start: int) -> int:
    """The index just past the ``}`` that closes the ``{`` at ``start`` (nested blocks included)."""
    depth = 0
    for index in range(start, len(css)):
        if css[index] == "{":
            depth += 1
        elif css[index] == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    raise jinja2.TemplateError(f"unbalanced braces in the stylesheet near {css[start : start + 40]!r}")


def _compounds(selector: str) -> tuple[_Compound, ...] | None:
    """The compound selectors of ``selector`` joined by descendant combinators, or None if it uses anything else."""
    out = []
    for part in selector.split():
        found = _COMPOUND.fullmatch(part)
        if found is None or not part:
            return None
        tag = found["tag"]
        out.append(_Compound(None if tag in (None, "*") else tag.lower(), frozenset(found["classes"].split(".")[1:])))
    return tuple(out) or None


def _declarations(body: str) -> tuple[tuple[str, str, bool], ...]:
    out = []
    for text in _DECLARATION.findall(body):
        prop, colon, value = text.partition(":")
        if not colon or not prop.strip():
            continue
        value = " ".join(value.split()).replace('"', "'")  # it goes into a double-quoted attribute
        important = value.lower().endswith("!important")
        if important:
            value = value[: -len("!important")].rstrip()
        out.append((prop.strip().lower(), value, important))
    return tuple(out)


def inline_source(source: str, sheet: Stylesheet) -> str:
    """``source`` (an HTML Jinja template) with ``sheet``'s declarations in the ``style`` of each literal start tag,
    and the ``e`` filter on each expression inside a start tag.

    An element's ancestors are the elements open at that point of the source; Jinja tags are not looked into.
    A ``style`` already written in the source comes after the inlined declarations, so it wins.
    """
    tokens: list[str] = []

    def protect(found: re.Match[str]) -> str:
        tokens.append(found[0])
        return f"\x00{len(tokens) - 1}\x00"

    text = _JINJA.sub(protect, source)
    open_elements: list[Element] = []
    cache: dict[tuple[Element, tuple[Element, ...]], str] = {}
    in_tags: set[int] = set()
    out: list[str] = []
    position = 0
    raw_until: str | None = None
    for found in _MARKUP.finditer(text):
        name = (found["name"] or "").lower()
        if raw_until is not None:
            if found["close"] and name == raw_until:
                raw_until = None
            continue
        if not name:
            continue
        in_tags.update(int(token[1]) for token in _TOKEN.finditer(found[0]))
        if found["close"]:
            if name in (tag for tag, _ in open_elements):
                while open_elements.pop()[0] != name:
                    pass
            continue
        attributes = {m["name"].lower(): m["value"] or "" for m in _ATTRIBUTE.finditer(found["attrs"])}
        classes = frozenset(_unquote(attributes.get("class", "")).split())
        element = (name, classes)
        key = (element, tuple(open_elements))
        if key not in cache:
            cache[key] = sheet.style(element, open_elements)
        style = cache[key]
        if style:
            out.append(text[position : found.start()])
            out.append(_with_style(found, style, attributes.get("style")))
            position = found.end()
        if name in _RAW_TEXT:
            raw_until = name
        elif name not in _VOID and not found["empty"]:
            open_elements.append(element)
    out.append(text[position:])

    def restore(found: re.Match[str]) -> str:
        index = int(found[1])
        return _EXPRESSION.sub(r"{{\1 (\2) | e \3}}", tokens[index]) if index in in_tags else tokens[index]

    return _TOKEN.sub(restore, "".join(out))


def html_text(text: str) -> str:
    """``text`` escaped for an HTML text node."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@jinja2.pass_eval_context
def escape_text(context: EvalContext, value: object) -> object:
    """Finalize: in an autoescaped template, a string is escaped as an HTML text node; the rest is left to Jinja."""
    if context.autoescape and isinstance(value, str) and not isinstance(value, Markup):
        return Markup(html_text(value))
    return value


def _unquote(value: str) -> str:
    return value[1:-1] if value[:1] in ("'", '"') else value


def _with_style(tag: re.Match[str], style: str, written: str | None) -> str:
    """The start tag ``tag`` with ``style`` first in its ``style`` attribute (added at its end when it has none)."""
    if written is None:
        end = tag.start("empty") if tag["empty"] else tag.end("attrs")
        whole = tag[0]
        cut = end - tag.start()
        return f'{whole[:cut]} style="{style}"{whole[cut:]}'
    merged = f"{style};{_unquote(written)}".replace('"', "'")  # double-quoted, as the inlined ones are
    attrs = _ATTRIBUTE.sub(lambda m: f' style="{merged}"' if m["name"].lower() == "style" else m[0], tag["attrs"])
    return f"<{tag['name']}{attrs}{' /' if tag['empty'] else ''}>"


class InlinedLoader(jinja2.BaseLoader):
    """Loads templates through ``base``; the source of each ``.html`` template comes with ``sheet`` inlined."""

    def __init__(self, base: jinja2.BaseLoader, sheet: Stylesheet) -> None:
        self.base = base
        self.sheet = sheet

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = self.base.get_source(environment, template)
        if template.endswith(".html"):
            source = inline_source(source, self.sheet)
        return source, filename, uptodate
