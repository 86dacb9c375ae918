"""Incoming-webhook recipients (:func:`~notifier.config.subscribers.is_webhook` tells them from channels): where
they may post, and how they are shown.

A webhook URL is a secret: whoever has it can post to its channel. It is never logged or shown whole:
:func:`display_recipient` gives its scheme, host and port and a short fingerprint that tells two webhooks apart, and
:func:`scrub` takes it out of error texts that quote it. Webhooks go to Slack's webhook host only, over https,
unless the operator allows more hosts (``NOTIFIER_WEBHOOK_HOSTS``): a subscribers.yaml editor cannot make the
daemon post digests, or anything interpolated into a URL, anywhere else. :func:`webhook_refusal` says why a URL
is refused before any request is made.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from yarl import URL

from notifier.config.settings import split_host_port
from notifier.config.subscribers import is_webhook

SLACK_WEBHOOK_HOST = "hooks.slack.com"
WEBHOOK_HOSTS_SETTING = "NOTIFIER_WEBHOOK_HOSTS"
_DEFAULT_PORTS = {"https": 443, "http": 80}


def display_recipient(recipient: str) -> str:
    """A recipient as logs, errors and ``notifier status`` show it: a webhook URL without its secret path."""
    if not is_webhook(recipient):
        return recipient
    fingerprint = hashlib.sha256(recipient.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    try:
        url = URL(recipient)
    except ValueError:
        return f"webhook …{fingerprint}"
    return f"{_origin(url)}/…{fingerprint}"


def scrub(text: str, recipient: str) -> str:
    """``text`` with every spelling of the webhook URL ``recipient`` (whole, normalised, or its path) replaced by
    :func:`display_recipient`; third-party errors quote the URL they failed on."""
    if not is_webhook(recipient):
        return text
    shown = display_recipient(recipient)
    spellings = {recipient}
    try:
        url = URL(recipient)
    except ValueError:
        pass
    else:
        spellings |= {str(url), url.raw_path_qs, url.path_qs, url.raw_path, url.path}
    for spelling in sorted(spellings, key=len, reverse=True):
        if len(spelling) > 1:
            text = text.replace(spelling, shown)
    return text


def webhook_refusal(recipient: str, allowed_hosts: Iterable[str] = ()) -> str | None:
    """Why the daemon will not post to the webhook URL ``recipient``, or None when it may.

    Allowed: https to ``hooks.slack.com``, and http or https to a host in ``allowed_hosts`` (``host`` for the
    scheme's default port, or ``host:port``).
    """
    try:
        url = URL(recipient)
    except ValueError as exc:
        return f"the webhook URL cannot be read ({exc})"
    scheme = url.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not url.raw_host:
        return "a webhook must be an http(s) URL with a host"
    if url.raw_user is not None or url.raw_password is not None:
        return "a webhook URL must not carry a user name or password"
    host, port = url.raw_host.lower(), url.port
    if scheme == "https" and host == SLACK_WEBHOOK_HOST and port == _DEFAULT_PORTS["https"]:
        return None
    for entry in allowed_hosts:
        allowed_host, allowed_port = split_host_port(entry)
        if _normal_host(allowed_host) == host and (allowed_port or _DEFAULT_PORTS[scheme]) == port:
            return None
    return (
        f"webhooks go only to https://{SLACK_WEBHOOK_HOST} and the hosts listed in {WEBHOOK_HOSTS_SETTING},"
        f" not to {_origin(url)}"
    )


def _origin(url: URL) -> str:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{url.scheme}://{host}" + (f":{url.explicit_port}" if url.explicit_port is not None else "")


def _normal_host(host: str) -> str:
    """A host as yarl sends it (lower case, IDNA-encoded), so an allowed host compares equal to the URL's."""
    try:
        return (URL.build(scheme="http", host=host).raw_host or host).lower()
    except ValueError:
        return host.lower()
