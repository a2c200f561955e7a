"""Bulk delivery of the enricher's outputs: a batch of raw records is acked only after every output it
produced was acknowledged by the broker, and batches are acked strictly in the order they were taken.

- ``submit(records, outputs)`` groups the outputs by topic and partition, fills one aiokafka
  ``BatchBuilder`` per group (``create_batch`` / ``send_batch``: one future per group, not per event)
  and returns at once, unless more than ``limit`` events are in flight — then it waits for the oldest
  batch (back-pressure: the agent stops taking records, the consumer pauses, memory stays bounded).
- One long-lived completer task acks batches in order as their futures resolve. A group whose send
  failed is sent again with backoff (``auditpipe.backoff``) until it succeeds or the worker stops; its
  batch is not acked meanwhile, so a stop leaves it uncommitted and it is processed again after restart
  (at least once; the outputs are byte-identical, so a repeat is an exact duplicate).
- Ordered acks matter: faust 0.15.3 commits the first consecutive run of acked offsets but checks the
  gap before it with an off-by-one (``Consumer._new_offset``: ``min(acked) - committed > 1``, and no
  check at all while nothing was committed yet), so an out-of-order ack could commit past a record
  whose outputs are not on the broker. Acking whole batches in order never leaves a gap.
- An idempotent producer whose sequence state broke (OutOfOrderSequenceNumber after a broker restart,
  aio-libs/aiokafka#1017) never recovers by itself: on such an error the producer is replaced.

No per-event task, future callback or lock: the unit of work is a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from auditpipe.backoff import Backoff
from services.common.kafka import JSON_HEADERS
from services.common.logging import get_logger, log
from services.enricher import metrics

logger = get_logger("services.enricher.delivery")

# Producer states an idempotent aiokafka producer does not recover from by itself.
FATAL_PRODUCER_ERRORS = (
    "OutOfOrderSequenceNumber",
    "UnknownProducerId",
    "InvalidProducerEpoch",
    "ProducerFenced",
)

Output = tuple[str, bytes | None, bytes]  # (topic, key, value)


def partition_for(key: bytes | None, partitions: int, fallback: int = 0) -> int:
    """The partition of a keyed output: CRC-32 of the key modulo the partition count (every copy of one
    event id lands on one partition; 0.1 µs instead of murmur2's 4 µs in pure Python). Unkeyed outputs
    (dead letters without an org) go to ``fallback``."""
    if key is None:
        return fallback % partitions
    return zlib.crc32(key) % partitions


@dataclass
class _Group:
    topic: str
    partition: int
    items: list[tuple[bytes | None, bytes]]
    future: asyncio.Future | None = None


@dataclass
class _Batch:
    records: Sequence[Any]
    events: int
    groups: list[_Group] = field(default_factory=list)


class BulkDelivery:
    def __init__(
        self,
        make_producer: Callable[[], AIOKafkaProducer],
        ack: Callable[[Sequence[Any]], Awaitable[None]],
        limit: int,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._make_producer = make_producer
        self._ack = ack
        self.limit = limit
        self.headers = headers if headers is not None else JSON_HEADERS
        self.producer: AIOKafkaProducer | None = None
        self.pending = 0
        self._inflight: deque[_Batch] = deque()
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._partitions: dict[str, int] = {}
        self._rr = 0

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.producer is None:
            p = self._make_producer()
            await p.start()
            self.producer = p

    async def stop(self) -> None:
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer.stop(), 30)
            self.producer = None

    async def _replace_producer(self, reason: str) -> None:
        log(logger, logging.WARNING, "kafka producer reset after a fatal send error", reason=reason)
        old, self.producer = self.producer, None
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), 10)
        await self.start()

    # -- producing --------------------------------------------------------------------------------
    async def _partition_count(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            assert self.producer is not None
            n = len(await self.producer.partitions_for(topic))
            self._partitions[topic] = n
        return n

    async def _send(self, g: _Group) -> None:
        """Queue ``g`` as one or more record batches; ``g.future`` resolves when all were acknowledged."""
        assert self.producer is not None
        futures = []
        batch = self.producer.create_batch()
        n = 0
        for key, value in g.items:
            if batch.append(key=key, value=value, timestamp=None, headers=self.headers) is None:
                futures.append(await self.producer.send_batch(batch, g.topic, partition=g.partition))
                batch = self.producer.create_batch()
                n = 0
                if batch.append(key=key, value=value, timestamp=None, headers=self.headers) is None:
                    raise ValueError(f"record of {len(value)} bytes does not fit an empty batch")
            n += 1
        if n:
            batch.close()
            futures.append(await self.producer.send_batch(batch, g.topic, partition=g.partition))
        g.future = asyncio.gather(*futures) if len(futures) != 1 else futures[0]

    async def submit(self, records: Sequence[Any], outputs: Sequence[Output], events: int) -> None:
        """Produce ``outputs`` of ``records`` (``events`` events, suppressed ones included); the records
        are acked once all outputs are acknowledged and every earlier batch was acked."""
        await self.start()
        groups: dict[tuple[str, int], _Group] = {}
        self._rr += 1
        counts: dict[str, int] = {}
        crc32 = zlib.crc32
        for topic, key, value in outputs:
            n = counts.get(topic)
            if n is None:
                n = counts[topic] = await self._partition_count(topic)
            p = crc32(key) % n if key is not None else self._rr % n
            g = groups.get((topic, p))
            if g is None:
                g = groups[(topic, p)] = _Group(topic, p, [])
            g.items.append((key, value))
        batch = _Batch(records, events, list(groups.values()))
        for g in batch.groups:
            try:
                await self._send(g)
            except Exception as e:  # noqa: BLE001 - refused at once (e.g. broker away): the completer resends
                g.future = _failed(e)
        self._inflight.append(batch)
        self.pending += events
        metrics.IN_FLIGHT.set(self.pending)
        self._wake.set()
        while self.pending > self.limit:
            self._space.clear()
            await self._space.wait()

    # -- completing -------------------------------------------------------------------------------
    async def run(self) -> None:
        """The completer: acks batches in order as their outputs are acknowledged (for the worker's life)."""
        while True:
            if not self._inflight:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = self._inflight[0]
            for g in batch.groups:
                await self._settle(g)
            await self._ack(batch.records)
            self._inflight.popleft()
            self.pending -= batch.events
            metrics.IN_FLIGHT.set(self.pending)
            self._space.set()

    async def _settle(self, g: _Group) -> None:
        """Wait for ``g``'s acknowledgement, resending it with backoff until the broker has it."""
        backoff = Backoff(initial_s=0.1, cap_s=10.0)
        while True:
            assert g.future is not None
            try:
                await asyncio.shield(g.future)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - broker trouble: keep trying, never skip
                error = f"{type(e).__name__}: {e}"[:300]
                metrics.SEND_RETRIES.labels(g.topic).inc()
                delay = backoff.next_delay()
                log(
                    logger,
                    logging.WARNING,
                    "send failed, retrying",
                    topic=g.topic,
                    retry_in_s=delay,
                    error=error,
                )
                await asyncio.sleep(delay)
                try:
                    if any(name in error for name in FATAL_PRODUCER_ERRORS):
                        await self._replace_producer(error)
                    await self._send(g)
                except Exception as e2:  # noqa: BLE001
                    g.future = _failed(e2)

    @property
    def in_flight_batches(self) -> int:
        return len(self._inflight)


def _failed(exc: BaseException) -> asyncio.Future:
    f: asyncio.Future = asyncio.get_running_loop().create_future()
    f.set_exception(exc)
    f.exception()  # retrieved: reported through the completer, not the loop
    return f
