"""The consumer loop of one destination: source -> decode -> filter -> map -> encode -> deliver -> commit.

Each destination runs one :class:`DestinationRunner` with its own consumer group, so its progress (and its
failures) never affect another destination or the sink. Offsets are committed only after every event of
the batch was confirmed by the destination or written to the destination's dead-letter topic. While the
destination fails, the runner pauses its partitions (no fetching, no memory growth), keeps polling so it
stays in the group, and retries with capped exponential backoff + jitter, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas.events_v1 import DeadLetter, parse_enriched
from services.common.kafka import encode_original, make_consumer, send_dead_letter, update_lag
from services.common.logging import get_logger, log
from services.common.settings import Settings
from services.siem_forwarder import metrics as m
from services.siem_forwarder.util.batching import Batch, collect
from services.siem_forwarder.util.config import DestinationConfig
from services.siem_forwarder.util.delivery import Client, Delivery, EncodeError, Encoder
from services.siem_forwarder.util.filters import map_fields, wanted
from services.siem_forwarder.util.retry import Backoff

LOG = get_logger("auditpipe.forwarder")
LAG_INTERVAL_S = 5.0


@dataclass
class Item:
    record: ConsumerRecord
    encoded: Any
    event_id: str | None
    org_id: str | None


@dataclass
class RunnerState:
    state: str = "starting"
    last_success: float | None = None
    last_error: str = ""
    delivered: int = 0
    dead_lettered: int = 0


def chunk_by_size(items: list[Item], encoder: Encoder, limit: int | None) -> list[list[Item]]:
    """Split a batch so each request body stays within the vendor's limit (+1 byte per separator)."""
    if not items:
        return []
    if limit is None:
        return [items]
    out: list[list[Item]] = [[]]
    size = 2  # brackets of a JSON array
    for it in items:
        n = encoder.size(it.encoded) + 1
        if out[-1] and size + n > limit:
            out.append([])
            size = 2
        out[-1].append(it)
        size += n
    return out


class Stopped(Exception):
    """The stop event was set while a batch was still unconfirmed: it is abandoned (not committed)."""


@dataclass
class DestinationRunner:
    settings: Settings
    config: DestinationConfig
    topic: str
    producer: AIOKafkaProducer
    encoder: Encoder
    client: Client
    stop: asyncio.Event
    status: RunnerState = field(default_factory=RunnerState)
    consumer: AIOKafkaConsumer | None = None
    _next_lag: float = field(default=0.0, init=False)

    @property
    def name(self) -> str:
        return self.config.name

    async def run(self) -> None:
        consumer = make_consumer(
            self.settings,
            self.topic,
            group_id=self.config.group(),
            max_poll_records=self.config.batch.max_events,
            # Prefetch stays small: one fetch of at most this many bytes per partition.
            max_partition_fetch_bytes=max(1024 * 1024, min(self.config.batch.max_bytes, 8 * 1024 * 1024)),
        )
        self.consumer = consumer
        await consumer.start()
        self.status.state = "running"
        try:
            while not self.stop.is_set():
                batch = await collect(consumer, self.config.batch, self.stop)
                if batch.records:
                    try:
                        await self._process(batch)
                    except Stopped:
                        log(
                            LOG,
                            logging.INFO,
                            "batch abandoned on stop (not committed)",
                            destination=self.name,
                        )
                        break
                    await self._commit(batch)
                await self._refresh_lag()
        finally:
            self.status.state = "stopped"
            try:
                await consumer.stop()
            finally:
                await self.client.aclose()

    # steps -------------------------------------------------------------------------------------------
    async def _process(self, batch: Batch) -> None:
        items: list[Item] = []
        for rec in batch.records:
            try:
                parse_enriched(rec.value)  # the contract check; invalid -> dead letter
                # Forward the JSON exactly as the enricher published it, so content_hash still verifies.
                doc = orjson.loads(rec.value)
            except (ValidationError, ValueError) as e:
                await self._dead_letter(rec, "invalid_event", str(e).splitlines()[0], None, None, None)
                continue
            eid, org = str(doc["event_id"]), str(doc["org_id"])
            if not wanted(doc, self.config.filter):
                m.FILTERED.labels(self.name).inc()
                continue
            try:
                enc = self.encoder.encode(map_fields(doc, self.config.fields))
            except EncodeError as e:
                await self._dead_letter(rec, e.reason, str(e), None, eid, org)
                continue
            items.append(Item(rec, enc, eid, org))
        if items:
            started = time.monotonic()
            await self._deliver(items)
            m.DELIVERY_SECONDS.labels(self.name).observe(time.monotonic() - started)
        self._resume()

    async def _deliver(self, items: list[Item]) -> None:
        """Send until every item is confirmed or dead-lettered; bisect batches refused as a whole."""
        stack = list(reversed(chunk_by_size(items, self.encoder, self.config.request_max_bytes())))
        while stack:
            group = stack.pop()
            dead, split = await self._send_retrying(group)
            if split and len(dead) > 1:
                half = len(dead) // 2
                stack.append([it for it, _ in dead[half:]])
                stack.append([it for it, _ in dead[:half]])
                continue
            for it, response in dead:
                await self._dead_letter(
                    it.record, "destination_rejected", response[:200], response, it.event_id, it.org_id
                )

    async def _send_retrying(self, group: list[Item]) -> tuple[list[tuple[Item, str]], bool]:
        pending = group
        dead: list[tuple[Item, str]] = []
        split = False
        backoff = Backoff(self.config.retry)
        while pending:
            try:
                d = await self.client.send([it.encoded for it in pending])
            except Exception as e:  # noqa: BLE001 - a client bug must not kill the loop: retry
                d = Delivery.retry_all(len(pending), f"{type(e).__name__}: {e}")
            confirmed = len(pending) - len(d.retry) - len(d.dead)
            if confirmed > 0:
                m.SENT.labels(self.name).inc(confirmed)
                m.LAST_SUCCESS.labels(self.name).set(time.time())
                self.status.delivered += confirmed
                self.status.last_success = time.time()
            dead.extend((pending[i], resp) for i, resp in d.dead.items())
            split = split or d.split
            if not d.retry:
                break
            pending = [pending[i] for i in d.retry]
            m.RETRIED.labels(self.name).inc(len(pending))
            self.status.state = "retrying"
            self.status.last_error = d.error[:500]
            delay = backoff.next_delay(d.retry_after)
            log(
                LOG,
                logging.WARNING,
                "delivery failed; retrying",
                destination=self.name,
                events=len(pending),
                delay_s=round(delay, 3),
                error=d.error[:300],
            )
            await self._paused_wait(delay)
        self.status.state = "running"
        return dead, split

    async def _dead_letter(
        self,
        rec: ConsumerRecord,
        reason: str,
        error: str,
        response: str | None,
        event_id: str | None,
        org_id: str | None,
    ) -> None:
        letter = DeadLetter(
            stage=f"forwarder:{self.name}",
            reason=reason,
            error=error,
            source_topic=rec.topic,
            source_partition=rec.partition,
            source_offset=rec.offset,
            event_id=event_id,
            org_id=org_id,
            original=encode_original(rec.value),
            response=response,
        )
        backoff = Backoff(self.config.retry)
        while True:
            try:
                await send_dead_letter(self.producer, letter, topic=self.config.dlq_topic())
                break
            except KafkaError as e:
                delay = backoff.next_delay()
                log(
                    LOG,
                    logging.ERROR,
                    "dead-letter write failed; retrying",
                    destination=self.name,
                    error=str(e),
                )
                await self._paused_wait(delay)
        m.DEAD_LETTERED.labels(self.name, reason).inc()
        self.status.dead_lettered += 1

    async def _commit(self, batch: Batch) -> None:
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        offsets = {tp: off for tp, off in batch.commit_offsets().items() if tp in assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as e:
            # Rebalanced meanwhile: the new owner re-reads from the last commit (at-least-once).
            log(
                LOG,
                logging.WARNING,
                "commit failed; events will be redelivered",
                destination=self.name,
                error=str(e),
            )

    # back-pressure -------------------------------------------------------------------------------------
    async def _paused_wait(self, delay: float) -> None:
        """Sleep ``delay`` with every partition paused, still polling so the group keeps us."""
        assert self.consumer is not None
        m.PAUSED.labels(self.name).set(1)
        loop = asyncio.get_running_loop()
        end = loop.time() + delay
        while True:
            if self.stop.is_set():
                raise Stopped()
            left = end - loop.time()
            if left <= 0:
                return
            self.consumer.pause(*self.consumer.assignment())
            got = await self.consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for tp, recs in got.items():  # partitions assigned meanwhile: read them again later
                if recs:
                    self.consumer.seek(tp, recs[0].offset)
            await self._refresh_lag()  # lag keeps growing while the destination is down: show it

    def _resume(self) -> None:
        if self.consumer is not None and self.consumer.paused():
            self.consumer.resume(*self.consumer.paused())
        m.PAUSED.labels(self.name).set(0)

    async def _refresh_lag(self) -> None:
        """Every LAG_INTERVAL_S: destination lag = partition end - committed offset (not yet confirmed)."""
        now = time.monotonic()
        if now < self._next_lag or self.consumer is None:
            return
        self._next_lag = now + LAG_INTERVAL_S
        consumer = self.consumer
        try:
            await update_lag(consumer, "forwarder", self.config.group())
            parts = list(consumer.assignment())
            ends = await consumer.end_offsets(parts) if parts else {}
            total = 0
            for tp in parts:
                committed = await consumer.committed(tp)
                total += max(0, ends.get(tp, 0) - (committed or 0))
        except KafkaError:
            return
        m.LAG.labels(self.name).set(total)
