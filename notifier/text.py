"""Text clean-up shared by the stages: display text from feed text, and (for matching) normalised text."""

from __future__ import annotations

import html
import re

_WHITESPACE = re.compile(r"\s+")


def clean_display(text: str | None) -> str:
    """Display text: HTML entities decoded exactly once, whitespace runs (line folds too) as one space, stripped."""
    if not text:
        return ""
    return _WHITESPACE.sub(" ", html.unescape(text)).strip()
