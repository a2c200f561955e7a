"""Fixtures of the forwarder tests: receivers per destination kind, a running destination runner on a
fresh topic, producing events, reading dead letters and committed offsets from the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.topics import EVENTS
from services.common.kafka import ensure_topics, make_producer
from services.common.metrics import REGISTRY
from services.common.settings import Settings
from services.siem_forwarder.config import ForwarderConfig
from services.siem_forwarder.service import dead_letter_specs
from services.siem_forwarder.util.config import DestinationConfig
from services.siem_forwarder.util.runner import DestinationRunner
from tests.siem_forwarder.events import encode
from tests.siem_forwarder.harness import KINDS, Harness


@pytest.fixture(scope="module", params=KINDS)
async def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    h = Harness(request.param, tmp_path_factory.mktemp(request.param))
    await h.start()
    try:
        yield h
    finally:
        await h.settle()
        await h.stop()


@pytest.fixture
def events_topic(topic_names: Callable[..., dict[str, str]]) -> str:
    return topic_names(EVENTS)[EVENTS]


def unique_name(kind: str) -> str:
    return f"{kind.replace('_', '-')}-{uuid.uuid4().hex[:8]}"


def metric(name: str, destination: str, **labels: str) -> float:
    v = REGISTRY.get_sample_value(f"auditpipe_forwarder_{name}", {"destination": destination, **labels})
    return v or 0.0


async def produce(settings: Settings, topic: str, events: list[dict[str, Any]]) -> None:
    producer = make_producer(settings)
    await producer.start()
    try:
        futs = [await producer.send(topic, encode(e), key=e["event_id"].encode()) for e in events]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def produce_raw(settings: Settings, topic: str, values: list[bytes]) -> None:
    """Records as they are (not necessarily JSON), to one partition."""
    producer = make_producer(settings)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, v, key=b"raw") for v in values])
    finally:
        await producer.stop()


async def wait_until(pred: Callable[[], bool], within: float, what: str) -> float:
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > within:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def read_topic(
    settings: Settings, topic: str, expect: int, within: float = 10.0
) -> list[dict[str, Any]]:
    c = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await c.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + within
        while len(out) < expect and time.monotonic() < deadline:
            got = await c.getmany(timeout_ms=300)
            for recs in got.values():
                out.extend(orjson.loads(r.value) for r in recs)
        await asyncio.sleep(0.3)  # anything beyond what we expected would show up now
        got = await c.getmany(timeout_ms=300)
        for recs in got.values():
            out.extend(orjson.loads(r.value) for r in recs)
    finally:
        await c.stop()
    return out


async def committed_total(settings: Settings, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        offs = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(m.offset for tp, m in offs.items() if tp.topic == topic and m.offset > 0)


async def end_total(settings: Settings, topic: str) -> int:
    c = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or set()
        ends = await c.end_offsets([TopicPartition(topic, p) for p in parts])
        return sum(ends.values())
    finally:
        await c.stop()


@asynccontextmanager
async def forwarding(
    settings: Settings, dest: DestinationConfig, topic: str
) -> AsyncIterator[DestinationRunner]:
    """A running destination runner (own consumer group) on ``topic``; stopped cleanly after."""
    await ensure_topics(settings, dead_letter_specs(ForwarderConfig(destinations=[dest])))
    producer = make_producer(settings)
    await producer.start()
    stop = asyncio.Event()
    encoder, client = dest.build()
    runner = DestinationRunner(settings, dest, topic, producer, encoder, client, stop)
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 20)
        finally:
            await producer.stop()
