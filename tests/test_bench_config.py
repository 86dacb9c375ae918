"""The config-loading benchmark's quick mode runs and loads its file both ways."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "arxiv"


@pytest.mark.skipif(not list(FIXTURES.glob("rss-*.DERIVED.xml")), reason=f"fixture feeds not found in {FIXTURES}")
def test_quick_config_benchmark_loads_the_generated_file():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "config.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: 200 | 2,801 |" in done.stdout
