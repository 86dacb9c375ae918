"""Fixtures shared by test modules: a throwaway PostgreSQL server, started once per session when it is needed, and
a store of each kind on it or in a temporary folder."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from notifier.store.sql import SqlStore
from notifier.store.sqlite import SqliteStore
from tests.postgres_server import PostgresServer, find_bin_dir

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or on PATH)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install '.[postgres]')")
    server = PostgresServer(bin_dir).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh, empty database of the session's server."""
    return postgres.create_database(f"test_{next(_databases)}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore[Any]]:
    """An empty store of each kind: SQLite in ``tmp_path``, then PostgreSQL (skipped where it is not installed).
    A module may define a ``store`` of its own instead."""
    if request.param == "sqlite":
        opened: SqlStore[Any] = SqliteStore(tmp_path / "notifier.sqlite3")
    else:
        from notifier.store.postgres import PostgresStore

        opened = PostgresStore(request.getfixturevalue("pg_url"))
    try:
        yield opened
    finally:
        opened.close()
