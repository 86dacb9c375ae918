"""SpamAssassin (local rules only, no network tests) scores rendered digests at or below 0."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from notifier.models import Digest
from notifier.render.mime import build_email
from notifier.render.renderer import Renderer
from tests.digest_factory import empty_digest, golden_digest, large_digest, weekly_digest

pytestmark = [pytest.mark.spam, pytest.mark.slow]

SPAMASSASSIN = shutil.which("spamassassin")
if SPAMASSASSIN is None:
    pytest.skip("spamassassin is not installed", allow_module_level=True)

UNSUBSCRIBE = "https://lab.example/unsubscribe?token=abc"


def message(digest: Digest) -> bytes:
    """The digest as the daemon sends it: rendered, then built with every header by :func:`build_email`."""
    return build_email(
        Renderer().email(digest, unsubscribe_url=UNSUBSCRIBE),
        sender="arXiv digest <digest@lab.example>",
        recipient="ada@lab.example",
        message_id="<digest-2025-06-03-ada@lab.example>",
        date=digest.period_end,
        list_id="ada.lab.example",
        unsubscribe_url=UNSUBSCRIBE,
    )


def score(raw: bytes, home: Path) -> tuple[float, list[str]]:
    """SpamAssassin's score and the rules that fired, with network tests off."""
    env = {**os.environ, "HOME": str(home)}  # it writes user_prefs under $HOME
    done = subprocess.run(
        [str(SPAMASSASSIN), "--local", "--test-mode"], input=raw, capture_output=True, timeout=120, env=env, check=False
    )
    out = done.stdout.decode("utf-8", "replace")
    status = re.search(r"^X-Spam-Status: \w+, score=(-?[\d.]+)[\s\S]*?tests=([^\n]*(?:\n\t[^\n]*)*)", out, re.M)
    assert status, out[-3000:] + done.stderr.decode("utf-8", "replace")[-2000:]
    rules = [r for r in re.split(r"[\s,]+", status[2]) if r and "=" not in r]
    return float(status[1]), rules


def large() -> Digest:
    return large_digest(300)


DIGESTS = {"daily": golden_digest, "weekly": weekly_digest, "empty": empty_digest, "large": large}


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_spamassassin_score_at_most_zero(tmp_path: Path, name: str) -> None:
    value, rules = score(message(DIGESTS[name]()), tmp_path)
    assert value <= 0, (value, rules)
    assert "MPART_ALT_DIFF" not in rules and "MPART_ALT_DIFF_COUNT" not in rules
