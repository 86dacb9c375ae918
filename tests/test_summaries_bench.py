"""The cost benchmark of LLM summaries runs on the fixture papers through the stand-in and prints its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "arxiv"


@pytest.mark.slow
@pytest.mark.skipif(not list(FIXTURES.glob("rss-*.DERIVED.xml")), reason=f"fixture feeds not found in {FIXTURES}")
def test_the_cost_benchmark_summarises_every_paper_asked_and_prints_the_cost():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "summaries.py"), "--limit", "60", "--daily-limit", "500"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "papers: 60 of the 2,566 distinct paper versions" in out
    assert "summaries made: 60, failed: 0" in out
    assert re.search(r"prompt +mean +\d+\.\d +median", out)
    assert "$0.15 per million input tokens, $0.60 per million output tokens" in out
    assert re.search(r"stand-in answers +\$0\.000\d+ +\$0\.\d+ +\$\d+\.\d\d", out)
