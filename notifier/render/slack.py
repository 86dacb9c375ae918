"""The Slack view of a digest: Block Kit messages, and the one serialized form they are stored and posted in.

All paper and rule text is escaped for Slack mrkdwn: ``&``, ``<`` and ``>`` become entities, so no text can
mention ``<!channel>`` or a user or inject a link; ``*``, ``_``, ``~`` and backticks become look-alike characters
so no text can open or close formatting; ``@`` gets an invisible word joiner so ``@here`` stays plain text.
A digest that needs more than 50 blocks, or more text than Slack takes in one message, is split into several
messages, each with its own fallback text.

A paper ranked by similarity to the subscriber's papers says why under its details: ``Like your 2401.01234
“Title” · score 0.42``, the liked paper linked to its abstract page and its title escaped like paper text, then its
"More like this" and "Fewer like this" links when the daemon has a public URL. A section
whose rule only ranks says "most like your papers" where others show their query.

In a digest with rich sections, each of their papers gets its LLM summary (tags, institution, and the TL;DR marked
as machine-written), escaped like paper text; the papers of its other sections are listed one line each.

The messages of a delivery travel as one payload, a JSON list of ``{"text": ..., "blocks": [...]}``:
:func:`encode_payload` writes it (the outbox stores it, the Slack channel posts it, the outbox folder keeps it as
a ``.json`` file), :func:`decode_payload` reads it back, and :func:`indented_payload` shows it to people.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from notifier.models import Digest, FeedbackUrls, Hit, Match, Paper, SlackMessage
from notifier.render.highlight import (
    ELLIPSIS,
    Segments,
    SimilarityView,
    SummaryView,
    author_list,
    badges,
    blank_controls,
    by_day,
    category_totals,
    count_label,
    is_ranked,
    matched_line,
    one_line,
    period_label,
    ranking_label,
    similarity_view,
    snippet,
    summary_view,
)

MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3000
MAX_HEADER_CHARS = 150
MAX_TEXT_CHARS = 3000
# Text of all the blocks of one message: Slack refuses more with msg_blocks_too_long, at about 12,000 characters.
MAX_MESSAGE_CHARS = 10_000
CLOSING_CHARS = 200  # what the closing context block of a message may take
SNIPPET_CHARS = 280
TITLE_CHARS = 300
AUTHORS_CHARS = 300
TAGS_CHARS = 240
INSTITUTION_CHARS = 160
SUMMARY_CHARS = 1000
PAPER_CACHE = 8192  # papers' texts kept for reuse across the digests of a plan

_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        "*": "∗",  # U+2217 ASTERISK OPERATOR
        "_": "ˍ",  # U+02CD MODIFIER LETTER LOW MACRON
        "~": "∼",  # U+223C TILDE OPERATOR
        "`": "ˋ",  # U+02CB MODIFIER LETTER GRAVE ACCENT
        "@": "@\u2060",  # WORD JOINER keeps "@here" from reading as a mention
    }
)

Block = dict[str, object]
_WORD_HEAD = re.compile(r"^\w+")
_WORD_TAIL = re.compile(r"\w+$")
_PAYLOAD_SHAPE = "must be a list of messages, each with a non-empty text and a list of blocks (JSON objects)"


def escape(text: str) -> str:
    """``text`` made inert for Slack mrkdwn (see the module docstring); line breaks become spaces."""
    return blank_controls(text).translate(_ESCAPES)


def _clip(text: str, limit: int) -> str:
    text = one_line(text)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def bold_segments(segments: Segments) -> str:
    """Escaped text with highlighted runs in ``*bold*`` (widened to whole words so Slack renders the bold)."""
    parts: list[str] = []
    pending_bold = False
    for segment in segments:
        text = escape(segment.text)
        if not segment.hit:
            rest = _WORD_HEAD.match(text) if pending_bold else None
            if rest:
                # Pull the rest of a partly matched word into the bold run.
                parts[-1] = parts[-1][:-1] + rest[0] + "*"
                text = text[rest.end() :]
            pending_bold = False
            parts.append(text)
            continue
        stripped = text.strip()
        if not stripped:
            parts.append(text)
            continue
        before, after = text[: len(text) - len(text.lstrip())], text[len(text.rstrip()) :]
        leading = ""
        tail = _WORD_TAIL.search(parts[-1]) if not before and parts else None
        if tail:
            parts[-1], leading = parts[-1][: tail.start()], tail[0]
        parts.append(f"{before}*{leading}{stripped}*{after}")
        pending_bold = not after
    return "".join(parts)


def _header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": _clip(text, MAX_HEADER_CHARS), "emoji": False}}


def _section(mrkdwn: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn[:MAX_SECTION_CHARS]}}


def _context(mrkdwn: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn[:MAX_TEXT_CHARS]}]}


def paper_head(paper: Paper) -> str:
    """A paper's first mrkdwn lines (title link, authors, details): the same whatever matched it."""
    title = escape(_clip(paper.title, TITLE_CHARS)).replace("|", "¦")
    lines = [f"*<{paper.abs_url}|{title}>*"]
    authors = author_list(paper, ())
    lines.append(escape(_clip(authors.text, AUTHORS_CHARS)))
    details = [f"`{escape(paper.primary_category)}`"] if paper.primary_category else []
    details += [escape(badge) for badge in badges(paper)]
    details.append(f"<{paper.pdf_url}|PDF> · <{paper.html_url}|HTML>")
    lines.append(" · ".join(details))
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class PaperText:
    """A paper's mrkdwn: :func:`paper_head`, the quoted excerpt of its abstract (or ``""``) and why it matched."""

    head: str
    excerpt: str
    why: str


def paper_text(paper: Paper, hits: tuple[Hit, ...], head: Callable[[Paper], str] = paper_head) -> PaperText:
    excerpt = bold_segments(snippet(paper, hits, SNIPPET_CHARS))
    why = "matched: " + escape(matched_line(hits)) if hits else ""
    return PaperText(head(paper), f"> {excerpt}" if excerpt else "", why)


def similarity_text(similarity: SimilarityView) -> str:
    """Why a ranked paper is listed, in mrkdwn: ``Like your <abs|2401.01234> “Title” · score 0.42``."""
    liked = escape(similarity.liked_id).replace("|", "¦")
    if similarity.liked_url is not None:
        liked = f"<{similarity.liked_url}|{liked}>"
    title = f" {escape(similarity.quoted_title)}" if similarity.liked_title else ""
    text = f"Like your {liked}{title} · score {similarity.score}"
    if similarity.feedback is not None:
        more, fewer = (_link_target(url) for url in (similarity.feedback.more, similarity.feedback.fewer))
        text += f" · <{more}|More like this> · <{fewer}|Fewer like this>"
    return text


def _link_target(url: str) -> str:
    """``url`` as the target of a mrkdwn link: what would end the link (``|``, ``>``) or open another, escaped."""
    return url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")


def summary_text(summary: SummaryView) -> str:
    """The mrkdwn lines of an LLM summary: tags, institution and the TL;DR, each shown only when known."""
    lines = []
    if summary.tags:
        lines.append("Tags: " + _escaped(summary.tags, TAGS_CHARS))
    if summary.institution:
        lines.append("Institution: " + _escaped(summary.institution, INSTITUTION_CHARS))
    if summary.summary:
        lines.append("_Summary (LLM):_ " + _escaped(summary.summary, SUMMARY_CHARS))
    return "\n".join(lines)


def _escaped(text: str, limit: int) -> str:
    """``text`` escaped, clipped so that it is at most ``limit`` characters once escaped."""
    clipped = _clip(text, limit)
    out = escape(clipped)
    while len(out) > limit:  # entities made it longer: cut the text in proportion, and again if need be
        clipped = _clip(text, max(len(clipped) * limit // len(out) - 1, 1))
        out = escape(clipped)
    return out


def paper_block(text: PaperText, also_in: tuple[str, ...] = (), summary: str = "", like: str = "") -> Block:
    """The section block of a paper from its :func:`paper_text`, with its :func:`similarity_text` (``like``), its
    :func:`summary_text` and the other rules that list it. When they would not fit in one block, the excerpt is left
    out (the summary and the reason are the point)."""
    why = text.why
    if also_in:
        others = ", ".join(escape(rule) for rule in also_in)
        why += f" · also under {others}" if why else f"also under {others}"
    emphasised = f"_{why}_" if why else ""
    parts = [text.head, like, summary, text.excerpt, emphasised]
    mrkdwn = "\n".join(part for part in parts if part)
    if len(mrkdwn) > MAX_SECTION_CHARS and (summary or like):
        mrkdwn = "\n".join(part for part in (text.head, like, summary, emphasised) if part)
    return _section(mrkdwn)


def line_text(paper: Paper, like: str = "") -> str:
    """A paper in one mrkdwn line: its title linked, its first author, its id (and why it was ranked, ``like``)."""
    title = escape(_clip(paper.title, TITLE_CHARS)).replace("|", "¦")
    byline = author_list(paper, ()).byline
    author = f" · {escape(_clip(byline, AUTHORS_CHARS))}" if byline else ""
    reason = f" · {like}" if like else ""
    return f"• <{paper.abs_url}|{title}>{author} · arXiv:{paper.arxiv_id}{reason}"


def line_blocks(lines: Sequence[str]) -> list[Block]:
    """Section blocks of one-line entries, as many lines in each as fit."""
    blocks: list[Block] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        line = line[:MAX_SECTION_CHARS]
        if chunk and size + 1 + len(line) > MAX_SECTION_CHARS:
            blocks.append(_section("\n".join(chunk)))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + (1 if size else 0)
    if chunk:
        blocks.append(_section("\n".join(chunk)))
    return blocks


@dataclass(frozen=True, slots=True)
class _Item:
    """A block with the rule heading to repeat when a message starts in the middle of that rule."""

    block: Block
    heading: Block | None = None


def _like(match: Match, feedback: Mapping[str, FeedbackUrls]) -> str:
    similarity = similarity_view(match.similarity, feedback.get(match.paper.arxiv_id))
    return similarity_text(similarity) if similarity is not None else ""


def _items(digest: Digest, texts: PaperTexts, summaries: SummaryTexts) -> list[_Item]:
    rules_of: dict[str, list[str]] = {}
    for section in digest.sections:
        for match in section.matches:
            rules_of.setdefault(match.paper.arxiv_id, []).append(one_line(section.rule))
    queries = {section.rule: section.query for section in digest.sections}
    rich_rules = {section.rule for section in digest.sections if section.rich}
    ranked = {section.rule for section in digest.sections if is_ranked(section)}
    has_rich = bool(rich_rules)

    def rule_items(rule: str, matches: tuple[Match, ...]) -> list[_Item]:
        name = one_line(rule)
        query = one_line(queries[rule])
        heading = f"*{escape(name)}* — {count_label(len(matches))}"
        if query:
            heading += f" · `{escape(_clip(query, 200))}`"
        ranking = ranking_label(query, rule in ranked)
        if ranking:
            heading += f" · {ranking}"
        continued = _section(f"*{escape(name)}* (continued)")
        out = [_Item(_section(heading))]
        if has_rich and rule not in rich_rules:
            lines = [line_text(match.paper, _like(match, digest.feedback)) for match in matches]
            out.extend(_Item(block, continued) for block in line_blocks(lines))
            return out
        for match in matches:
            others = tuple(r for r in rules_of[match.paper.arxiv_id] if r != name)
            summary = summary_view(digest.summary_of(match.paper)) if rule in rich_rules else None
            rich = summaries(summary) if summary is not None else ""
            block = paper_block(texts(match.paper, match.hits), others, rich, _like(match, digest.feedback))
            out.append(_Item(block, continued))
        return out

    items: list[_Item] = []
    if digest.kind == "weekly":
        for day in by_day(digest):
            totals = " · ".join(f"{escape(one_line(rule))}: {len(ms)}" for rule, ms in day.sections)
            categories = " · ".join(f"{escape(c)}: {n}" for c, n in category_totals(day.papers))
            if categories:
                totals += f"\n{categories}"
            items.append(_Item({"type": "divider"}))
            items.append(_Item(_section(f"*{escape(day.label)}* — {count_label(len(day.papers))} · {totals}")))
            for rule, matches in day.sections:
                items.extend(rule_items(rule, matches))
    else:
        for section in digest.sections:
            if section.matches:
                items.extend(rule_items(section.rule, section.matches))
    return items


PaperTexts = Callable[[Paper, tuple[Hit, ...]], PaperText]
SummaryTexts = Callable[[SummaryView], str]


class SlackRenderer:
    """Renders digests as Block Kit messages, keeping the most recently used papers' texts for the next digests."""

    def __init__(self, papers: int = PAPER_CACHE) -> None:
        head = functools.lru_cache(maxsize=papers)(paper_head)
        self.texts: PaperTexts = functools.lru_cache(maxsize=papers)(functools.partial(paper_text, head=head))
        self.summaries: SummaryTexts = functools.lru_cache(maxsize=papers)(summary_text)

    def render(self, digest: Digest) -> list[SlackMessage]:
        return render_slack(digest, self.texts, self.summaries)


def render_slack(
    digest: Digest, texts: PaperTexts = paper_text, summaries: SummaryTexts = summary_text
) -> list[SlackMessage]:
    """The messages of ``digest``, each within Slack's limits; ``texts`` gives each paper's :func:`paper_text`, and
    ``summaries`` the :func:`summary_text` of each summary."""
    when = period_label(digest)
    kind = "weekly digest" if digest.kind == "weekly" else "digest"
    counts = ", ".join(f"{one_line(s.rule)} ({len(s.matches)})" for s in digest.sections if s.matches)
    if digest.is_empty:
        reason = one_line(digest.empty_reason or "nothing matched your rules")
        fallback = f"arXiv {kind} · {when}: no new papers ({reason})"
        empty = (_header(f"arXiv {kind} · {when} · no new papers"), _section(escape(reason)))
        return [SlackMessage(text=escape(_clip(fallback, MAX_TEXT_CHARS)), blocks=empty)]

    total = count_label(len(digest.papers))
    head = _header(f"arXiv {kind} · {when} · {total}")
    summary = _context(
        f"{escape(total)} for {escape(one_line(digest.subscriber))} · {escape(counts)}"
        f" · edit `{escape(digest.config_path)}` to change rules"
    )
    messages: list[list[Block]] = [[head, summary]]
    used, items = _chars(head) + _chars(summary), 0  # text and items in the last message
    for item in _items(digest, texts, summaries):
        current = messages[-1]
        size = _chars(item.block)
        # Keep room for the closing context block (and its text).
        if len(current) >= MAX_BLOCKS - 1 or (items and used + size > MAX_MESSAGE_CHARS - CLOSING_CHARS):
            current = [item.heading] if item.heading is not None else []
            used, items = sum(map(_chars, current)), 0
            messages.append(current)
        current.append(item.block)
        used, items = used + size, items + 1
    parts = len(messages)
    out = []
    for number, blocks in enumerate(messages, start=1):
        part = f" (part {number} of {parts})" if parts > 1 else ""
        blocks.append(_context(f"{escape(total)} · {escape(when)}{part}"))
        fallback = f"arXiv {kind} · {when} · {total}: {counts}{part}"
        out.append(SlackMessage(text=escape(_clip(fallback, MAX_TEXT_CHARS)), blocks=tuple(blocks)))
    return out


def _chars(block: Block) -> int:
    """The characters of text in ``block``, as Slack counts them towards a message's limit."""
    text = block.get("text")
    size = len(str(text.get("text", ""))) if isinstance(text, dict) else 0
    elements = block.get("elements")
    if isinstance(elements, list):
        size += sum(len(str(e.get("text", ""))) for e in elements if isinstance(e, dict))
    return size


def encode_payload(messages: Sequence[SlackMessage]) -> bytes:
    """The payload that carries ``messages``, in order: what the outbox stores and the Slack channel posts."""
    return json.dumps([{"text": message.text, "blocks": list(message.blocks)} for message in messages]).encode()


def decode_payload(payload: bytes) -> list[SlackMessage]:
    """The messages of a payload that :func:`encode_payload` wrote (``blocks`` left out or null: no blocks).

    Raises :class:`ValueError` saying what is wrong when it is not a JSON list of messages, each with a non-empty
    text and a list of blocks (JSON objects).
    """
    try:
        parts = json.loads(payload)
    except ValueError as exc:
        raise ValueError(f"is not JSON: {exc}") from None
    if not isinstance(parts, list) or not all(_is_message(part) for part in parts):
        raise ValueError(_PAYLOAD_SHAPE)
    return [SlackMessage(text=part["text"], blocks=tuple(part.get("blocks") or ())) for part in parts]


def indented_payload(payload: bytes) -> str:
    """``payload`` as indented JSON, with its characters as they are (not ``\\u`` escapes): for people to read."""
    return json.dumps(json.loads(payload), indent=2, ensure_ascii=False)


def _is_message(part: object) -> bool:
    if not isinstance(part, dict):
        return False
    text, blocks = part.get("text"), part.get("blocks") or []
    well_formed = isinstance(blocks, list) and all(isinstance(block, dict) for block in blocks)
    return isinstance(text, str) and bool(text.strip()) and well_formed
