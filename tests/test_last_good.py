"""The last subscribers.yaml that loaded is kept in the data directory, and stands in for a broken edit."""

from __future__ import annotations

import stat

import pytest

from notifier.config.last_good import KEPT_NAME, load_and_keep, load_or_last_good
from notifier.errors import ConfigError

GOOD = """\
subscribers:
  - name: audio
    email: ann@lab.example
    categories: [cs.SD]
    rules:
      - {name: music, query: music}
"""
BROKEN = GOOD.replace("ann@lab.example", "ann@@lab.example")  # line 3


def test_a_config_that_loads_is_kept_as_written_and_readable_by_its_owner_alone(tmp_path):
    path = tmp_path / "subscribers.yaml"
    path.write_text(GOOD)
    config = load_and_keep(path, tmp_path / "data", {})
    kept = tmp_path / "data" / KEPT_NAME
    assert [s.name for s in config.subscribers] == ["audio"]
    assert kept.read_text() == GOOD
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    before = kept.stat().st_mtime_ns
    load_and_keep(path, tmp_path / "data", {})
    assert kept.stat().st_mtime_ns == before, "an unchanged config is not written again"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [KEPT_NAME], "no temporary file left behind"


def test_a_broken_edit_gives_the_last_good_config_and_the_error_with_its_line(tmp_path):
    path = tmp_path / "subscribers.yaml"
    path.write_text(GOOD)
    load_and_keep(path, tmp_path / "data", {})
    path.write_text(BROKEN.replace("audio", "audio-renamed"))
    config, rejected = load_or_last_good(path, tmp_path / "data", {})
    assert [s.name for s in config.subscribers] == ["audio"], "the last good one"
    assert config.path == path, "digests still name the real file"
    assert rejected is not None and str(rejected).startswith(f"{path}:3:")
    assert (tmp_path / "data" / KEPT_NAME).read_text() == GOOD, "the broken edit is not kept"


def test_a_good_edit_replaces_the_kept_one(tmp_path):
    path = tmp_path / "subscribers.yaml"
    path.write_text(GOOD)
    load_or_last_good(path, tmp_path / "data", {})
    path.write_text(GOOD.replace("music", "speech"))
    config, rejected = load_or_last_good(path, tmp_path / "data", {})
    assert rejected is None and config.subscribers[0].rules[0].query == "speech"
    assert (tmp_path / "data" / KEPT_NAME).read_text() == GOOD.replace("music", "speech")


def test_with_nothing_kept_a_broken_file_is_an_error_as_before(tmp_path):
    path = tmp_path / "subscribers.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError, match=r"subscribers\.yaml:3:"):
        load_or_last_good(path, tmp_path / "data", {})
    assert not (tmp_path / "data" / KEPT_NAME).exists()


def test_a_kept_config_that_no_longer_loads_leaves_the_error_of_the_file(tmp_path):
    path = tmp_path / "subscribers.yaml"
    path.write_text(GOOD.replace("ann@lab.example", "${LAB_MAIL}"))
    load_and_keep(path, tmp_path / "data", {"LAB_MAIL": "ann@lab.example"})
    path.write_text(BROKEN)
    with pytest.raises(ConfigError, match=r"subscribers\.yaml:3:.*not an email address"):
        load_or_last_good(path, tmp_path / "data", {})  # ${LAB_MAIL} is gone: the kept text fails too
