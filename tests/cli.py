"""Running the real ``notifier`` command as a subprocess against the local stand-ins."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.arxiv_server import ArxivStandIn
from tests.smtp_server import SmtpServer

ROOT = Path(__file__).resolve().parents[1]


def cli_environment(
    tmp_path: Path, arxiv: ArxivStandIn, smtp: SmtpServer | None = None, **settings: str
) -> dict[str, str]:
    """The process environment for a run whose subscribers.yaml and data live in ``tmp_path``, that polls the
    arXiv stand-in and, given ``smtp``, mails through it in plain SMTP; ``settings`` add or override variables."""
    env = {
        **os.environ,
        "NOTIFIER_SUBSCRIBERS": str(tmp_path / "subscribers.yaml"),
        "NOTIFIER_DATA_DIR": str(tmp_path / "data"),
        "NOTIFIER_ARXIV_RSS_URL": arxiv.rss_base_url,
        "NOTIFIER_ARXIV_API_URL": arxiv.api_url,
        "NOTIFIER_MIN_REQUEST_INTERVAL": "0.2",
    }
    if smtp is not None:
        env |= {
            "NOTIFIER_SMTP_HOST": "127.0.0.1",
            "NOTIFIER_SMTP_PORT": str(smtp.port),
            "NOTIFIER_SMTP_SECURITY": "none",
            "NOTIFIER_MAIL_FROM": "digest@lab.example",
        }
    return env | settings


async def start_cli(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start ``python -m notifier ARGS`` from the repository root, with stdout and stderr captured."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "notifier", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
