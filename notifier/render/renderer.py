"""Digest -> exactly what a channel sends: an email's RFC 5322 bytes, a Slack payload. Templates live in
``templates/``; a :class:`Renderer` compiles them once.

Rendering is pure: it reads templates and nothing else, and every date it shows comes from the digest.
A user folder (``NOTIFIER_TEMPLATES``) can override any template; files missing there come from ours.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import jinja2
from markupsafe import Markup

from notifier.models import Digest, RenderedEmail, SlackMessage
from notifier.render.email import EmailRenderer, install_filters
from notifier.render.html import InlinedLoader, Stylesheet, escape_text
from notifier.render.mime import build_email
from notifier.render.slack import SlackRenderer, encode_payload

__all__ = ["Envelope", "RenderJob", "Renderer", "builtin_templates"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """The headers of a digest email besides its subject (see :func:`~notifier.render.mime.build_email`)."""

    sender: str
    recipient: str
    message_id: str
    date: datetime
    list_id: str
    unsubscribe_url: str | None = None


@dataclass(frozen=True, slots=True)
class RenderJob:
    """One delivery's payload to render: ``digest`` as an email in ``envelope``, or as a Slack post without one."""

    digest: Digest
    envelope: Envelope | None = None


def builtin_templates() -> jinja2.BaseLoader:
    """Our templates: package data of ``notifier`` (``notifier/templates``, in a checkout a link to ``templates/``)."""
    return jinja2.PackageLoader("notifier", "templates")


class Renderer:
    """Renders digests for email and Slack.

    One renderer serves every digest of a plan: it loads and compiles the templates once (with ``email.css``
    inlined into the HTML ones), and remembers each paper it rendered for reuse by the next digests that list it.
    The templates load when the first digest is rendered, and again whenever one of their files changed, so an
    operator's fix is picked up without a restart; until a change loads, every digest fails with its error. Within
    :meth:`templates_checked_once` (a chunk of a plan) the files are looked at once, not for every digest.
    """

    def __init__(self, templates_dir: Path | None = None) -> None:
        loaders: list[jinja2.BaseLoader] = []
        if templates_dir is not None:
            loaders.append(jinja2.FileSystemLoader(templates_dir))
        loaders.append(builtin_templates())
        self._loader = jinja2.ChoiceLoader(loaders)
        self._loaded: _Loaded | None = None
        self._pinned: _Loaded | None = None  # the templates every digest uses until the chunk ends
        self._slack = SlackRenderer()

    @property
    def env(self) -> jinja2.Environment:
        """The Jinja2 environment of the templates as they are now."""
        return self._current().env

    def email(
        self, digest: Digest, *, unsubscribe_url: str | None = None, max_html_bytes: int = 100_000
    ) -> RenderedEmail:
        """Subject, text part and HTML part (HTML under ``max_html_bytes`` where the papers allow)."""
        return self._current().email.render(digest, unsubscribe_url, max_html_bytes)

    def email_message(
        self,
        digest: Digest,
        *,
        sender: str,
        recipient: str,
        message_id: str,
        date: datetime,
        list_id: str,
        unsubscribe_url: str | None = None,
        max_html_bytes: int = 100_000,
    ) -> bytes:
        """The digest email as the SMTP channel sends it: :meth:`email` built into a message by
        :func:`~notifier.render.mime.build_email` (which says what each header argument may be)."""
        rendered = self.email(digest, unsubscribe_url=unsubscribe_url, max_html_bytes=max_html_bytes)
        return build_email(
            rendered,
            sender=sender,
            recipient=recipient,
            message_id=message_id,
            date=date,
            list_id=list_id,
            unsubscribe_url=unsubscribe_url,
        )

    def payload(self, job: RenderJob) -> bytes:
        """What the channel of ``job`` sends: :meth:`email_message` in its envelope, or :meth:`slack_payload`."""
        envelope = job.envelope
        if envelope is None:
            return self.slack_payload(job.digest)
        return self.email_message(
            job.digest,
            sender=envelope.sender,
            recipient=envelope.recipient,
            message_id=envelope.message_id,
            date=envelope.date,
            list_id=envelope.list_id,
            unsubscribe_url=envelope.unsubscribe_url,
        )

    def slack(self, digest: Digest) -> list[SlackMessage]:
        """Block Kit messages, split so that each respects Slack's limits; no paper is left out."""
        return self._slack.render(digest)

    def slack_payload(self, digest: Digest) -> bytes:
        """The digest's Slack messages in the payload the Slack channel posts (see
        :func:`~notifier.render.slack.encode_payload`)."""
        return encode_payload(self.slack(digest))

    @contextlib.contextmanager
    def templates_checked_once(self) -> Iterator[None]:
        """Render with the templates as they are on entry: their files are not looked at again for each digest
        (five ``stat`` calls, and Jinja's own for each import). Templates that do not load are not held: each
        digest then fails with their error, as it would outside."""
        try:
            self._pinned = self._current()
        except Exception:  # not held: each digest raises it again, and fails alone with it
            self._pinned = None
        try:
            yield
        finally:
            self._pinned = None

    def _current(self) -> _Loaded:
        if self._pinned is not None:
            return self._pinned
        loaded = self._loaded
        if loaded is None or not all(template.is_up_to_date for template in loaded.templates):
            loaded = self._loaded = _Loaded.load(self._loader)
        return loaded


class _Loaded:
    """The compiled templates, with their papers' cache; ``templates`` are the files they came from."""

    def __init__(self, env: jinja2.Environment, email: EmailRenderer, templates: tuple[jinja2.Template, ...]) -> None:
        self.env = env
        self.email = email
        self.templates = templates

    @classmethod
    def load(cls, loader: jinja2.BaseLoader) -> _Loaded:
        css = _environment(loader).get_template("email.css")
        sheet = Stylesheet.parse(css.render())
        env = _environment(InlinedLoader(loader, sheet))
        env.globals["kept_css"] = Markup(sheet.kept)
        email = EmailRenderer(env)
        return cls(env, email, (css, *email.templates))


def _environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    """Our Jinja2 environment: HTML templates autoescaped (as :func:`~notifier.render.html.escape_text` says), the
    others not; undefined names are errors."""
    env = jinja2.Environment(
        loader=loader,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        auto_reload=False,  # a changed file makes a new environment (Renderer._current), not a reload inside one
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=escape_text,
    )
    install_filters(env)
    return env
