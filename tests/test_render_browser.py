"""The HTML email in headless Chromium: no horizontal overflow at phone and desktop widths, plus screenshots.

Screenshots go to ``test-artifacts/screenshots/`` at the repository root for people (and CI) to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from html import escape
from pathlib import Path

import pytest

from notifier.models import Digest
from notifier.render.renderer import Renderer
from tests.digest_factory import (
    fake_summary,
    golden_digest,
    hostile_summary,
    large_digest,
    rich_weekly_digest,
    similar_digest,
    weekly_digest,
    with_summaries,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--allow-file-access-from-files",
)
# Runs inside the email (in an iframe of the width under test) and writes its widest point into the outer
# page, where --dump-dom shows it. An iframe gives an exact viewport; headless windows have a minimum width.
PROBE = """<script>
(function () {
  var widest = 0;
  var culprit = "";
  var all = document.body.getElementsByTagName("*");
  for (var i = 0; i < all.length; i++) {
    var right = all[i].getBoundingClientRect().right;
    if (right > widest) { widest = right; culprit = all[i].tagName + "." + all[i].className; }
  }
  var container = document.querySelector(".container").getBoundingClientRect().width;
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = "inner=" + window.innerWidth + " scroll=" + document.documentElement.scrollWidth +
    " widest=" + Math.ceil(widest) + " container=" + Math.round(container) +
    " culprit=" + culprit;
  parent.document.body.appendChild(out);
})();
</script>"""

if CHROMIUM is None:
    pytest.skip("chromium is not installed", allow_module_level=True)


def chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / "profile"
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def measure(tmp_path: Path, html: str, width: int) -> dict[str, int]:
    """Viewport width, scroll width, the right edge of the widest element and the container's width, in px."""
    page = tmp_path / f"probe-{width}.html"
    inner = html.replace("</body>", PROBE + "</body>")
    frame = f'<iframe width="{width}" height="30000" style="border:0" srcdoc="{escape(inner, quote=True)}"></iframe>'
    page.write_text(f"<!DOCTYPE html><html><body style='margin:0'>{frame}</body></html>", encoding="utf-8")
    dom = chromium(tmp_path, f"--window-size={max(width, 800)},2000", "--dump-dom", page.as_uri())
    found = re.search(r"inner=(\d+) scroll=(\d+) widest=(\d+) container=(\d+) culprit=([^<]*)", dom)
    assert found, dom[-2000:]
    names = ("inner", "scroll", "widest", "container")
    return {name: int(found[i]) for i, name in enumerate(names, start=1)}


def screenshot(tmp_path: Path, html: str, name: str, width: int, *extra: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = tmp_path / f"{name}.html"
    page.write_text(html, encoding="utf-8")
    target = SCREENSHOTS / f"{name}-{width}.png"
    chromium(tmp_path, f"--window-size={width},2400", f"--screenshot={target}", *extra, page.as_uri())
    assert target.stat().st_size > 1000
    return target


DIGESTS = {
    "daily": golden_digest,
    "weekly": weekly_digest,
    "rich-weekly": rich_weekly_digest,
    "similar": similar_digest,
}


@pytest.mark.parametrize("width", [375, 1024])
@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_no_horizontal_overflow(tmp_path: Path, name: str, width: int) -> None:
    digest: Digest = DIGESTS[name]()
    html = Renderer().email(digest, unsubscribe_url="https://lab.example/unsubscribe?token=" + "a" * 80).html
    probe = measure(tmp_path, html, width)
    assert probe["inner"] == width
    assert probe["scroll"] <= width, probe
    assert probe["widest"] <= width, probe
    screenshot(tmp_path, html, f"{name}", width)


def test_container_is_capped_on_desktop(tmp_path: Path) -> None:
    html = Renderer().email(golden_digest()).html
    probe = measure(tmp_path, html, 1400)
    assert probe["container"] == 680, probe
    assert probe["scroll"] <= 1400, probe


def test_dark_mode_and_large_digest_screenshots(tmp_path: Path) -> None:
    renderer = Renderer()
    golden = renderer.email(golden_digest()).html
    dark = screenshot(tmp_path, golden, "daily-dark", 375, "--blink-settings=preferredColorScheme=0")
    light = SCREENSHOTS / "daily-375.png"
    if light.exists():
        assert dark.read_bytes() != light.read_bytes()
    large = renderer.email(large_digest(300)).html
    screenshot(tmp_path, large, "large", 375)
    assert measure(tmp_path, large, 375)["scroll"] <= 375


def rich_entry_digest() -> Digest:
    """Two rich entries, the first with a hostile summary, the second with a plain one and an institution."""
    digest = with_summaries(weekly_digest(), ["speech enhancement"])
    first, second = (m.paper for m in digest.sections[0].matches[:2])
    summaries = {
        first.arxiv_id: hostile_summary(first),
        second.arxiv_id: fake_summary(second, "University of Edinburgh, Centre for Speech Technology Research"),
    }
    section = replace(digest.sections[0], matches=digest.sections[0].matches[:2])
    return replace(
        digest,
        sections=(section, *digest.sections[1:]),
        summaries={(p.arxiv_id, p.version): summaries[p.arxiv_id] for p in (first, second)},
    )


def test_rich_entry_with_a_hostile_summary(tmp_path: Path) -> None:
    html = Renderer().email(rich_entry_digest()).html
    page = tmp_path / "rich-entry.html"
    page.write_text(html, encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    body = dom[dom.index("<body") :]
    # The hostile text is text: shown escaped, and no element it names exists in the page Chromium built.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt; &lt;!channel&gt; @here" in body
    assert "[&lt;b&gt;x&lt;/b&gt;]" in body and '&lt;a href="javascript:alert(3)"&gt;k&lt;/a&gt;' in body
    assert not re.search(r"<(script|img|i)[\s>]", body)
    assert not re.search(r"<a [^>]*href=\"javascript:", body, re.IGNORECASE)
    assert "onerror=" not in re.sub(r"&lt;img src=x onerror=alert\(2\)&gt;", "", body)
    assert "<b>Summary (LLM):</b>" in re.sub(r' style="[^"]*"', "", body)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / "rich-entry.png"
    chromium(tmp_path, "--window-size=720,1400", f"--screenshot={target}", page.as_uri())
    assert target.stat().st_size > 1000
