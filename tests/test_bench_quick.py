"""The matching, config, end-to-end, rendering, store, reservation, chunk and collector benchmarks run in quick mode
and check their own results: the indexed matcher agrees with the naive loop on every rule, the generated subscribers
file loads both ways, `notifier once` passes `notifier check` on its generated file and plans and sends digests from
the served day, every generated digest renders, the store holds every digest it was asked to record, a plan's
question about what each recipient has had gets the same answer for its papers as the whole history does, every
chunk of digests crosses to a render worker whole, both ways it can be sent, and a worker renders the same payloads
whether or not its heap is frozen."""

from __future__ import annotations

import re
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
        ("reservations.py", "same answers for the matched papers"),
        ("chunks.py", "each chunk crossed whole both ways"),
        ("collector.py", "the same payloads both ways"),
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


def test_the_end_to_end_benchmark_can_mail_over_smtp_and_every_mail_reaches_the_sink():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "once.py"), "--quick", "--smtp"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [re.split(r"\s{2,}", line.strip()) for line in done.stdout.splitlines() if line.startswith("  ")]
    figures = {row[0]: row[1] for row in rows if len(row) > 1}
    deliveries = int(figures["deliveries"])
    mailed = int(figures["mails the SMTP sink received"].replace(",", ""))
    slack_files = int(figures["outbox files / MB"].split()[0].replace(",", ""))
    assert mailed > 0 and mailed + slack_files == deliveries, "mail went to the sink, Slack posts to the outbox"
