"""The LLM's answer, validated: from the text it sent to a :class:`~notifier.models.Summary` or a clear error.

The answer is untrusted text. It must hold a JSON object (alone, inside a ```json fence, or with prose around it);
every field is cleaned (control characters removed, whitespace runs collapsed to one space) and capped in length,
cut at a word boundary with "…" rather than rejected. Only a missing or empty ``summary`` makes the answer invalid.
Escaping for HTML, Slack or mail headers is the renderer's job: the text is kept as written.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from notifier.errors import InvalidSummaryError
from notifier.models import Paper, Summary

SUMMARY_CHARS = 700
TAG_CHARS = 40  # a topic, a subtopic, one keyword
KEYWORDS = 6
INSTITUTION_CHARS = 120
ANSWER_CHARS = 20_000  # a longer answer is not read at all
_OBJECT_STARTS = 20  # "{" positions tried when prose comes before the object
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})  # controls, format (bidi, zero-width), unassigned
_UNKNOWN = frozenset({"", "unknown", "none", "null", "n/a", "na", "not specified", "not available", "not given"})


def clean(text: str) -> str:
    """``text`` with control and format characters removed and whitespace runs (CR, LF, tabs) made one space."""
    kept = "".join(char for char in text if char.isspace() or unicodedata.category(char) not in _DROPPED_CATEGORIES)
    return " ".join(kept.split())


def cap(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, ending with "…" when it was cut."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def _text(value: Any, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):  # a ValueError, not a TypeError: pydantic reports only the former as invalid
        raise ValueError("must be a string")  # noqa: TRY004
    return cap(clean(value), limit)


class Answer(BaseModel):
    """The JSON object the prompt asks for. Unknown fields are ignored; a missing tag is empty."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    summary: str
    topic: str = ""
    subtopic: str = ""
    keywords: tuple[str, ...] = ()
    institution: str | None = None

    @field_validator("summary", mode="before")
    @classmethod
    def _summary(cls, value: Any) -> str:
        text = _text(value, SUMMARY_CHARS)
        if not text:
            raise ValueError("is empty")
        return text

    @field_validator("topic", "subtopic", mode="before")
    @classmethod
    def _tag(cls, value: Any) -> str:
        return _text(value, TAG_CHARS).lower()

    @field_validator("keywords", mode="before")
    @classmethod
    def _keywords(cls, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            raise ValueError("must be a list of strings")  # noqa: TRY004
        chosen: dict[str, str] = {}
        for item in items:
            keyword = _text(item, TAG_CHARS)
            if keyword:
                chosen.setdefault(keyword.casefold(), keyword)
        return tuple(chosen.values())[:KEYWORDS]

    @field_validator("institution", mode="before")
    @classmethod
    def _institution(cls, value: Any) -> str | None:
        text = _text(value, INSTITUTION_CHARS)
        return None if text.casefold().strip(".") in _UNKNOWN else text


def extract_object(text: str) -> dict[str, Any]:
    """The first JSON object in ``text``: the whole text, or the first ``{...}`` in it (a fence or prose around it
    is ignored). Raises :class:`InvalidSummaryError` when there is none."""
    if len(text) > ANSWER_CHARS:
        raise InvalidSummaryError(f"invalid answer: {len(text):,} characters, more than the {ANSWER_CHARS:,} read")
    decoder = json.JSONDecoder()
    start = text.find("{")
    for _ in range(_OBJECT_STARTS):
        if start < 0:
            break
        try:
            found, _end = decoder.raw_decode(text, start)
        except ValueError:
            found = None
        if isinstance(found, dict):
            return found
        start = text.find("{", start + 1)
    raise InvalidSummaryError(f"invalid answer: no JSON object in {_excerpt(text)}")


def parse_answer(text: str, paper: Paper, model: str, affiliations: Sequence[str] = ()) -> Summary:
    """The summary of ``paper`` in the LLM's answer ``text``. The institution is the arXiv API's ``affiliations``
    of the paper when there are any, else what the answer names. Raises :class:`InvalidSummaryError`."""
    fields = extract_object(text)
    try:
        answer = Answer.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'answer'}: {error['msg']}" for error in exc.errors()[:3]
        )
        raise InvalidSummaryError(f"invalid answer: {problems}") from None
    known = [name for name in (clean(a) for a in affiliations) if name]
    institution = cap("; ".join(dict.fromkeys(known)), INSTITUTION_CHARS) if known else answer.institution
    return Summary(
        arxiv_id=paper.arxiv_id,
        version=paper.version,
        summary=answer.summary,
        topic=answer.topic,
        subtopic=answer.subtopic,
        keywords=answer.keywords,
        institution=institution,
        model=cap(clean(model), TAG_CHARS * 2),
    )


def _excerpt(text: str) -> str:
    shown = clean(text)
    return repr(shown if len(shown) <= 60 else shown[:57] + "...") if shown else "an empty answer"
