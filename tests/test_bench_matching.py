"""The matching benchmark's quick mode runs, and the indexed and naive matchers agree on every rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "arxiv"


@pytest.mark.skipif(not list(FIXTURES.glob("rss-*.DERIVED.xml")), reason=f"fixture feeds not found in {FIXTURES}")
def test_quick_benchmark_finds_identical_matches():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "matching.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical (1,000 rules)" in done.stdout
