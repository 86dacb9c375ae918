"""Load and validate ``subscribers.yaml`` into a frozen :class:`Config`.

The file is edited by hand, so every error names ``file:line:column`` and the field: YAML is composed into nodes
(which keep their positions), validated by pydantic models with unknown keys forbidden, and each validation error
is mapped back to the node it came from. Rule queries are compiled here, once, into a :class:`RuleSet`.

A careless or hostile edit gets the same treatment as a typo: whatever goes wrong while reading, composing,
validating or compiling the file is a :class:`ConfigError` with its place. Reading is bounded in
:mod:`notifier.config.yaml_source` (file size, nesting, aliases, ``${VAR}``); each query's length, terms and depth in
:mod:`notifier.matching.query`; addresses are read by :mod:`notifier.addresses`.
"""

from __future__ import annotations

import gc
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from notifier.addresses import address_key, validate_address
from notifier.config.likes import BibError, bib_entries, read_bib, read_entry
from notifier.config.schedule import Schedule
from notifier.config.taxonomy import canonical, closest
from notifier.config.yaml_source import MAX_FILE_BYTES, YAML_LOADER, Path_, YamlSource, read_text, too_large
from notifier.errors import ConfigError, QuerySyntaxError
from notifier.matching.query import MAX_QUERY_LENGTH, Node, iter_terms, lowercase_operators, query_warnings
from notifier.matching.rules import RuleSet
from notifier.models import ChannelKind, feed_key
from notifier.models import Field as PaperField
from notifier.progress import Progress

log = logging.getLogger(__name__)

# The YAML parser; bench/config.py sets the pure-Python one here to measure what loading cost before libyaml.
_YAML_LOADER: type[yaml.SafeLoader] = YAML_LOADER

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CATEGORY = re.compile(r"^[A-Za-z][A-Za-z-]*(\.[A-Za-z][A-Za-z-]*)?$")
_SLACK_CHANNEL = re.compile(r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CGD][A-Z0-9]{6,})$")

AnnounceType = Literal["new", "cross", "replace", "replace-cross"]


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _liked(value: object) -> object:
    """``like:`` entries: one or many, and never a number, which is how YAML reads an unquoted arXiv id."""
    for entry in value if isinstance(value, list) else [value]:
        if isinstance(entry, int | float) and not isinstance(entry, bool):
            raise ValueError(  # noqa: TRY004 (pydantic reports a ValueError at its place; a TypeError escapes)
                f"write arXiv ids in quotes, such as '{entry}': unquoted, YAML reads one as a number, and 2401.01230"
                " becomes 2401.0123"
            )
    return _one_or_many(value)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode's control characters (category Cc), exactly


def _control_character(text: str, allowed: str = "") -> str | None:
    """The first control character of ``text`` not in ``allowed``, as U+XXXX; None if there is none."""
    for found in _CONTROL.finditer(text):
        if found.group() not in allowed:
            return f"U+{ord(found.group()):04X}"
    return None


class SimilarModel(_Strict):
    top: Annotated[int, Field(ge=1, le=500)] | None = 10
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] | None = None


class RuleModel(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_LENGTH)] | None = None
    summaries: bool | None = None  # rich entries for this rule; unset: the subscriber's choice
    similar: SimilarModel | None = None  # rank by similarity to the subscriber's likes

    @model_validator(mode="after")
    def _query_or_similar(self) -> RuleModel:
        if self.query is None and self.similar is None:
            raise ValueError("a rule needs 'query', 'similar' (papers like yours), or both")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if found := _control_character(value):
            raise ValueError(f"a rule name may not contain control characters (found {found})")
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None and (found := _control_character(value, "\t\n\r")):
            raise ValueError(f"a query may not contain control characters (found {found})")
        return value


class SubscriberFields(_Strict):
    """Every field a subscriber may set; ``defaults`` may set any of them but ``name``."""

    email: Annotated[list[str], BeforeValidator(_one_or_many)] = []
    slack: Annotated[list[str], BeforeValidator(_one_or_many)] = []
    categories: list[str] = []
    schedule: Annotated[str, Field(max_length=100)] = "daily 08:00 UTC"
    announce_types: list[AnnounceType] = ["new", "cross"]
    send_empty: bool = False
    summaries: bool = False  # rich entries (LLM summary and tags) for every rule that does not say otherwise
    like: Annotated[list[str], BeforeValidator(_liked)] = []  # arXiv ids, au:"Name", file.bib
    dislike: Annotated[list[str], BeforeValidator(_liked)] = []
    sort: Literal["announced", "relevance"] = "announced"
    rules: list[RuleModel] = []

    @field_validator("like", "dislike")
    @classmethod
    def _likes(cls, value: list[str]) -> list[str]:
        for entry in value:
            read_entry(entry)
        return value

    @field_validator("email")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        """Each address validated and normalised (:func:`~notifier.addresses.validate_address`)."""
        return [validate_address(address) for address in value]

    @field_validator("slack")
    @classmethod
    def _slack(cls, value: list[str]) -> list[str]:
        for target in value:
            if is_webhook(target):
                _check_webhook(target)
            elif not _SLACK_CHANNEL.match(target):
                raise ValueError(
                    f"{target!r} is not a Slack channel; expected '#channel-name', a channel ID like C0123ABCD, "
                    "or an incoming-webhook https:// URL"
                )
        return value

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        """Each category as arXiv spells it (``cs.dc`` is ``cs.DC``); one arXiv does not have is refused, with the
        closest real one, because its feed would answer 404 at every poll."""
        spelled = []
        for category in value:
            real = canonical(category)
            if real is None:
                guess = closest(category) if _CATEGORY.match(category) else None
                hint = f"did you mean {guess}?" if guess else "the categories are listed at arxiv.org/category_taxonomy"
                raise ValueError(f"{category!r} is not an arXiv category; {hint}")
            spelled.append(real)
        return spelled

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        Schedule.parse(value)
        return value


def is_webhook(target: str) -> bool:
    """Whether a Slack target is an incoming-webhook URL (http or https), not a channel name or ID. Where a
    webhook may post is the daemon's decision when it sends (``notifier.channels.webhooks``)."""
    return target[:8].lower().startswith(("https://", "http://"))


def _check_webhook(url: str) -> None:
    """Refuse an incoming-webhook URL that no request could be made to. Which hosts a webhook may post to is the
    daemon's decision when it sends (``NOTIFIER_WEBHOOK_HOSTS``), not the file's."""
    if found := _control_character(url):
        raise ValueError(f"a webhook URL may not contain control characters (found {found})")
    if any(ch.isspace() for ch in url):
        raise ValueError("a webhook URL may not contain spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a webhook URL: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"{url!r} is not a webhook URL: it names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r} is not a webhook URL: it may not carry a user name or password")
    if port == 0:
        raise ValueError(f"{url!r} is not a webhook URL: port 0")


class SubscriberModel(SubscriberFields):
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a valid name: use letters, digits, '.', '_' and '-' (at most 64)")
        return value


class FileModel(_Strict):
    defaults: SubscriberFields | None = None
    subscribers: list[dict[str, Any]] = []


@dataclass(frozen=True, slots=True)
class Similar:
    """A rule's ``similar:``: the papers most like the subscriber's own, best first."""

    top: int | None = 10  # at most this many papers; None: every paper over min_score
    min_score: float | None = None  # 0..1; None: no threshold


@dataclass(frozen=True, slots=True)
class BibReference:
    """An entry of a BibTeX file that names no arXiv id: found on arXiv by its DOI, else by its title."""

    key: str  # the BibTeX key
    doi: str | None
    title: str | None
    where: str  # "lab.bib:12", for messages


@dataclass(frozen=True, slots=True)
class Likes:
    """The papers a subscriber's ``like:`` (or ``dislike:``) entries name, before they are looked up on arXiv."""

    arxiv_ids: tuple[str, ...] = ()  # without version: "2401.01234", "math/0601001"
    authors: tuple[str, ...] = ()  # as written in au:"..."; their papers are fetched through the arXiv API
    references: tuple[BibReference, ...] = ()  # BibTeX entries without an arXiv id

    def __bool__(self) -> bool:
        return bool(self.arxiv_ids or self.authors or self.references)


@dataclass(frozen=True, slots=True)
class Rule:
    key: str  # "<subscriber>/<index>", unique in a Config
    name: str
    query: str  # "" for a rule that only ranks (similar: without query:)
    summaries: bool = False  # its section shows rich entries: each paper with its LLM summary and tags
    similar: Similar | None = None  # ranks by similarity to the subscriber's likes (and filters, with a query)


@dataclass(frozen=True, slots=True)
class Subscriber:
    name: str
    emails: tuple[str, ...]
    slack: tuple[str, ...]
    categories: tuple[str, ...]
    schedule: Schedule
    announce_types: frozenset[str]
    rules: tuple[Rule, ...]
    send_empty: bool
    line: int
    likes: Likes = Likes()
    dislikes: Likes = Likes()
    sort: Literal["announced", "relevance"] = "announced"

    @property
    def ranks(self) -> bool:
        """Whether its digest needs similarity scores: a rule with ``similar:``, or ``sort: relevance``."""
        return self.sort == "relevance" or any(rule.similar is not None for rule in self.rules)

    @property
    def feed_key(self) -> str:
        """The category set this subscriber reads: its categories, deduplicated and sorted, joined by '+'; the
        store composes it from the categories' feeds (:meth:`notifier.store.Store.candidates`)."""
        return feed_key(self.categories)

    def recipients(self) -> list[tuple[ChannelKind, str]]:
        """(channel, recipient) pairs, each its own delivery."""
        return [("email", address) for address in self.emails] + [("slack", target) for target in self.slack]


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    subscribers: tuple[Subscriber, ...]
    rules: RuleSet
    warnings: tuple[str, ...] = ()
    comment_rules: frozenset[str] = frozenset()  # keys of rules that read the comment (co:), known only from the API

    def subscriber(self, name: str) -> Subscriber:
        for subscriber in self.subscribers:
            if subscriber.name == name:
                return subscriber
        known = ", ".join(s.name for s in self.subscribers) or "none"
        raise ConfigError(f"no subscriber named {name!r} in {self.path} (known: {known})")

    @property
    def feed_keys(self) -> list[str]:
        """The distinct category sets subscribers read (``cs.AI+cs.LG``); what is polled is :attr:`categories`."""
        return sorted({s.feed_key for s in self.subscribers})

    @property
    def categories(self) -> list[str]:
        """Every category some subscriber follows, sorted: what is polled, one feed each, so the number of requests
        is bounded by arXiv's taxonomy, however many subscribers combine them."""
        return sorted({category for s in self.subscribers for category in s.categories})


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and compile ``path``. Raises :class:`ConfigError` naming file, line and column.

    At most :data:`~notifier.config.yaml_source.MAX_FILE_BYTES` are read, whatever the file is.
    """
    return parse_config(read_text(path), path, os.environ if environ is None else environ)


def parse_config(text: str, path: Path, environ: Mapping[str, str]) -> Config:
    """Validate and compile the text of ``path``.

    A large file makes millions of short-lived objects (YAML nodes, models, syntax trees), few of them in cycles:
    the cycle collector would only rescan them, so it is paused meanwhile (it halves the time at 10,000
    subscribers).

    Anything but a :class:`ConfigError` raised meanwhile is a failure of this module, not of the file: it is
    logged with its traceback and raised as a :class:`ConfigError` naming the file, so a caller keeps its last
    good config either way.
    """
    if len(text) > MAX_FILE_BYTES:
        raise too_large(path)
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _parse_config(text, path, environ)
    except ConfigError:
        raise
    except Exception as exc:
        log.error("unexpected failure while loading %s", path, exc_info=True)
        raise ConfigError(
            f"the file could not be loaded ({type(exc).__name__}); the log has the details", file=str(path)
        ) from exc
    finally:
        if collecting:
            gc.enable()


def _kept_place(path: Path_) -> bool:
    """The places kept while a file is read: its sections, each subscriber's and each query's (for warnings). Any
    other place is found when an error needs it."""
    return len(path) <= 2 or path[-1] == "query"


def _parse_config(text: str, path: Path, environ: Mapping[str, str]) -> Config:
    source = YamlSource(str(path), environ, _YAML_LOADER, remember=_kept_place)
    data = source.load(text)
    try:
        document = FileModel.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(source, exc, ()) from None
    defaults = document.defaults.model_dump(exclude_unset=True) if document.defaults else {}
    subscribers: list[Subscriber] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(document.subscribers):
        where: Path_ = ("subscribers", index)
        merged = {**defaults, **raw}
        try:
            model = SubscriberModel.model_validate(merged)
        except ValidationError as exc:
            raise _validation_error(source, exc, where, defaults, raw) from None
        line = source.line_of(where)
        if model.name in seen:
            raise source.error(
                f"duplicate subscriber name {model.name!r} (first at line {seen[model.name]})", (*where, "name")
            )
        seen[model.name] = line
        subscribers.append(_subscriber(model, source, where, line))
    rules = [(rule.key, rule.name, rule.query) for s in subscribers for rule in s.rules if rule.query]
    notes: dict[str, tuple[list[str], bool]] = {}  # query -> its warnings, and whether it reads the comment

    def inspect(query: str, tree: Node) -> None:
        terms = iter_terms(tree)
        reads_comment = any(term.field is PaperField.COMMENT for term, _negated in terms)
        notes[query] = (query_warnings(tree, terms), reads_comment)

    def counted(progress: Progress) -> Iterator[tuple[str, str, str]]:
        for rule in rules:
            yield rule
            progress.advance()

    try:
        with Progress("compiling", len(rules), unit="rules") as progress:
            rule_set = RuleSet.compile(counted(progress), inspect)
    except QuerySyntaxError as exc:
        raise _query_error(source, exc, subscribers) from None
    warnings: list[str] = []
    comment_rules: set[str] = set()
    for i, subscriber in enumerate(subscribers):
        for j, rule in enumerate(subscriber.rules):
            if not rule.query:
                continue
            found, reads_comment = notes[rule.query]
            owner = _rule_owner(subscriber.name, j, rule.name)
            where = ("subscribers", i, "rules", j, "query")
            line, column, offset = source.position(where) or (source.line_of(where), 1, None)
            warnings.extend(f"{path}:{line}: {owner}: {warning}" for warning in found)
            lowered = lowercase_operators(rule.query)
            if lowered is not None:
                (_first, at), *_ = lowered[0]
                place = f"{line}:{column + offset + at - 1}" if offset is not None else f"{line}"
                words = ", ".join(f"'{w}'" for w in dict.fromkeys(w for w, _ in lowered[0]))
                warnings.append(
                    f"{path}:{place}: {owner}: {words} in lower case is searched for as a word; operators are written"
                    f" in upper case: {lowered[1]!r}"
                )
            if reads_comment:
                comment_rules.add(rule.key)
    return Config(
        path=path,
        subscribers=tuple(subscribers),
        rules=rule_set,
        warnings=tuple(warnings),
        comment_rules=frozenset(comment_rules),
    )


def _likes(entries: list[str], source: YamlSource, where: Path_) -> Likes:
    """The papers ``like:`` (or ``dislike:``) entries name; a BibTeX file is read now, relative to the config."""
    ids: list[str] = []
    authors: list[str] = []
    references: list[BibReference] = []
    for index, text in enumerate(entries):
        entry = read_entry(text)
        if entry.arxiv_id:
            ids.append(entry.arxiv_id)
        elif entry.author:
            authors.append(entry.author)
        elif entry.bib_file is not None:
            path = entry.bib_file if entry.bib_file.is_absolute() else Path(source.file).parent / entry.bib_file
            try:
                found, rest = bib_entries(read_bib(path))
            except BibError as exc:
                if exc.line is None:
                    raise source.error(f"{entry.bib_file}: {exc}", (*where, index)) from None
                raise ConfigError(str(exc), file=str(path), line=exc.line) from None
            ids.extend(found)
            references.extend(BibReference(e.key, e.doi, e.title, f"{path.name}:{e.line}") for e in rest)
    return Likes(tuple(dict.fromkeys(ids)), tuple(dict.fromkeys(authors)), tuple(references))


def _subscriber(model: SubscriberModel, source: YamlSource, where: Path_, line: int) -> Subscriber:
    if not model.email and not model.slack:
        raise source.error(f"subscriber {model.name!r} needs at least one of 'email' or 'slack'", where)
    if not model.rules:
        raise source.error(f"subscriber {model.name!r} needs at least one rule under 'rules'", where)
    if not model.categories:
        raise source.error(f"subscriber {model.name!r} needs 'categories', e.g. [cs.DC]", where)
    ranked = [j for j, rule in enumerate(model.rules) if rule.similar is not None]
    if (ranked or model.sort == "relevance") and not model.like:
        what = f"rule {ranked[0] + 1} has 'similar'" if ranked else "'sort: relevance'"
        place = (*where, "rules", ranked[0], "similar") if ranked else (*where, "sort")
        raise source.error(
            f"subscriber {model.name!r}: {what}, which ranks papers by how much they look like yours, so it needs"
            " 'like:' entries (arXiv ids, au:\"Name\" or a .bib file)",
            place,
        )
    names = [rule.name for rule in model.rules]
    for j, name in enumerate(names):
        if names.index(name) != j:
            raise source.error(
                f"duplicate rule name {name!r} in subscriber {model.name!r}", (*where, "rules", j, "name")
            )
    emails: dict[str, str] = {}  # one delivery per mailbox, however its address is spelt
    for address in model.email:
        emails.setdefault(address_key(address), address)
    return Subscriber(
        name=model.name,
        emails=tuple(emails.values()),
        slack=tuple(dict.fromkeys(model.slack)),
        categories=tuple(dict.fromkeys(model.categories)),
        schedule=Schedule.parse(model.schedule),
        announce_types=frozenset(model.announce_types),
        rules=tuple(
            Rule(
                key=f"{model.name}/{j}",
                name=r.name,
                query=r.query or "",
                summaries=model.summaries if r.summaries is None else r.summaries,
                similar=None if r.similar is None else Similar(r.similar.top, r.similar.min_score),
            )
            for j, r in enumerate(model.rules)
        ),
        send_empty=model.send_empty,
        line=line,
        likes=_likes(model.like, source, (*where, "like")),
        dislikes=_likes(model.dislike, source, (*where, "dislike")),
        sort=model.sort,
    )


def _validation_error(
    source: YamlSource,
    exc: ValidationError,
    base: Path_,
    defaults: Mapping[str, object] | None = None,
    raw: Mapping[str, object] | None = None,
) -> ConfigError:
    """The first of pydantic's errors, at its place, in our words: who it is about (the subscriber by name, the
    rule by number from 1 and by name), the key, and what is wrong with it. Never the input it quotes: that could
    be a value taken from the environment."""
    errors = exc.errors(include_input=False, include_url=False)
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        key = str(loc[-1])
        path: Path_ = (*base, *loc, "<key>")
        where = (*base, *loc[:-1])
        message = f"unknown key {key!r}; known keys: {_known_keys(where)}"
        owner, _field = _owner((*base, *loc[:-1]), raw)
    elif first["type"] == "missing":
        path = (*base, *loc[:-1])
        message = f"missing required key {str(loc[-1])!r}"
        owner, _field = _owner(path, raw)
    else:
        path = (*base, *loc)
        if defaults and loc and loc[0] in defaults and source.position((*base, loc[0])) is None:
            path = ("defaults", *loc)
        owner, field = _owner(path, raw)
        message = f"{field}: {_reason(first)}" if field else _reason(first)
    return source.error(f"{owner}: {message}" if owner else message, path)


def _owner(path: Path_, raw: Mapping[str, object] | None) -> tuple[str, str]:
    """Whom ``path`` is about ("subscriber 'lab', rule 2 'fast'", "defaults"), and the key in it ("query")."""
    owner, rest = "", list(path)
    if rest[:1] == ["defaults"]:
        owner, rest = "defaults", rest[1:]
    elif rest[:1] == ["subscribers"] and len(rest) >= 2:
        name = raw.get("name") if raw is not None else None
        owner = f"subscriber {name!r}" if isinstance(name, str) and name else f"subscriber {int(rest[1]) + 1}"
        rest = rest[2:]
    if rest[:1] == ["rules"] and len(rest) >= 2:
        number = int(rest[1])
        rules = raw.get("rules") if raw is not None else None
        rule = rules[number] if isinstance(rules, list) and number < len(rules) else None
        rule_name = rule.get("name") if isinstance(rule, dict) else None
        label = f"rule {number + 1}" + (f" {rule_name!r}" if isinstance(rule_name, str) and rule_name else "")
        owner = f"{owner}, {label}" if owner else label
        rest = rest[2:]
    field = ".".join(str(part) for part in rest if isinstance(part, str) and part != "<key>")
    return owner, field


def _rule_owner(subscriber: str, index: int, rule: str) -> str:
    return f"subscriber {subscriber!r}, rule {index + 1} {rule!r}"


def _reason(error: Mapping[str, Any]) -> str:
    """What is wrong with a value, in our words: pydantic's messages are written for programmers."""
    kind = error["type"]
    context = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        return str(context.get("error") or error["msg"]).removeprefix("Value error, ")
    if kind in ("string_too_short", "too_short"):
        return "may not be empty"
    if kind == "string_too_long":
        return f"is longer than {int(context.get('max_length', 0)):,} characters, the limit"
    if kind == "too_long":
        return f"has more than {int(context.get('max_length', 0)):,} entries, the limit"
    if kind == "string_type":
        return "must be text (put it in quotes if it reads as a number, a date or true/false)"
    if kind == "list_type":
        return "must be a list, such as [a, b]"
    if kind in ("bool_type", "bool_parsing"):
        return "must be true or false"
    if kind == "literal_error":
        return f"must be {context.get('expected', 'one of the documented values')}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return "must be a mapping of keys to values"
    if kind.startswith(("int_", "float_")):
        return "must be a number"
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {context.get(key)}"
    return "is not a valid value here"


def _query_error(source: YamlSource, exc: QuerySyntaxError, subscribers: list[Subscriber]) -> ConfigError:
    key = getattr(exc, "key", "")
    for i, subscriber in enumerate(subscribers):
        for j, rule in enumerate(subscriber.rules):
            if rule.key == key:
                path: Path_ = ("subscribers", i, "rules", j, "query")
                line, column, offset = source.position(path) or (1, 1, None)
                if offset is not None:
                    column += exc.query_column - 1 + offset
                return source.error_at(
                    f"{_rule_owner(subscriber.name, j, rule.name)}: {exc.message} (query column {exc.query_column})",
                    line,
                    column,
                )
    return source.error_at(exc.message)


def _known_keys(where: Path_) -> str:
    model: type[BaseModel] = FileModel
    if where[-1:] == ("similar",):
        model = SimilarModel
    elif "rules" in where:
        model = RuleModel
    elif where[:1] == ("subscribers",):
        model = SubscriberModel
    elif where[:1] == ("defaults",):
        model = SubscriberFields
    return ", ".join(sorted(model.model_fields))
