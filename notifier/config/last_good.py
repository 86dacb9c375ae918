"""The last subscribers.yaml that loaded, kept in the data directory.

``run`` keeps its last good config in memory while an edit is broken; this copy carries it over a restart, and
gives ``once`` (run by cron, a new process each time) the same behaviour: a broken edit is reported with its
``file:line:column``, and every subscriber gets the digests of the config that last loaded meanwhile. The copy is
the exact text that was validated, written only when it changes, readable by its owner alone (a file may hold
secrets written in it rather than as ``${VAR}``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from notifier.atomic import write_atomic
from notifier.config.subscribers import Config, parse_config
from notifier.config.yaml_source import read_text
from notifier.errors import ConfigError

log = logging.getLogger(__name__)

KEPT_NAME = "subscribers.last-good.yaml"


def load_and_keep(path: Path, data_dir: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (raising :class:`ConfigError` as :func:`~notifier.config.subscribers.load_config` does) and
    keep its text in ``data_dir`` as the last good one."""
    text = read_text(path)
    config = parse_config(text, path, os.environ if environ is None else environ)
    _keep(data_dir / KEPT_NAME, text)
    return config


def load_or_last_good(
    path: Path, data_dir: Path, environ: Mapping[str, str] | None = None
) -> tuple[Config, ConfigError | None]:
    """``path`` loaded and kept, with no error; or, when it is rejected and a text that loaded before is kept in
    ``data_dir``, that text (read as ``path``, so digests still name it) with the error that rejected the file.
    Raises that error when there is no kept text, or when the kept text no longer loads either (an environment
    variable it names is gone, say)."""
    environ = os.environ if environ is None else environ
    try:
        return load_and_keep(path, data_dir, environ), None
    except ConfigError as rejected:
        kept = data_dir / KEPT_NAME
        try:
            text = kept.read_text(encoding="utf-8")
            config = parse_config(text, path, environ)
        except (OSError, UnicodeError, ConfigError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("the last good config kept in %s cannot be used either: %s", kept, exc)
            raise rejected from None
        return config, rejected


def _keep(kept: Path, text: str) -> None:
    """Write ``text`` to ``kept`` atomically, unless it holds that text already. A failure to write is logged and
    otherwise ignored: the config in hand is good, and only the next broken edit would miss the copy."""
    try:
        if kept.read_text(encoding="utf-8") == text:
            return
    except (OSError, UnicodeError):
        pass
    try:
        write_atomic(kept, text.encode("utf-8"))
    except OSError as exc:
        log.warning("could not keep the config as the last good one in %s: %s", kept, exc)
