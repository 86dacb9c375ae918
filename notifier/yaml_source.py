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

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

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


def read_text(path: Path) -> str:
    """The text of ``path``, read only up to :data:`MAX_FILE_BYTES` whatever the file is (a device or a pipe that
    never ends included). Raises :class:`ConfigError`: not found, unreadable, too large, or not UTF-8 (at the
    byte's line and column)."""
    try:
        with path.open("rb") as file:
            data = _read_bounded(file)
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


def _read_bounded(file: BinaryIO) -> bytes | None:
    """The content of ``file``; None when it is larger than ``MAX_FILE_BYTES`` (a regular file is not read then,
    anything else is read only that far: a device or a pipe may never end)."""
    status = os.fstat(file.fileno())
    if stat.S_ISREG(status.st_mode):
        if status.st_size > MAX_FILE_BYTES:
            return None
        data = file.read()
        return data if len(data) <= MAX_FILE_BYTES else None
    chunks: list[bytes] = []
    total = 0
    while total <= MAX_FILE_BYTES and (chunk := file.read(min(2**20, MAX_FILE_BYTES + 1 - total))):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks) if total <= MAX_FILE_BYTES else None


def too_large(path: Path) -> ConfigError:
    """The error for a file over :data:`MAX_FILE_BYTES`."""
    return ConfigError(
        f"the subscribers file is larger than {MAX_FILE_BYTES // 2**20} MiB ({MAX_FILE_BYTES:,} bytes), the limit",
        file=str(path),
    )


class YamlSource:
    """Turns YAML text into plain data while remembering where every value stood.

    Composing is libyaml's (it refuses more than 1,000 levels of nesting itself); converting the nodes into data is
    ours, with the limits: nesting (:data:`MAX_NESTING`), recursive aliases, and values repeated through aliases
    (:data:`MAX_ALIAS_VALUES`). Values interpolated from ``${VAR}`` are remembered, so that no message shows them.
    """

    def __init__(self, file: str, environ: Mapping[str, str], loader: type[yaml.SafeLoader] = YAML_LOADER):
        self.file = file
        self.environ = environ
        self.loader = loader
        # path -> (line, column, where a one-line scalar's text starts after the column: 1 if quoted; else None)
        self.positions: dict[Path_, tuple[int, int, int | None]] = {}
        self._scalars = yaml.constructor.SafeConstructor()
        self._text = ""
        self._converted: dict[yaml.Node, bool] = {}  # mapping or list -> converted (False while converting it)
        self._copies = 0  # values converted again because an alias repeats them
        self._copy_site: yaml.Node | None = None  # the mapping or list holding the alias being repeated
        self._references: dict[str, str] = {}  # a value taken from the environment -> how it was written, ${VAR}

    def load(self, text: str) -> object:
        self._text = text
        try:
            node = yaml.compose(text, Loader=self.loader)
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
        except RecursionError:  # the pure-Python composer, when libyaml is missing
            raise self.error_at(f"values are nested too deeply (at most {MAX_NESTING} levels)") from None
        if node is None:
            raise self.error_at(
                "the subscribers file is empty; it needs a 'subscribers:' list (the README shows one, and"
                " `notifier demo` runs with an example)",
                1,
                1,
            )
        if not isinstance(node, yaml.MappingNode):
            raise self._at(node, "the file must be a mapping with 'subscribers:' (and optionally 'defaults:')")
        try:
            return self._convert(node, (), 0, node, False)
        finally:
            self._converted.clear()  # it holds every node: let them go as soon as the data is made

    def _convert(self, node: yaml.Node, path: Path_, depth: int, parent: yaml.Node, copied: bool) -> object:
        """The data of ``node`` at ``path``, ``depth`` levels down in ``parent``; ``copied``: an alias repeats it."""
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1, _text_offset(node))
        if isinstance(node, yaml.ScalarNode):
            if copied:
                self._count_copy()
            if node.tag == _STR_TAG:  # most values: what the constructor would return, without calling it
                text: str = node.value
                return self._substitute(text, node) if "${" in text else text
            return self._scalar(node)
        if node.tag not in _COLLECTION_TAGS:
            raise self._at(node, f"YAML tag {_shown_tag(node.tag)} is not supported; remove it")
        if depth >= MAX_NESTING:
            raise self._at(node, f"values are nested more than {MAX_NESTING} levels deep here")
        state = self._converted.get(node)
        if state is False:
            raise self._at(node, "an alias inside this value refers to the value itself (a recursive alias)")
        if state is True and not copied:
            copied = True
            self._copy_site = parent
        if copied:
            self._count_copy()
        else:
            self._converted[node] = False
        result: object
        if isinstance(node, yaml.MappingNode):
            mapping: dict[str, object] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self._at(key_node, "keys must be plain words")
                if not key_node.tag.startswith(_YAML_TAGS):
                    raise self._at(key_node, f"YAML tag {_shown_tag(key_node.tag)} is not supported; remove it")
                key = key_node.value
                if key in mapping:
                    raise self._at(key_node, f"duplicate key {key!r}")
                mapping[key] = self._convert(value_node, (*path, key), depth + 1, node, copied)
                self.positions[(*path, key, "<key>")] = (
                    key_node.start_mark.line + 1,
                    key_node.start_mark.column + 1,
                    None,
                )
            result = mapping
        else:
            result = [self._convert(item, (*path, i), depth + 1, node, copied) for i, item in enumerate(node.value)]
        if not copied:
            self._converted[node] = True
        return result

    def _count_copy(self) -> None:
        self._copies += 1
        if self._copies > MAX_ALIAS_VALUES:
            assert self._copy_site is not None
            raise self._at(
                self._copy_site,
                f"the aliases in this value take the file past {MAX_ALIAS_VALUES:,} values repeated through "
                "aliases; write the values out, or share them through 'defaults:'",
            )

    def _scalar(self, node: yaml.Node) -> object:
        if not node.tag.startswith(_YAML_TAGS):
            raise self._at(node, f"YAML tag {_shown_tag(node.tag)} is not supported; remove it")
        try:
            value = self._scalars.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            problem = exc.problem if isinstance(exc, yaml.MarkedYAMLError) and exc.problem else str(exc)
            raise self._at(node, f"cannot read this value as {_shown_tag(node.tag)}: {problem}") from None
        finally:
            self._scalars.constructed_objects.clear()  # scalars are never shared: keep no node alive
            self._scalars.recursive_objects.clear()
        if isinstance(value, str) and "${" in value:
            return self._substitute(value, node)
        return value

    def _substitute(self, value: str, node: yaml.Node) -> str:
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

    def _reference_column(self, node: yaml.Node, found: re.Match[str]) -> int:
        """The column of the reference ``found`` in a one-line scalar written as it reads; else the scalar's."""
        column: int = node.start_mark.column + 1
        offset = _text_offset(node)
        if offset is not None:
            start = node.start_mark.index + offset + found.start()
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

    def _at(self, node: yaml.Node, message: str, column: int | None = None) -> ConfigError:
        return self.error_at(message, node.start_mark.line + 1, column or node.start_mark.column + 1)

    def _at_index(self, index: int, message: str) -> ConfigError:
        """An error at character ``index`` of the text (-1: somewhere in it)."""
        if index < 0:
            return self.error_at(message)
        line_start = self._text.rfind("\n", 0, index) + 1
        return self.error_at(message, self._text.count("\n", 0, index) + 1, index - line_start + 1)

    def line_of(self, path: Path_) -> int:
        while path and path not in self.positions:
            path = path[:-1]
        return self.positions.get(path, (1, 1, None))[0]

    def error(self, message: str, path: Path_) -> ConfigError:
        """A ConfigError at the value ``path`` names, or at the nearest value above it that the file has."""
        probe = path
        while probe and probe not in self.positions:
            probe = probe[:-1]
        line, column, _ = self.positions.get(probe, (1, 1, None))
        return self.error_at(message, line, column)


def _same_place(one: yaml.Mark, other: yaml.Mark) -> bool:
    return (one.line, one.column) == (other.line, other.column)


def _shown_tag(tag: str) -> str:
    """A tag as it is written: ``!!binary``, ``!foo``."""
    return repr("!!" + tag.removeprefix(_YAML_TAGS) if tag.startswith(_YAML_TAGS) else tag)


def _text_offset(node: yaml.Node) -> int | None:
    """Where a one-line scalar's text starts, after its first column (1 past a quote); None for anything else."""
    if not isinstance(node, yaml.ScalarNode) or node.start_mark.line != node.end_mark.line:
        return None
    return 1 if node.style in ("'", '"') else 0
