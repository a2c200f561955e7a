"""The conformance suite: the same tests for every destination, each against a local receiver that speaks
the vendor's protocol (syslog: Debian's rsyslog, plain TCP and TLS). Real Kafka: fresh topic and consumer
group per test; offsets are checked on the broker.

Syslog has no status codes; its equivalents are documented in docs/forwarder.md: "503" = the receiver is
down (connection refused/closed -> reconnect and retry); "400" = a message over ``max_message_bytes``
(dead-lettered as ``message_too_large``)."""

from __future__ import annotations

import asyncio

import pytest

from schemas.integrity import verify_record
from tests.siem_forwarder.conftest import (
    committed_total,
    forwarding,
    metric,
    produce,
    read_topic,
    unique_name,
    wait_until,
)
from tests.siem_forwarder.events import encode, make_event
from tests.siem_forwarder.harness import Harness

pytestmark = pytest.mark.kafka


async def test_batch_delivered(harness: Harness, kafka_settings, events_topic) -> None:
    name = unique_name(harness.kind)
    dest = harness.config(name)
    events = [make_event(i) for i in range(60)]
    ids = {e["event_id"] for e in events}
    await produce(kafka_settings, events_topic, events)
    async with forwarding(kafka_settings, dest, events_topic) as runner:
        await wait_until(lambda: ids <= set(harness.received()), 20, "all events at the receiver")
        await wait_until(lambda: runner.status.delivered >= 60, 5, "delivered count")
        # offsets committed only after confirmation, and all of them
        for _ in range(50):
            if await committed_total(kafka_settings, dest.group(), events_topic) == 60:
                break
            await asyncio.sleep(0.1)
        assert await committed_total(kafka_settings, dest.group(), events_topic) == 60
    assert metric("sent_events_total", name) >= 60
    assert metric("last_success_timestamp_seconds", name) > 0
    assert metric("retried_events_total", name) == 0


async def test_records_arrive_byte_identical_and_verifiable(
    harness: Harness, kafka_settings, events_topic
) -> None:
    """The forwarded JSON is the record as the enricher wrote it, byte for byte: content_hash verifies at
    the destination by stripping its member, with no re-serialisation (schemas.integrity)."""
    name = unique_name(harness.kind)
    events = [make_event(i, action="deployment:create" if i % 2 else "variable:update") for i in range(20)]
    events.append(make_event(99, org="org_ü", action="project:update"))  # non-ASCII travels unchanged
    # numbers RFC 8785 spells unlike a JSON library (it writes 100000000000000000000 and 0.000001, orjson
    # 1e+20 and 1e-6): an event decoded and encoded again on the way would no longer verify
    events[0]["changes"] = [{"field": "quota", "before": 1e20, "after": 0.000001}]
    ids = {e["event_id"] for e in events}
    await produce(kafka_settings, events_topic, events)
    async with forwarding(kafka_settings, harness.config(name), events_topic):
        await wait_until(lambda: ids <= set(harness.received()), 20, "all events at the receiver")
    for e in events:
        record = encode(e)
        assert verify_record(record, strict=True)
        assert harness.carries(record), e["event_id"]


async def test_retried_after_transient_failure(harness: Harness, kafka_settings, events_topic) -> None:
    name = unique_name(harness.kind)
    dest = harness.config(name)
    events = [make_event(i) for i in range(20)]
    ids = {e["event_id"] for e in events}
    await harness.transient(2)  # HTTP: two 503s with Retry-After: 1; syslog: rsyslog down for 1.5 s
    await produce(kafka_settings, events_topic, events)
    async with forwarding(kafka_settings, dest, events_topic):
        took = await wait_until(lambda: ids <= set(harness.received()), 30, "events after the 503s")
    await harness.settle()
    assert metric("retried_events_total", name) >= 20
    assert metric("dead_lettered_events_total", name, reason="destination_rejected") == 0
    assert took >= 0.9  # Retry-After: 1 (or the outage) was honoured, not hammered


async def test_dead_lettered_on_permanent_refusal(harness: Harness, kafka_settings, events_topic) -> None:
    name = unique_name(harness.kind)
    dest = harness.config(name)
    poison = harness.poison_event()
    events = [make_event(i) for i in range(10)] + [poison] + [make_event(i) for i in range(10, 20)]
    good = {e["event_id"] for e in events} - {poison["event_id"]}
    await produce(kafka_settings, events_topic, events)
    async with forwarding(kafka_settings, dest, events_topic):
        await wait_until(lambda: good <= set(harness.received()), 20, "the good events")
        letters = await read_topic(kafka_settings, dest.dlq_topic(), 1)
        for _ in range(50):
            if await committed_total(kafka_settings, dest.group(), events_topic) == 21:
                break
            await asyncio.sleep(0.1)
        assert await committed_total(kafka_settings, dest.group(), events_topic) == 21
    assert poison["event_id"] not in harness.received()
    assert len(letters) == 1, letters
    letter = letters[0]
    assert letter["stage"] == f"forwarder:{name}"
    assert letter["event_id"] == poison["event_id"]
    assert letter["source_topic"] == events_topic and letter["source_offset"] is not None
    assert poison["event_id"] in letter["original"]  # the event itself travels with the letter
    if harness.is_syslog:
        assert letter["reason"] == "message_too_large"
    else:
        assert letter["reason"] == "destination_rejected"
        assert "400" in letter["response"]  # the destination's response is kept


async def test_resumes_after_outage(harness: Harness, kafka_settings, events_topic) -> None:
    name = unique_name(harness.kind)
    dest = harness.config(name)
    events = [make_event(i) for i in range(30)]
    ids = {e["event_id"] for e in events}
    await harness.down()
    try:
        await produce(kafka_settings, events_topic, events)
        async with forwarding(kafka_settings, dest, events_topic) as runner:
            await wait_until(lambda: runner.status.state == "retrying", 15, "runner retrying")
            await asyncio.sleep(2.0)
            assert not ids & set(harness.received())
            assert metric("paused", name) == 1  # partitions paused while the destination is down
            assert runner.consumer is not None and runner.consumer.paused()
            await harness.up()
            await wait_until(lambda: ids <= set(harness.received()), 20, "catch-up after the outage")
            await wait_until(lambda: metric("paused", name) == 0, 5, "resumed")
    finally:
        if not ids <= set(harness.received()):
            await harness.up()


async def test_nothing_missing_at_least_once(harness: Harness, kafka_settings, events_topic) -> None:
    """Failures and a runner restart mid-stream: every event arrives (duplicates allowed, loss not)."""
    name = unique_name(harness.kind)
    dest = harness.config(name)
    waves = [[make_event(i + 100 * w) for i in range(100)] for w in range(3)]
    ids = {e["event_id"] for w in waves for e in w}
    async with forwarding(kafka_settings, dest, events_topic):
        await produce(kafka_settings, events_topic, waves[0])
        await harness.transient(3)
        await produce(kafka_settings, events_topic, waves[1])
        await asyncio.sleep(0.5)
    await harness.settle()
    # A new process of the same destination resumes from the committed offsets.
    async with forwarding(kafka_settings, dest, events_topic):
        await produce(kafka_settings, events_topic, waves[2])
        await wait_until(lambda: ids <= set(harness.received()), 30, "every event")
    got = [i for i in harness.received() if i in ids]
    assert set(got) == ids
    assert metric("dead_lettered_events_total", name, reason="destination_rejected") == 0
