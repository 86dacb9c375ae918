"""Generated subscribers.yaml texts, hostile ones included (tags, anchors and aliases, deep nesting, deep queries,
odd Unicode, control characters, huge values, bytes that are not UTF-8), loaded as ``notifier check`` loads them
and as the running daemon reloads them: nothing but a ConfigError with a line number ever comes out, a value taken
from the environment never shows in it, and each text is done within a bound."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.config.settings import load_settings
from notifier.config.subscribers import Config, load_config
from notifier.daemon import Notifier
from notifier.errors import ConfigError
from notifier.web.server import readiness

SECRET = "s3cr3t-t0ken"
ENVIRONMENT = {"LAB_HOOK": f"https://hooks.slack.com/services/T0/B0/{SECRET}", "LAB_NAME": f"{SECRET} x"}
BOUND = settings(
    deadline=timedelta(seconds=5),
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

GOOD = """\
subscribers:
  - name: perf
    email: ann@lab.example
    categories: [cs.DC]
    rules:
      - name: tail latency
        query: 'tail latency'
"""

PLAIN = [
    "perf", "cs.DC", "cs.LG", "ann@lab.example", "'#papers'", "C0123ABCD", "daily 08:00 UTC", "instant", "new",
    "cross", "true", "~", "null", "0", "-1", "1e999", "0o777", "0x1F", ".inf", "2025-06-03", "'tail latency'",
    "https://hooks.slack.com/services/T/B/x", "http://[::1]:99999/x", "'ann@[lab.example'", '"ann\\0@lab.example"',
    '"a\\u0085b"', '"line\\r\\nBcc: x@evil.example"', "'=?UTF-8?Q?=0D=0AReply-To:_x?='", "${LAB_HOOK}", "${LAB_NAME}",
    "'x${LAB_HOOK}y'", "${NOTIFIER_SMTP_PASSWORD}", "${notifier_mail_from}", "${UNSET_VARIABLE_X}", "${", "$${A}",
]  # fmt: skip
TAGGED = [
    "!foo perf", "!!binary a", "!!binary aGk=", "!!timestamp 2025-13-45", "!!int 0x", "!!int 12", "!!float x",
    "!!str 5", "!!bool maybe", "!!null x", "!!set {a}", "!!omap [a: 1]", "!!python/name:os.system ''",
    "!!python/object/apply:os.system [id]", "!<tag:yaml.org,2002:str> v", "!<x> v", "! v", "!!merge <<",
]  # fmt: skip
ALIASES = ["*a0", "*a1", "*a2", "*undefined", "&a9 v", "&a0 [*a0]"]
KEYS = ["name", "email", "slack", "categories", "schedule", "rules", "query", "announce_types", "send_empty", "x", "<<"]

scalars = st.one_of(
    st.sampled_from(PLAIN + TAGGED + ALIASES),
    st.text(max_size=30).map(lambda text: json.dumps(text, ensure_ascii=False)),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=12).filter(lambda text: len(text) % 4 == 0),
    st.integers(1_000, 300_000).map(lambda n: "x" * n),
    st.integers(4_000, 6_000).map(lambda n: "9" * n),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(st.sampled_from(KEYS), inner), max_size=4).map(
            lambda pairs: "{" + ", ".join(f"{key}: {value}" for key, value in pairs) + "}"
        ),
    ),
    max_leaves=10,
)
deep = st.integers(0, 1_100).map(lambda n: "[" * n + "x" + "]" * n)

LEXEMES = ["(", ")", "NOT", "AND", "OR", "a", "b*", "c", '"multi agent"', '"', "ti:", "au:", "cat:", "xx:", "-x", "*"]
DEPTHS = st.one_of(st.sampled_from([31, 32, 33, 260, 499, 999]), st.integers(0, 1_000))
COUNTS = st.one_of(st.sampled_from([199, 200, 201, 999]), st.integers(1, 1_000))
queries = st.one_of(
    DEPTHS.map(lambda n: "(" * n + "a" + ")" * n),
    DEPTHS.map(lambda n: "NOT " * n + "a"),
    DEPTHS.map(lambda n: "NOT (" * n + "a" + ")" * n),
    COUNTS.map(lambda n: " ".join(["a"] * n)),
    COUNTS.map(lambda n: " OR ".join(f"w{i}" for i in range(n))),
    st.lists(st.sampled_from(LEXEMES), min_size=1, max_size=40).map(" ".join),
    st.text(max_size=60),
    st.integers(1_990, 2_010).map(lambda n: "a" * n),
).map(lambda query: json.dumps(query, ensure_ascii=False))


def alias_bomb(levels: int, width: int) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nsubscribers: *l{levels - 1}\n"


FIELDS = {
    "name": "perf",
    "email": "ann@lab.example",
    "categories": "[cs.DC]",
    "schedule": "daily 08:00 UTC",
    "rule": "tail latency",
    "query": "'tail latency'",
}


@st.composite
def subscriber_files(draw: st.DrawFn) -> str:
    """A subscribers file with one or two hostile fields (queries most often), after a block of anchors that its
    aliases can name."""
    anchors = draw(st.lists(st.one_of(values, deep), max_size=3)) if draw(st.integers(0, 3)) == 0 else []
    head = "".join(f"  x{i}: &a{i} {value}\n" for i, value in enumerate(anchors))
    fields = dict(FIELDS)
    for name in draw(st.lists(st.sampled_from([*FIELDS, "query", "query", "query"]), max_size=2)):
        hostile = st.one_of(values, values, values, deep)
        fields[name] = draw(queries if name == "query" and draw(st.booleans()) else hostile)
    if draw(st.booleans()):
        fields["query"] = draw(queries)
    extra = draw(st.sampled_from(["", "    slack: ${LAB_HOOK}\n", "    send_empty: yes\n", "  - *a0\n"]))
    return (
        (f"defaults:\n{head}" if head else "")
        + "subscribers:\n"
        + f"  - name: {fields['name']}\n    email: {fields['email']}\n    categories: {fields['categories']}\n"
        + f"    schedule: {fields['schedule']}\n{extra}"
        + f"    rules:\n      - name: {fields['rule']}\n        query: {fields['query']}\n"
    )


texts = st.one_of(
    subscriber_files(),
    subscriber_files(),
    subscriber_files(),
    st.text(max_size=300),
    st.sampled_from([GOOD, "subscribers: &a [*a]\n", "a: &a\n  b: *a\n", "--- a\n--- b\n", "\ufeff" + GOOD]),
    st.builds(alias_bomb, st.integers(1, 12), st.integers(1, 12)),
)
files = st.one_of(texts.map(lambda text: text.encode("utf-8")), st.binary(max_size=200))

PLACE = re.compile(r":\d+:\d+: ")


def loaded(path: Path) -> Config | ConfigError:
    """What ``notifier check`` gets from ``path``: the config, or the ConfigError it prints."""
    try:
        return load_config(path, ENVIRONMENT)
    except ConfigError as error:
        return error


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@settings(BOUND, max_examples=250)
@given(content=files)
@pytest.mark.slow
def test_check_gives_a_config_or_a_config_error_with_its_line(folder, content):
    path = folder / "subscribers.yaml"
    path.write_bytes(content)
    result = loaded(path)
    if isinstance(result, ConfigError):
        assert result.file == str(path) and result.line is not None and result.column is not None, result
        assert SECRET not in str(result)
        assert "Traceback" not in str(result)


@pytest.fixture(scope="module")
def daemon(folder: Path) -> Iterator[tuple[Notifier, asyncio.Runner]]:
    """A real Notifier on a data directory of its own, started with a good config, on an event loop of its own."""
    path = folder / "daemon.yaml"
    path.write_text(GOOD)
    app_settings = load_settings({"NOTIFIER_SUBSCRIBERS": str(path), "NOTIFIER_DATA_DIR": str(folder / "data")})
    runner = asyncio.Runner()
    app = Notifier(app_settings, load_config(path, {}))
    runner.run(app.__aenter__())
    try:
        yield app, runner
    finally:
        runner.run(app.__aexit__(None, None, None))
        runner.close()


@settings(BOUND, max_examples=80)
@given(content=files)
@pytest.mark.slow
def test_the_daemon_keeps_running_on_its_last_good_config_whatever_the_edit(daemon, content):
    app, runner = daemon
    app.settings.subscribers.write_bytes(content)
    before = app.config
    switched = runner.run(app.reload_config(force=True))
    if switched:
        assert app.config_error is None and app.config is not before
        return
    assert app.config is before, "the last good config is kept"
    assert app.config_error is not None and PLACE.search(app.config_error), app.config_error
    assert str(readiness(app)["config"]).startswith("rejected at line ")
