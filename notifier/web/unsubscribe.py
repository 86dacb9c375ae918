"""One-click unsubscribe links (RFC 8058): signed URLs naming a subscriber and one of its email addresses.

A link is ``PUBLIC_URL/unsubscribe?s=SUBSCRIBER&a=ADDRESS&t=TOKEN``. The token is an HMAC-SHA256 of the subscriber
and the address's :func:`~notifier.addresses.address_key` (case and surrounding space do not count, as everywhere
addresses are compared) under a secret the store makes once and keeps, so links stay valid across
restarts, and nobody can unsubscribe an address from a link they did not receive (:mod:`.signing`). Pure: no
I/O here.
"""

from __future__ import annotations

from urllib.parse import urlencode

from notifier.addresses import address_key
from notifier.web.signing import SECRET_KEY, Signer

__all__ = ["SECRET_KEY", "UnsubscribeLinks"]


class UnsubscribeLinks:
    """Makes and checks unsubscribe tokens; ``url`` needs ``public_url`` (the daemon's https address)."""

    def __init__(self, secret: str, public_url: str | None = None):
        self._signer = Signer(secret, "unsubscribe")
        self.public_url = public_url.rstrip("/") if public_url else None

    def token(self, subscriber: str, address: str) -> str:
        return self._signer.token(subscriber, address_key(address))

    def verify(self, subscriber: str, address: str, token: str) -> bool:
        """Whether ``token`` was made by :meth:`token` for this subscriber and address (constant time)."""
        return self._signer.verify(token, subscriber, address_key(address))

    def query(self, subscriber: str, address: str) -> str:
        return urlencode({"s": subscriber, "a": address, "t": self.token(subscriber, address)})

    def url(self, subscriber: str, address: str) -> str | None:
        """The one-click link for ``address`` in ``subscriber``'s digests, or None without a public URL."""
        if self.public_url is None:
            return None
        return f"{self.public_url}/unsubscribe?{self.query(subscriber, address)}"
