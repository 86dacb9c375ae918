"""Display text: what a reader sees of a paper's title and abstract."""

from __future__ import annotations

import pytest

from notifier.arxiv.display import clean_display


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ('Few-step Adversarial Schr\\"{o}dinger Bridge', "Few-step Adversarial Schrödinger Bridge"),
        ('a tractable Schr\\"odinger Bridge', "a tractable Schrödinger Bridge"),
        ('M{\\"u}ller and Erd\\H{o}s', "Müller and Erdős"),
        ("Ma\\'{c}kowiak, {\\o}ystein, Stra{\\ss}e, \\c{c}a, {\\v s}", "Maćkowiak, øystein, Straße, ça, š"),
        ("$\\hat{x}$ and \\cite{ref} stay as written", "$\\hat{x}$ and \\cite{ref} stay as written"),
        ("R&amp;amp;D", "R&amp;D"),  # entities are decoded exactly once
        ("  two\n   lines  ", "two lines"),
    ],
)
def test_display_text_turns_latex_accents_into_letters_and_leaves_the_rest(raw, shown):
    assert clean_display(raw) == shown
