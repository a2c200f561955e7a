"""The per-organisation audit switch: reconcile settings with the last known state at startup.

State lives in a compacted topic (``enricher.state_topic``; key = org_id, value =
``{"audit_enabled": bool}``). On startup the enricher reads it to the end, compares it with
``enricher.audit_disabled_orgs`` and, for every org whose switch moved, first publishes an
``organization:audit_config_update`` system event to the events topic (awaiting the broker's ack) and
then records the new state. A crash between the two re-emits the same event id (derived from the org,
the new state and the offset of the previous state record), which downstream de-duplicates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.common.kafka import JSON_HEADERS, _security, make_consumer, make_producer
from services.common.logging import get_logger, log
from services.common.settings import Settings
from services.enricher.rules.enrich import (
    effective_disabled,
    parse_org_switch,
    switch_event,
    switch_event_id,
    switch_transitions,
)

logger = get_logger("services.enricher.switch")


async def ensure_state_topic(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **_security(settings))
    await admin.start()
    try:
        if settings.enricher.state_topic in set(await admin.list_topics()):
            return
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        settings.enricher.state_topic,
                        num_partitions=1,
                        replication_factor=1,
                        topic_configs={"cleanup.policy": "compact"},
                    )
                ]
            )
        except TopicAlreadyExistsError:
            pass
    finally:
        await admin.close()


async def read_state(settings: Settings) -> dict[str, tuple[bool, int]]:
    """org -> (audit_enabled, offset of that record), the latest record per org."""
    topic = settings.enricher.state_topic
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await _partitions(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        state: dict[str, tuple[bool, int]] = {}
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for msgs in batch.values():
                for m in msgs:
                    if m.key is None or m.value is None:
                        continue
                    try:
                        enabled = bool(orjson.loads(m.value)["audit_enabled"])
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
                    state[m.key.decode()] = (enabled, m.offset)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return state
    finally:
        await consumer.stop()


async def reconcile(settings: Settings) -> list[str]:
    """Emit a switch event for every org whose audit switch changed; returns those org ids."""
    es = settings.enricher
    await ensure_state_topic(settings)
    state = await read_state(settings)
    moves = switch_transitions({o: s for o, (s, _) in state.items()}, frozenset(es.audit_disabled_orgs))
    if not moves:
        return []
    producer = make_producer(settings)
    await producer.start()
    try:
        now = datetime.now(UTC)
        for org, (before, after) in sorted(moves.items()):
            prev_offset = state[org][1] if org in state else -1
            event = switch_event(
                org, before, after, event_id=switch_event_id(org, after, prev_offset), now=now
            )
            fut = await producer.send(
                es.events_topic,
                key=org.encode(),
                value=orjson.dumps(event.model_dump(mode="json")),
                headers=JSON_HEADERS,
            )
            await fut
            fut = await producer.send(
                es.state_topic,
                key=org.encode(),
                value=orjson.dumps({"audit_enabled": after, "changed_at": now.isoformat()}),
            )
            await fut
            log(
                logger,
                logging.INFO,
                "audit switch changed",
                org_id=org,
                audit_enabled=after,
                event_id=str(event.event_id),
            )
    finally:
        await producer.stop()
    return sorted(moves)


class SwitchFollower:
    """Follows the query API's org switch topic (``enricher.switch_topic``) for the life of the worker.

    Every worker reads the whole compacted topic (no consumer group, nothing committed), then keeps
    polling; each change calls ``on_change`` with the effective set of orgs whose events are not stored
    (:func:`effective_disabled`: the settings list plus the orgs switched off through the API). ``ready``
    is set once the records present at start were read, so a worker never processes an event with a
    state older than the one it restarted with. A broken connection starts over from the beginning.
    """

    def __init__(self, settings: Settings, on_change: Callable[[frozenset[str]], None]) -> None:
        self.settings = settings
        self.on_change = on_change
        self.state: dict[str, bool] = {}
        self.ready = asyncio.Event()
        self._settings_off = frozenset(settings.enricher.audit_disabled_orgs)

    def disabled(self) -> frozenset[str]:
        return effective_disabled(self._settings_off, self.state)

    def apply(self, key: bytes | None, value: bytes | None) -> bool:
        """One record; True when it changed the state."""
        rec = parse_org_switch(key, value)
        if rec is None:
            log(logger, logging.WARNING, "org switch record ignored (not an OrgSwitch for its key)")
            return False
        if self.state.get(rec.org_id) == rec.audit_enabled:
            return False
        self.state[rec.org_id] = rec.audit_enabled
        log(
            logger,
            logging.INFO,
            "org audit switch",
            org_id=rec.org_id,
            audit_enabled=rec.audit_enabled,
            changed_by=rec.changed_by,
        )
        return True

    async def run(self) -> None:
        topic = self.settings.enricher.switch_topic
        while True:
            consumer = make_consumer(self.settings, group_id=None)
            try:
                await consumer.start()
                tps = [TopicPartition(topic, p) for p in await _partitions(consumer, topic)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                ends = await consumer.end_offsets(tps)
                while True:
                    batch = await consumer.getmany(*tps, timeout_ms=500)
                    changed = False
                    for msgs in batch.values():
                        for m in msgs:
                            changed |= self.apply(m.key, m.value)
                    if changed:
                        self.on_change(self.disabled())
                    if not self.ready.is_set():
                        positions = [await consumer.position(tp) for tp in tps]
                        if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                            self.on_change(self.disabled())
                            self.ready.set()
                            log(logger, logging.INFO, "org switch loaded", disabled=sorted(self.disabled()))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - broker trouble: start over, keep the last state meanwhile
                log(
                    logger,
                    logging.WARNING,
                    "org switch follower restarting",
                    error=f"{type(e).__name__}: {e}"[:300],
                )
                await asyncio.sleep(2.0)
            finally:
                await consumer.stop()


async def _partitions(consumer: Any, topic: str) -> set[int]:
    for _ in range(50):  # a just-created topic takes a moment to appear in metadata
        cluster = await consumer._client.fetch_all_metadata()
        parts = cluster.partitions_for_topic(topic) or set()
        if parts:
            return parts
        await asyncio.sleep(0.2)
    raise RuntimeError(f"topic {topic} has no partitions")
