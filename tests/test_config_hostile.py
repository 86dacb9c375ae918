"""subscribers.yaml edited carelessly or with intent: every hostile edit is a ConfigError with its file:line:column,
found quickly and in bounded memory; addresses and Slack targets are checked; values from the environment stay
secret, and the daemon's own settings cannot be pulled in."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from notifier.config.subscribers import load_config
from notifier.config.yaml_source import MAX_ALIAS_VALUES, MAX_FILE_BYTES, MAX_NESTING
from notifier.errors import ConfigError
from notifier.matching.query import MAX_DEPTH, MAX_TERMS

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
subscribers:
  - name: perf
    email: ann@lab.example
    categories: [cs.DC]
    rules:
      - name: tail latency
        query: 'tail latency'
"""


def with_query(query: str) -> str:
    return GOOD.replace("'tail latency'", f"'{query}'")


def alias_bomb(levels: int = 10, width: int = 9) -> str:
    """Ten levels of nine aliases each: about 500 bytes that would expand to 9**10 values."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nsubscribers: *l{levels - 1}\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subscribers.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ or {})
    return caught.value


# (edit, line, column, what the message says)
HOSTILE_EDITS = {
    "a YAML tag": (GOOD.replace("name: perf", "name: !foo perf"), 2, 11, "YAML tag '!foo' is not supported"),
    "a tag on a key": (GOOD.replace("    email:", "    !foo email:"), 3, 5, "YAML tag '!foo' is not supported"),
    "a Python tag": ("subscribers: !!python/object/apply:os.system [id]\n", 1, 14, "'!!python/object/apply"),
    "a recursive alias": ("subscribers: &a [*a]\n", 1, 14, "recursive alias"),
    "a recursive alias in a mapping": (
        GOOD.replace("  - name: perf", "  - &s\n    name: perf\n    rules: [*s]"),
        2,
        5,
        "recursive alias",
    ),
    "lists nested 900 deep": ("subscribers: " + "[" * 900 + "]" * 900 + "\n", 1, 13 + MAX_NESTING, "nested more"),
    "lists nested past libyaml's limit": ("subscribers: " + "[" * 1100 + "]" * 1100 + "\n", 1, None, "nesting depth"),
    "an impossible date": (GOOD.replace("name: perf", "name: 2025-13-45"), 2, 11, "month must be in 1..12"),
    "a number of 5,000 digits": (GOOD.replace("name: perf", "name: " + "9" * 5000), 2, 11, "'!!int'"),
    "bad base64": (GOOD.replace("name: perf", "name: !!binary 'a'"), 2, 11, "'!!binary'"),
    "a NUL byte": (GOOD.replace("perf", "pe\0rf"), 2, 13, "U+0000 may not appear"),
    "an escape character": (GOOD.replace("perf", "pe\x1brf"), 2, 13, "U+001B may not appear"),
    "a query 260 parentheses deep": (
        with_query("(" * 260 + "a" + ")" * 260),
        7,
        17 + MAX_DEPTH,
        f"nests parentheses and NOTs more than {MAX_DEPTH} deep",
    ),
    "a query 999 parentheses deep": (
        with_query("(" * 999 + "a" + ")" * 999),
        7,
        17 + MAX_DEPTH,
        f"more than {MAX_DEPTH} deep at '('",
    ),
    "499 stacked NOTs": (
        with_query("NOT " * 499 + "a"),
        7,
        17 + 4 * MAX_DEPTH,
        f"more than {MAX_DEPTH} deep at 'NOT'",
    ),
    "999 one-letter words": (
        with_query(" ".join(["a"] * 999)),
        7,
        17 + 2 * MAX_TERMS,
        f"more than {MAX_TERMS} terms",
    ),
    "a control character in a rule name": (
        GOOD.replace("name: tail latency", 'name: "tail\\u0007latency"'),
        6,
        15,
        "a rule name may not contain control characters (found U+0007)",
    ),
}


@pytest.mark.parametrize("edit", HOSTILE_EDITS.values(), ids=HOSTILE_EDITS.keys())
def test_a_hostile_edit_is_a_config_error_with_its_place(tmp_path, edit):
    text, line, column, fragment = edit
    started = time.monotonic()
    error = error_of(tmp_path, text)
    assert time.monotonic() - started < 2
    assert fragment in error.message, error
    assert (error.file, error.line) == (str(tmp_path / "subscribers.yaml"), line), error
    if column is not None:
        assert error.column == column, error


def test_an_alias_bomb_stops_at_the_alias_limit_in_bounded_time_and_memory(tmp_path):
    text = alias_bomb()
    assert len(text) < 600
    tracemalloc.start()
    started = time.monotonic()
    try:
        error = error_of(tmp_path, text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MB"
    assert f"past {MAX_ALIAS_VALUES:,} values repeated through aliases" in error.message
    assert error.line is not None and error.line <= 10


def test_aliases_that_repeat_a_few_values_are_still_fine(tmp_path):
    text = "defaults:\n  categories: &cats [cs.DC, cs.LG]\n" + GOOD.replace("[cs.DC]", "*cats")
    config = load_config(write(tmp_path, text), {})
    assert config.subscribers[0].categories == ("cs.DC", "cs.LG")


def run_check(path: Path, *, memory: int | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``notifier check`` as a process, optionally with its address space capped at ``memory`` bytes."""
    limit = "" if memory is None else f"resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory})); "
    program = f"import resource, sys; {limit}from notifier.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", program, "check", "--subscribers", str(path), "--data-dir", str(path.parent)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (alias_bomb(), None),
        (HOSTILE_EDITS["a YAML tag"][0], 2),
        (HOSTILE_EDITS["a recursive alias"][0], 1),
        (HOSTILE_EDITS["a query 999 parentheses deep"][0], 7),
    ],
    ids=["alias bomb", "tag", "recursive alias", "deep query"],
)
@pytest.mark.slow
def test_check_reports_a_hostile_edit_as_file_line_column_within_1_gb(tmp_path, text, line):
    path = write(tmp_path, text)
    result = run_check(path, memory=2**30, timeout=30)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith(f"{path}:{line if line is not None else ''}"), result.stderr
    assert first.split(":")[1].isdigit() and first.split(":")[2].isdigit(), first


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "subscribers.yaml"
    with path.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk space, and nothing to parse if it were read
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert time.monotonic() - started < 1
    assert caught.value.file == str(path)
    assert f"larger than {MAX_FILE_BYTES // 2**20} MiB" in caught.value.message


def test_a_file_that_is_not_utf8_is_an_error_at_the_byte(tmp_path):
    path = tmp_path / "subscribers.yaml"
    path.write_bytes(GOOD.replace("perf", "p\xe9rf").encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert (caught.value.line, caught.value.column) == (2, 12)
    assert "not UTF-8" in caught.value.message


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("'ann@[lab.example'", "'ann@[lab.example' is not an email address"),
        ('"ann\\0@lab.example"', "'ann\\x00@lab.example' is not an email address: it contains a control character"),
        ('"ann\\u0085@lab.example"', "it contains a control character"),
        ('"ann@lab.example\\r\\nBcc: eve@evil.example"', "it contains a control character"),
        ("'=?utf-8?q?=0D=0ABcc:_x?=@lab.example'", "mail programs would decode its '=?'"),
        ("'Ann <ann@lab.example>'", "is not an email address"),
        ("ann@host.local", "special-use or reserved name"),
    ],
)
def test_an_address_no_mail_system_would_take_is_an_error_at_its_line(tmp_path, address, fragment):
    error = error_of(tmp_path, GOOD.replace("ann@lab.example", address))
    assert fragment in error.message, error
    assert (error.line, error.column) == (3, 12)


def test_addresses_are_stored_in_their_normal_form_once_per_mailbox(tmp_path):
    text = GOOD.replace(
        "ann@lab.example",
        "[Ann.Lee@LAB.Example, ann.lee@lab.example, ann@xn--bcher-kva.example, bob@lab.test, '\"b c\"@lab.example']",
    )
    config = load_config(write(tmp_path, text), {})
    assert config.subscribers[0].emails == (
        "Ann.Lee@lab.example",
        "ann@bücher.example",
        "bob@lab.test",
        '"b c"@lab.example',
    )


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ('"#papers\\u0000"', "is not a Slack channel"),
        ('"https://hooks.slack.com/services/T/B/x\\ny"', "may not contain control characters (found U+000A)"),
        ("'https://hooks.slack.com/services/T/B x'", "may not contain spaces"),
        ("'https://user:pw@hooks.slack.com/services/T/B/x'", "may not carry a user name or password"),
        ("'https:///services/T/B/x'", "it names no host"),
        ("'https://hooks.slack.com:99999/x'", "is not a webhook URL"),
    ],
)
def test_a_slack_target_no_request_could_go_to_is_an_error_at_its_line(tmp_path, target, fragment):
    error = error_of(tmp_path, GOOD.replace("    categories:", f"    slack: {target}\n    categories:"))
    assert fragment in error.message, error
    assert error.line == 4


def test_webhooks_on_any_http_host_are_left_to_the_daemons_host_allowlist(tmp_path):
    text = GOOD.replace(
        "    categories:", "    slack: [http://mattermost.lab.example/hooks/abc, '#papers']\n    categories:"
    )
    assert load_config(write(tmp_path, text), {}).subscribers[0].slack == (
        "http://mattermost.lab.example/hooks/abc",
        "#papers",
    )


def test_an_error_about_an_interpolated_value_shows_the_reference_not_the_value(tmp_path):
    secret = "https://hooks.slack.com/services/T0/B0/s3cr3t-t0ken x"
    text = GOOD.replace("    categories:", "    slack: ${LAB_HOOK}\n    categories:")
    error = error_of(tmp_path, text, {"LAB_HOOK": secret})
    assert "s3cr3t" not in str(error)
    password = "https://bot:s3cr3t-t0ken@hooks.slack.com/services/T0/B0/x"
    error = error_of(tmp_path, text, {"LAB_HOOK": password})
    assert "s3cr3t" not in str(error) and "'${LAB_HOOK}' is not a webhook URL" in error.message, error
    error = error_of(tmp_path, GOOD.replace("ann@lab.example", "'${LAB_MAIL}'"), {"LAB_MAIL": "s3cr3t-t0ken"})
    assert "s3cr3t" not in str(error) and "'${LAB_MAIL}' is not an email address" in error.message, error
    error = error_of(tmp_path, GOOD.replace("name: perf", "name: ${NAME}"), {"NAME": "s3cr3t t0ken"})
    assert "s3cr3t" not in str(error) and "${NAME}" in error.message, error


def test_the_daemons_own_settings_cannot_be_interpolated(tmp_path):
    text = GOOD.replace(
        "    categories:", "    slack: 'https://hooks.slack.com/x?${NOTIFIER_SMTP_PASSWORD}'\n    categories:"
    )
    error = error_of(tmp_path, text, {"NOTIFIER_SMTP_PASSWORD": "s3cr3t"})
    assert error.message == ("${NOTIFIER_SMTP_PASSWORD}: the daemon's own settings cannot be used in subscribers.yaml")
    assert (error.line, error.column) == (4, 12 + 1 + len("https://hooks.slack.com/x?"))
    lower = error_of(tmp_path, GOOD.replace("ann@lab.example", "${notifier_mail_from}"), {})
    assert "the daemon's own settings cannot be used" in lower.message
    assert (lower.line, lower.column) == (3, 12)


def test_a_huge_value_is_cut_short_in_the_message(tmp_path):
    error = error_of(tmp_path, GOOD.replace("ann@lab.example", "x" * 100_000))
    assert len(error.message) <= 400 and error.message.endswith("…")


@pytest.mark.slow
def test_a_subscribers_path_that_never_ends_is_read_only_up_to_the_size_limit(tmp_path):
    path = tmp_path / "subscribers.yaml"
    path.symlink_to("/dev/zero")
    result = run_check(path, memory=2**30, timeout=30)
    assert result.returncode == 1, result.stderr
    assert f"{path}: the subscribers file is larger than {MAX_FILE_BYTES // 2**20} MiB" in result.stderr
