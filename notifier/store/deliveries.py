"""The outbox: digests, their deliveries (one per subscriber, channel and recipient), and each delivery's papers.

Delivery states (:data:`~notifier.models.DeliveryState`)::

    pending --claim--> sending --ok--> sent
       ^                 |---temporary failure--> retry --(due)--> sending
       |                 '---permanent failure--> failed --(notifier retry)--> pending
       '-- a 'sending' row whose sender died: back to pending at start-up (SQLite), or claimed again once its
           lease has expired (PostgreSQL, where several daemons share the outbox)

A sender *claims* a batch of due deliveries: they become ``sending`` with its name (``lease_owner``) and a lease
(``lease_until``), and no other sender takes them until the lease expires.

A delivery's rendered message (tens of KB of HTML email) is kept apart from its row, in ``delivery_payloads``: it is
written once with the digest and read by the claim, and a claim or an outcome changes only the small row. SQLite
writes a changed row whole, overflow pages and all, so a message in the row would be written again at each change.
The message is stored compressed (:mod:`notifier.store.payloads`); one that no longer decompresses fails its
delivery alone.

Papers are reserved for a delivery in the same transaction that writes it, so a paper is never put into two
digests for the same recipient; it counts as delivered once its delivery is ``sent``. A cancelled delivery reserves
nothing, and cancelling a removed subscriber's deliveries moves its cursor back to where they started, so the
subscriber, restored, gets those papers again. Email recipients are compared by
:func:`~notifier.store.rows.recipient_key` (reservations), so ``Ann@Lab.example`` is ``ann@lab.example``.

An outcome the database cannot take (a full disk, a lost connection) is kept in memory and written in the same
transaction as the next claim, which fails while it cannot be written: a message a channel took is not sent again
because its outcome could not be recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from datetime import UTC, datetime, timedelta

from notifier.errors import StoreError
from notifier.models import DELIVERY_STATES, DeliveryState, Outgoing
from notifier.store.dialect import ConnT, Dialect, ResultRow, present
from notifier.store.payloads import CorruptPayload, pack, unpack
from notifier.store.rows import DeliveryRow, NewDigest, recipient_key

log = logging.getLogger(__name__)

# Not sent yet, nor given up: the rows of the index deliveries_by_age (a query names this very term to use it).
_UNSENT = "state IN ('pending', 'retry', 'sending')"
# Of a subscriber of the config in use (see register_subscribers).
_ACTIVE = "EXISTS (SELECT 1 FROM subscribers s WHERE s.name = deliveries.subscriber AND s.active)"
# What is due for sending: pending, a retry whose time has come, or a send whose lease has expired (or that has none),
# of an active subscriber.
_DUE = f"""{_UNSENT} AND (state = 'pending' OR (state = 'retry' AND next_attempt_at <= :now)
           OR (state = 'sending' AND (lease_until IS NULL OR lease_until <= :now))) AND {_ACTIVE}"""
# A delivery's columns as a sender needs them (see _outgoing), its payload read from delivery_payloads by its key.
OUTGOING_COLUMNS = """id, subscriber, channel, recipient, message_id, part, created_at,
    (SELECT payload FROM delivery_payloads p WHERE p.delivery_id = deliveries.id) AS payload"""
# Claiming a delivery for a sender: the SET of the UPDATE; the dialect chooses the rows.
CLAIM = """UPDATE deliveries SET state = 'sending', lease_owner = :owner, lease_until = :until,
             attempts = attempts + 1, updated_at = :now"""

# An outcome not yet written: the delivery's new state, when, and the columns to set with it.
Outcome = tuple[DeliveryState, datetime, dict[str, object]]


class DeliveryQueries(Dialect[ConnT]):
    """The outbox of the store: writing digests, claiming deliveries, recording outcomes, listing them."""

    def __init__(self) -> None:
        super().__init__()
        self._unrecorded: dict[str, Outcome] = {}  # delivery id -> its outcome the database could not take yet

    def reserved_versions(
        self, subscriber: str, channel: str, recipient: str, among: Collection[str] | None = None
    ) -> dict[str, int]:
        """arxiv_id -> highest version already sent or on its way to this recipient (an email address however
        it is written); a cancelled delivery reserves nothing. With ``among``, of those papers only: a plan asks
        about the papers it matched, not about every paper the recipient has had since it subscribed."""
        if among is not None and not among:
            return {}
        query = """SELECT dp.arxiv_id, max(dp.version) AS version
               FROM delivery_papers dp JOIN deliveries d ON d.id = dp.delivery_id
               WHERE dp.subscriber = :subscriber AND dp.channel = :channel AND dp.recipient = :recipient
                 AND d.state != 'cancelled'{among}
               GROUP BY dp.arxiv_id"""
        params: dict[str, object] = {
            "subscriber": subscriber,
            "channel": channel,
            "recipient": recipient_key(channel, recipient),
        }
        if among is None:
            rows = self._query(query.format(among=""), params)
        else:
            rows = []
            for chunk in self._chunks(sorted(among)):
                condition, ids = self._in("dp.arxiv_id", "paper", chunk)
                rows += self._query(query.format(among=f" AND {condition}"), {**params, **ids})
        return {row["arxiv_id"]: int(row["version"]) for row in rows}

    def record_digests(self, digests: Sequence[NewDigest]) -> None:
        """Write digests, their deliveries (pending) and papers, and move their subscribers' cursors, all in one
        transaction: all of them are recorded, or none."""
        with self.transaction() as db:
            self._exec_many(
                db,
                "INSERT INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        d.digest_id,
                        d.subscriber,
                        d.kind,
                        d.period_start,
                        d.period_end,
                        d.now,
                        len({paper for delivery in d.deliveries for paper in delivery.papers}),
                    )
                    for d in digests
                    if d.deliveries
                ],
            )
            self._exec_many(
                db,
                """INSERT INTO deliveries (id, digest_id, subscriber, channel, recipient, message_id, state,
                     created_at, updated_at, next_attempt_at)
                   VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)""",
                [
                    (
                        delivery.delivery_id,
                        d.digest_id,
                        d.subscriber,
                        delivery.channel,
                        delivery.recipient,
                        delivery.message_id,
                        d.now,
                        d.now,
                        d.now,
                    )
                    for d in digests
                    for delivery in d.deliveries
                ],
            )
            self._exec_many(
                db,
                "INSERT INTO delivery_payloads (delivery_id, payload) VALUES (?, ?)",
                [(delivery.delivery_id, pack(delivery.payload)) for d in digests for delivery in d.deliveries],
            )
            self._exec_many(
                db, self._insert_ignore("delivery_papers VALUES (?, ?, ?, ?, ?, ?)"), _reservations(digests)
            )
            self._cancel_unsubscribed(db, digests)
            self._exec_many(
                db,
                "UPDATE subscribers SET cursor = ?, last_digest_at = ? WHERE name = ?",
                [(d.cursor, d.now, d.subscriber) for d in digests],
            )

    def _cancel_unsubscribed(self, db: ConnT, digests: Sequence[NewDigest]) -> None:
        """Cancel, in transaction ``db``, the new email deliveries to addresses already unsubscribed from their
        subscriber. A plan reads who unsubscribed when it starts; one who does so while it runs cancels what is
        written by then (see ``unsubscribe``), and this the rest."""
        emailed = sorted({d.subscriber for d in digests for new in d.deliveries if new.channel == "email"})
        gone: set[tuple[str, str]] = set()
        for names in self._chunks(emailed):
            among, params = self._in("subscriber", "subscriber", names)
            rows = self._fetch(db, f"SELECT subscriber, address FROM unsubscribed WHERE {among}", params)
            gone.update((row["subscriber"], recipient_key("email", row["address"])) for row in rows)
        if gone:
            self._exec_many(
                db,
                """UPDATE deliveries SET state = 'cancelled', last_error = 'unsubscribed', updated_at = ?
                   WHERE id = ?""",
                [
                    (d.now, new.delivery_id)
                    for d in digests
                    for new in d.deliveries
                    if new.channel == "email" and (d.subscriber, recipient_key("email", new.recipient)) in gone
                ],
            )

    def claim_due(self, now: datetime, *, owner: str, lease: timedelta, limit: int) -> list[Outgoing]:
        """Claim up to ``limit`` due deliveries of active subscribers for ``owner``, oldest first: they become
        ``sending`` under a lease.

        Due means pending, a retry whose time has come, or a send whose lease has expired (its sender died). The
        oldest unsent deliveries are read in order from an index of those alone, so a claim costs the same with
        100 or 100,000 in the outbox.
        """
        pick = f"FROM {self._UNSENT_BY_AGE} WHERE {_DUE} ORDER BY created_at, id{self._BY_CODE_POINT} LIMIT :limit"
        with self.transaction() as db:
            written = self._write_outcomes(db)
            rows = self._claim(db, pick, {"now": now, "owner": owner, "until": now + lease, "limit": limit})
        self._written(written)
        claimed = []
        for row in rows:
            try:
                claimed.append(_outgoing(row, present(self._time(row["created_at"]))))
            except CorruptPayload as exc:  # the database was damaged: this delivery cannot be sent, the others can
                log.error("delivery %s of %s failed: %s", row["id"], row["subscriber"], exc)
                self.mark_failed(row["id"], now, str(exc))
        return claimed

    def release(self, delivery_ids: Iterable[str], *, owner: str, now: datetime) -> int:
        """Hand claimed deliveries that were not attempted back to ``pending`` (a sender stopping)."""
        among, params = self._in("id", "id", list(delivery_ids))
        with self.transaction() as db:
            return self._exec(
                db,
                f"""UPDATE deliveries SET state = 'pending', lease_owner = NULL, lease_until = NULL,
                      attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = :now
                    WHERE {among} AND state = 'sending' AND lease_owner = :owner""",
                {**params, "now": now, "owner": owner},
            )

    def _set_state(self, delivery_id: str, state: DeliveryState, now: datetime, **columns: object) -> None:
        self._set_states([(delivery_id, (state, now, columns))])

    def _set_states(self, outcomes: Sequence[tuple[str, Outcome]]) -> None:
        """Record outcomes of sends, in one transaction. Those the database cannot take now are kept, not raised:
        they are written with the next claim, and until then that claim fails, so they are not sent again
        meanwhile."""
        kept = len(self._unrecorded)  # outcomes the database could not take before these
        for delivery_id, (state, now, columns) in outcomes:
            earlier = self._unrecorded.pop(delivery_id, (state, now, {}))[2]
            self._unrecorded[delivery_id] = (state, now, {**earlier, **columns})
        try:
            with self.transaction() as db:
                written = self._write_outcomes(db)
        except StoreError as exc:
            delivery_id, (state, _now, _columns) = outcomes[0]
            log.error(
                "cannot record that delivery %s is %s%s; kept until the database takes it, and nothing is claimed "
                "until then: %s",
                delivery_id,
                state,
                f" (and the outcomes of {len(outcomes) - 1} more)" if len(outcomes) > 1 else "",
                exc,
            )
            return
        self._written(written, kept)

    def _write_outcomes(self, db: ConnT) -> int:
        """Write, in transaction ``db``, the outcomes the database could not take before; how many there were.
        Outcomes that set the same columns are written by one statement."""
        updates: dict[tuple[str, ...], list[tuple[object, ...]]] = {}
        for delivery_id, (state, now, columns) in self._unrecorded.items():
            updates.setdefault(tuple(columns), []).append((state, now, *columns.values(), delivery_id))
        for names, rows in updates.items():
            assignments = "".join(f", {name} = ?" for name in names)
            self._exec_many(db, f"UPDATE deliveries SET state = ?, updated_at = ?{assignments} WHERE id = ?", rows)
        return len(self._unrecorded)

    def _written(self, count: int, kept: int | None = None) -> None:
        """The transaction that wrote the ``count`` kept outcomes committed: forget them, and say how many of them
        (``kept``, by default all) had waited for a database that could not take them."""
        if count:
            self._unrecorded.clear()
        if waited := (count if kept is None else kept):
            log.info("store: recorded %d delivery outcomes the database could not take before", waited)

    def _close_outcomes(self) -> None:
        """At close: write the outcomes still kept, or say which deliveries will be sent again."""
        if not self._unrecorded:
            return
        try:
            with self.transaction() as db:
                self._written(self._write_outcomes(db))
        except StoreError as exc:
            log.error(
                "%d deliveries were sent but their outcome could not be recorded; they will be sent again: %s",
                len(self._unrecorded),
                exc,
            )
            self._unrecorded.clear()

    def mark_part(self, delivery_id: str, part: int, now: datetime) -> None:
        self._set_state(delivery_id, "sending", now, part=part)

    def mark_sent(self, delivery_id: str, now: datetime) -> None:
        self.mark_all_sent([(delivery_id, now)])

    def mark_all_sent(self, sent: Sequence[tuple[str, datetime]]) -> None:
        """Record that each ``(delivery id, when)`` of ``sent`` was sent then, in one transaction."""
        if sent:
            columns = {"last_error": None, "next_attempt_at": None}
            self._set_states([(delivery_id, ("sent", now, {"sent_at": now, **columns})) for delivery_id, now in sent])

    def mark_retry(self, delivery_id: str, now: datetime, next_attempt_at: datetime, error: str) -> None:
        self._set_state(delivery_id, "retry", now, next_attempt_at=next_attempt_at, last_error=error)

    def mark_failed(self, delivery_id: str, now: datetime, error: str) -> None:
        self._set_state(delivery_id, "failed", now, last_error=error, next_attempt_at=None)

    def attempts(self, delivery_id: str) -> tuple[int, datetime]:
        row = self._query("SELECT attempts, created_at FROM deliveries WHERE id = ?", (delivery_id,))[0]
        return int(row["attempts"]), present(self._time(row["created_at"]))

    def cancel_removed(self, now: datetime) -> int:
        """Cancel unsent deliveries of subscribers no longer active, that is no longer in the config (and forget
        their plan failures); how many were cancelled.

        The papers of those deliveries are not lost: a cancelled delivery reserves nothing, and the subscriber's
        cursor moves back to the start of the earliest digest cancelled, so a subscriber restored to the config
        gets them in its next digest. Papers each recipient already had stay reserved.
        """
        removed = f"{_UNSENT} AND NOT {_ACTIVE}"
        with self.transaction() as db:
            starts = self._fetch(
                db,
                f"""SELECT subscriber, min(period_start) AS start FROM digests
                    WHERE id IN (SELECT digest_id FROM deliveries WHERE {removed})
                    GROUP BY subscriber""",
                (),
            )
            self._exec_many(
                db,
                """UPDATE subscribers SET cursor = :start
                   WHERE name = :name AND (cursor IS NULL OR cursor > :start)""",
                [{"name": row["subscriber"], "start": self._time(row["start"])} for row in starts],
            )
            self._exec(
                db,
                """DELETE FROM plan_failures WHERE NOT EXISTS
                     (SELECT 1 FROM subscribers s WHERE s.name = plan_failures.subscriber AND s.active)""",
                (),
            )
            return self._exec(
                db,
                f"""UPDATE deliveries SET state = 'cancelled', last_error = 'subscriber removed from the config',
                      updated_at = :now
                    WHERE {removed}""",
                {"now": now},
            )

    def retry_failed(self, now: datetime, subscriber: str | None = None) -> int:
        """Queue failed deliveries (all, or ``subscriber``'s) again, and retries at once; how many. A delivery
        whose payload was pruned (see :meth:`prune`) has nothing left to send and stays failed."""
        with self.transaction() as db:
            return self._exec(
                db,
                """UPDATE deliveries SET state = 'pending', next_attempt_at = :now, updated_at = :now
                   WHERE state IN ('failed', 'retry') AND (CAST(:name AS TEXT) IS NULL OR subscriber = :name)
                     AND EXISTS (SELECT 1 FROM delivery_payloads p WHERE p.delivery_id = deliveries.id
                                   AND length(p.payload) > 0)""",
                {"now": now, "name": subscriber},
            )

    def deliveries(self, states: Sequence[DeliveryState] = DELIVERY_STATES, limit: int = 200) -> list[DeliveryRow]:
        among, params = self._in("state", "state", states)
        rows = self._query(
            f"""SELECT d.*, (SELECT count(*) FROM delivery_papers p WHERE p.delivery_id = d.id) AS paper_count
                FROM deliveries d WHERE {among} ORDER BY created_at DESC LIMIT :limit""",
            {**params, "limit": limit},
        )
        return [
            DeliveryRow(
                id=row["id"],
                subscriber=row["subscriber"],
                channel=row["channel"],
                recipient=row["recipient"],
                state=row["state"],
                attempts=row["attempts"],
                next_attempt_at=self._time(row["next_attempt_at"]),
                last_error=row["last_error"],
                created_at=self._time(row["created_at"]) or datetime.now(UTC),
                paper_count=int(row["paper_count"]),
            )
            for row in rows
        ]

    def delivery_counts(self) -> dict[DeliveryState, int]:
        rows = self._query("SELECT state, count(*) AS n FROM deliveries GROUP BY state")
        return {row["state"]: int(row["n"]) for row in rows}


def _outgoing(row: ResultRow, created_at: datetime) -> Outgoing:
    return Outgoing(
        delivery_id=row["id"],
        subscriber=row["subscriber"],
        channel=row["channel"],
        recipient=row["recipient"],
        message_id=row["message_id"],
        payload=unpack(bytes(row["payload"])),
        part=row["part"],
        created_at=created_at,
    )


# A row of delivery_papers: delivery id, subscriber, channel, recipient key, arxiv id, version.
Reservation = tuple[str, str, str, str, str, int]


def _reservations(digests: Sequence[NewDigest]) -> list[Reservation]:
    """The rows of ``delivery_papers`` for ``digests``: each paper of each delivery, reserved for its recipient. The
    recipient's key is made once per delivery, not once per paper."""
    rows: list[Reservation] = []
    for digest in digests:
        for delivery in digest.deliveries:
            recipient = recipient_key(delivery.channel, delivery.recipient)
            rows.extend(
                (delivery.delivery_id, digest.subscriber, delivery.channel, recipient, arxiv_id, version)
                for arxiv_id, version in delivery.papers
            )
    return rows
