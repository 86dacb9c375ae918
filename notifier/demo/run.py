"""One real cycle against the bundled arXiv day: poll, match, render and send into the outbox of a new folder.

The demo owns its settings: it reads no ``NOTIFIER_*`` variable, so a shell set up for production (an SMTP host, a
Slack token) still sends nothing. Each email digest's HTML part is written out as a page of its own, and
``index.html`` links every one of them.
"""

from __future__ import annotations

import email
import email.policy
import html
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from notifier.config.settings import Settings
from notifier.config.subscribers import load_config
from notifier.daemon import CycleReport, Notifier
from notifier.demo.stand_in import DATA, DEMO_DAY, ArxivStandIn

SUBSCRIBERS = DATA / "subscribers.yaml"


@dataclass(frozen=True, slots=True)
class DemoResult:
    folder: Path
    report: CycleReport
    files: tuple[Path, ...]  # what the cycle wrote to the outbox, sorted
    pages: tuple[Path, ...]  # the HTML part of each email digest, as a page
    index: Path


async def run_demo(folder: Path) -> DemoResult:
    """Serve the bundled day, run one cycle with the bundled subscribers into ``folder``, and write the pages."""
    async with ArxivStandIn(day=DEMO_DAY) as server:
        settings = Settings(
            subscribers=SUBSCRIBERS,
            data_dir=folder,
            arxiv_rss_url=server.rss_base_url,
            arxiv_api_url=server.api_url,
            min_request_interval=0.0,
            request_timeout=10.0,
            poll_timeout=60.0,
            retention_days=0,
        )
        config = load_config(settings.subscribers, environ={})
        async with Notifier(settings, config) as app:
            report = await app.cycle(force_send=True, poll=True)
    files = tuple(sorted(path for path in settings.outbox.rglob("*") if path.is_file()))
    pages = tuple(_write_page(path, folder / "pages") for path in files if path.suffix == ".eml")
    index = folder / "index.html"
    index.write_text(_index(pages, folder), encoding="utf-8")
    return DemoResult(folder, report, files, pages, index)


def _write_page(eml: Path, pages: Path) -> Path:
    """The HTML part of the digest in ``eml``, as ``pages/<its name>.html``."""
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)  # the default policy makes one
    part = message.get_body(("html",))
    body = part.get_content() if part is not None else f"<pre>{html.escape(message.as_string())}</pre>"
    pages.mkdir(parents=True, exist_ok=True)
    page = pages / (eml.stem + ".html")
    page.write_text(str(body).replace("\r\n", "\n"), encoding="utf-8")
    return page


def _index(pages: tuple[Path, ...], folder: Path) -> str:
    items = []
    for page in pages:
        message = email.message_from_bytes(
            (folder / "outbox" / "email" / (page.stem + ".eml")).read_bytes(), policy=email.policy.default
        )
        subject, recipient = str(message["Subject"]), str(message["To"])
        link = html.escape(page.relative_to(folder).as_posix(), quote=True)
        items.append(f'<li><a href="{link}">{html.escape(subject)}</a> <small>to {html.escape(recipient)}</small></li>')
    listing = "\n".join(items) or "<li>No digest was produced.</li>"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>arxiv-notifier demo</title></head>\n'
        f"<body><h1>arxiv-notifier demo: arXiv of {DEMO_DAY}</h1>\n"
        "<p>The email digests one cycle produced from a captured day of arXiv (cs.SD and eess.AS) for the demo"
        " subscribers. The Slack messages are the <code>.json</code> files in <code>outbox/slack</code>.</p>\n"
        f"<ul>\n{listing}\n</ul></body></html>\n"
    )
