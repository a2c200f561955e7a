"""The faust shell: audit.raw.v1 -> rules.enrich -> audit.events.v1 (or the dead-letter topic), in batches.

Source -> steps -> sink:

- source: one agent on the raw topic, ``concurrency=1`` (faust-streaming #606 commits past in-flight
  messages with more), taking up to ``batch_max_records`` records at a time with ``noack_take``: faust
  acks nothing by itself, so a record is never committed before its outputs are on the broker.
  faust's cost is per Kafka record (a few tasks, a lock and an ack each); producers write envelopes
  (one record per request or flush, schemas/events_v1.py ``RawRecord``), so it is paid once per
  envelope, not once per event.
- steps: :class:`services.enricher.rules.enrich.Enricher` (pure, deterministic) turns each record into
  enriched records, dead letters or suppressed counts.
- sink: :class:`services.enricher.delivery.BulkDelivery` produces a batch's outputs together (one
  aiokafka record batch per partition) and acks the batch's records, in order, once every output was
  acknowledged; suppressed counts go to the ``suppressed_daily`` table (key
  ``org_id|YYYY-MM-DD|partition``, changelog-backed) when the org has audit switched off (in settings,
  or through the query API: :class:`services.enricher.switch.SwitchFollower` follows that topic live).

The events topic is keyed by event id: every copy of one event lands on one partition (the sink's
first-content-wins check relies on it) and one big tenant spreads over all partitions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import faust
import orjson

from services.common.kafka import faust_credentials, make_producer
from services.common.logging import get_logger, log
from services.common.settings import Settings
from services.enricher import metrics
from services.enricher.delivery import BulkDelivery, Output
from services.enricher.rules.enrich import Enricher, Results
from services.enricher.switch import SwitchFollower

logger = get_logger("services.enricher")


def create_app(settings: Settings, raw_partitions: int, rules: Any = None) -> faust.App:
    """Build the faust app (never at module level: a faust App binds to the first event loop).

    ``rules`` replaces the enricher's rules (anything with ``process_record``): the benchmark runs the
    same shell as a pass-through to measure what faust and Kafka cost without them."""
    es = settings.enricher
    app = faust.App(
        es.consumer_group,
        broker=[f"kafka://{b}" for b in settings.bootstrap_servers],
        broker_credentials=faust_credentials(settings),
        broker_session_timeout=es.session_timeout_s,
        broker_heartbeat_interval=max(1.0, es.session_timeout_s / 5),
        broker_commit_interval=es.commit_interval_s,
        broker_max_poll_records=es.batch_max_records,
        # a fetch per partition may hold whole envelopes (records up to 8 MiB): fewer round trips
        consumer_max_fetch_size=8 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_compression_type=None if es.compression == "none" else es.compression,
        producer_linger_ms=5,
        topic_partitions=raw_partitions,
        topic_replication_factor=1,
        # main.prepare creates every topic faust uses (from schemas/topics, the cluster's replication
        # factor); faust's own declaration asks the controller node and fails while it is not connected
        topic_allow_declare=False,
        store="memory://",
        datadir=str(es.data_dir),
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        cython_optimizations=True,
    )
    raw_topic = app.topic(es.raw_topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    suppressed = app.Table("suppressed_daily", default=int, partitions=raw_partitions)
    enricher = rules if rules is not None else Enricher.from_settings(es)
    # the org switch set through the query API, followed live (settings-listed orgs stay off regardless)
    follower = SwitchFollower(settings, lambda off: setattr(enricher, "disabled_orgs", off))
    state: dict[str, Any] = {}

    async def ack(records: Sequence[Any]) -> None:
        stream = state["stream"]
        for event in records:
            await stream.ack(event)

    delivery = BulkDelivery(
        lambda: make_producer(
            settings, compression_type=None if es.compression == "none" else es.compression, linger_ms=0
        ),
        ack,
        es.max_in_flight,
    )

    @app.task
    async def follow_switch() -> None:
        await follower.run()

    @app.task
    async def complete_deliveries() -> None:
        await delivery.run()

    @app.on_before_shutdown.connect
    async def stop_producer(app: faust.App, **_: Any) -> None:  # noqa: ARG001
        await delivery.stop()

    @app.agent(raw_topic, concurrency=1)
    async def enrich_raw(stream: faust.StreamT) -> None:
        state["stream"] = stream
        await follower.ready.wait()  # no event before the switch state this worker restarts with
        async for records in stream.noack_take(es.batch_max_records, within=es.batch_max_wait_s):
            results = Results()
            for event in records:
                msg = event.message
                ts = round(msg.timestamp * 1000) if msg.timestamp else None
                enricher.process_record(
                    msg.value,
                    results,
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    timestamp_ms=ts,
                )
            outputs: list[Output] = [(es.events_topic, k, v) for k, v in results.events]
            for letter in results.dead:
                outputs.append(
                    (
                        es.deadletter_topic,
                        letter.org_id.encode() if letter.org_id else None,
                        orjson.dumps(letter.model_dump(mode="json")),
                    )
                )
                report_dead_letter(letter)
            for (org, day, partition), n in results.suppressed.items():
                # Only the owner of a source partition counts its events, and the count lives in the
                # changelog partition of that source partition: recovery hands both to the same worker.
                key = f"{org}|{day}|{partition}"
                count = suppressed.data.get(key, 0) + n
                suppressed.data[key] = count
                suppressed.send_changelog(partition, key, count)
                day_total = sum(suppressed.data.get(f"{org}|{day}|{p}", 0) for p in range(raw_partitions))
                metrics.SUPPRESSED.labels(org, day).set(day_total)
            total = len(results.events) + len(results.dead) + results.suppressed_total
            metrics.EVENTS.labels("enriched").inc(len(results.events))
            metrics.EVENTS.labels("suppressed").inc(results.suppressed_total)
            metrics.EVENTS.labels("dead_letter").inc(len(results.dead))
            await delivery.submit(records, outputs, total)

    def report_dead_letter(letter: Any) -> None:
        metrics.DEAD_LETTERS.labels(letter.reason).inc()
        # error text and coordinates only: the letter's original is never logged
        log(
            logger,
            logging.WARNING,
            "dead letter",
            reason=letter.reason,
            error=letter.error[:500],
            topic=letter.source_topic,
            partition=letter.source_partition,
            offset=letter.source_offset,
        )

    @app.timer(interval=60.0)
    async def report_suppressed() -> None:
        """Log the daily not-stored counts this worker holds (its partitions of the table)."""
        totals: dict[tuple[str, str], int] = {}
        for key, count in list(suppressed.items()):
            org, _, rest = key.partition("|")
            day = rest.partition("|")[0]
            totals[(org, day)] = totals.get((org, day), 0) + count
        for (org, day), count in totals.items():
            metrics.SUPPRESSED.labels(org, day).set(count)
            log(logger, logging.INFO, "events not stored (audit off)", org_id=org, day=day, count=count)

    app.enrich_raw = enrich_raw  # type: ignore[attr-defined]
    app.suppressed_daily = suppressed  # type: ignore[attr-defined]
    app.switch_follower = follower  # type: ignore[attr-defined]
    app.delivery = delivery  # type: ignore[attr-defined]
    return app
