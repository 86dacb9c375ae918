"""subscribers.yaml read as a stream of parse events: the data, and the place of each value, aliases included."""

from __future__ import annotations

import pytest

from notifier.config.yaml_source import YamlSource
from notifier.errors import ConfigError

TEXT = """\
defaults:
  categories: &cats [cs.DC, cs.LG]
subscribers:
  - name: lab
    email: lab@example.org
    categories: *cats
    send_empty: yes
    rules:
      - {name: gpu, query: 'gpu OR "tail latency"'}
"""


def test_the_data_is_what_yaml_says_with_standard_tags_resolved():
    data = YamlSource("s.yaml", {}).load(TEXT)
    assert data == {
        "defaults": {"categories": ["cs.DC", "cs.LG"]},
        "subscribers": [
            {
                "name": "lab",
                "email": "lab@example.org",
                "categories": ["cs.DC", "cs.LG"],
                "send_empty": True,
                "rules": [{"name": "gpu", "query": 'gpu OR "tail latency"'}],
            }
        ],
    }


def test_an_alias_is_a_copy_whose_values_stand_where_the_anchored_ones_are_written():
    source = YamlSource("s.yaml", {})
    data = source.load(TEXT)
    assert isinstance(data, dict)
    aliased = data["subscribers"][0]["categories"]
    assert aliased == data["defaults"]["categories"] and aliased is not data["defaults"]["categories"]
    assert source.position(("subscribers", 0, "categories")) == source.position(("defaults", "categories"))
    assert source.position(("subscribers", 0, "categories", 1)) == (2, 29, 0)
    assert source.position(("subscribers", 0, "rules", 0, "query")) == (
        9,
        28,
        1,
    )  # quoted: its text starts one past the quote


def test_places_not_kept_while_reading_are_found_when_an_error_needs_them():
    kept: list[tuple[str | int, ...]] = []

    def only_subscribers(path: tuple[str | int, ...]) -> bool:
        kept.append(path)
        return len(path) <= 2

    source = YamlSource("s.yaml", {}, remember=only_subscribers)
    source.load(TEXT)
    assert source.line_of(("subscribers", 0)) == 4
    error = source.error("bad value", ("subscribers", 0, "send_empty"))
    assert (error.line, error.column) == (7, 17)
    assert source.error("unknown", ("subscribers", 0, "nowhere")).line == 4  # the nearest value above it


def test_an_alias_of_an_undefined_anchor_is_a_yaml_error_at_the_alias():
    with pytest.raises(ConfigError) as caught:
        YamlSource("s.yaml", {}).load("subscribers: *nothing\n")
    assert (caught.value.line, caught.value.column) == (1, 14)
    assert "found undefined alias 'nothing'" in caught.value.message


def test_a_second_document_is_an_error():
    with pytest.raises(ConfigError) as caught:
        YamlSource("s.yaml", {}).load("subscribers: []\n---\nsubscribers: []\n")
    assert "another document" in caught.value.message
