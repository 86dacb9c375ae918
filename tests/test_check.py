"""`notifier check` catches what people really mistype, and says so in the project's own words, with the place."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from notifier.config.subscribers import load_config
from notifier.errors import ConfigError
from notifier.matching.query import lowercase_operators

ROOT = Path(__file__).resolve().parents[1]


def subscriber(categories: str = "[cs.DC]", rules: str = "      - name: gpu\n        query: gpu\n") -> str:
    return f"subscribers:\n  - name: lab\n    email: ann@lab.example\n    categories: {categories}\n    rules:\n{rules}"


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "subscribers.yaml"
    path.write_text(text, encoding="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "notifier", "check", "--subscribers", str(path)],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "NOTIFIER_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "subscribers.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    return str(raised.value).removeprefix(f"{path}:")


def test_a_category_in_the_wrong_case_is_read_as_arxiv_spells_it(tmp_path):
    path = tmp_path / "subscribers.yaml"
    path.write_text(subscriber("[cs.dc, CS.lg, Astro-PH.ga, math]"), encoding="utf-8")
    assert load_config(path, environ={}).subscribers[0].categories == ("cs.DC", "cs.LG", "astro-ph.GA", "math")


@pytest.mark.slow
def test_an_unknown_category_gets_the_closest_real_one(tmp_path):
    done = check(tmp_path, subscriber("[cs.DCC]"))
    assert done.returncode == 1
    assert done.stderr == (
        f"{tmp_path / 'subscribers.yaml'}:4:17: subscriber 'lab': categories: 'cs.DCC' is not an arXiv category;"
        " did you mean cs.DC?\n"
    )
    assert error_of(tmp_path, subscriber("[cs.LG, astro-ph.gx]")).endswith(
        "'astro-ph.gx' is not an arXiv category; did you mean astro-ph.GA?"
    )


def test_an_unknown_category_like_no_real_one_points_at_the_taxonomy(tmp_path):
    assert error_of(tmp_path, subscriber("[cs.XX]")) == (
        "4:17: subscriber 'lab': categories: 'cs.XX' is not an arXiv category; the categories are listed at"
        " arxiv.org/category_taxonomy"
    )


@pytest.mark.slow
def test_lower_case_operators_between_terms_get_a_warning_with_the_upper_case_form(tmp_path):
    rules = "      - name: gpu\n        query: 'compiler or gpu and not survey'\n"
    done = check(tmp_path, subscriber(rules=rules))
    assert done.returncode == 0
    path = tmp_path / "subscribers.yaml"
    assert done.stderr == (
        f"warning: {path}:7:26: subscriber 'lab', rule 1 'gpu': 'or', 'and', 'not' in lower case is searched for as"
        " a word; operators are written in upper case: 'compiler OR gpu AND NOT survey'\n"
    )
    assert done.stdout == f"{path}: ok: 1 subscribers, 1 rules, categories cs.DC\n"


def test_only_operator_words_between_terms_are_flagged():
    assert lowercase_operators("compiler or gpu") == ([("or", 10)], "compiler OR gpu")
    assert lowercase_operators("not survey") == ([("not", 1)], "NOT survey")
    assert lowercase_operators('"rock and roll"') is None, "a quoted phrase is meant as written"
    assert lowercase_operators("compiler OR gpu") is None
    assert lowercase_operators("search and") is None, "nothing after it: not an operator"
    assert lowercase_operators("or gpu") is None, "nothing before it"
    assert lowercase_operators("(gpu)or(tpu)") == ([("or", 6)], "(gpu)OR(tpu)"), "parentheses delimit words too"
    assert lowercase_operators('gpu Not"many core"') == ([("Not", 5)], 'gpu NOT"many core"')
    assert lowercase_operators("cannot notify orca android") is None, "inside longer words they are no operators"


@pytest.mark.slow
def test_an_empty_subscribers_file_is_an_error_naming_the_file(tmp_path):
    for text in ("", "# just a comment\n"):
        done = check(tmp_path, text)
        assert done.returncode == 1
        assert done.stderr == (
            f"{tmp_path / 'subscribers.yaml'}:1:1: the subscribers file is empty; it needs a 'subscribers:' list"
            " (the README shows one, and `notifier demo` runs with an example)\n"
        )


def test_a_bracket_left_open_is_placed_where_it_opens_with_where_the_parser_gave_up(tmp_path):
    assert error_of(tmp_path, subscriber("[cs.DC")) == (
        "4:17: invalid YAML: did not find expected ',' or ']' at line 5, column 10, while parsing a flow sequence"
        " that starts here"
    )


def test_a_quote_left_open_is_placed_where_it_opens(tmp_path):
    rules = '      - name: gpu\n        query: "gpu\n  - name: other\n'
    assert error_of(tmp_path, subscriber(rules=rules)) == (
        "7:16: invalid YAML: found unexpected end of stream at line 9, column 1, while scanning a quoted scalar that"
        " starts here"
    )


def test_a_misplaced_value_shows_where_the_mapping_it_breaks_began(tmp_path):
    text = "subscribers:\n  - name: lab\n    email: ann@lab.example\n   categories: [cs.DC]\n"
    assert error_of(tmp_path, text) == (
        "4:4: invalid YAML: did not find expected '-' indicator (while parsing a block collection that starts at"
        " line 2, column 3)"
    )


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            "      - name: gpu\n        query: ''\n",
            "7:16: subscriber 'lab', rule 1 'gpu': query: may not be empty",
        ),
        (
            "      - name: gpu\n        query: gpu\n      - name: long\n        query: '" + "a " * 1001 + "'\n",
            "9:16: subscriber 'lab', rule 2 'long': query: is longer than 2,000 characters, the limit",
        ),
        (
            "      - name: gpu\n        qeury: gpu\n",
            "7:9: subscriber 'lab', rule 1 'gpu': unknown key 'qeury'; known keys: name, query, similar, summaries",
        ),
        (
            "      - name: gpu\n",
            "6:9: subscriber 'lab', rule 1 'gpu': a rule needs 'query', 'similar' (papers like yours), or both",
        ),
        (
            "      - name: [gpu]\n        query: gpu\n",
            "6:15: subscriber 'lab', rule 1: name: must be text (put it in quotes if it reads as a number, a date or"
            " true/false)",
        ),
        (
            "      - gpu\n",
            "6:9: subscriber 'lab', rule 1: must be a mapping of keys to values",
        ),
    ],
)
def test_rule_errors_name_the_subscriber_and_the_rule_counted_from_1(tmp_path, rules, message):
    assert error_of(tmp_path, subscriber(rules=rules)) == message


def test_subscriber_field_errors_are_in_our_words(tmp_path):
    text = subscriber().replace("    rules:\n", "    send_empty: maybe\n    rules:\n")
    assert error_of(tmp_path, text) == "5:17: subscriber 'lab': send_empty: must be true or false"
    text = subscriber().replace("    rules:\n", "    announce_types: [fresh]\n    rules:\n")
    assert error_of(tmp_path, text) == (
        "5:22: subscriber 'lab': announce_types: must be 'new', 'cross', 'replace' or 'replace-cross'"
    )
    text = subscriber().replace("    rules:\n", "    schedule: '" + "x" * 101 + "'\n    rules:\n")
    assert error_of(tmp_path, text) == "5:15: subscriber 'lab': schedule: is longer than 100 characters, the limit"
    text = "defaults:\n  categories: cs.DC\n" + subscriber()
    assert error_of(tmp_path, text) == "2:15: defaults: categories: must be a list, such as [a, b]"
    nameless = (
        subscriber()
        .replace("  - name: lab\n", "  - email: x@lab.example\n")
        .replace("    email: ann@lab.example\n", "")
    )
    assert error_of(tmp_path, "subscribers:\n" + nameless.split("subscribers:\n")[1]) == (
        "2:5: subscriber 1: missing required key 'name'"
    )


@pytest.mark.slow
def test_summaries_without_an_llm_are_a_warning_not_an_error(tmp_path):
    rules = "      - name: gpu\n        query: gpu\n        summaries: true\n"
    done = check(tmp_path, subscriber(rules=rules))
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "warning: 1 subscribers (lab) ask for summaries, but no LLM is set (NOTIFIER_LLM_URL and NOTIFIER_LLM_MODEL):"
        " their digests show every paper as usual, without summaries\n"
    )
