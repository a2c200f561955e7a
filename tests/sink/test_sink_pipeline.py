"""The sink against real Kafka and ClickHouse: N in -> exactly N distinct, poison rows, idempotent retries."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import orjson
import pytest

from services.common.clickhouse import make_client
from services.sink.service import Sink
from services.sink.writer import insert_records
from tests.sink.helpers import (
    committed_lag,
    count,
    enriched,
    produce,
    produce_spread,
    read_all,
    run_until,
    sink_settings,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


async def test_n_events_with_duplicates_give_exactly_n_distinct(ch_settings, topic_names) -> None:
    topics = topic_names("audit.events.v1", "audit.deadletter.v1")
    s = sink_settings(ch_settings, topics, batch_max_rows=700)
    n = 5000
    values = [enriched(i, org=f"org-{i % 5}") for i in range(n)]
    # Redelivery as producers and crashed consumers cause it: 1,000 exact copies, interleaved.
    dupes = values[::5]
    await produce_spread(
        s, topics["audit.events.v1"], values[: n // 2] + dupes + values[n // 2 :] + dupes[:300]
    )
    sink = Sink(s)
    ok = await run_until(sink, lambda: count(s) >= n, 90)
    assert ok, f"only {count(s)} distinct events landed"
    assert count(s, "count()") == n
    assert count(s, "uniqExact(event_id)") == n
    # Every event is there, not just the right number.
    want = {orjson.loads(v)["event_id"] for v in values}
    got = {
        str(r[0])
        for r in make_client(s)
        .query(f"SELECT event_id FROM {s.clickhouse_database}.events_dedup")
        .result_rows
    }
    assert got == want
    assert await committed_lag(s, topics["audit.events.v1"], s.sink.consumer_group) == 0


async def test_poison_row_goes_to_dead_letters_and_the_rest_lands(ch_settings, topic_names) -> None:
    topics = topic_names("audit.events.v1", "audit.deadletter.v1")
    s = sink_settings(ch_settings, topics, batch_max_rows=500, batch_max_seconds=1.0)
    good = [enriched(i) for i in range(300)]
    poison = enriched(
        9999, occurred_at=datetime(1970, 1, 1, tzinfo=UTC)
    )  # valid contract, refused by ClickHouse
    not_json = b"{this is not json"
    bad_contract = orjson.dumps({"event_id": "x", "org_id": "org-a"})
    values = good[:150] + [poison, not_json] + good[150:] + [bad_contract]
    await produce(s, topics["audit.events.v1"], values)
    sink = Sink(s)
    ok = await run_until(sink, lambda: count(s) >= 300, 60)
    assert ok and count(s) == 300
    letters = [orjson.loads(v) for v in await read_all(s, topics["audit.deadletter.v1"], 3)]
    assert sorted(x["reason"] for x in letters) == ["clickhouse_bad_data", "invalid_json", "validation_error"]
    ch = next(x for x in letters if x["reason"] == "clickhouse_bad_data")
    assert "469" in ch["error"] and ch["event_id"] == orjson.loads(poison)["event_id"]
    assert ch["original"].encode() == poison and ch["stage"] == "sink"
    assert {x["source_offset"] for x in letters} == {150, 151, 302}
    assert await committed_lag(s, topics["audit.events.v1"], s.sink.consumer_group) == 0


def test_retried_batch_with_same_token_is_stored_once(ch_settings) -> None:
    """insert_deduplication_token + non_replicated_deduplication_window (0003, 0011), through the Null
    input table and its view (0012): a retry reaches events and both view tables exactly once."""
    client = make_client(ch_settings)
    table = f"{ch_settings.clickhouse_database}.events_input"
    records = [enriched(i) for i in range(50)]
    records2 = [enriched(i) for i in range(50)]
    assert insert_records(client, table, records, "t/0/0-49") == (50, [])
    assert insert_records(client, table, records, "t/0/0-49") == (50, [])  # the server skips the block
    for t in ("events", "events_by_time", "events_by_target"):
        assert count(ch_settings, "count()", t) == 50, t
    insert_records(client, table, records2, "t/0/50-99")
    for t in ("events", "events_by_time", "events_by_target"):
        assert count(ch_settings, "count()", t) == 100, t
    # the danger the sink's token guards against: other records under a token already seen are dropped
    insert_records(client, table, [enriched(i) for i in range(5)], "t/0/0-49")
    assert count(ch_settings, "count()", "events") == 100


def test_bisect_isolates_every_poison_row(ch_settings) -> None:
    client = make_client(ch_settings)
    table = f"{ch_settings.clickhouse_database}.events_input"
    records = [enriched(i) for i in range(64)]
    bad_at = {0, 17, 18, 63}
    for i in bad_at:
        records[i] = enriched(i, occurred_at=datetime(1999, 12, 31, tzinfo=UTC))
    inserted, rejected = insert_records(client, table, records, "tok")
    assert inserted == 60 and {r.index for r in rejected} == bad_at
    assert all("469" in r.error for r in rejected)
    assert count(ch_settings, "count()", "events") == 60
    # a retry of the same batch (same tokens) adds nothing
    insert_records(client, table, records, "tok")
    assert count(ch_settings, "count()", "events") == 60


async def test_stop_abandons_nothing_committed(ch_settings, topic_names) -> None:
    """SIGTERM path: the open batch is written once more and committed, or left uncommitted."""
    topics = topic_names("audit.events.v1", "audit.deadletter.v1")
    s = sink_settings(ch_settings, topics, batch_max_rows=100_000, batch_max_seconds=30.0)
    await produce(s, topics["audit.events.v1"], [enriched(i) for i in range(400)])
    sink = Sink(s)
    await sink.start()
    task = asyncio.create_task(sink.run())
    with contextlib.suppress(Exception):
        await wait_for(lambda: len(sink.batch) >= 400, 30, every_s=0.1)
    assert count(s) == 0  # the time limit (30 s) has not passed: nothing written yet
    sink.stop.set()
    await asyncio.wait_for(task, 30)
    await sink.close()
    assert count(s) == 400
    assert await committed_lag(s, topics["audit.events.v1"], s.sink.consumer_group) == 0


async def test_rebalances_mid_stream_lose_nothing(ch_settings, topic_names) -> None:
    """A second sink joins mid-stream, then the first leaves: partitions move twice, nothing is lost."""
    from tests.sink.helpers import many

    topics = topic_names("audit.events.v1", "audit.deadletter.v1")
    s = sink_settings(ch_settings, topics, batch_max_rows=300, session_timeout_s=6)
    values = many(9000)
    await produce_spread(s, topics["audit.events.v1"], values[:3000])
    a, b = Sink(s), Sink(s)
    await a.start()
    ta = asyncio.create_task(a.run())
    tb = None
    try:
        assert await wait_for(lambda: count(s) >= 1000, 60, every_s=0.2)
        await b.start()  # rebalance 1: a gives up half its partitions
        tb = asyncio.create_task(b.run())
        await produce_spread(s, topics["audit.events.v1"], values[3000:6000])
        assert await wait_for(lambda: count(s) >= 4000, 60, every_s=0.2)
        a.stop.set()  # rebalance 2: b takes everything
        await asyncio.wait_for(ta, 30)
        await a.close()
        await produce_spread(s, topics["audit.events.v1"], values[6000:])
        assert await wait_for(lambda: count(s) >= 9000, 90), count(s)
        assert b.inserted_total > 0 and a.inserted_total > 0
    finally:
        for sink, task in ((a, ta), (b, tb)):
            sink.stop.set()
            if task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 30)
            await sink.close()
    assert count(s) == 9000 and count(s, "uniqExact(event_id)") == 9000
    want = {orjson.loads(v)["event_id"] for v in values}
    got = {
        str(r[0])
        for r in make_client(s)
        .query(f"SELECT event_id FROM {s.clickhouse_database}.events_dedup")
        .result_rows
    }
    assert got == want
    assert await committed_lag(s, topics["audit.events.v1"], s.sink.consumer_group) == 0
