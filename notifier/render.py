"""Digest -> rendered message. One Jinja2 environment per :class:`Renderer`; templates live in ``templates/``.

Rendering is pure: it reads templates and nothing else, and every date it shows comes from the digest.
A user folder (``NOTIFIER_TEMPLATES``) can override any template; files missing there come from ours.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import jinja2

from notifier.models import Digest, RenderedEmail, SlackMessage
from notifier.render_email import EmailRenderer, install_filters
from notifier.render_slack import render_slack

__all__ = ["Renderer", "builtin_templates"]


class _TraversableLoader(jinja2.BaseLoader):
    """Loads templates from an installed package folder that may not be a plain directory."""

    def __init__(self, root: Traversable) -> None:
        self.root = root

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, None]:
        node = self.root
        for piece in template.split("/"):
            if piece in ("", ".", ".."):
                raise jinja2.TemplateNotFound(template)
            node = node.joinpath(piece)
        if not node.is_file():
            raise jinja2.TemplateNotFound(template)
        return node.read_text(encoding="utf-8"), None, None


def builtin_templates() -> jinja2.BaseLoader:
    """Our templates: the ``templates/`` folder of a source checkout, else the installed ``notifier.templates``."""
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if checkout.is_dir():
        return jinja2.FileSystemLoader(checkout)
    return _TraversableLoader(resources.files("notifier.templates"))


class Renderer:
    """Renders digests for email and Slack."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir is not None:
            loaders.append(jinja2.FileSystemLoader(templates_dir))
        loaders.append(builtin_templates())
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        install_filters(self.env)
        self._email = EmailRenderer(self.env)

    def email(
        self, digest: Digest, *, unsubscribe_url: str | None = None, max_html_bytes: int = 100_000
    ) -> RenderedEmail:
        """Subject, text part and HTML part (HTML under ``max_html_bytes`` where the papers allow)."""
        return self._email.render(digest, unsubscribe_url, max_html_bytes)

    def slack(self, digest: Digest) -> list[SlackMessage]:
        """Block Kit messages, split so that each respects Slack's limits; no paper is left out."""
        return render_slack(digest)
