"""Process settings: environment variables (``NOTIFIER_*``), overridden by command-line options.

Every setting has an embedded default that runs with no credentials: SQLite and an ``outbox/`` folder in the data
directory, mail and Slack posts written there as files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from notifier.errors import ConfigError

DEFAULT_RSS_URL = "https://rss.arxiv.org/rss/"
DEFAULT_API_URL = "https://export.arxiv.org/api/query"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"


def default_data_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_DATA_HOME") or str(Path(environ.get("HOME", ".")) / ".local" / "share")
    return Path(base) / "arxiv-notifier"


@dataclass(frozen=True, slots=True)
class Settings:
    subscribers: Path
    data_dir: Path
    arxiv_rss_url: str = DEFAULT_RSS_URL
    arxiv_api_url: str = DEFAULT_API_URL
    min_request_interval: float = 3.0
    contact: str = "https://github.com/arxiv-notifier/arxiv-notifier"
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_pool_size: int = 3
    smtp_validate_certs: bool = True
    mail_from: str = "arxiv-notifier <arxiv-notifier@localhost>"
    slack_token: str | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    public_url: str | None = None
    http_addr: str | None = None  # host:port of the health, metrics and unsubscribe endpoints; off when unset
    templates: Path | None = None
    backfill_days: int = 7
    poll_interval: float = 900.0  # seconds between polls while an announcement is due and not yet seen
    max_feed_bytes: int = 20_000_000
    request_timeout: float = 60.0
    database_url: str | None = None  # postgresql://...: a PostgreSQL store several daemons share; unset: SQLite
    lease_seconds: float = 120.0  # how long a claimed delivery is kept from other senders (PostgreSQL)

    @property
    def database(self) -> Path:
        """The SQLite database, used when ``database_url`` is unset."""
        return self.data_dir / "notifier.sqlite3"

    @property
    def outbox(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def http_host(self) -> str:
        """The host part of ``http_addr`` (brackets of an IPv6 address removed)."""
        host = (self.http_addr or "").rpartition(":")[0]
        return host[1:-1] if host.startswith("[") and host.endswith("]") else host

    @property
    def http_port(self) -> int:
        return int((self.http_addr or "").rpartition(":")[2])

    @property
    def mail_domain(self) -> str:
        address = self.mail_from.rsplit("<", 1)[-1].rstrip(">")
        return address.rsplit("@", 1)[-1] or "localhost"

    def redacted(self) -> dict[str, object]:
        """The settings with secrets replaced, safe to print and log."""
        shown: dict[str, object] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("smtp_password", "slack_token") and value:
                value = "***"
            elif item.name == "database_url" and value:
                value = redact_url(value)
            shown[item.name] = str(value) if isinstance(value, Path) else value
        return shown


_ENV = {
    "subscribers": "NOTIFIER_SUBSCRIBERS",
    "data_dir": "NOTIFIER_DATA_DIR",
    "arxiv_rss_url": "NOTIFIER_ARXIV_RSS_URL",
    "arxiv_api_url": "NOTIFIER_ARXIV_API_URL",
    "min_request_interval": "NOTIFIER_MIN_REQUEST_INTERVAL",
    "contact": "NOTIFIER_CONTACT",
    "smtp_host": "NOTIFIER_SMTP_HOST",
    "smtp_port": "NOTIFIER_SMTP_PORT",
    "smtp_username": "NOTIFIER_SMTP_USERNAME",
    "smtp_password": "NOTIFIER_SMTP_PASSWORD",
    "smtp_security": "NOTIFIER_SMTP_SECURITY",
    "smtp_pool_size": "NOTIFIER_SMTP_POOL_SIZE",
    "smtp_validate_certs": "NOTIFIER_SMTP_VALIDATE_CERTS",
    "mail_from": "NOTIFIER_MAIL_FROM",
    "slack_token": "NOTIFIER_SLACK_TOKEN",
    "slack_api_url": "NOTIFIER_SLACK_API_URL",
    "public_url": "NOTIFIER_PUBLIC_URL",
    "http_addr": "NOTIFIER_HTTP_ADDR",
    "templates": "NOTIFIER_TEMPLATES",
    "backfill_days": "NOTIFIER_BACKFILL_DAYS",
    "poll_interval": "NOTIFIER_POLL_INTERVAL",
    "max_feed_bytes": "NOTIFIER_MAX_FEED_BYTES",
    "request_timeout": "NOTIFIER_REQUEST_TIMEOUT",
    "database_url": "NOTIFIER_DATABASE_URL",
    "lease_seconds": "NOTIFIER_LEASE_SECONDS",
}
ENV_VARS = _ENV


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None) -> Settings:
    """Build settings from ``environ`` (default: the process environment) and CLI ``overrides`` (None = unset)."""
    environ = os.environ if environ is None else environ
    raw: dict[str, object] = {}
    source: dict[str, str] = {}
    for name, variable in _ENV.items():
        value = environ.get(variable)
        if value not in (None, ""):
            raw[name] = value
            source[name] = variable
    for name, override in (overrides or {}).items():
        if override is not None:
            raw[name] = override
            source[name] = "--" + name.replace("_", "-")
    raw.setdefault("subscribers", "subscribers.yaml")
    raw.setdefault("data_dir", str(default_data_dir(environ)))
    return _build(raw, source)


def _build(raw: dict[str, object], source: dict[str, str]) -> Settings:
    def text(name: str) -> str:
        return str(raw[name]).strip()

    values: dict[str, object] = {}
    for item in fields(Settings):
        if item.name not in raw:
            continue
        where = source.get(item.name, item.name)
        value = raw[item.name]
        try:
            if item.name in ("subscribers", "data_dir", "templates"):
                values[item.name] = Path(text(item.name)).expanduser()
            elif item.name in ("smtp_port", "smtp_pool_size", "backfill_days", "max_feed_bytes"):
                values[item.name] = int(cast(str, value))
            elif item.name in ("min_request_interval", "poll_interval", "request_timeout", "lease_seconds"):
                values[item.name] = float(cast(str, value))
            elif item.name == "smtp_validate_certs":
                values[item.name] = _boolean(value)
            else:
                values[item.name] = text(item.name)
        except ValueError as exc:
            raise ConfigError(f"{where}: invalid value {value!r}: {exc}") from None
    settings = Settings(**values)  # type: ignore[arg-type]
    _validate(settings, source)
    return settings


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if "password" in query.lower():
        query = urlencode(
            [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(query, keep_blank_values=True)],
            safe="*",
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _validate(settings: Settings, source: dict[str, str]) -> None:
    def fail(name: str, message: str) -> None:
        raise ConfigError(f"{source.get(name, name)}: {message}")

    if settings.smtp_security not in ("starttls", "tls", "none"):
        fail("smtp_security", f"must be starttls, tls or none, not {settings.smtp_security!r}")
    if settings.min_request_interval < 3.0 and not settings.arxiv_rss_url.startswith(
        ("http://127.", "http://localhost")
    ):
        fail("min_request_interval", "arXiv asks for at least 3 seconds between requests")
    if settings.min_request_interval < 0:
        fail("min_request_interval", "must not be negative")
    if settings.smtp_pool_size < 1:
        fail("smtp_pool_size", "must be at least 1")
    if settings.backfill_days < 0:
        fail("backfill_days", "must not be negative")
    for name in ("arxiv_rss_url", "arxiv_api_url", "slack_api_url"):
        if not str(getattr(settings, name)).startswith(("http://", "https://")):
            fail(name, "must be an http(s) URL")
    if settings.public_url and not settings.public_url.startswith("https://"):
        fail("public_url", "must be an https:// URL (mail clients only offer one-click unsubscribe over https)")
    if settings.http_addr is not None:
        host, colon, port = settings.http_addr.rpartition(":")
        if not colon or not host or not port.isdigit() or int(port) > 65535:
            fail("http_addr", f"must be host:port, such as 127.0.0.1:8080 or [::]:8080, not {settings.http_addr!r}")
    if settings.public_url and settings.http_addr is None:
        fail(
            "public_url",
            "one-click unsubscribe links point at this daemon, so set NOTIFIER_HTTP_ADDR (the address it listens on)"
            " as well",
        )
    if settings.database_url is not None and not settings.database_url.startswith(("postgresql://", "postgres://")):
        fail("database_url", "must be a postgresql:// (or postgres://) URL")
    if settings.lease_seconds <= 0:
        fail("lease_seconds", "must be positive")
    if (settings.smtp_username is None) != (settings.smtp_password is None):
        fail("smtp_username", "set both NOTIFIER_SMTP_USERNAME and NOTIFIER_SMTP_PASSWORD, or neither")
