"""Signed tokens for the links the daemon puts in digests: an HMAC-SHA256 under a secret the store makes once.

Each kind of link signs its own fields after its own name (``unsubscribe``, ``feedback``), so that a token made for
one kind never verifies as another, and a token is checked in constant time. Pure: no I/O here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SECRET_KEY = "unsubscribe_secret"  # the store's ``meta`` key of the signing secret, shared by every kind of link
TOKEN_BYTES = 16  # 128 bits of the HMAC, 22 characters in the URL


class Signer:
    """Makes and checks the tokens of one kind of link (``purpose``) under ``secret``."""

    def __init__(self, secret: str, purpose: str):
        if not secret:
            raise ValueError("the signing secret must not be empty")
        self._key = secret.encode()
        self._purpose = purpose.encode()

    def token(self, *fields: str) -> str:
        message = b"\0".join((self._purpose, *(field.encode() for field in fields)))
        mac = hmac.new(self._key, message, hashlib.sha256).digest()[:TOKEN_BYTES]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def verify(self, token: str, *fields: str) -> bool:
        """Whether ``token`` was made by :meth:`token` for these fields (constant time)."""
        return hmac.compare_digest(self.token(*fields).encode(), token.encode("utf-8", "replace"))
