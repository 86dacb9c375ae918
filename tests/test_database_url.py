"""A PostgreSQL URL's password never shows, whatever it holds: in settings, in log lines, in connection errors."""

from __future__ import annotations

import socket

import pytest

from notifier.config.settings import load_settings, redact_secrets, redact_url
from notifier.errors import ConfigError, StoreError
from notifier.store import open_store

pytest.importorskip("psycopg", reason="psycopg is not installed (pip install '.[postgres]')")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "password", ["pa@ss-Tail77", "pa:ss@Tail77", "pa%40ss-Tail77", "Tail77@@@", "p@ss:w@rd-Tail77"]
)
def test_a_refused_connection_names_the_server_and_hides_the_password(tmp_path, password):
    port = closed_port()
    url = f"postgresql://bob:{password}@127.0.0.1:{port}/papers"
    settings = load_settings({}, {"data_dir": str(tmp_path), "database_url": url})
    with pytest.raises(StoreError) as info:
        open_store(settings.database_url or settings.database)
    message = str(info.value)
    assert f"postgresql://bob:***@127.0.0.1:{port}/papers" in message
    assert "refused" in message, "the password reached the server intact, so the host is the right one"
    assert password not in message and "Tail77" not in message
    assert "Tail77" not in str(settings.redacted()["database_url"])


@pytest.mark.parametrize("password", ["pa/ss-Tail77", "pa?ss-Tail77", "pa#ss-Tail77"])
def test_a_password_that_needs_percent_encoding_is_an_error_that_hides_it(tmp_path, password):
    url = f"postgresql://bob:{password}@127.0.0.1:5432/papers"
    with pytest.raises(ConfigError, match="percent-encode") as info:
        load_settings({"NOTIFIER_DATABASE_URL": url, "NOTIFIER_DATA_DIR": str(tmp_path)})
    assert "Tail77" not in str(info.value)
    assert str(info.value).startswith("NOTIFIER_DATABASE_URL: ")
    assert "Tail77" not in redact_url(url)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bob:pw-Tail77@db.lab.example/papers", "postgresql://bob:***@db.lab.example/papers"),
        ("postgresql://bob:pw%40Tail77@db.lab.example/papers", "postgresql://bob:***@db.lab.example/papers"),
        ("postgresql://bob:pw@Tail77@db.lab.example/papers", "postgresql://bob:***@db.lab.example/papers"),
        (
            "postgresql://db.lab.example/papers?user=bob&password=pw@Tail77",
            "postgresql://db.lab.example/papers?user=bob&password=***",
        ),
        ("postgresql://bob@db.lab.example/papers", "postgresql://bob@db.lab.example/papers"),
        ("postgresql:///papers?host=/run/postgresql", "postgresql:///papers?host=/run/postgresql"),
        (
            "postgresql://db1:5432,db2:5433/papers?application_name=a@b",
            "postgresql://db1:5432,db2:5433/papers?application_name=a@b",
        ),
    ],
)
def test_redacted_urls_keep_everything_but_the_password(url, shown):
    assert redact_url(url) == shown


def test_a_driver_message_that_echoes_the_password_is_scrubbed():
    url = "postgresql://bob:pw@Tail77@db.lab.example/papers"
    message = f"failed to resolve host 'Tail77@db.lab.example' for {url} (password pw@Tail77, pw%40Tail77)"
    scrubbed = redact_secrets(message, url)
    assert "Tail77" not in scrubbed
    assert "postgresql://bob:***@db.lab.example/papers" in scrubbed
