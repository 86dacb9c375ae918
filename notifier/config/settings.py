"""Process settings: environment variables (``NOTIFIER_*``), overridden by command-line options.

Every setting has an embedded default that runs with no credentials: SQLite and an ``outbox/`` folder in the data
directory, mail and Slack posts written there as files.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, NamedTuple, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

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
    lock_wait: float = 30.0  # seconds a sender waits for the data directory's lock held by another (SQLite)
    poll_timeout: float = 300.0  # seconds one poll (every feed, its backfills and API look-ups) may take in all
    webhook_hosts: tuple[str, ...] = ()  # hosts (host or host:port) webhooks may post to, besides hooks.slack.com
    retention_days: int = 30  # days sent messages and old papers are kept (ids and Message-IDs for good); 0: all
    status_show_addresses: bool = False  # the status page shows recipients' addresses, not only subscriber names
    llm_url: str | None = None  # an OpenAI-compatible base URL (https://api.openai.com/v1, http://localhost:11434/v1)
    llm_model: str | None = None
    llm_api_key: str | None = None
    llm_concurrency: int = 4  # requests to the LLM at once
    llm_daily_limit: int = 500  # papers summarised per UTC day
    llm_timeout: float = 60.0  # seconds one LLM request may take
    llm_grace: float = 120.0  # seconds a due digest may wait for its summaries
    embedding_model: str | None = None  # the model at llm_url that embeds papers for ranking; unset: TF-IDF only
    render_workers: int | None = None  # processes a large plan renders in; unset: one per core (none on one core)

    @property
    def summaries_enabled(self) -> bool:
        """Whether an LLM that writes summaries is configured (its URL and model), so rules asking for them get them."""
        return self.llm_url is not None and bool(self.llm_model)

    @property
    def embeddings_enabled(self) -> bool:
        """Whether papers are embedded for ranking (the LLM URL and an embedding model are set)."""
        return self.llm_url is not None and bool(self.embedding_model)

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
            if item.name in ("smtp_password", "slack_token", "llm_api_key") and value:
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
    "lock_wait": "NOTIFIER_LOCK_WAIT",
    "poll_timeout": "NOTIFIER_POLL_TIMEOUT",
    "webhook_hosts": "NOTIFIER_WEBHOOK_HOSTS",
    "retention_days": "NOTIFIER_RETENTION_DAYS",
    "status_show_addresses": "NOTIFIER_STATUS_SHOW_ADDRESSES",
    "llm_url": "NOTIFIER_LLM_URL",
    "llm_model": "NOTIFIER_LLM_MODEL",
    "llm_api_key": "NOTIFIER_LLM_API_KEY",
    "llm_concurrency": "NOTIFIER_LLM_CONCURRENCY",
    "llm_daily_limit": "NOTIFIER_LLM_DAILY_LIMIT",
    "llm_timeout": "NOTIFIER_LLM_TIMEOUT",
    "llm_grace": "NOTIFIER_LLM_GRACE",
    "embedding_model": "NOTIFIER_EMBEDDING_MODEL",
    "render_workers": "NOTIFIER_RENDER_WORKERS",
}
ENV_VARS = _ENV


_INTEGERS = (
    "smtp_port",
    "smtp_pool_size",
    "backfill_days",
    "max_feed_bytes",
    "retention_days",
    "llm_concurrency",
    "llm_daily_limit",
    "render_workers",
)


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
            elif item.name in _INTEGERS:
                values[item.name] = int(cast(str, value))
            elif item.name in (
                "min_request_interval",
                "poll_interval",
                "request_timeout",
                "lease_seconds",
                "lock_wait",
                "poll_timeout",
                "llm_timeout",
                "llm_grace",
            ):
                values[item.name] = float(cast(str, value))
            elif item.name in ("smtp_validate_certs", "status_show_addresses"):
                values[item.name] = _boolean(value)
            elif item.name == "webhook_hosts":
                values[item.name] = _host_list(value)
            elif item.name == "database_url":
                values[item.name] = normalise_database_url(text(item.name))
            else:
                values[item.name] = text(item.name)
        except ValueError as exc:
            shown = redact_url(str(value)) if item.name == "database_url" else value
            raise ConfigError(f"{where}: invalid value {shown!r}: {exc}") from None
    settings = Settings(**values)  # type: ignore[arg-type]
    _validate(settings, source)
    return settings


class _Credentials(NamedTuple):
    prefix: str  # "scheme://"
    user: str
    password: str | None
    after: str  # what follows the '@': host, port, path, query
    ambiguous: bool  # an unencoded '/', '?' or '#' in the user part leaves its end uncertain


# A host list (host, host:port, [v6]:port, comma-separated) as the authority of a URL without a user part.
_HOST_LIST = re.compile(r"(?:\[[^\]]*\]|[^:,\[\]]*)(?::\d*)?(?:,(?:\[[^\]]*\]|[^:,\[\]]*)(?::\d*)?)*")
_MIN_SECRET = 3  # shorter pieces of a password cannot be told apart from other text in a message


def _credentials(url: str) -> _Credentials | None:
    """The user part of ``url``, or None when it has none.

    The user part ends at the last '@' before the path, so a password may hold '@' and ':' unencoded. An unencoded
    '/', '?' or '#' in it ends the authority early; then the user part is taken to end at the URL's last '@', so
    that nothing of the password is ever shown, and it is marked ambiguous.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min((index for index in (rest.find(char) for char in "/?#") if index >= 0), default=len(rest))
    authority = rest[:end]
    if "@" in authority:
        userinfo, _, host = authority.rpartition("@")
        after, ambiguous = host + rest[end:], False
    elif "@" in rest and not _HOST_LIST.fullmatch(authority):
        userinfo, _, after = rest.rpartition("@")
        ambiguous = True
    else:
        return None
    user, colon, password = userinfo.partition(":")
    return _Credentials(scheme + sep, user, password if colon else None, after, ambiguous)


def normalise_database_url(url: str) -> str:
    """``url`` with its user name and password percent-encoded, so that a password holding '@' or ':' reaches the
    server whole instead of spilling into the host name; ValueError when an unencoded '/', '?' or '#' in them makes
    the URL ambiguous."""
    found = _credentials(url)
    if found is None:
        return url
    if found.ambiguous:
        raise ValueError("percent-encode '/', '?' and '#' in the user name and password (as %2F, %3F and %23)")
    userinfo = quote(unquote(found.user), safe="")
    if found.password is not None:
        userinfo += ":" + quote(unquote(found.password), safe="")
    return f"{found.prefix}{userinfo}@{found.after}"


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    found = _credentials(url)
    if found is not None and (found.password is not None or found.ambiguous):
        url = f"{found.prefix}{found.user}:***@{found.after}"
    parts = urlsplit(url)
    if "password" not in parts.query.lower():
        return url
    query = urlencode(
        [(k, "***" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*",
    )
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def redact_secrets(text: str, url: str) -> str:
    """``text``, a message from a database driver that may quote ``url`` or parts of it, with the URL redacted and
    its password, in every spelling and every piece of it after an '@', replaced by ``***``."""
    secrets: set[str] = set()
    found = _credentials(url)
    passwords = [found.password] if found is not None and found.password else []
    passwords += [v for k, v in parse_qsl(urlsplit(redact_url(url)).query) if k.lower() == "password"]
    passwords += [v for k, v in parse_qsl(url.rpartition("?")[2]) if k.lower() == "password"]
    for password in passwords:
        for spelling in (password, unquote(password), quote(unquote(password), safe="")):
            pieces = spelling.split("@")
            secrets.update("@".join(pieces[index:]) for index in range(len(pieces)))
    text = text.replace(url, redact_url(url))
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET and secret != "***":
            text = text.replace(secret, "***")
    return text


def split_host_port(text: str) -> tuple[str, int | None]:
    """(host, port) from ``host``, ``host:port``, ``[IPv6]`` or ``[IPv6]:port``; ValueError when it is none of them."""
    text = text.strip()
    if "/" in text or "@" in text:
        raise ValueError("a host, not a URL, is expected")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("not host or host:port")
        port_text: str | None = rest[1:] if rest else None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, colon, after = text.partition(":")
        port_text = after if colon else None
        if not _HOST_NAME.fullmatch(host):
            raise ValueError("not host or host:port")
    if port_text is None:
        return host.lower(), None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("the port must be a number from 1 to 65535")
    return host.lower(), int(port_text)


_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _host_list(value: object) -> tuple[str, ...]:
    """Comma-separated ``host`` / ``host:port`` entries, normalised (lower case, IPv6 in brackets)."""
    entries = []
    for entry in str(value).split(","):
        if not entry.strip():
            continue
        try:
            host, port = split_host_port(entry)
        except ValueError as exc:
            example = "such as mattermost.lab.example or 127.0.0.1:8065"
            raise ValueError(f"{entry.strip()!r}: {exc} (write host or host:port, {example})") from None
        shown = f"[{host}]" if ":" in host else host
        entries.append(shown if port is None else f"{shown}:{port}")
    return tuple(entries)


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
    if settings.retention_days < 0:
        fail("retention_days", "must not be negative (0 keeps everything)")
    if settings.render_workers is not None and not 0 <= settings.render_workers <= 64:
        fail("render_workers", "must be from 0 (render in the daemon's own process) to 64")
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
    if settings.lock_wait < 0:
        fail("lock_wait", "must not be negative")
    if settings.poll_timeout <= 0:
        fail("poll_timeout", "must be positive")
    if settings.llm_url is not None:
        if not settings.llm_url.startswith(("http://", "https://")):
            fail("llm_url", "must be an http(s) URL, such as http://localhost:11434/v1 or https://api.openai.com/v1")
        if not settings.llm_model and not settings.embedding_model:
            fail(
                "llm_url",
                "set NOTIFIER_LLM_MODEL (the model that writes summaries, such as gpt-4o-mini or llama3.1:8b),"
                " NOTIFIER_EMBEDDING_MODEL (the model that embeds papers, such as text-embedding-3-small) or both",
            )
    if settings.embedding_model and settings.llm_url is None:
        fail(
            "embedding_model",
            "set NOTIFIER_LLM_URL as well: the OpenAI-compatible server that has the embedding model, such as"
            " https://api.openai.com/v1 or http://localhost:11434/v1",
        )
    if settings.llm_concurrency < 1:
        fail("llm_concurrency", "must be at least 1")
    if settings.llm_daily_limit < 0:
        fail("llm_daily_limit", "must not be negative (0 makes no summaries)")
    if settings.llm_timeout <= 0:
        fail("llm_timeout", "must be positive")
    if settings.llm_grace < 0:
        fail("llm_grace", "must not be negative")
    if (settings.smtp_username is None) != (settings.smtp_password is None):
        fail("smtp_username", "set both NOTIFIER_SMTP_USERNAME and NOTIFIER_SMTP_PASSWORD, or neither")
