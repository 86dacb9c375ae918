"""Rendered messages are stored compressed: a claim hands back exactly the message recorded, a message an older
version stored uncompressed is read as it is, and a damaged one fails its delivery alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from notifier.store.payloads import MAGIC, pack, unpack
from notifier.store.rows import NewDelivery, NewDigest
from notifier.store.sql import SqlStore

T0 = datetime(2025, 6, 3, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=5)
MAIL = b"From: arXiv digest <digest@lab.example>\r\nTo: ann@lab.example\r\nSubject: 40 new papers\r\n\r\n" + b"".join(
    b'<p class="abstract">Paper %d: graph neural networks for compilers.</p>\r\n' % i for i in range(800)
)
SLACK = b'[{"text": "3 new papers", "blocks": []}]'


def record(store: SqlStore[Any], *deliveries: tuple[str, str, bytes]) -> None:
    store.register_subscribers(["lab"], T0)
    rows = tuple(
        NewDelivery(i, channel, f"{i}@lab.example", f"<{i}@lab.example>", data, ()) for i, channel, data in deliveries
    )
    store.record_digests([NewDigest("d1", "lab", "daily", T0, T0, T0, rows, T0)])


def stored(store: SqlStore[Any]) -> dict[str, bytes]:
    return {
        row["delivery_id"]: bytes(row["payload"])
        for row in store._query("SELECT delivery_id, payload FROM delivery_payloads")
    }


def test_a_claim_hands_back_exactly_the_messages_recorded_which_are_stored_compressed(store):
    record(store, ("m1", "email", MAIL), ("s1", "slack", SLACK))
    kept = stored(store)
    assert all(data.startswith(MAGIC) for data in kept.values())
    assert len(kept["m1"]) * 4 < len(MAIL), "a digest email compresses several times"
    claimed = store.claim_due(T0, owner="me", lease=LEASE, limit=10)
    assert {message.delivery_id: message.payload for message in claimed} == {"m1": MAIL, "s1": SLACK}


def test_a_message_an_older_version_stored_uncompressed_is_read_as_it_is(store):
    record(store, ("m1", "email", MAIL))
    with store.transaction() as db:
        store._exec(db, "UPDATE delivery_payloads SET payload = ? WHERE delivery_id = ?", (MAIL, "m1"))
    (message,) = store.claim_due(T0, owner="me", lease=LEASE, limit=10)
    assert message.payload == MAIL


def test_a_damaged_message_fails_its_delivery_and_the_others_are_sent(store, caplog):
    record(store, ("m1", "email", MAIL), ("m2", "email", MAIL + b"<p>two</p>\r\n"))
    damaged = bytearray(stored(store)["m1"])
    damaged[len(damaged) // 2 :] = b"\0" * (len(damaged) - len(damaged) // 2)
    with store.transaction() as db:
        store._exec(db, "UPDATE delivery_payloads SET payload = ? WHERE delivery_id = ?", (bytes(damaged), "m1"))
    claimed = store.claim_due(T0, owner="me", lease=LEASE, limit=10)
    assert [(message.delivery_id, message.payload) for message in claimed] == [("m2", MAIL + b"<p>two</p>\r\n")]
    (failed,) = store.deliveries(("failed",))
    assert failed.id == "m1"
    assert failed.last_error is not None and "does not decompress" in failed.last_error
    assert "delivery m1 of lab failed: a stored message does not decompress" in caplog.text


def test_packing_keeps_an_empty_message_empty_and_round_trips_any_other():
    assert pack(b"") == b"" and unpack(b"") == b""
    for data in (b"x", MAIL, SLACK, bytes(range(256)) * 10):
        assert unpack(pack(data)) == data
