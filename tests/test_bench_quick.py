"""The matching, config, end-to-end and rendering benchmarks run in quick mode and check their own results: the
indexed matcher agrees with the naive loop on every rule, the generated subscribers file loads both ways, `notifier
once` passes `notifier check` on its generated file and plans and sends digests from the served day, and every
generated digest renders, and the store holds every digest it was asked to record."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test runs a benchmark script in a child process

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "arxiv"


@pytest.mark.skipif(not list(FIXTURES.glob("rss-*.DERIVED.xml")), reason=f"fixture feeds not found in {FIXTURES}")
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("matching.py", "identical (1,000 rules)"),
        ("config.py", "done: 200 | 2,801 |"),
        ("once.py", "N = 50 subscribers (250 rules"),
        ("render.py", "200 digests: "),
        ("store.py", "as asked"),
    ],
)
def test_quick_benchmark_runs_and_checks_itself(script, expected):
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert expected in done.stdout
