"""subscribers.yaml's like:, dislike:, sort: and similar: rules, as a hand edit meets them: every form of a liked
paper read, a BibTeX export matched to arXiv ids, and every mistake placed at its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.config.subscribers import BibReference, Likes, Similar, load_config
from notifier.errors import ConfigError

BIB = """\
@article{xu2024,
  title = {Sparse {GPU} Kernels for Everyone},
  eprint = {2401.01234},
  archivePrefix = {arXiv},
}

@inproceedings{doi-only,
  title = {Configuration Errors in Cloud Systems},
  doi = {10.1145/3600006.3613138},
}

@misc{arxiv-doi, title = {Found by its DOI}, doi = {10.48550/arXiv.2305.00001}}

@misc{url, title = {Found by its URL}, url = {https://arxiv.org/abs/2402.05678v3}}
"""

CONFIG = """\
subscribers:
  - name: lab
    email: lab@lab.example
    categories: [cs.DC]
    like: ["2401.01234", "2310.00002v2", 'au:"Tianyin Xu"', "math/0601001", zotero.bib]
    dislike: "2403.09999"
    sort: relevance
    rules:
      - name: most like our papers
        similar: {top: 5, min_score: 0.3}
      - name: gpu, but only like our work
        query: gpu
        similar: {min_score: 0.2}
      - name: plain
        query: storage
"""


def write(tmp_path: Path, text: str, bib: str | None = BIB) -> Path:
    if bib is not None:
        (tmp_path / "zotero.bib").write_text(bib, encoding="utf-8")
    path = tmp_path / "subscribers.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str, bib: str | None = BIB) -> str:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text, bib), {})
    return str(raised.value)


def test_every_form_of_a_liked_paper_is_read(tmp_path):
    (lab,) = load_config(write(tmp_path, CONFIG), {}).subscribers
    assert lab.likes == Likes(
        arxiv_ids=("2401.01234", "2310.00002", "math/0601001", "2305.00001", "2402.05678"),
        authors=("Tianyin Xu",),
        references=(
            BibReference(
                "doi-only", "10.1145/3600006.3613138", "Configuration Errors in Cloud Systems", "zotero.bib:7"
            ),
        ),
    )
    assert lab.dislikes == Likes(arxiv_ids=("2403.09999",))
    assert lab.sort == "relevance" and lab.ranks
    most, gpu, plain = lab.rules
    assert (most.query, most.similar) == ("", Similar(top=5, min_score=0.3))
    assert (gpu.query, gpu.similar) == ("gpu", Similar(top=10, min_score=0.2))
    assert plain.similar is None


def test_a_similar_only_rule_is_not_a_query(tmp_path):
    config = load_config(write(tmp_path, CONFIG), {})
    keys = {rule.key for rule in config.subscribers[0].rules if rule.query}
    assert keys == {"lab/1", "lab/2"}


def test_ranking_without_likes_is_an_error_at_its_place(tmp_path):
    text = CONFIG.replace("    like: [", "    # no likes: [").replace('    dislike: "2403.09999"\n', "")
    message = error_of(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'subscribers.yaml'}:9:18: subscriber 'lab': rule 1 has 'similar'")
    assert "needs 'like:' entries" in message
    plain = "subscribers:\n  - name: lab\n    email: lab@lab.example\n    categories: [cs.DC]\n    sort: relevance\n"
    message = error_of(tmp_path, plain + "    rules: [{name: gpu, query: gpu}]\n")
    assert message.startswith(f"{tmp_path / 'subscribers.yaml'}:5:11: subscriber 'lab': 'sort: relevance'")


def test_a_like_entry_of_no_known_form_is_refused_at_its_line(tmp_path):
    message = error_of(tmp_path, CONFIG.replace('"2310.00002v2"', '"my best paper"'))
    assert message.startswith(f"{tmp_path / 'subscribers.yaml'}:5:")
    assert "'my best paper' is not an arXiv id (2401.01234), an author" in message


def test_a_broken_bib_file_is_an_error_at_its_own_line(tmp_path):
    broken = BIB.replace("  doi = {10.1145/3600006.3613138},\n}", "  doi = {10.1145/3600006.3613138,\n")
    message = error_of(tmp_path, CONFIG, bib=broken)
    assert message.startswith(f"{tmp_path / 'zotero.bib'}:7: not valid BibTeX: '@inproceedings{{doi-only,")


def test_a_missing_bib_file_is_an_error_at_the_entry(tmp_path):
    message = error_of(tmp_path, CONFIG, bib=None)
    assert message.startswith(f"{tmp_path / 'subscribers.yaml'}:5:")
    assert "zotero.bib: cannot read the BibTeX file" in message


def test_a_rule_with_neither_query_nor_similar_is_refused(tmp_path):
    message = error_of(tmp_path, CONFIG.replace("        query: storage\n", ""))
    assert "rule 3 'plain': a rule needs 'query', 'similar' (papers like yours), or both" in message


def test_min_score_is_between_0_and_1(tmp_path):
    message = error_of(tmp_path, CONFIG.replace("min_score: 0.3", "min_score: 3"))
    assert ":10:" in message and "rule 1 'most like our papers': similar.min_score: must be at most 1.0" in message


def test_top_is_at_least_1(tmp_path):
    message = error_of(tmp_path, CONFIG.replace("top: 5", "top: -3"))
    assert ":10:" in message and "similar.top: must be at least 1" in message


def test_an_unknown_key_of_similar_lists_the_keys_similar_knows(tmp_path):
    message = error_of(tmp_path, CONFIG.replace("top: 5", "topp: 5"))
    assert ":10:" in message and "unknown key 'topp'; known keys: min_score, top" in message


def test_an_unquoted_arxiv_id_is_refused_with_the_reason(tmp_path):
    message = error_of(tmp_path, CONFIG.replace('dislike: "2403.09999"', "dislike: 2403.09990"))
    assert message.startswith(f"{tmp_path / 'subscribers.yaml'}:6:")
    assert "write arXiv ids in quotes, such as '2403.0999'" in message
