"""The relevance benchmark runs in quick mode and checks its own result: the trained model beats the keyword rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # fits corpora and trains 200 profiles in a child process
def test_quick_relevance_benchmark_runs_and_the_model_beats_the_keyword_rule():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "relevance.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the trained model beats the best keyword rule: yes" in done.stdout
    assert "200 subscribers x 50 liked papers" in done.stdout
