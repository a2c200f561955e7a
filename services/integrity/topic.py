"""The Kafka side of tamper evidence: the append-only digest topic, and the sink's committed progress
that tells the sealer when a window can no longer receive rows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from aiokafka import TopicPartition

from schemas.topics import DIGESTS, spec_as
from services.common.audit_events import AuditPublisher
from services.common.kafka import ensure_topics, make_admin, make_consumer, topic_partitions
from services.common.settings import Settings


async def ensure_digest_topic(settings: Settings) -> None:
    """Create the digest topic from its contract (never compacted, kept forever) if it does not exist."""
    await ensure_topics(settings, [spec_as(DIGESTS, settings.integrity.digest_topic)], timeout_s=15)


async def publish(publisher: AuditPublisher, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
    """(org_id, record) pairs, each acknowledged by every in-sync replica before the next."""
    for org_id, record in records:
        await publisher.send(topic, org_id, record)


async def _partitions(settings: Settings, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in await topic_partitions(settings, topic)]


async def read_digests(settings: Settings, timeout_s: float = 30.0) -> list[bytes]:
    """Every record of the digest topic in offset order (empty when the topic does not exist)."""
    topic = settings.integrity.digest_topic
    parts = await _partitions(settings, topic)
    if not parts:
        return []
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    out: list[bytes] = []
    try:
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        todo = {tp for tp in parts if ends[tp] > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while todo:
            if loop.time() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within {timeout_s:.0f} s")
            got = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, msgs in got.items():
                out.extend(m.value for m in msgs if m.value is not None)
                if msgs and msgs[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return out


def read_digests_blocking(settings: Settings) -> list[bytes]:
    """:func:`read_digests` from synchronous code (a thread without a running event loop)."""
    return asyncio.run(read_digests(settings))


async def sink_has_passed(settings: Settings, t: datetime) -> tuple[bool, str]:
    """Whether the sink's group committed, on every partition of its topic, at least up to the first
    message whose timestamp is >= ``t`` (or up to the partition's end when there is none yet).

    Rows are inserted before their offsets are committed, and a message with a timestamp >= ``t`` is
    consumed (so inserted) only after ``t``; so once this holds, every row the sink will still insert
    gets ``inserted_at`` >= ``t`` (as long as the enricher's and ClickHouse's clocks differ by less than
    the grace period). Returns (ok, reason when not).
    """
    topic, group = settings.sink.topic, settings.sink.consumer_group
    parts = await _partitions(settings, topic)
    if not parts:
        return True, ""
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        found = await consumer.offsets_for_times({tp: int(t.timestamp() * 1000) for tp in parts})
        ends = await consumer.end_offsets(parts)
        begins = await consumer.beginning_offsets(parts)
    finally:
        await consumer.stop()
    admin = make_admin(settings)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=parts)
    finally:
        await admin.close()
    for tp in parts:
        need = found[tp].offset if found.get(tp) is not None else ends[tp]
        if need <= begins[tp]:
            continue  # nothing before t in this partition (empty or already deleted by retention)
        om = committed.get(tp)
        have = om.offset if om is not None and om.offset >= 0 else -1
        if have < need:
            return False, f"sink group {group} committed {have} < {need} on {tp.topic}/{tp.partition}"
    return True, ""
