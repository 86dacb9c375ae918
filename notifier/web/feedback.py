"""Signed "more like this" / "fewer like this" links under each ranked paper of a digest.

A link is ``PUBLIC_URL/feedback?s=SUBSCRIBER&p=ARXIV_ID&k=KIND&t=TOKEN``, ``KIND`` being ``more`` or ``fewer``. The
token is an HMAC-SHA256 of the kind, the arXiv id (without version) and the subscriber, under the secret of the
unsubscribe links but signed as another kind of link (:mod:`.signing`), so that neither token stands for the other.
Nobody can add to a subscriber's likes from a link they did not receive. Pure: no I/O here.
"""

from __future__ import annotations

from urllib.parse import urlencode

from notifier.models import FEEDBACK_KINDS, FeedbackKind, FeedbackUrls
from notifier.web.signing import Signer


def feedback_kind(text: str) -> FeedbackKind | None:
    """``text`` as a kind of feedback, or None when it is not one."""
    for kind in FEEDBACK_KINDS:
        if text == kind:
            return kind
    return None


class FeedbackLinks:
    """Makes and checks feedback tokens; ``urls`` needs ``public_url`` (the daemon's https address)."""

    def __init__(self, secret: str, public_url: str | None = None):
        self._signer = Signer(secret, "feedback")
        self.public_url = public_url.rstrip("/") if public_url else None

    def token(self, subscriber: str, arxiv_id: str, kind: FeedbackKind) -> str:
        return self._signer.token(kind, arxiv_id, subscriber)

    def verify(self, subscriber: str, arxiv_id: str, kind: str, token: str) -> bool:
        """Whether ``token`` was made by :meth:`token` for this subscriber, paper and kind (constant time)."""
        return self._signer.verify(token, kind, arxiv_id, subscriber)

    def query(self, subscriber: str, arxiv_id: str, kind: FeedbackKind) -> str:
        token = self.token(subscriber, arxiv_id, kind)
        return urlencode({"s": subscriber, "p": arxiv_id, "k": kind, "t": token})

    def url(self, subscriber: str, arxiv_id: str, kind: FeedbackKind) -> str | None:
        """The link that tells ``subscriber``'s digests to show more or fewer papers like ``arxiv_id``, or None
        without a public URL."""
        if self.public_url is None:
            return None
        return f"{self.public_url}/feedback?{self.query(subscriber, arxiv_id, kind)}"

    def urls(self, subscriber: str, arxiv_id: str) -> FeedbackUrls | None:
        """Both links for a paper of ``subscriber``'s digests, or None without a public URL."""
        more, fewer = self.url(subscriber, arxiv_id, "more"), self.url(subscriber, arxiv_id, "fewer")
        if more is None or fewer is None:
            return None
        return FeedbackUrls(more=more, fewer=fewer)
