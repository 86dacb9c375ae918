"""Load and validate ``subscribers.yaml`` into a frozen :class:`Config`.

The file is edited by hand, so every error names ``file:line:column`` and the field: YAML is composed into nodes
(which keep their positions), validated by pydantic models with unknown keys forbidden, and each validation error
is mapped back to the node it came from. Rule queries are compiled here, once, into a :class:`RuleSet`.
"""

from __future__ import annotations

import gc
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from notifier.errors import ConfigError, QuerySyntaxError
from notifier.matching import RuleSet
from notifier.models import Field as PaperField
from notifier.query import Node, iter_terms, query_warnings
from notifier.schedule import Schedule

log = logging.getLogger(__name__)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CATEGORY = re.compile(r"^[a-z][a-z-]*(\.[A-Za-z][A-Za-z-]*)?$")
_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")
_SLACK_CHANNEL = re.compile(r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CGD][A-Z0-9]{6,})$")

Path_ = tuple[str | int, ...]
AnnounceType = Literal["new", "cross", "replace", "replace-cross"]


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class RuleModel(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    query: Annotated[str, Field(min_length=1, max_length=2000)]


class SubscriberFields(_Strict):
    """Every field a subscriber may set; ``defaults`` may set any of them but ``name``."""

    email: Annotated[list[str], BeforeValidator(_one_or_many)] = []
    slack: Annotated[list[str], BeforeValidator(_one_or_many)] = []
    categories: list[str] = []
    schedule: str = "daily 08:00 UTC"
    announce_types: list[AnnounceType] = ["new", "cross"]
    send_empty: bool = False
    rules: list[RuleModel] = []

    @field_validator("email")
    @classmethod
    def _emails(cls, value: list[str]) -> list[str]:
        for address in value:
            if not _EMAIL.match(address):
                raise ValueError(f"{address!r} is not an email address")
        return value

    @field_validator("slack")
    @classmethod
    def _slack(cls, value: list[str]) -> list[str]:
        for target in value:
            if not (target.startswith("https://") or _SLACK_CHANNEL.match(target)):
                raise ValueError(
                    f"{target!r} is not a Slack channel; expected '#channel-name', a channel ID like C0123ABCD, "
                    "or an incoming-webhook https:// URL"
                )
        return value

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: list[str]) -> list[str]:
        for category in value:
            if not _CATEGORY.match(category):
                raise ValueError(f"{category!r} is not an arXiv category such as cs.DC, math or astro-ph.GA")
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        Schedule.parse(value)
        return value


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
class Rule:
    key: str  # "<subscriber>/<index>", unique in a Config
    name: str
    query: str


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

    @property
    def feed_key(self) -> str:
        """The feed this subscriber reads: its categories, deduplicated and sorted, joined by '+'."""
        return feed_key(self.categories)

    @property
    def wants_updates(self) -> bool:
        return bool(self.announce_types & {"replace", "replace-cross"})

    def recipients(self) -> list[tuple[str, str]]:
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
        return sorted({s.feed_key for s in self.subscribers})


def feed_key(categories: tuple[str, ...] | list[str]) -> str:
    return "+".join(sorted(set(categories)))


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, validate and compile ``path``. Raises :class:`ConfigError` naming file, line and column."""
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            "subscribers file not found (set NOTIFIER_SUBSCRIBERS or --subscribers)", file=str(path)
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the subscribers file: {exc}", file=str(path)) from exc
    return parse_config(text, path, environ)


def parse_config(text: str, path: Path, environ: Mapping[str, str]) -> Config:
    """Validate and compile the text of ``path``.

    A large file makes millions of short-lived objects (YAML nodes, models, syntax trees), few of them in cycles:
    the cycle collector would only rescan them, so it is paused meanwhile (it halves the time at 10,000
    subscribers).
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _parse_config(text, path, environ)
    finally:
        if collecting:
            gc.enable()


def _parse_config(text: str, path: Path, environ: Mapping[str, str]) -> Config:
    loader = _Loader(str(path), environ)
    data = loader.load(text)
    try:
        document = FileModel.model_validate(data)
    except ValidationError as exc:
        raise loader.error_from(exc, ()) from None
    defaults = document.defaults.model_dump(exclude_unset=True) if document.defaults else {}
    subscribers: list[Subscriber] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(document.subscribers):
        where: Path_ = ("subscribers", index)
        merged = {**defaults, **raw}
        try:
            model = SubscriberModel.model_validate(merged)
        except ValidationError as exc:
            raise loader.error_from(exc, where, defaults) from None
        line = loader.line_of(where)
        if model.name in seen:
            raise loader.error(
                f"duplicate subscriber name {model.name!r} (first at line {seen[model.name]})", (*where, "name")
            )
        seen[model.name] = line
        subscribers.append(_subscriber(model, loader, where, line))
    rules = [(rule.key, rule.name, rule.query) for s in subscribers for rule in s.rules]
    notes: dict[str, tuple[list[str], bool]] = {}  # query -> its warnings, and whether it reads the comment

    def inspect(query: str, tree: Node) -> None:
        reads_comment = any(term.field is PaperField.COMMENT for term, _negated in iter_terms(tree))
        notes[query] = (query_warnings(tree), reads_comment)

    try:
        rule_set = RuleSet.compile(rules, inspect)
    except QuerySyntaxError as exc:
        raise loader.query_error(exc, subscribers) from None
    warnings: list[str] = []
    comment_rules: set[str] = set()
    for i, subscriber in enumerate(subscribers):
        for j, rule in enumerate(subscriber.rules):
            found, reads_comment = notes[rule.query]
            if found:
                line = loader.line_of(("subscribers", i, "rules", j, "query"))
                warnings.extend(f"{path}:{line}: {warning}" for warning in found)
            if reads_comment:
                comment_rules.add(rule.key)
    return Config(
        path=path,
        subscribers=tuple(subscribers),
        rules=rule_set,
        warnings=tuple(warnings),
        comment_rules=frozenset(comment_rules),
    )


def _subscriber(model: SubscriberModel, loader: _Loader, where: Path_, line: int) -> Subscriber:
    if not model.email and not model.slack:
        raise loader.error(f"subscriber {model.name!r} needs at least one of 'email' or 'slack'", where)
    if not model.rules:
        raise loader.error(f"subscriber {model.name!r} needs at least one rule under 'rules'", where)
    if not model.categories:
        raise loader.error(f"subscriber {model.name!r} needs 'categories', e.g. [cs.DC]", where)
    names = [rule.name for rule in model.rules]
    for j, name in enumerate(names):
        if names.index(name) != j:
            raise loader.error(
                f"duplicate rule name {name!r} in subscriber {model.name!r}", (*where, "rules", j, "name")
            )
    return Subscriber(
        name=model.name,
        emails=tuple(dict.fromkeys(model.email)),
        slack=tuple(dict.fromkeys(model.slack)),
        categories=tuple(dict.fromkeys(model.categories)),
        schedule=Schedule.parse(model.schedule),
        announce_types=frozenset(model.announce_types),
        rules=tuple(Rule(key=f"{model.name}/{j}", name=r.name, query=r.query) for j, r in enumerate(model.rules)),
        send_empty=model.send_empty,
        line=line,
    )


# libyaml's parser, when PyYAML was built with it, composes a large file about ten times faster.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader:
    """Turns YAML text into plain data while remembering where every value stood."""

    def __init__(self, file: str, environ: Mapping[str, str]):
        self.file = file
        self.environ = environ
        # path -> (line, column, where a one-line scalar's text starts after the column: 1 if quoted; else None)
        self.positions: dict[Path_, tuple[int, int, int | None]] = {}
        self._scalars = yaml.constructor.SafeConstructor()

    def load(self, text: str) -> object:
        try:
            node = yaml.compose(text, Loader=_YAML_LOADER)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = exc.problem or exc.context or "invalid YAML"
            raise ConfigError(
                f"invalid YAML: {problem}",
                file=self.file,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            ) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML: {exc}", file=self.file) from None
        if node is None:
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self._at(node, "the file must be a mapping with 'subscribers:' (and optionally 'defaults:')")
        return self._convert(node, ())

    def _convert(self, node: yaml.Node, path: Path_) -> object:
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1, _text_offset(node))
        if isinstance(node, yaml.MappingNode):
            result: dict[str, object] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    raise self._at(key_node, "keys must be plain words")
                if key in result:
                    raise self._at(key_node, f"duplicate key {key!r}")
                result[key] = self._convert(value_node, (*path, key))
                self.positions[(*path, key, "<key>")] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                    None,
                )
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(item, (*path, i)) for i, item in enumerate(node.value)]
        value = self._scalars.construct_object(node, deep=True)
        self._scalars.constructed_objects.clear()  # scalars are never shared: keep no node alive
        if isinstance(value, str):
            return self._substitute(value, node)
        return value

    def _substitute(self, value: str, node: yaml.Node) -> str:
        def replace(found: re.Match[str]) -> str:
            name = found.group(1)
            if name not in self.environ:
                raise self._at(node, f"environment variable {name} is not set (referenced as ${{{name}}})")
            return self.environ[name]

        return _ENV_REF.sub(replace, value)

    def _at(self, node: yaml.Node, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, line=node.start_mark.line + 1, column=node.start_mark.column + 1)

    def line_of(self, path: Path_) -> int:
        while path and path not in self.positions:
            path = path[:-1]
        return self.positions.get(path, (1, 1, None))[0]

    def error(self, message: str, path: Path_) -> ConfigError:
        probe = path
        while probe and probe not in self.positions:
            probe = probe[:-1]
        line, column, _ = self.positions.get(probe, (1, 1, None))
        return ConfigError(message, file=self.file, line=line, column=column)

    def error_from(
        self, exc: ValidationError, base: Path_, defaults: Mapping[str, object] | None = None
    ) -> ConfigError:
        errors = exc.errors()
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = tuple(first["loc"])
        field = ".".join(str(part) for part in loc)
        if first["type"] == "extra_forbidden":
            key = str(loc[-1])
            path: Path_ = (*base, *loc, "<key>")
            where = (*base, *loc[:-1])
            message = f"unknown key {key!r}" + (f" in {_describe(where)}" if where else "")
            message += f"; known keys: {_known_keys(where)}"
        elif first["type"] == "missing":
            path = (*base, *loc[:-1])
            message = f"missing required key {str(loc[-1])!r}" + (f" in {_describe(path)}" if path else "")
        else:
            path = (*base, *loc)
            if defaults and loc and loc[0] in defaults and (*base, loc[0]) not in self.positions:
                path = ("defaults", *loc)
            reason = str(first["msg"]).removeprefix("Value error, ")
            message = f"{field}: {reason}"
        return self.error(message, path)

    def query_error(self, exc: QuerySyntaxError, subscribers: list[Subscriber]) -> ConfigError:
        key = getattr(exc, "key", "")
        for i, subscriber in enumerate(subscribers):
            for j, rule in enumerate(subscriber.rules):
                if rule.key == key:
                    path: Path_ = ("subscribers", i, "rules", j, "query")
                    line, column, offset = self.positions.get(path, (1, 1, None))
                    if offset is not None:
                        column += exc.query_column - 1 + offset
                    return ConfigError(
                        f"rule {rule.name!r} of {subscriber.name!r}: {exc.message} (query column {exc.query_column})",
                        file=self.file,
                        line=line,
                        column=column,
                    )
        return ConfigError(exc.message, file=self.file)


def _text_offset(node: yaml.Node) -> int | None:
    """Where a one-line scalar's text starts, after its first column (1 past a quote); None for anything else."""
    if not isinstance(node, yaml.ScalarNode) or node.start_mark.line != node.end_mark.line:
        return None
    return 1 if node.style in ("'", '"') else 0


def _describe(path: Path_) -> str:
    if path[:1] == ("subscribers",) and len(path) >= 2:
        text = f"subscriber #{int(path[1]) + 1}"
        if len(path) >= 4 and path[2] == "rules":
            text = f"rule #{int(path[3]) + 1} of {text}"
        return text
    return " ".join(str(p) for p in path)


def _known_keys(where: Path_) -> str:
    model: type[BaseModel] = FileModel
    if "rules" in where:
        model = RuleModel
    elif where[:1] == ("subscribers",):
        model = SubscriberModel
    elif where[:1] == ("defaults",):
        model = SubscriberFields
    return ", ".join(sorted(model.model_fields))
