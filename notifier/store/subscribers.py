"""Subscribers: who is in the config in use, each one's cursor, unsubscribed addresses, and failed plans.

The subscribers of the config in use are marked ``active`` (:meth:`SubscriberQueries.register_subscribers`, in one
transaction whatever their number). Claims and cancellations join on that mark, so no statement binds a list of
subscriber names: only active subscribers' deliveries are claimed, and those of subscribers no longer active are
cancelled.

Unsubscribed addresses are kept as :func:`~notifier.addresses.address_key`, so ``Ann@Lab.example`` is
``ann@lab.example``. A subscriber whose digest could not be planned (see :mod:`notifier.outbox.planner`) has a row
in ``plan_failures``, with the reason and a fingerprint of its definition, until a digest of it is planned.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from notifier.addresses import address_key
from notifier.errors import StoreError
from notifier.store.dialect import ConnT, Dialect, ResultRow, present
from notifier.store.rows import PlanFailure, SubscriberState


class SubscriberQueries(Dialect[ConnT]):
    """The subscribers of the store: registration, cursors, renames, unsubscriptions, plan failures."""

    def register_subscribers(self, names: Iterable[str], now: datetime) -> None:
        """The subscribers of the config in use: each is registered (at ``now``, unless it was before) and marked
        active, and every other subscriber is marked inactive, in one transaction.

        The names go to the database once, into a temporary table (:meth:`_given_names`); the statements join on
        it, and only rows whose mark changes are written, so 100,000 names take a fraction of a second.
        """
        with self.transaction() as db:
            self._given_names(db, list(dict.fromkeys(names)))
            self._exec(
                db,
                self._insert_ignore("subscribers (name, created_at, active) SELECT name, :now, :yes FROM given_names"),
                {"now": now, "yes": True},
            )
            given = "EXISTS (SELECT 1 FROM given_names g WHERE g.name = subscribers.name)"
            self._exec(db, f"UPDATE subscribers SET active = :no WHERE active AND NOT {given}", {"no": False})
            self._exec(db, f"UPDATE subscribers SET active = :yes WHERE NOT active AND {given}", {"yes": True})

    def subscriber_state(self, name: str) -> SubscriberState | None:
        rows = self._query("SELECT * FROM subscribers WHERE name = ?", (name,))
        return self._subscriber_state(rows[0]) if rows else None

    def subscriber_states(self) -> dict[str, SubscriberState]:
        """Every registered subscriber's state, in one query (the planner asks about all of them each tick)."""
        return {row["name"]: self._subscriber_state(row) for row in self._query("SELECT * FROM subscribers", ())}

    def _subscriber_state(self, row: ResultRow) -> SubscriberState:
        return SubscriberState(
            row["name"],
            present(self._time(row["created_at"])),
            self._time(row["cursor"]),
            self._time(row["last_digest_at"]),
        )

    def rename_subscriber(self, old: str, new: str) -> int:
        """Move a subscriber's history to a new name, so a rename does not resend old papers."""
        with self.transaction() as db:
            if self._fetch(db, "SELECT 1 FROM digests WHERE subscriber = ?", (new,)):
                raise StoreError(f"a subscriber named {new!r} already has history; cannot rename {old!r} onto it")
            if not self._fetch(db, "SELECT 1 FROM subscribers WHERE name = ?", (old,)):
                raise StoreError(f"no subscriber named {old!r} in the store")
            self._exec(db, "DELETE FROM subscribers WHERE name = ?", (new,))  # registered but never sent to
            self._exec(db, "DELETE FROM plan_failures WHERE subscriber IN (?, ?)", (old, new))  # tried afresh
            moved = self._exec(db, "UPDATE subscribers SET name = ? WHERE name = ?", (new, old))
            for table in ("digests", "deliveries", "delivery_papers", "unsubscribed", "feedback"):
                self._exec(db, f"UPDATE {table} SET subscriber = ? WHERE subscriber = ?", (new, old))
        return moved

    def unsubscribe(self, subscriber: str, address: str, now: datetime) -> None:
        """Send ``address`` (however it is written) no more of ``subscriber``'s digests; cancel those unsent."""
        key = address_key(address)
        with self.transaction() as db:
            self._exec(db, self._insert_ignore("unsubscribed VALUES (?, ?, ?)"), (subscriber, key, now))
            unsent = self._fetch(
                db,
                """SELECT id, recipient FROM deliveries WHERE subscriber = ? AND channel = 'email'
                     AND state IN ('pending', 'retry', 'failed')""",
                (subscriber,),
            )
            self._exec_many(
                db,
                """UPDATE deliveries SET state = 'cancelled', last_error = 'unsubscribed', updated_at = ?
                   WHERE id = ?""",
                [(now, row["id"]) for row in unsent if address_key(row["recipient"]) == key],
            )

    def unsubscribed(self, subscriber: str) -> set[str]:
        """The address keys (:func:`~notifier.addresses.address_key`) unsubscribed from ``subscriber``."""
        rows = self._query("SELECT address FROM unsubscribed WHERE subscriber = ?", (subscriber,))
        return {address_key(row["address"]) for row in rows}

    def unsubscribes(self) -> dict[str, set[str]]:
        """Subscriber -> the address keys unsubscribed from it, for every subscriber that has any: read once by a
        plan, instead of once per subscriber."""
        found: dict[str, set[str]] = {}
        for row in self._query("SELECT subscriber, address FROM unsubscribed", ()):
            found.setdefault(row["subscriber"], set()).add(address_key(row["address"]))
        return found

    # -- digests that could not be planned ------------------------------------------------------------------

    def record_plan_failures(self, failures: Iterable[tuple[str, str, str]], now: datetime) -> None:
        """Remember that the digests of these (subscriber, fingerprint, reason) could not be planned at ``now``."""
        with self.transaction() as db:
            self._exec_many(
                db,
                """INSERT INTO plan_failures VALUES (?, ?, ?, ?, ?, 1)
                   ON CONFLICT (subscriber) DO UPDATE SET fingerprint = excluded.fingerprint,
                     reason = excluded.reason, last_failed = excluded.last_failed,
                     attempts = plan_failures.attempts + 1""",
                [(name, fingerprint, reason, now, now) for name, fingerprint, reason in failures],
            )

    def clear_plan_failure(self, subscriber: str) -> None:
        """A digest of ``subscriber`` was planned: it is failing no more."""
        with self.transaction() as db:
            self._exec(db, "DELETE FROM plan_failures WHERE subscriber = ?", (subscriber,))

    def plan_failures(self) -> dict[str, PlanFailure]:
        """Subscriber -> why its digest could not be planned, for those failing now, by name."""
        rows = self._query(f"SELECT * FROM plan_failures ORDER BY subscriber{self._BY_CODE_POINT}")
        return {
            row["subscriber"]: PlanFailure(
                subscriber=row["subscriber"],
                fingerprint=row["fingerprint"],
                reason=row["reason"],
                first_failed=present(self._time(row["first_failed"])),
                last_failed=present(self._time(row["last_failed"])),
                attempts=int(row["attempts"]),
            )
            for row in rows
        }
