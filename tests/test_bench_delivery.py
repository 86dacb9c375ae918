"""The delivery benchmark runs in quick mode, prints its figures (the sender path of this tree and of another as
baseline among them), and every message arrives."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "delivery.py"
ROW = re.compile(r"^(?P<name>.+?)\s+(?P<rate>\d+)\s+(?P<seconds>\d+\.\d+)\s+(?P<ratio>\d+\.\d+)x$")


@pytest.mark.slow
def test_quick_bench_prints_every_path_and_everything_arrives():
    tree = str(BENCH.parents[1])  # this tree as its own baseline: the subprocess path works whatever the tree
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--baseline", tree],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {m["name"]: m for line in result.stdout.splitlines() if (m := ROW.match(line.strip()))}
    assert list(rows) == [
        "raw aiosmtplib, 1 connection",
        "SmtpChannel pool_size=1",
        "SmtpChannel pool_size=4",
        "Sender+SQLite pool_size=1",
        "Sender+SQLite pool_size=4",
        "Sender+SQLite pool_size=1, baseline",
    ]
    assert all(int(row["rate"]) > 0 and float(row["seconds"]) > 0 for row in rows.values())
    assert rows["raw aiosmtplib, 1 connection"]["ratio"] == "1.00"
    assert "arrived: 1800/1800" in result.stdout
