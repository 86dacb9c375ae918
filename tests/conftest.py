"""Fixtures shared by test modules: a throwaway PostgreSQL server, started once per session when it is needed."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

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
