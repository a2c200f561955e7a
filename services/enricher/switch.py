"""The per-organisation audit switch (I/O around ``rules/switch.py``): reconcile settings with the last
known state at startup, and follow the query API's switch live.

State lives in a compacted topic (``enricher.state_topic``, contract in schemas/topics; key = org_id,
value = ``{"audit_enabled": bool, "changed_at": time, "event_id": id, "emitted": bool}``). On startup the
enricher reads it to the end and compares it with ``enricher.audit_disabled_orgs``; for every org whose
switch moved it records the new state with ``emitted: false`` first, then publishes the
``organization:audit_config_update`` system event built from that record (same id, same time), then
records ``emitted: true``. A crash anywhere in between re-emits exactly the same bytes on the next start
(an invisible duplicate), never a second, different event with the same id.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import TopicPartition

from schemas.topics import ENRICHER_STATE, spec_as
from services.common.kafka import (
    JSON_HEADERS,
    ensure_topics,
    make_consumer,
    make_producer,
    topic_partitions,
)
from services.common.logging import get_logger, log
from services.common.settings import Settings
from services.enricher.delivery import partition_for
from services.enricher.rules.switch import (
    effective_disabled,
    parse_org_switch,
    switch_event,
    switch_event_id,
    switch_transitions,
)

logger = get_logger("services.enricher.switch")


async def ensure_state_topic(settings: Settings) -> None:
    await ensure_topics(settings, [spec_as(ENRICHER_STATE, settings.enricher.state_topic)])


async def read_state(settings: Settings) -> dict[str, tuple[bool, int, dict[str, Any]]]:
    """org -> (audit_enabled, offset of that record, the record), the latest record per org."""
    topic = settings.enricher.state_topic
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        state: dict[str, tuple[bool, int, dict[str, Any]]] = {}
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for msgs in batch.values():
                for m in msgs:
                    if m.key is None or m.value is None:
                        continue
                    try:
                        rec = orjson.loads(m.value)
                        enabled = bool(rec["audit_enabled"])
                    except (orjson.JSONDecodeError, KeyError, TypeError):
                        continue
                    state[m.key.decode()] = (enabled, m.offset, rec)
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
    moves = switch_transitions({o: s for o, (s, _, _) in state.items()}, frozenset(es.audit_disabled_orgs))
    # a transition recorded but not yet emitted (crash in between): emit it again, identically
    unfinished = {
        org: rec for org, (_, _, rec) in state.items() if rec.get("emitted") is False and org not in moves
    }
    if not moves and not unfinished:
        return []
    producer = make_producer(settings)
    await producer.start()
    try:
        n_events = len(await producer.partitions_for(es.events_topic))
        todo: list[tuple[str, dict[str, Any]]] = sorted(unfinished.items())
        for org, (before, after) in sorted(moves.items()):
            prev_offset = state[org][1] if org in state else -1
            rec = {
                "audit_enabled": after,
                "before": before,
                "changed_at": datetime.now(UTC).isoformat(),
                "event_id": str(switch_event_id(org, after, prev_offset)),
                "emitted": False,
            }
            await (await producer.send(es.state_topic, key=org.encode(), value=orjson.dumps(rec)))
            todo.append((org, rec))
        for org, rec in todo:
            key = rec["event_id"].encode()
            value = switch_event(
                org,
                rec.get("before"),
                bool(rec["audit_enabled"]),
                event_id=uuid.UUID(rec["event_id"]),
                at=datetime.fromisoformat(rec["changed_at"]),
            )
            fut = await producer.send(
                es.events_topic,
                key=key,
                value=value,
                partition=partition_for(key, n_events),
                headers=JSON_HEADERS,
            )
            await fut
            done = {**rec, "emitted": True}
            await (await producer.send(es.state_topic, key=org.encode(), value=orjson.dumps(done)))
            log(
                logger,
                logging.INFO,
                "audit switch changed",
                org_id=org,
                audit_enabled=rec["audit_enabled"],
                event_id=rec["event_id"],
            )
    finally:
        await producer.stop()
    return sorted({org for org, _ in todo})


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
                tps = [TopicPartition(topic, p) for p in await partitions_of(self.settings, topic)]
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


async def partitions_of(settings: Settings, topic: str) -> set[int]:
    """The partitions of ``topic`` (waiting a moment for a just-created topic to appear in metadata)."""
    for _ in range(50):
        parts = set(await topic_partitions(settings, topic))
        if parts:
            return parts
        await asyncio.sleep(0.2)
    raise RuntimeError(f"topic {topic} has no partitions")
