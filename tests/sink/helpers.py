"""Builders and probes shared by the sink tests (and the sink benchmark)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.integrity import content_hash_of, event_record
from services.common.clickhouse import make_client
from services.common.kafka import make_consumer, make_producer
from services.common.settings import Settings
from services.sink.rows import COLUMNS, row_from_json
from services.sink.service import Sink

ACTIONS = ["deployment:create", "environment:delete", "service:update", "variable:update", "project:create"]


def event_doc(
    i: int = 0, org: str = "org-a", occurred_at: datetime | None = None, **kw: Any
) -> dict[str, Any]:
    """A valid EnrichedEvent document without content_hash."""
    occ = occurred_at or datetime.now(UTC) - timedelta(seconds=i)
    t = occ.isoformat().replace("+00:00", "Z")
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "occurred_at": t,
        "received_at": t,
        "enriched_at": t,
        "org_id": org,
        "project_id": f"proj-{i % 7}",
        "environment_id": f"env-{i % 3}",
        "actor": {"type": "user", "id": f"u-{i % 11}", "name": f"User {i % 11}"},
        "action": ACTIONS[i % len(ACTIONS)],
        "event_type": ACTIONS[i % len(ACTIONS)].split(":")[1],
        "target": {
            "type": ACTIONS[i % len(ACTIONS)].split(":")[0],
            "id": f"t-{i % 101}",
            "name": f"Target {i}",
        },
        "source": "console",
        "status": 200,
        "change": f"change number {i}",
        "client_ip": f"203.0.113.{i % 250}",
        "request": {"method": "POST", "path": f"/api/things/{i}", "payload": {"n": i, "pad": "x" * 200}},
        "metadata": {"i": str(i)},
    }
    ev.update(kw)
    return ev


def enriched(i: int = 0, org: str = "org-a", occurred_at: datetime | None = None, **kw: Any) -> bytes:
    """A valid EnrichedEvent as the enricher published it before records became canonical (orjson bytes,
    content_hash set): the sink must store both forms."""
    ev = event_doc(i, org, occurred_at, **kw)
    ev["content_hash"] = content_hash_of(ev)
    return orjson.dumps(ev)


def record(i: int = 0, org: str = "org-a", occurred_at: datetime | None = None, **kw: Any) -> bytes:
    """A record of audit.events.v1 as the enricher writes it now: canonical JSON with its content_hash."""
    return event_record(event_doc(i, org, occurred_at, **kw))


def event_id_of(value: bytes) -> str:
    return str(orjson.loads(value)["event_id"])


async def produce_by_id(settings: Settings, topic: str, values: list[bytes]) -> None:
    """Produce keyed by event_id, as the enricher does: every copy of an id lands on one partition."""
    p = make_producer(settings)
    await p.start()
    try:
        futs = [await p.send(topic, v, key=event_id_of(v).encode()) for v in values]
        for f in futs:
            await f
    finally:
        await p.stop()


async def produce(settings: Settings, topic: str, values: list[bytes], key: bytes = b"org-a") -> None:
    p = make_producer(settings)
    await p.start()
    try:
        futs = [await p.send(topic, v, key=key) for v in values]
        for f in futs:
            await f
    finally:
        await p.stop()


async def produce_spread(settings: Settings, topic: str, values: list[bytes]) -> None:
    """Spread over every partition (keys vary) so rebalances and multi-partition batches are exercised."""
    p = make_producer(settings)
    await p.start()
    try:
        futs = [await p.send(topic, v, key=f"org-{i % 13}".encode()) for i, v in enumerate(values)]
        for f in futs:
            await f
    finally:
        await p.stop()


async def read_all(settings: Settings, topic: str, expect: int, timeout_s: float = 30.0) -> list[bytes]:
    c = make_consumer(settings, topic, group_id=None)
    await c.start()
    out: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < expect and time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=500)
            for msgs in got.values():
                out.extend(m.value for m in msgs)
        # a little longer, to catch extras
        got = await c.getmany(timeout_ms=500)
        for msgs in got.values():
            out.extend(m.value for m in msgs)
    finally:
        await c.stop()
    return out


def count(settings: Settings, what: str = "count()", table: str = "events_dedup") -> int:
    c = make_client(settings)
    db = settings.clickhouse_database
    return int(c.query(f"SELECT {what} FROM {db}.{table}").result_rows[0][0])  # noqa: S608 - test


def insert_events(settings: Settings, values: list[bytes], inserted_at: datetime | None = None) -> None:
    """Write rows directly (as the sink would), optionally back-dating inserted_at (archive snapshot)."""
    c = make_client(settings)
    rows = [row_from_json(v) for v in values]
    cols = list(COLUMNS)
    if inserted_at is not None:
        rows = [r + [inserted_at] for r in rows]
        cols.append("inserted_at")
    c.insert(f"{settings.clickhouse_database}.events", rows, column_names=cols)


async def wait_for(pred: Callable[[], bool], timeout_s: float, every_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(pred):
            return True
        await asyncio.sleep(every_s)
    return bool(await asyncio.to_thread(pred))


def sink_settings(ch_settings: Settings, topics: dict[str, str], **sink: Any) -> Settings:
    cfg = {
        "topic": topics["audit.events.v1"],
        "deadletter_topic": topics.get("audit.deadletter.v1", "audit.deadletter.v1"),
        "consumer_group": f"test-sink-{uuid.uuid4().hex[:8]}",
        "batch_max_rows": 2000,
        "batch_max_seconds": 0.3,
        "retry_initial_backoff_s": 0.2,
        "retry_max_backoff_s": 2.0,
        "archive_enabled": False,
        "port": 19601,
        **sink,
    }
    return ch_settings.model_copy(update={"sink": ch_settings.sink.model_copy(update=cfg)})


def many(n: int, orgs: int = 13) -> list[bytes]:
    """``n`` distinct valid events fast: 200 fully built templates, each copy with a fresh event_id.

    (content_hash then describes the template, which the sink does not check; the enricher owns it.)
    """
    templates = [enriched(i, org=f"org-{i % orgs}") for i in range(min(n, 200))]
    out = []
    for i in range(n):
        t = templates[i % len(templates)]
        old = orjson.loads(t)["event_id"]
        out.append(t.replace(old.encode(), str(uuid.uuid4()).encode(), 1))
    return out


async def run_until(sink: Sink, pred: Callable[[], bool], timeout_s: float) -> bool:
    """Run ``sink`` until ``pred`` holds (or the timeout), then stop it cleanly."""
    await sink.start()
    task = asyncio.create_task(sink.run())
    try:
        return await wait_for(pred, timeout_s)
    finally:
        sink.stop.set()
        await asyncio.wait_for(task, 30)
        await sink.close()


async def committed_lag(s: Settings, topic: str, group: str) -> int:
    """Committed offset minus end offset over every partition: 0 when everything is committed."""
    from aiokafka import TopicPartition

    from services.common.kafka import make_consumer

    c = make_consumer(s, group_id=group)
    await c.start()
    try:
        parts = [TopicPartition(topic, p) for p in (c.partitions_for_topic(topic) or set())]
        if not parts:
            await c._client.force_metadata_update()  # noqa: SLF001
            parts = [TopicPartition(topic, p) for p in (c.partitions_for_topic(topic) or set())]
        total = 0
        ends = await c.end_offsets(parts)
        for tp in parts:
            total += (await c.committed(tp) or 0) - ends[tp]
        return total  # 0 when every partition is committed to its end
    finally:
        await c.stop()
