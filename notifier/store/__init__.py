"""Which store a process uses: SQLite in the data directory, or PostgreSQL when ``database_url`` is set.

:data:`StoreLike` is what the rest of the program is written against: a :class:`~notifier.store.sql.SqlStore` of
either dialect.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from notifier.config.settings import Settings
from notifier.store.sql import SqlStore
from notifier.store.sqlite import Store

StoreLike: TypeAlias = SqlStore[Any]


def open_store(settings: Settings) -> StoreLike:
    """PostgreSQL when ``settings.database_url`` is set (psycopg is imported only then), SQLite otherwise."""
    if settings.database_url:
        from notifier.store.postgres import PostgresStore

        return PostgresStore(settings.database_url)
    return Store(settings.database)
