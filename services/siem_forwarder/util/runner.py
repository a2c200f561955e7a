"""The consumer loop of one destination: source -> read -> filter -> map -> encode -> deliver -> commit.

Each destination runs one :class:`DestinationRunner` with its own consumer group, so its progress (and its
failures) never affect another destination or the sink. Offsets are committed only after every event of
the batch was confirmed by the destination or written to the destination's dead-letter topic.

Records travel as bytes. The enricher is the only writer of ``audit.events.v1`` and guarantees its
contract, so nothing is validated again: only the members the destination's filter and encoder need are
read (``util.fields``; the whole record only for a field mapping), and encoders splice the record's bytes
into their wire format. A record that cannot be read for what is needed goes to the destination's
dead-letter topic.

Two batches at most are held (bounded memory): while one is being delivered (a task), the next is
collected and encoded. Batches are delivered strictly in order; once a batch is confirmed its offsets are
committed in the background (one commit in flight, at most one per ``COMMIT_PACE_S``; offsets of batches
confirmed meanwhile are merged into the next commit), so a commit round trip never holds up the next
delivery. While the
destination fails, the runner pauses its partitions (no fetching, no memory growth), keeps polling so it
stays in the group, and retries with capped exponential backoff + jitter, honouring ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from auditpipe.backoff import sleep_unless_stopped
from schemas.events_v1 import DeadLetter
from services.common.kafka import encode_original, make_consumer, record_ids, send_dead_letter, update_lag
from services.common.logging import get_logger, log
from services.common.settings import Settings
from services.siem_forwarder import metrics as m
from services.siem_forwarder.util.batching import Batch, collect
from services.siem_forwarder.util.config import DestinationConfig
from services.siem_forwarder.util.delivery import Client, Delivery, EncodeError, Encoder
from services.siem_forwarder.util.fields import Reader, full, reader
from services.siem_forwarder.util.filters import map_fields, wanted
from services.siem_forwarder.util.retry import backoff

LOG = get_logger("auditpipe.forwarder")
LAG_INTERVAL_S = 5.0
# At most one commit per destination in this interval: offsets of batches confirmed meanwhile are merged
# into the next one (a commit costs the broker a write; at 100 batches/s it was as busy as the data).
COMMIT_PACE_S = 0.1


@dataclass
class RunnerState:
    state: str = "starting"
    last_success: float | None = None
    last_error: str = ""
    delivered: int = 0
    dead_lettered: int = 0


@dataclass
class Prepared:
    """A batch after reading, filtering and encoding: what to send (parallel lists) and what to commit."""

    batch: Batch
    records: list[ConsumerRecord] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)


def chunk_by_size(sizes: list[int], limit: int | None) -> list[list[int]]:
    """Indexes split so each request body stays within the vendor's limit (+1 byte per separator).

    An item larger than the limit on its own travels alone (the vendor refuses it -> dead letter)."""
    if not sizes:
        return []
    if limit is None:
        return [list(range(len(sizes)))]
    out: list[list[int]] = [[]]
    size = 2  # brackets of a JSON array
    for i, s in enumerate(sizes):
        n = s + 1
        if out[-1] and size + n > limit:
            out.append([])
            size = 2
        out[-1].append(i)
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
    _committable: dict[TopicPartition, int] = field(default_factory=dict, init=False)
    _committer: asyncio.Task[None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        f = self.config.filter
        self._filtering = bool(f.orgs or f.actions or f.exclude_actions or f.event_types)
        self._mapping = bool(self.config.fields.exclude or self.config.fields.rename)
        # read only what the filter and the encoder need; a field mapping rewrites the whole record
        needs = set(self.encoder.needs) | ({"org_id", "action", "event_type"} if self._filtering else set())
        self._read: Reader | None = full if self._mapping else (reader(needs) if needs else None)

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
        inflight: asyncio.Task[None] | None = None
        try:
            while not self.stop.is_set():
                if inflight is not None and self.status.state == "retrying":
                    # the destination fails: fetch nothing more until the batch in flight is through
                    ok = await self._finish(inflight)
                    inflight = None
                    if not ok:
                        break
                    continue
                batch = await collect(consumer, self.config.batch, self.stop)
                if batch.records:
                    try:
                        ready = await self._prepare(batch)
                    except Stopped:
                        break
                    if not await self._finish(inflight):  # back-pressure: one batch in flight at most
                        inflight = None
                        break
                    inflight = asyncio.create_task(self._deliver_and_commit(ready))
                elif inflight is not None and inflight.done():
                    ok = await self._finish(inflight)
                    inflight = None
                    if not ok:
                        break
                await self._refresh_lag()
            await self._finish(inflight)
        finally:
            self.status.state = "stopped"
            try:
                await self._commits_done()
                await consumer.stop()
            finally:
                await self.client.aclose()

    # steps -------------------------------------------------------------------------------------------
    async def _prepare(self, batch: Batch) -> Prepared:
        """Read only what is needed, filter, map, encode; unreadable or unencodable -> dead letter."""
        out = Prepared(batch)
        encode = self.encoder.encode
        filtered = 0
        for n, rec in enumerate(batch.records):
            if n % 64 == 63:
                await asyncio.sleep(0)  # let the batch in flight take its response without waiting for us
            record = rec.value
            doc = None
            try:
                if record is None:
                    raise EncodeError("invalid_json", "empty message (tombstone)")
                if self._read is not None:
                    doc = self._read(record)
                    if self._filtering and not wanted(doc, self.config.filter):
                        filtered += 1
                        continue
                    if self._mapping:  # the forwarded JSON is then no longer the record: said in the docs
                        doc = map_fields(doc, self.config.fields)
                        record = orjson.dumps(doc)
                out.encoded.append(encode(record, doc))
                out.records.append(rec)
            except EncodeError as e:
                await self._dead_letter(rec, e.reason, str(e), None)
        if filtered:
            m.FILTERED.labels(self.name).inc(filtered)
        return out

    async def _deliver_and_commit(self, ready: Prepared) -> None:
        if ready.records:
            started = time.monotonic()
            await self._deliver(ready)
            m.DELIVERY_SECONDS.labels(self.name).observe(time.monotonic() - started)
        # every record of the batch is confirmed or dead-lettered: its offsets may be committed
        for tp, off in ready.batch.commit_offsets().items():
            self._committable[tp] = max(off, self._committable.get(tp, 0))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_loop())

    async def _finish(self, task: asyncio.Task[None] | None) -> bool:
        """Wait for the batch in flight (False when it was abandoned on stop). While its destination fails,
        pause every partition and keep polling, so fetching stops and the group keeps this member."""
        if task is None:
            return True
        paused = False
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            if task.done() or self.status.state != "retrying" or self.consumer is None:
                continue
            paused = True
            m.PAUSED.labels(self.name).set(1)
            self.consumer.pause(*self.consumer.assignment())
            got = await self.consumer.getmany(timeout_ms=200)
            for tp, recs in got.items():  # partitions assigned meanwhile: read them again later
                if recs:
                    self.consumer.seek(tp, recs[0].offset)
            await self._refresh_lag()  # lag keeps growing while the destination is down: show it
        if paused:
            self._resume()
        try:
            task.result()
        except Stopped:
            log(LOG, logging.INFO, "batch abandoned on stop (not committed)", destination=self.name)
            return False
        return True

    async def _deliver(self, ready: Prepared) -> None:
        """Send until every item is confirmed or dead-lettered; bisect batches refused as a whole."""
        size = self.encoder.size
        sizes = [size(e) for e in ready.encoded]
        stack = list(reversed(chunk_by_size(sizes, self.config.request_max_bytes())))
        while stack:
            group = stack.pop()
            dead, split = await self._send_retrying(ready.encoded, group)
            if split and len(dead) > 1:
                half = len(dead) // 2
                stack.append([i for i, _ in dead[half:]])
                stack.append([i for i, _ in dead[:half]])
                continue
            for i, response in dead:
                await self._dead_letter(ready.records[i], "destination_rejected", response[:200], response)

    async def _send_retrying(
        self, encoded: list[bytes], group: list[int]
    ) -> tuple[list[tuple[int, str]], bool]:
        pending = group
        dead: list[tuple[int, str]] = []
        split = False
        wait = backoff(self.config.retry)
        while pending:
            try:
                d = await self.client.send([encoded[i] for i in pending])
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
            delay = wait.next_delay(d.retry_after)
            log(
                LOG,
                logging.WARNING,
                "delivery failed; retrying",
                destination=self.name,
                events=len(pending),
                delay_s=round(delay, 3),
                error=d.error[:300],
            )
            if await sleep_unless_stopped(delay, self.stop):
                raise Stopped()
        self.status.state = "running"
        return dead, split

    async def _dead_letter(self, rec: ConsumerRecord, reason: str, error: str, response: str | None) -> None:
        event_id, org_id = record_ids(rec.value)
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
        wait = backoff(self.config.retry)
        while True:
            try:
                await send_dead_letter(self.producer, letter, topic=self.config.dlq_topic())
                break
            except KafkaError as e:
                log(
                    LOG,
                    logging.ERROR,
                    "dead-letter write failed; retrying",
                    destination=self.name,
                    error=str(e),
                )
                if await sleep_unless_stopped(wait.next_delay(), self.stop):
                    raise Stopped() from e
        m.DEAD_LETTERED.labels(self.name, reason).inc()
        self.status.dead_lettered += 1

    async def _commit_loop(self) -> None:
        """Commit what confirmed batches made committable, until nothing new is left."""
        while self._committable:
            offsets, self._committable = self._committable, {}
            await self._commit(offsets)
            await sleep_unless_stopped(COMMIT_PACE_S, self.stop)

    async def _commits_done(self) -> None:
        """Wait for the commit in flight and commit whatever is left (at stop)."""
        if self._committer is not None:
            await self._committer
        await self._commit_loop()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        # partitions revoked meanwhile are dropped: their new owner re-reads from the last commit
        offsets = {tp: off for tp, off in offsets.items() if tp in assigned}
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
