"""subscribers.yaml: what a hand edit gets back, with file:line:column and the field's name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from notifier.config.subscribers import load_config
from notifier.errors import ConfigError

GOOD = """\
defaults:
  schedule: "daily 08:00 UTC"
subscribers:
  - name: systems-lab
    email: [alice@lab.example, bob@lab.example]
    slack: "#papers"
    categories: [cs.DC, cs.LG]
    schedule: "daily 08:00 Europe/Berlin"
    announce_types: [new, cross]
    rules:
      - name: reinforcement learning
        query: '"reinforcement learning" AND NOT survey'
      - name: our own authors
        query: 'au:"Yongle Zhang" OR au:"Tianyin Xu"'
  - name: solo
    email: solo@lab.example
    categories: [cs.LG, cs.DC]
    rules:
      - name: compilers
        query: compiler
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "subscribers.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ or {})
    return caught.value


def test_the_public_schema_loads_with_defaults_applied(tmp_path):
    config = load_config(write(tmp_path, GOOD), {})
    lab, solo = config.subscribers
    assert lab.emails == ("alice@lab.example", "bob@lab.example")
    assert lab.slack == ("#papers",)
    assert str(lab.schedule) == "daily 08:00 Europe/Berlin"
    assert [rule.name for rule in lab.rules] == ["reinforcement learning", "our own authors"]
    assert solo.emails == ("solo@lab.example",)
    assert str(solo.schedule) == "daily 08:00 UTC"
    assert solo.announce_types == frozenset({"new", "cross"})
    # Both follow the same categories in another order: one category set, and each category is polled once.
    assert config.feed_keys == ["cs.DC+cs.LG"]
    assert config.categories == ["cs.DC", "cs.LG"]


def test_the_example_file_in_the_repository_is_valid():
    config = load_config(Path(__file__).resolve().parents[1] / "subscribers.yaml", {})
    assert config.subscribers


def test_an_unknown_key_is_an_error_naming_the_key_and_its_line(tmp_path):
    text = GOOD.replace("    rules:\n      - name: compilers", "    rulez:\n      - name: compilers")
    error = error_of(tmp_path, text)
    assert error.line == 18
    assert "unknown key 'rulez'" in str(error)
    assert str(error).startswith(f"{tmp_path / 'subscribers.yaml'}:18:")


def test_an_unknown_key_inside_a_rule_names_the_rule(tmp_path):
    error = error_of(tmp_path, GOOD.replace("        query: compiler", "        querry: compiler"))
    assert error.line == 20
    assert "unknown key 'querry'" in str(error)
    assert "known keys: name, query" in str(error)


def test_broken_yaml_reports_line_and_column(tmp_path):
    error = error_of(tmp_path, GOOD.replace('    slack: "#papers"', '    slack: "#papers'))
    assert error.line is not None
    assert "invalid YAML" in str(error)


def test_a_query_that_does_not_parse_points_into_the_file(tmp_path):
    error = error_of(tmp_path, GOOD.replace("query: compiler", "query: '(compiler OR'"))
    assert error.line == 20
    assert "compilers" in str(error)  # the rule's name
    assert error.column is not None and error.column > 16


def test_a_subscriber_needs_a_channel_and_a_rule(tmp_path):
    no_channel = GOOD.replace("    email: solo@lab.example\n", "")
    assert "needs at least one of 'email' or 'slack'" in str(error_of(tmp_path, no_channel))
    no_rules = GOOD.replace("    rules:\n      - name: compilers\n        query: compiler\n", "")
    assert "needs at least one rule" in str(error_of(tmp_path, no_rules))


def test_duplicate_names_bad_schedules_and_bad_values_are_named(tmp_path):
    duplicate = (
        GOOD + "  - name: solo\n    email: x@lab.example\n    categories: [cs.DC]\n    rules: [{name: a, query: a}]\n"
    )
    assert "duplicate subscriber name 'solo'" in str(error_of(tmp_path, duplicate))
    assert "unknown time zone 'Mars/Base'" in str(error_of(tmp_path, GOOD.replace("Europe/Berlin", "Mars/Base")))
    assert "is not an email address" in str(error_of(tmp_path, GOOD.replace("solo@lab.example", "solo-at-lab")))
    assert "is not an arXiv category" in str(error_of(tmp_path, GOOD.replace("[cs.LG, cs.DC]", "[cs.LG, 'CS DC']")))
    bad_type = error_of(tmp_path, GOOD.replace("[new, cross]", "[new, crosses]"))
    assert bad_type.line == 9 and "announce_types" in str(bad_type)


def test_secrets_come_from_the_environment(tmp_path):
    text = GOOD.replace('slack: "#papers"', 'slack: "${LAB_WEBHOOK}"')
    config = load_config(write(tmp_path, text), {"LAB_WEBHOOK": "https://hooks.slack.example/services/T/B/x"})
    assert config.subscribers[0].slack == ("https://hooks.slack.example/services/T/B/x",)
    missing = error_of(tmp_path, text)
    assert "LAB_WEBHOOK is not set" in str(missing)
    assert missing.line == 6


@pytest.mark.slow
def test_check_command_exits_1_with_file_line_on_stderr(tmp_path):
    path = write(tmp_path, GOOD.replace("    categories: [cs.LG, cs.DC]", "    categoriez: [cs.LG, cs.DC]"))
    result = subprocess.run(
        [sys.executable, "-m", "notifier", "check", "--subscribers", str(path), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert f"{path}:17:" in result.stderr
    assert "categoriez" in result.stderr


def test_check_command_accepts_a_good_file(tmp_path):
    path = write(tmp_path, GOOD)
    result = subprocess.run(
        [sys.executable, "-m", "notifier", "check", "--subscribers", str(path), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "2 subscribers, 3 rules" in result.stdout


SUMMARIES = """\
defaults:
  summaries: true
subscribers:
  - name: lab
    email: lab@lab.example
    categories: [cs.DC]
    rules:
      - name: main topic
        query: gpu
      - name: the rest
        query: cluster
        summaries: false
  - name: quiet
    email: quiet@lab.example
    categories: [cs.DC]
    summaries: false
    rules:
      - name: one rule rich
        query: scheduler
        summaries: true
      - name: plain
        query: storage
"""


def test_summaries_are_asked_per_subscriber_and_a_rule_may_say_otherwise(tmp_path):
    lab, quiet = load_config(write(tmp_path, SUMMARIES), {}).subscribers
    assert [(rule.name, rule.summaries) for rule in lab.rules] == [("main topic", True), ("the rest", False)]
    assert [(rule.name, rule.summaries) for rule in quiet.rules] == [("one rule rich", True), ("plain", False)]


def test_summaries_are_off_unless_asked(tmp_path):
    lab, solo = load_config(write(tmp_path, GOOD), {}).subscribers
    assert not any(rule.summaries for rule in (*lab.rules, *solo.rules))


def test_a_summaries_value_that_is_not_true_or_false_is_refused_at_its_line(tmp_path):
    text = SUMMARIES.replace("        summaries: false\n  - name: quiet", "        summaries: often\n  - name: quiet")
    error = error_of(tmp_path, text)
    assert str(error) == (
        f"{tmp_path / 'subscribers.yaml'}:12:20: subscriber 'lab', rule 2 'the rest': summaries: must be true or false"
    )
