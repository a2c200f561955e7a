"""First content wins for an event id (real Kafka and ClickHouse): a later record with a stored id and other
content never reaches events nor its view tables; it is kept in event_conflicts with both sides and
counted. Exact redeliveries stay invisible. Before migration 0013, a forgery with the same org and time
replaced the original in every FINAL read and one with another time sat beside it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas.integrity import event_record
from services.common.clickhouse import make_client
from services.common.metrics import REGISTRY
from services.common.settings import Settings
from services.sink.batch import Batch
from services.sink.records import read_key
from services.sink.service import Sink
from tests.sink.helpers import (
    committed_lag,
    count,
    event_doc,
    produce_by_id,
    run_until,
    sink_settings,
)

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

T0 = datetime(2026, 11, 20, 9, 15, 2, 123000, tzinfo=UTC)


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(f"auditpipe_sink_{name}") or 0.0


def rows(s: Settings, sql: str, **params: object) -> list[tuple]:
    sql = sql.replace("{db}", s.clickhouse_database)
    return make_client(s).query(sql, parameters=params).result_rows


def forge(original: dict, **changes: object) -> bytes:
    """Another record with the original's event_id and other content (a correct hash of its own)."""
    doc = {k: v for k, v in original.items() if k != "content_hash"}
    doc.update(changes)
    return event_record(doc)


def per_table(s: Settings, event_id: str) -> dict[str, int]:
    out = {}
    for t in ("events", "events_by_time", "events_by_target"):
        out[t] = rows(s, "SELECT count() FROM {db}." + t + " WHERE event_id = {e:UUID}", e=event_id)[0][0]
    return out


async def test_a_forgery_of_a_stored_event_never_replaces_or_joins_it(ch_settings, topic_names) -> None:
    topics = topic_names("audit.events.v1", "audit.deadletter.v1")
    s = sink_settings(ch_settings, topics)
    topic = topics["audit.events.v1"]
    doc = event_doc(1, org="org-a", occurred_at=T0, change="deleted environment prod")
    original = event_record(doc)
    eid, h0 = doc["event_id"], orjson.loads(original)["content_hash"]
    forgeries = [
        forge(doc, change="nothing happened"),  # same org and time: today's table would replace it
        forge(doc, change="nothing happened", occurred_at=(T0 + timedelta(hours=3)).isoformat()),
        forge(doc, org_id="org-b"),  # another org
    ]
    conflicts0, redelivered0 = metric("conflicts_total"), metric("redelivered_total")

    await produce_by_id(s, topic, [original])
    assert await run_until(Sink(s), lambda: count(s) == 1, 60)
    await produce_by_id(s, topic, [*forgeries, original])  # three forgeries, then an exact redelivery
    sink = Sink(s)
    assert await run_until(
        sink,
        lambda: count(s, "count()", "event_conflicts") == 3 and metric("redelivered_total") > redelivered0,
        60,
    )

    # every read shows the original, once; nothing else reached events or the views
    final = rows(
        s, "SELECT toString(content_hash), event_json FROM {db}.events FINAL WHERE event_id = {e:UUID}", e=eid
    )
    assert final == [(h0, original.decode())]
    assert per_table(s, eid) == {"events": 1, "events_by_time": 1, "events_by_target": 1}
    assert rows(
        s, "SELECT toString(content_hash), org_id FROM {db}.event_ids WHERE event_id = {e:UUID}", e=eid
    ) == [(h0, "org-a")]
    # each forgery is kept with both sides and where it came from
    got = rows(
        s,
        "SELECT content_hash, toString(stored_content_hash), org_id, stored_org_id, occurred_at, "
        "stored_occurred_at, record, topic, offset FROM {db}.event_conflicts WHERE event_id = {e:UUID} "
        "ORDER BY offset",
        e=eid,
    )
    assert [r[0] for r in got] == [orjson.loads(f)["content_hash"] for f in forgeries]
    assert {r[1] for r in got} == {h0}
    assert [r[2] for r in got] == ["org-a", "org-a", "org-b"] and {r[3] for r in got} == {"org-a"}
    naive = T0.replace(tzinfo=None)  # the client reads DateTime64(3, 'UTC') as naive UTC
    assert [r[4] for r in got] == [naive, naive + timedelta(hours=3), naive] and {r[5] for r in got} == {
        naive
    }
    assert [r[6].encode() for r in got] == forgeries
    assert {r[7] for r in got} == {topic} and len({r[8] for r in got}) == 3
    assert metric("conflicts_total") - conflicts0 == 3
    assert metric("redelivered_total") - redelivered0 == 1
    assert await committed_lag(s, topic, s.sink.consumer_group) == 0


async def test_copies_inside_one_batch_resolve_in_offset_order(ch_settings, topic_names) -> None:
    """Original, exact copy and forgery in one batch: the first wins, the copy vanishes, the forgery is kept
    aside; ids of the same batch that nobody stored are all new."""
    topics = topic_names("audit.events.v1", "audit.deadletter.v1")
    s = sink_settings(ch_settings, topics, batch_max_seconds=2.0)
    docs = [event_doc(i, occurred_at=T0 - timedelta(minutes=i)) for i in range(20)]
    originals = [event_record(d) for d in docs]
    forgery = forge(docs[3], change="rewritten")
    values = originals[:5] + [originals[3], forgery] + originals[5:]
    await produce_by_id(s, topics["audit.events.v1"], values)
    assert await run_until(
        Sink(s), lambda: count(s, "count()", "event_conflicts") == 1 and count(s) == 20, 60
    )
    assert count(s, "count()", "events") == 20  # raw rows, before any merge: no copy was inserted
    stored = rows(s, "SELECT toString(event_id), event_json FROM {db}.events")
    assert {e: j.encode() for e, j in stored} == {
        d["event_id"]: r for d, r in zip(docs, originals, strict=True)
    }
    conflict = rows(
        s, "SELECT toString(event_id), record, toString(stored_content_hash) FROM {db}.event_conflicts"
    )
    assert conflict == [(docs[3]["event_id"], forgery.decode(), orjson.loads(originals[3])["content_hash"])]


async def test_the_insert_token_changes_with_the_records_it_carries(ch_settings, topic_names) -> None:
    """Two batches with the same Kafka coordinates but other records (a batch re-read after a partial
    write: some of its ids are stored meanwhile) must not share a de-duplication token: ClickHouse drops a
    block whose token it saw, whatever it holds."""
    topics = topic_names("audit.events.v1", "audit.deadletter.v1")
    s = sink_settings(ch_settings, topics)
    sink = Sink(s)

    def batch_of(values: list[bytes]) -> Batch:
        b = Batch(10_000, 10**9, 1.0)
        for off, v in enumerate(values):
            b.add("t", 0, off, v, read_key(v))
        return b

    first = [event_record(event_doc(i)) for i in range(6)]
    await sink._write_once(batch_of(first))  # noqa: SLF001
    # same coordinates t/0/0-5: three records already stored, three new ones
    again = first[:3] + [event_record(event_doc(i)) for i in range(3)]
    await sink._write_once(batch_of(again))  # noqa: SLF001
    assert count(s, "count()", "events") == 9
    for t in ("events_by_time", "events_by_target"):
        assert count(s, "count()", t) == 9, t


def test_event_ids_keep_any_text_exactly(ch_settings) -> None:
    """Entries are written as TabSeparated: orgs and hashes with tabs, newlines and backslashes come back
    as they went in; an unreadable time becomes 0 instead of refusing rows that events already holds."""
    import uuid

    from services.sink.records import Key
    from services.sink.writer import lookup, remember

    c = make_client(ch_settings)
    table = f"{ch_settings.clickhouse_database}.event_ids"
    keys = [
        Key(str(uuid.uuid4()), "org\twith\ntabs\\and\r\\n", "a" * 64, "2026-11-20T09:15:02.123Z"),
        Key(str(uuid.uuid4()), "ü-org", "b" * 63, "2026-11-20T10:15:02.123+01:00"),
        Key(str(uuid.uuid4()), "org-x", "c" * 64, "not a time"),
    ]
    remember(c, table, keys, T0)
    got = lookup(c, table, [k.event_id for k in keys] + [str(uuid.uuid4())])
    assert {e: (s.org_id, s.content_hash) for e, s in got.items()} == {
        k.event_id: (k.org_id, k.content_hash) for k in keys
    }
    assert got[keys[0].event_id].occurred_at == T0 == got[keys[1].event_id].occurred_at
    assert got[keys[2].event_id].occurred_at == datetime(1970, 1, 1, tzinfo=UTC)
    assert {s.inserted_at for s in got.values()} == {T0}
