"""subscribers.yaml as text -> plain data that remembers where each value stood, within explicit bounds.

The file is edited by hand, and perhaps with intent, so reading it is bounded before it can cost much: its size
(:data:`MAX_FILE_BYTES`, checked before anything is parsed), how deep values nest (:data:`MAX_NESTING`), and how
many values aliases repeat (:data:`MAX_ALIAS_VALUES`, counted while the nodes are converted, so an alias bomb stops
early); an alias inside the value it names, a tag other than YAML's standard ones, or a value that does not read as
its tag says is an error. Every error is a :class:`~notifier.errors.ConfigError` at its ``file:line:column``.

``${VAR}`` takes a value from the environment, never one of the daemon's own ``NOTIFIER_*`` settings; the values
taken are remembered, so that an error shows them as their ``${VAR}``, never as themselves.
"""

from __future__ import annotations

import copy
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import yaml

from notifier.errors import ConfigError

MAX_FILE_BYTES = 64 * 2**20  # a file of 100,000 subscribers with five rules each is about 40 MB
MAX_NESTING = 20  # mappings and lists inside one another; subscribers.yaml itself needs 5
MAX_ALIAS_VALUES = 100_000  # values that aliases (*name) repeat, in the whole file
MAX_MESSAGE = 400  # characters of an error message; a huge quoted value is cut short

# libyaml's parser, when PyYAML was built with it, composes a large file about ten times faster.
YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_OWN_SETTINGS = "NOTIFIER_"
_YAML_TAGS = "tag:yaml.org,2002:"
_COLLECTION_TAGS = (_YAML_TAGS + "map", _YAML_TAGS + "seq")
_STR_TAG = _YAML_TAGS + "str"

Path_ = tuple[str | int, ...]  # where a value stands: keys and list indices from the top of the file
Position = tuple[int, int, int | None]  # line, column, and where a one-line scalar's text starts (see _text_offset)
# Resolver.resolve: the tag a value implies.
_Resolve = Callable[[type[yaml.Node], str | None, object], str]


def read_text(path: Path) -> str:
    """The text of ``path``, read only up to :data:`MAX_FILE_BYTES` whatever the file is (a device or a pipe that
    never ends included). Raises :class:`ConfigError`: not found, unreadable, too large, or not UTF-8 (at the
    byte's line and column)."""
    try:
        with path.open("rb") as file:
            data = read_bounded(file, MAX_FILE_BYTES)
    except FileNotFoundError as exc:
        raise ConfigError(
            "subscribers file not found (set NOTIFIER_SUBSCRIBERS or --subscribers)", file=str(path)
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the subscribers file: {exc}", file=str(path)) from exc
    if data is None:
        raise too_large(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line_start = before.rfind(b"\n") + 1
        raise ConfigError(
            f"the file is not UTF-8 text: byte 0x{data[exc.start]:02X} cannot start or continue a character",
            file=str(path),
            line=before.count(b"\n") + 1,
            column=len(before[line_start:].decode("utf-8", "replace")) + 1,
        ) from None


def read_bounded(file: BinaryIO, limit: int) -> bytes | None:
    """The content of ``file``; None when it is larger than ``limit`` bytes (a regular file is not read then,
    anything else is read only that far: a device or a pipe may never end)."""
    status = os.fstat(file.fileno())
    if stat.S_ISREG(status.st_mode):
        if status.st_size > limit:
            return None
        data = file.read()
        return data if len(data) <= limit else None
    chunks: list[bytes] = []
    total = 0
    while total <= limit and (chunk := file.read(min(2**20, limit + 1 - total))):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks) if total <= limit else None


def too_large(path: Path) -> ConfigError:
    """The error for a file over :data:`MAX_FILE_BYTES`."""
    return ConfigError(
        f"the subscribers file is larger than {MAX_FILE_BYTES // 2**20} MiB ({MAX_FILE_BYTES:,} bytes), the limit",
        file=str(path),
    )


class YamlSource:
    """Turns YAML text into plain data while remembering where every value stood.

    The text is read as libyaml's stream of parse events, and the data built from them as they come: no tree of
    nodes is kept (for a large file it would take several times the memory of the data). Anchors keep the value
    they name; an alias repeats a copy of it. The limits are ours: nesting (:data:`MAX_NESTING`), recursive
    aliases, and values repeated through aliases (:data:`MAX_ALIAS_VALUES`, counted before anything is copied).
    Values interpolated from ``${VAR}`` are remembered, so that no message shows them.

    With ``remember``, only the places of the paths it accepts are kept while reading (a file of 100,000
    subscribers has millions of values, whose places are needed only for an error); the first error or look-up of a
    place not kept reads the text again, keeping every place.
    """

    def __init__(
        self,
        file: str,
        environ: Mapping[str, str],
        loader: type[yaml.SafeLoader] = YAML_LOADER,
        remember: Callable[[Path_], bool] | None = None,
    ):
        self.file = file
        self.environ = environ
        self.loader = loader
        self._remember = remember
        # path -> (line, column, where a one-line scalar's text starts after the column: 1 if quoted; else None)
        self._positions: dict[Path_, Position] = {}
        self._order: list[Path_] = []  # the paths of ``positions`` in document order (an anchored value's are a run)
        self._scalars = yaml.constructor.SafeConstructor()
        self._resolve = cast(_Resolve, yaml.resolver.Resolver().resolve)
        self._text = ""
        self._anchors: dict[str, _Anchor | yaml.Event] = {}  # the value's first event while it is being read
        self._values = 0  # values read from the text (an anchored value's count is the difference)
        self._copies = 0  # values repeated through aliases
        self._references: dict[str, str] = {}  # a value taken from the environment -> how it was written, ${VAR}

    def load(self, text: str) -> object:
        self._text = text
        try:
            return self._document(iter(yaml.parse(text, Loader=self.loader)))
        except yaml.MarkedYAMLError as exc:
            raise self._syntax_error(exc) from None
        except yaml.reader.ReaderError as exc:
            raise self._at_index(
                text.find(chr(exc.character)),
                f"invalid YAML: the character U+{exc.character:04X} may not appear in a YAML file "
                '(write it as an escape such as "\\t" inside double quotes)',
            ) from None
        except yaml.YAMLError as exc:
            raise self.error_at(f"invalid YAML: {exc}") from None
        except UnicodeError as exc:  # lone surrogates: a str that was not decoded from a file
            start = exc.start if isinstance(exc, UnicodeEncodeError) else -1
            raise self._at_index(start, "the text is not valid Unicode") from None
        finally:
            self._anchors.clear()  # they hold values that the data may no longer need

    def _document(self, events: Iterator[yaml.Event]) -> object:
        """The data of the one document of the stream (an empty stream is an error that says so)."""
        next(events)  # the stream's start
        started = next(events)
        if isinstance(started, yaml.StreamEndEvent):
            raise self.error_at(
                "the subscribers file is empty; it needs a 'subscribers:' list (the README shows one, and"
                " `notifier demo` runs with an example)",
                1,
                1,
            )
        root = next(events)
        if not isinstance(root, yaml.MappingStartEvent):
            raise self._at(root, "the file must be a mapping with 'subscribers:' (and optionally 'defaults:')")
        data = self._value(root, events, (), 0, root)
        next(events)  # the document's end
        after = next(events)
        if not isinstance(after, yaml.StreamEndEvent):
            raise yaml.composer.ComposerError(
                "expected a single document in the stream",
                _start(started),
                "but found another document",
                _start(after),
            )
        return data

    def _value(
        self, event: yaml.Event, events: Iterator[yaml.Event], path: Path_, depth: int, parent: yaml.Event
    ) -> object:
        """The data of the value that starts with ``event``, at ``path``, ``depth`` levels down in ``parent``."""
        if isinstance(event, yaml.AliasEvent):
            return self._repeat(event, path, parent)
        first, values = len(self._order), self._values
        self._place(path, event)
        self._values += 1
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            self._anchors[anchor] = event
        result: object
        if isinstance(event, yaml.ScalarEvent):
            result = self._scalar(event)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            result = self._collection(event, events, path, depth)
        else:
            raise self._at(event, "unexpected YAML here")
        if anchor is not None:
            self._anchors[anchor] = _Anchor(result, path, first, len(self._order), self._values - values)
        return result

    def _collection(
        self,
        event: yaml.MappingStartEvent | yaml.SequenceStartEvent,
        events: Iterator[yaml.Event],
        path: Path_,
        depth: int,
    ) -> object:
        mapping = isinstance(event, yaml.MappingStartEvent)
        tag = event.tag
        if tag is None or tag == "!":
            tag = self._resolve(yaml.MappingNode if mapping else yaml.SequenceNode, None, event.implicit)
        if tag not in _COLLECTION_TAGS:
            raise self._at(event, f"YAML tag {_shown_tag(tag)} is not supported; remove it")
        if depth >= MAX_NESTING:
            raise self._at(event, f"values are nested more than {MAX_NESTING} levels deep here")
        if not mapping:
            items: list[object] = []
            while not isinstance(item := next(events), yaml.SequenceEndEvent):
                items.append(self._value(item, events, (*path, len(items)), depth + 1, event))
            return items
        result: dict[str, object] = {}
        while not isinstance(key_event := next(events), yaml.MappingEndEvent):
            key = self._key(key_event)
            if key in result:
                raise self._at(key_event, f"duplicate key {key!r}")
            result[key] = self._value(next(events), events, (*path, key), depth + 1, event)
            mark = _start(key_event)
            self._place((*path, key, "<key>"), key_event, (mark.line + 1, mark.column + 1, None))
        return result

    def _key(self, event: yaml.Event) -> str:
        """A mapping's key: a plain scalar with a standard tag (or an alias of one)."""
        if isinstance(event, yaml.AliasEvent):
            named = self._anchors.get(event.anchor or "")
            if isinstance(named, _Anchor) and isinstance(named.value, str):
                return named.value
            raise self._at(event, "keys must be plain words")
        if not isinstance(event, yaml.ScalarEvent):
            raise self._at(event, "keys must be plain words")
        tag = self._tag(event)
        if not tag.startswith(_YAML_TAGS):
            raise self._at(event, f"YAML tag {_shown_tag(tag)} is not supported; remove it")
        if event.anchor is not None:
            self._anchors[event.anchor] = _Anchor(event.value, (), len(self._order), len(self._order), 1)
        return event.value

    def _repeat(self, event: yaml.AliasEvent, path: Path_, parent: yaml.Event) -> object:
        """What an alias stands for: a copy of the value its anchor names, with that value's positions."""
        anchor = event.anchor or ""
        if anchor not in self._anchors:
            raise yaml.composer.ComposerError(None, None, f"found undefined alias {anchor!r}", _start(event))
        named = self._anchors[anchor]
        if not isinstance(named, _Anchor):
            raise self._at(named, "an alias inside this value refers to the value itself (a recursive alias)")
        self._copies += named.values
        self._values += named.values  # the value holding the alias holds them too, should it be repeated in turn
        if self._copies > MAX_ALIAS_VALUES:
            raise self._at(
                parent,
                f"the aliases in this value take the file past {MAX_ALIAS_VALUES:,} values repeated through "
                "aliases; write the values out, or share them through 'defaults:'",
            )
        cut = len(named.path)
        for at in self._order[named.first : named.last]:
            self._place((*path, *at[cut:]), None, self._positions[at])
        return copy.deepcopy(named.value)

    def _place(self, path: Path_, event: yaml.Event | None, position: Position | None = None) -> None:
        """Remember where the value at ``path`` stands: ``position``, or where ``event`` starts."""
        if self._remember is not None and not self._remember(path):
            return
        if position is None:
            assert event is not None
            mark = _start(event)
            position = (mark.line + 1, mark.column + 1, _text_offset(event))
        self._positions[path] = position
        self._order.append(path)

    def _tag(self, event: yaml.ScalarEvent) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self._resolve(yaml.ScalarNode, event.value, event.implicit)
        return tag

    def _scalar(self, event: yaml.ScalarEvent) -> object:
        tag = self._tag(event)
        if tag == _STR_TAG:  # most values: what the constructor would return, without calling it
            text: str = event.value
            return self._substitute(text, event) if "${" in text else text
        if not tag.startswith(_YAML_TAGS):
            raise self._at(event, f"YAML tag {_shown_tag(tag)} is not supported; remove it")
        node = yaml.ScalarNode(tag, event.value, _start(event), cast(yaml.Mark, event.end_mark), event.style)
        try:
            value = self._scalars.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else str(exc)
            raise self._at(event, f"cannot read this value as {_shown_tag(tag)}: {problem}") from None
        finally:
            self._scalars.constructed_objects.clear()  # scalars are never shared: keep no node alive
            self._scalars.recursive_objects.clear()
        if isinstance(value, str) and "${" in value:
            return self._substitute(value, event)
        return value

    def _substitute(self, value: str, node: yaml.ScalarEvent) -> str:
        def replace(found: re.Match[str]) -> str:
            name, reference = found.group(1), found.group()
            if name.upper().startswith(_OWN_SETTINGS):
                raise self._at(
                    node,
                    f"{reference}: the daemon's own settings cannot be used in subscribers.yaml",
                    self._reference_column(node, found),
                )
            if name not in self.environ:
                raise self._at(node, f"environment variable {name} is not set (referenced as {reference})")
            secret = self.environ[name]
            self._references.setdefault(secret, reference)
            return secret

        return _ENV_REF.sub(replace, value)

    def _reference_column(self, node: yaml.ScalarEvent, found: re.Match[str]) -> int:
        """The column of the reference ``found`` in a one-line scalar written as it reads; else the scalar's."""
        column: int = _start(node).column + 1
        offset = _text_offset(node)
        if offset is not None:
            start = _start(node).index + offset + found.start()
            if self._text[start : start + len(found.group())] == found.group():
                column += offset + found.start()
        return column

    def _syntax_error(self, exc: yaml.MarkedYAMLError) -> ConfigError:
        """A YAML syntax error at the place of the mistake, with both of the parser's places when they differ.

        The problem mark is where the parser gave up, often the line after the mistake; the context mark is where
        the construct it was reading began. For a quote or bracket left open, that start is the mistake, so the
        error is placed there; otherwise at the problem, with the context's start in the message.
        """
        problem, context = exc.problem_mark, exc.context_mark
        what = exc.problem or exc.context or "invalid YAML"
        if context is None or not exc.context or (problem is not None and _same_place(problem, context)):
            mark = problem or context
            return self.error_at(
                f"invalid YAML: {what}", mark.line + 1 if mark else None, mark.column + 1 if mark else None
            )
        if problem is None:
            return self.error_at(f"invalid YAML: {exc.context}", context.line + 1, context.column + 1)
        if exc.context.startswith(("while scanning", "while parsing a flow")):
            return self.error_at(
                f"invalid YAML: {what} at line {problem.line + 1}, column {problem.column + 1}, {exc.context} that"
                " starts here",
                context.line + 1,
                context.column + 1,
            )
        return self.error_at(
            f"invalid YAML: {what} ({exc.context} that starts at line {context.line + 1}, column {context.column + 1})",
            problem.line + 1,
            problem.column + 1,
        )

    def _message(self, message: str) -> str:
        """``message`` with each value taken from the environment shown as its ``${VAR}``, cut to a readable
        length."""
        for secret, reference in sorted(self._references.items(), key=lambda item: -len(item[0])):
            if len(secret) >= 3:
                message = message.replace(secret, reference).replace(repr(secret)[1:-1], reference)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 1] + "…"
        return message

    def error_at(self, message: str, line: int | None = None, column: int | None = None) -> ConfigError:
        """A ConfigError at ``line`` and ``column`` of the file, its message shown as :meth:`_message` says."""
        return ConfigError(self._message(message), file=self.file, line=line, column=column)

    def _at(self, node: yaml.Event, message: str, column: int | None = None) -> ConfigError:
        return self.error_at(message, _start(node).line + 1, column or _start(node).column + 1)

    def _at_index(self, index: int, message: str) -> ConfigError:
        """An error at character ``index`` of the text (-1: somewhere in it)."""
        if index < 0:
            return self.error_at(message)
        line_start = self._text.rfind("\n", 0, index) + 1
        return self.error_at(message, self._text.count("\n", 0, index) + 1, index - line_start + 1)

    def position(self, path: Path_) -> Position | None:
        """Where the value at ``path`` stands; None if the file has no value there."""
        found = self._positions.get(path)
        if found is None and self._remember is not None:
            self._read_every_place()
            found = self._positions.get(path)
        return found

    def _read_every_place(self) -> None:
        """Read the text again, keeping the place of every value (the text read without error before)."""
        every = YamlSource(self.file, self.environ, self.loader)
        every.load(self._text)
        self._positions, self._order, self._remember = every._positions, every._order, None

    def _nearest(self, path: Path_) -> Position:
        """The place of the value at ``path``, or of the nearest value above it that the file has."""
        while path:
            found = self.position(path)
            if found is not None:
                return found
            path = path[:-1]
        return (1, 1, None)

    def line_of(self, path: Path_) -> int:
        return self._nearest(path)[0]

    def error(self, message: str, path: Path_) -> ConfigError:
        """A ConfigError at the value ``path`` names, or at the nearest value above it that the file has."""
        line, column, _ = self._nearest(path)
        return self.error_at(message, line, column)


def _same_place(one: yaml.Mark, other: yaml.Mark) -> bool:
    return (one.line, one.column) == (other.line, other.column)


def _shown_tag(tag: str) -> str:
    """A tag as it is written: ``!!binary``, ``!foo``."""
    return repr("!!" + tag.removeprefix(_YAML_TAGS) if tag.startswith(_YAML_TAGS) else tag)


def _text_offset(node: yaml.Event) -> int | None:
    """Where a one-line scalar's text starts, after its first column (1 past a quote); None for anything else."""
    if not isinstance(node, yaml.ScalarEvent) or _start(node).line != cast(yaml.Mark, node.end_mark).line:
        return None
    return 1 if node.style in ("'", '"') else 0


@dataclass(frozen=True, slots=True)
class _Anchor:
    """A value an anchor names: the data, its path, the run of ``_order`` holding its positions, and how many values
    it holds (itself included), which each alias of it repeats."""

    value: object
    path: Path_
    first: int
    last: int
    values: int


def _start(event: yaml.Event) -> yaml.Mark:
    """Where ``event`` starts (the parser marks every event it makes)."""
    return cast(yaml.Mark, event.start_mark)
