"""Round trips through the real broker and the real ClickHouse server of the local stack."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from schemas.topics import RAW
from services.common.clickhouse import make_client
from services.common.kafka import make_consumer, make_producer
from services.common.migrations import applied, discover, migrate


@pytest.mark.kafka
async def test_produce_and_consume_through_real_broker(kafka_settings, topic_names) -> None:
    topic = topic_names(RAW)[RAW]
    producer = make_producer(kafka_settings)
    await producer.start()
    sent = []
    try:
        for i in range(50):
            body = {"i": i, "org_id": f"org-{i % 3}"}
            md = await (await producer.send(topic, orjson.dumps(body), key=body["org_id"].encode()))
            sent.append((md.partition, body))
        print(f"\nKafka brokers: {producer.client.cluster.brokers()}")
    finally:
        await producer.stop()
    # Same key -> same partition.
    by_org: dict[str, set[int]] = {}
    for part, body in sent:
        by_org.setdefault(body["org_id"], set()).add(part)
    assert all(len(p) == 1 for p in by_org.values())

    consumer = make_consumer(kafka_settings, topic, group_id=f"g-{uuid.uuid4().hex[:6]}")
    await consumer.start()
    got = []
    try:
        while len(got) < 50:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "no messages within 5 s"
            for msgs in batch.values():
                got.extend(orjson.loads(m.value)["i"] for m in msgs)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sorted(got) == list(range(50))


@pytest.mark.clickhouse
def test_clickhouse_round_trip_native_insert_with_compression(clickhouse_settings, ch_database) -> None:
    client = make_client(clickhouse_settings, database=ch_database)
    print(f"\nClickHouse server version: {client.server_version}")
    assert client.server_version.startswith("26.")
    now = datetime.now(UTC)
    rows = [
        [uuid.uuid4(), "org-a", now, "deployment:create", ["request.payload.password"]] for _ in range(1000)
    ]
    client.insert(
        "events",
        rows,
        column_names=["event_id", "org_id", "occurred_at", "action", "sensitive_paths"],
        settings={"insert_deduplication_token": "t1"},
    )
    n = client.query(
        "SELECT count() FROM events WHERE org_id = {org:String} AND action = {a:String}",
        parameters={"org": "org-a", "a": "deployment:create"},
    ).result_rows[0][0]
    assert n == 1000
    # Parameters are bound server-side: an injection attempt is just a string that matches nothing.
    evil = "org-a' OR 1=1 --"
    n2 = client.query("SELECT count() FROM events WHERE org_id = {org:String}", parameters={"org": evil})
    assert n2.result_rows[0][0] == 0


@pytest.mark.clickhouse
def test_migrate_twice_second_applies_nothing(clickhouse_settings) -> None:
    db = f"test_mig_{uuid.uuid4().hex[:8]}"
    client = make_client(clickhouse_settings)
    try:
        first = migrate(client, db)
        assert [m.version for m in first] == [m.version for m in discover()]
        assert migrate(client, db) == []
        assert set(applied(client, db)) == {m.version for m in discover()}
        tables = {r[0] for r in client.query(f"SHOW TABLES FROM {db}").result_rows}
        assert {"events", "events_dedup", "schema_migrations", "org_settings"} <= tables
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db} SYNC")


@pytest.mark.kafka
async def test_group_lag_from_committed_offsets(kafka_settings, topic_names) -> None:
    from aiokafka import TopicPartition

    from services.common.kafka import group_lag

    topic = topic_names(RAW, partitions=1)[RAW]
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        for i in range(10):
            await (await producer.send(topic, b"{}", key=b"k"))
    finally:
        await producer.stop()
    group = f"lag-{uuid.uuid4().hex[:6]}"
    assert sum((await group_lag(kafka_settings, group, topic)).values()) == 10  # nothing committed yet
    consumer = make_consumer(kafka_settings, topic, group_id=group)
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=5000)
        await consumer.commit({TopicPartition(topic, 0): 4})
    finally:
        await consumer.stop()
    assert await group_lag(kafka_settings, group, topic) == {0: 6}
