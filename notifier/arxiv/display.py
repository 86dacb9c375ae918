"""Display text from arXiv's text: what a reader sees of a title, an abstract or an author list.

Feeds and the API send HTML-encoded text with LaTeX accents and folded lines; :func:`clean_display` makes it the
text that is stored, matched (see :mod:`notifier.matching.text`) and shown.
"""

from __future__ import annotations

import html
import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")


_COMBINING = {
    "`": "\u0300", "'": "\u0301", "^": "\u0302", "~": "\u0303", "=": "\u0304", "u": "\u0306", ".": "\u0307",
    '"': "\u0308", "r": "\u030a", "H": "\u030b", "v": "\u030c", "c": "\u0327", "k": "\u0328",
}  # fmt: skip
_SPECIAL = {"o": "ø", "O": "Ø", "l": "ł", "L": "Ł", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "ss": "ß",
            "aa": "å", "AA": "Å", "i": "ı", "j": "ȷ"}  # fmt: skip
_DISPLAY_ACCENT = re.compile(
    r"\{\\(?P<m1>[`'^~=.\"])\s*\{?(?P<l1>[A-Za-z])\}?\}"  # {\"o} {\"{o}}
    r"|\\(?P<m2>[`'^~=.\"])\s*(?:\{(?P<l2>[A-Za-z])\}|(?P<l3>[A-Za-z]))"  # \"{o} \"o
    r"|\{\\(?P<m3>[uvHckr])\s+(?P<l4>[A-Za-z])\}"  # {\v s}
    r"|\\(?P<m4>[uvHckr])\{(?P<l5>[A-Za-z])\}"  # \v{s}
    r"|\{\\(?P<special>o|O|l|L|ae|AE|oe|OE|ss|aa|AA|i|j)\}"  # {\o} {\ss}
)


def _accent(found: re.Match[str]) -> str:
    named = found.groupdict()
    if named["special"]:
        return _SPECIAL[named["special"]]
    mark = next(named[key] for key in ("m1", "m2", "m3", "m4") if named[key])
    letter = next(named[key] for key in ("l1", "l2", "l3", "l4", "l5") if named[key])
    return unicodedata.normalize("NFC", letter + _COMBINING[mark])


def clean_display(text: str | None) -> str:
    """Display text: HTML entities decoded exactly once, LaTeX accents as letters (``Schr\\"{o}dinger`` ->
    ``Schrödinger``), whitespace runs (line folds too) as one space, stripped."""
    if not text:
        return ""
    return _WHITESPACE.sub(" ", _DISPLAY_ACCENT.sub(_accent, html.unescape(text))).strip()
