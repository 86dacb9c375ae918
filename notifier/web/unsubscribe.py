"""One-click unsubscribe links (RFC 8058): signed URLs naming a subscriber and one of its email addresses.

A link is ``PUBLIC_URL/unsubscribe?s=SUBSCRIBER&a=ADDRESS&t=TOKEN``. The token is an HMAC-SHA256 of the subscriber
and the address's :func:`~notifier.addresses.address_key` (case and surrounding space do not count, as everywhere
addresses are compared) under a secret the store makes once and keeps, so links stay valid across
restarts, and nobody can unsubscribe an address from a link they did not receive. Pure: no I/O here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

from notifier.addresses import address_key

SECRET_KEY = "unsubscribe_secret"  # the store's ``meta`` key of the signing secret
TOKEN_BYTES = 16  # 128 bits of the HMAC, 22 characters in the URL


class UnsubscribeLinks:
    """Makes and checks unsubscribe tokens; ``url`` needs ``public_url`` (the daemon's https address)."""

    def __init__(self, secret: str, public_url: str | None = None):
        if not secret:
            raise ValueError("the unsubscribe secret must not be empty")
        self._key = secret.encode()
        self.public_url = public_url.rstrip("/") if public_url else None

    def token(self, subscriber: str, address: str) -> str:
        message = b"\0".join((b"unsubscribe", subscriber.encode(), address_key(address).encode()))
        mac = hmac.new(self._key, message, hashlib.sha256).digest()[:TOKEN_BYTES]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def verify(self, subscriber: str, address: str, token: str) -> bool:
        """Whether ``token`` was made by :meth:`token` for this subscriber and address (constant time)."""
        return hmac.compare_digest(self.token(subscriber, address).encode(), token.encode("utf-8", "replace"))

    def query(self, subscriber: str, address: str) -> str:
        return urlencode({"s": subscriber, "a": address, "t": self.token(subscriber, address)})

    def url(self, subscriber: str, address: str) -> str | None:
        """The one-click link for ``address`` in ``subscriber``'s digests, or None without a public URL."""
        if self.public_url is None:
            return None
        return f"{self.public_url}/unsubscribe?{self.query(subscriber, address)}"
