"""What is particular to one destination, beyond the shared conformance suite."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from services.siem_forwarder.config import parse_config
from tests.siem_forwarder.conftest import (
    committed_total,
    forwarding,
    metric,
    produce,
    produce_raw,
    read_topic,
    unique_name,
    wait_until,
)
from tests.siem_forwarder.events import encode, make_event
from tests.siem_forwarder.harness import Harness, destination_block
from tests.siem_forwarder.receivers import POISON_ACTION

PORT = 19850  # receivers of this module (our range 19800-19899)


def encoded(dest, events):  # noqa: ANN001, ANN201
    encoder, client = dest.build()
    return [encoder.encode(encode(e), e) for e in events], client


async def test_elasticsearch_resend_is_idempotent_and_429_items_alone_are_resent(tmp_path: Path) -> None:
    h = Harness("elasticsearch", tmp_path)
    h.port = h.receiver.port = PORT
    await h.start()
    try:
        dest = h.config("es")
        events = [make_event(i) for i in range(5)]
        items, client = encoded(dest, events)
        assert (await client.send(items)).retry == []
        again = await client.send(items)  # a resend after e.g. a lost response
        assert again.retry == [] and again.dead == {}  # 409 on create with our _id = already indexed
        assert h.receiver.conflicts == 5 and len(h.receiver.docs) == 5
        more = [make_event(i) for i in range(4)]
        items2, _ = encoded(dest, more)
        h.receiver.reject_items_next(2)  # es_rejected_execution_exception on the first two items
        d = await client.send(items2)
        assert d.retry == [0, 1] and not d.dead
        assert (await client.send([items2[i] for i in d.retry])).retry == []
        assert {e["event_id"] for e in more} <= set(h.receiver.docs)
        await client.aclose()
    finally:
        await h.stop()


async def test_splunk_ack_means_indexed(tmp_path: Path) -> None:
    h = Harness("splunk_hec_ack", tmp_path)
    h.port = h.receiver.port = PORT
    await h.start()
    try:
        dest = h.config("hec")
        items, client = encoded(dest, [make_event(1)])
        assert client.headers["X-Splunk-Request-Channel"]
        assert (await client.send(items)).retry == []
        assert h.receiver.acks[1][1] >= 2  # returned only after the ack poll said true
        # never indexed within ack_timeout_s -> the batch is sent again (transient), never "delivered"
        dest2 = dest.model_copy(update={"ack_timeout_s": 0.3})
        items, client2 = encoded(dest2, [make_event(2)])
        h.receiver.ack_after_polls = 10**9
        d = await client2.send(items)
        assert d.retry == [0] and "not indexed" in d.error
        await client.aclose()
        await client2.aclose()
    finally:
        await h.stop()


@pytest.mark.kafka
async def test_datadog_413_splits_the_batch(kafka_settings, events_topic, tmp_path: Path) -> None:
    h = Harness("datadog", tmp_path)
    h.port = h.receiver.port = PORT
    h.receiver.max_entries = 4  # answers 413 above 4 entries
    await h.start()
    try:
        name = unique_name("dd")
        dest = h.config(name)
        events = [make_event(i) for i in range(10)]
        ids = {e["event_id"] for e in events}
        await produce(kafka_settings, events_topic, events)
        async with forwarding(kafka_settings, dest, events_topic):
            await wait_until(lambda: ids <= set(h.received()), 20, "split batches delivered")
        assert metric("dead_lettered_events_total", name, reason="destination_rejected") == 0
        assert h.receiver.gzipped >= 3  # bodies sent gzip-compressed, as Datadog recommends
    finally:
        await h.stop()


@pytest.mark.kafka
async def test_otlp_partial_success_dead_letters_only_the_rejected(
    kafka_settings, events_topic, tmp_path
) -> None:
    h = Harness("otlp", tmp_path)
    h.port = h.receiver.port = PORT
    h.receiver.partial_success = True
    await h.start()
    try:
        name = unique_name("otlp")
        dest = h.config(name)
        poison = make_event(0, action=POISON_ACTION)
        events = [make_event(i) for i in range(6)] + [poison]
        await produce(kafka_settings, events_topic, events)
        async with forwarding(kafka_settings, dest, events_topic):
            letters = await read_topic(kafka_settings, dest.dlq_topic(), 1, within=20)
        assert [x["event_id"] for x in letters] == [poison["event_id"]]
        assert "partialSuccess" in letters[0]["response"]
        assert {e["event_id"] for e in events[:-1]} <= set(h.received())
        # the receiver parsed everything with the official ExportLogsServiceRequest
        assert h.receiver.resources[0]["service.name"] == "auditpipe"
        rec = h.receiver.records[0]
        assert rec.severity_number == 9 and rec.time_unix_nano > 0 and rec.event_name == "deployment:create"
    finally:
        await h.stop()


async def test_webhook_wrong_secret_is_refused_and_permanent(tmp_path: Path) -> None:
    h = Harness("webhook", tmp_path)
    h.port = h.receiver.port = PORT
    await h.start()
    os.environ["FWD_TEST_WRONG_SECRET"] = "not-the-secret"
    try:
        blk = destination_block("webhook", "hook", PORT) | {"secret_env": "FWD_TEST_WRONG_SECRET"}
        dest = parse_config({"destinations": [blk]}).destinations[0]
        items, client = encoded(dest, [make_event(1)])
        d = await client.send(items)
        assert h.receiver.forged == 1 and d.dead and "401" in d.dead[0]
        await client.aclose()
    finally:
        await h.stop()


@pytest.mark.kafka
async def test_filter_skips_but_commits(kafka_settings, events_topic, tmp_path: Path) -> None:
    h = Harness("webhook", tmp_path)
    h.port = h.receiver.port = PORT
    await h.start()
    try:
        name = unique_name("hook")
        blk = destination_block("webhook", name, PORT) | {
            "filter": {"orgs": ["org_1"], "exclude_actions": ["*:delete"]},
            "fields": {"exclude": ["request", "changes"]},
        }
        dest = parse_config({"destinations": [blk]}).destinations[0]
        keep = [make_event(i) for i in range(5)]
        skip = [make_event(i, org="org_2") for i in range(3)] + [make_event(9, action="project:delete")]
        await produce(kafka_settings, events_topic, keep + skip)
        async with forwarding(kafka_settings, dest, events_topic):
            await wait_until(lambda: {e["event_id"] for e in keep} <= set(h.received()), 15, "kept events")
            await wait_until(lambda: metric("filtered_events_total", name) == 4, 5, "filtered count")
            for _ in range(50):
                if await committed_total(kafka_settings, dest.group(), events_topic) == 9:
                    break
        assert not {e["event_id"] for e in skip} & set(h.received())
    finally:
        await h.stop()


@pytest.mark.kafka
async def test_rsyslog_parses_our_rfc5424_over_tls(kafka_settings, events_topic, tmp_path: Path) -> None:
    h = Harness("syslog_tls", tmp_path)
    h.port = h.receiver.port = PORT
    h.receiver._write_conf()
    await h.start()
    try:
        dest = h.config(unique_name("sys"))
        ev = make_event(3)
        await produce(kafka_settings, events_topic, [ev])
        async with forwarding(kafka_settings, dest, events_topic):
            await wait_until(lambda: ev["event_id"] in h.received(), 15, "the event in rsyslog's file")
        line = h.receiver.lines[-1]
        assert line["app"] == "auditpipe" and line["msgid"] == "deployment:create"
        assert line["pri"] == 13 * 8 + 6
        assert line["sd"].startswith("[auditpipe@32473 ") and f'event_id="{ev["event_id"]}"' in line["sd"]
        assert line["event"] == ev  # the whole event, multi-line strings included, intact
    finally:
        await h.stop()


@pytest.mark.kafka
async def test_stop_during_outage_abandons_the_batch_without_loss(
    kafka_settings, events_topic, tmp_path
) -> None:
    """SIGTERM while the destination is down: the unconfirmed batch is not committed; the next process
    delivers it. The lag gauge shows the backlog meanwhile."""
    h = Harness("webhook", tmp_path)
    h.port = h.receiver.port = PORT
    name = unique_name("hook")
    dest = h.config(name)
    events = [make_event(i) for i in range(10)]
    ids = {e["event_id"] for e in events}
    await produce(kafka_settings, events_topic, events)
    async with forwarding(kafka_settings, dest, events_topic) as runner:
        await wait_until(lambda: runner.status.state == "retrying", 15, "retrying")
        await wait_until(lambda: metric("consumer_lag_messages", name) == 10, 10, "lag = backlog")
    assert runner.status.state == "stopped"
    assert await committed_total(kafka_settings, dest.group(), events_topic) == 0
    await h.start()
    try:
        async with forwarding(kafka_settings, dest, events_topic):
            await wait_until(lambda: ids <= set(h.received()), 15, "delivered by the next process")
    finally:
        await h.stop()


@pytest.mark.kafka
async def test_memory_bounded_while_down_one_batch_in_flight(kafka_settings, events_topic, tmp_path) -> None:
    """A destination that stays down holds at most one batch: the consumer's position stops at the end of
    the in-flight batch (partitions paused, nothing else consumed), whatever the backlog."""
    h = Harness("webhook", tmp_path)
    h.port = h.receiver.port = PORT
    blk = destination_block("webhook", unique_name("hook"), PORT) | {
        "batch": {"max_events": 50, "max_seconds": 0.2}
    }
    dest = parse_config({"destinations": [blk]}).destinations[0]
    await produce(kafka_settings, events_topic, [make_event(i) for i in range(400)])
    async with forwarding(kafka_settings, dest, events_topic) as runner:
        await wait_until(lambda: runner.status.state == "retrying", 15, "retrying")
        await asyncio.sleep(2.5)
        c = runner.consumer
        assert c is not None
        consumed = sum([await c.position(tp) for tp in c.assignment()])
        assert consumed <= 50, consumed
        assert c.paused() == c.assignment()


@pytest.mark.kafka
async def test_a_broken_destination_does_not_stop_the_others(kafka_settings, events_topic, tmp_path) -> None:
    """The forwarder service: a destination that cannot even start (unreadable CA file) is retried in
    isolation; the healthy one delivers."""
    from services.siem_forwarder.service import Forwarder

    h = Harness("webhook", tmp_path)
    h.port = h.receiver.port = PORT
    await h.start()
    good = destination_block("webhook", unique_name("hook"), PORT)
    broken = destination_block("syslog_tls", unique_name("sys"), 19851, tmp_path / "no-such-ca.pem")
    cfg = parse_config({"topic": events_topic, "destinations": [broken, good]})
    events = [make_event(i) for i in range(5)]
    await produce(kafka_settings, events_topic, events)
    fwd = Forwarder(kafka_settings, cfg)
    task = asyncio.create_task(fwd.run(serve=False))
    try:
        await wait_until(
            lambda: {e["event_id"] for e in events} <= set(h.received()), 20, "healthy destination"
        )
        assert "FileNotFoundError" in fwd.crashes[broken["name"]]
        ok, detail = await fwd.ready()
        assert ok and broken["name"] in detail["crashed"]
    finally:
        fwd.stop.set()
        await asyncio.wait_for(task, 20)
        await h.stop()


@pytest.mark.kafka
async def test_splunk_requests_stay_within_max_content_length(kafka_settings, events_topic, tmp_path) -> None:
    h = Harness("splunk_hec", tmp_path)
    h.port = h.receiver.port = PORT
    h.receiver.max_content_length = 8 * 1024
    await h.start()
    try:
        blk = destination_block("splunk_hec", unique_name("hec"), PORT) | {"max_content_length": 8 * 1024}
        dest = parse_config({"destinations": [blk]}).destinations[0]
        events = [make_event(i) for i in range(40)]  # ~40 KB in one Kafka batch
        await produce(kafka_settings, events_topic, events)
        async with forwarding(kafka_settings, dest, events_topic):
            await wait_until(lambda: {e["event_id"] for e in events} <= set(h.received()), 20, "all events")
        assert h.receiver.too_large == 0 and h.receiver.requests >= 5
    finally:
        await h.stop()


@pytest.mark.kafka
@pytest.mark.parametrize("kind", ["splunk_hec", "webhook"])
async def test_records_that_cannot_be_read_for_what_is_needed_are_dead_letters(
    kind: str, kafka_settings, events_topic, tmp_path: Path
) -> None:
    """Nothing is validated again, but a record the filter or encoder cannot read (not JSON; no time for
    HEC) goes to the destination's dead-letter topic with the reason, and its batch-mates are delivered."""
    h = Harness(kind, tmp_path)
    h.port = h.receiver.port = PORT
    await h.start()
    try:
        name = unique_name(kind)
        blk = destination_block(kind, name, PORT)
        if kind == "webhook":
            blk["filter"] = {"actions": ["deployment:*"]}  # the filter reads action: not-JSON cannot pass
        dest = parse_config({"destinations": [blk]}).destinations[0]
        good = [make_event(i) for i in range(5)]
        no_time = make_event(7)
        del no_time["occurred_at"], no_time["received_at"]
        bad = [b"{not json", encode(no_time)] if kind == "splunk_hec" else [b"{not json"]
        await produce(kafka_settings, events_topic, good[:2])
        await produce_raw(kafka_settings, events_topic, bad)
        await produce(kafka_settings, events_topic, good[2:])
        async with forwarding(kafka_settings, dest, events_topic):
            await wait_until(lambda: {e["event_id"] for e in good} <= set(h.received()), 20, "the good ones")
            letters = await read_topic(kafka_settings, dest.dlq_topic(), len(bad))
        assert sorted(x["reason"] for x in letters) == sorted(
            ["invalid_json", "invalid_event"] if kind == "splunk_hec" else ["invalid_json"]
        )
        assert {x["original"].encode() for x in letters} == set(bad)
        assert all(x["stage"] == f"forwarder:{name}" for x in letters)
    finally:
        await h.stop()
