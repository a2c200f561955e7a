"""The sink: ``audit.events.v1`` -> ClickHouse ``events``, as a chain of steps.

    source (aiokafka consumer group, manual commits)
      -> read    (records.read_key: event_id, org_id, content_hash, occurred_at; unreadable -> dead letter,
                  the offset still advances)
      -> batch   (rows / bytes / seconds; batch.Batch holds the record bytes)
      -> lookup  (writer.lookup: which ids event_ids knows; records.classify: new / redelivered / conflict)
      -> insert  (writer.insert_records: the new records' bytes, FORMAT JSONAsString into events_input,
                  insert_deduplication_token of coordinates + inserted ids, bisect bad rows)
      -> ids     (writer.remember: event_ids entries of what was inserted)
      -> conflicts (writer.insert_conflicts) and dead letters (acknowledged by Kafka)
      -> commit  (exactly the offsets of that batch)

Nothing is lost: offsets are committed only after every write of the batch succeeded. Memory is bounded:
one batch filling and one being written at most (``batch_max_rows`` / ``batch_max_bytes``); while a batch
cannot be written the assigned partitions are paused and the write retried with exponential backoff and
full jitter (:mod:`auditpipe.backoff`), forever (never a crash loop), until ClickHouse accepts it or the
process is asked to stop — then the batch is abandoned uncommitted and re-read by whoever owns the
partitions next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from auditpipe.backoff import Backoff, sleep_unless_stopped
from schemas.events_v1 import DeadLetter
from services.common.clickhouse import make_client
from services.common.kafka import (
    encode_original,
    kafka_ready,
    make_consumer,
    make_producer,
    record_ids,
    send_dead_letter,
)
from services.common.logging import log
from services.common.settings import Settings
from services.sink import metrics as m
from services.sink.batch import TP, Batch
from services.sink.records import RecordError, classify, parse_time, read_key
from services.sink.writer import insert_conflicts, insert_records, lookup, remember

logger = logging.getLogger("auditpipe.sink")

# The tables of migrations 0012-0014 (the events table itself is ``sink.table``).
INPUT_SUFFIX = "_input"
EVENT_IDS = "event_ids"
CONFLICTS = "event_conflicts"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def dead_letter(
    topic: str, partition: int, offset: int, value: bytes | None, reason: str, error: str
) -> DeadLetter:
    """A dead letter of the sink carrying the record as it came (and its ids when they can be read)."""
    event_id, org = record_ids(value)
    return DeadLetter(
        stage="sink",
        reason=reason,
        error=" ".join(error.split())[:2000],
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        event_id=event_id,
        org_id=org,
        original=encode_original(value),
    )


class _Listener(ConsumerRebalanceListener):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self.sink.on_revoked([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log(
            logger,
            logging.INFO,
            "partitions assigned",
            partitions=[f"{t.topic}/{t.partition}" for t in assigned],
        )


class Sink:
    def __init__(self, settings: Settings, stop: asyncio.Event | None = None) -> None:
        self.s = settings
        self.cfg = settings.sink
        self.stop = stop or asyncio.Event()
        db = settings.clickhouse_database
        self.table = f"{db}.{self.cfg.table}"
        self.input_table = f"{db}.{self.cfg.table}{INPUT_SUFFIX}"
        self.ids_table = f"{db}.{EVENT_IDS}"
        self.conflicts_table = f"{db}.{CONFLICTS}"
        self.batch = self._new_batch()
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self._client: Any = None
        self._inflight: asyncio.Task[bool] | None = None
        self._revoked_during_flush: set[TP] = set()
        self._last_lag = 0.0
        self.inserted_total = 0

    def _new_batch(self) -> Batch:
        return Batch(self.cfg.batch_max_rows, self.cfg.batch_max_bytes, self.cfg.batch_max_seconds)

    # --------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.producer = make_producer(self.s)
        await self.producer.start()
        self.consumer = make_consumer(
            self.s,
            group_id=self.cfg.consumer_group,
            max_partition_fetch_bytes=min(4 * 1024 * 1024, self.cfg.batch_max_bytes),
            session_timeout_ms=int(self.cfg.session_timeout_s * 1000),
            heartbeat_interval_ms=max(500, int(self.cfg.session_timeout_s * 100)),
        )
        self.consumer.subscribe([self.cfg.topic], listener=_Listener(self))
        await self.consumer.start()

    async def close(self) -> None:
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                await self.consumer.stop()
        if self.producer is not None:
            with contextlib.suppress(Exception):
                await self.producer.stop()

    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.s, send_receive_timeout=60)
        return self._client

    async def ready(self) -> tuple[bool, dict]:
        k = await kafka_ready(self.s, timeout_s=2.0)

        def ping() -> bool:
            try:
                make_client(self.s, send_receive_timeout=3).command("SELECT 1")
                return True
            except Exception:  # noqa: BLE001
                return False

        c = await asyncio.to_thread(ping)
        return k and c, {"kafka": k, "clickhouse": c}

    # --------------------------------------------------------------------------- steps
    def on_revoked(self, revoked: list[TP]) -> None:
        """Rebalance: never commit for lost partitions; the next owner re-reads their uncommitted rows."""
        if self._inflight is not None and not self._inflight.done():
            self._revoked_during_flush.update(revoked)
        dropped = self.batch.drop_partitions(revoked)
        if dropped:
            log(logger, logging.INFO, "dropped uncommitted rows of revoked partitions", rows=dropped)

    def consume(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Read the members the sink needs from each record; the bytes go into the batch as they are."""
        batch = self.batch
        for tp, msgs in records.items():
            topic, partition = tp.topic, tp.partition
            for msg in msgs:
                try:
                    key = read_key(msg.value)
                except RecordError as e:
                    batch.add_dead(
                        topic,
                        partition,
                        msg.offset,
                        dead_letter(topic, partition, msg.offset, msg.value, e.reason, str(e)),
                    )
                    continue
                batch.add(topic, partition, msg.offset, msg.value, key)
        m.BUFFERED_ROWS.set(len(batch))

    async def _dead_letters(self, letters: list[DeadLetter]) -> None:
        assert self.producer is not None
        for letter in letters:
            await send_dead_letter(self.producer, letter, topic=self.cfg.deadletter_topic)
            m.DEAD_LETTERED.labels(letter.reason).inc()

    async def _write_once(self, batch: Batch) -> None:
        """Letters -> lookup -> insert (bisecting bad rows) -> ids -> conflicts -> bad-row letters.

        Raises on transient failure; every ClickHouse step is idempotent, so a retry repeats them all:
        the plan (which records are new) is decided once per batch, the insert carries the same token,
        ``event_ids`` entries are rewritten with the same values and the conflicts carry their own token.
        """
        if batch.letters:
            await self._dead_letters(batch.letters)
            batch.letters = []  # acknowledged: not re-sent on a retry
        if not batch.values:
            return
        client = self.client()
        if batch.plan is None:
            ids = list(dict.fromkeys(k.event_id for k in batch.keys))
            stored = await asyncio.to_thread(lookup, client, self.ids_table, ids)
            batch.plan = classify(batch.keys, stored)
            batch.stored_at = datetime.now(UTC)
        plan, stored_at = batch.plan, batch.stored_at
        assert stored_at is not None
        new_ids = [batch.keys[i].event_id for i in plan.new]
        token = batch.token(new_ids)
        t0 = time.perf_counter()
        inserted, rejected = await asyncio.to_thread(
            insert_records, client, self.input_table, [batch.values[i] for i in plan.new], token
        )
        bad = {plan.new[r.index] for r in rejected}
        await asyncio.to_thread(
            remember, client, self.ids_table, [batch.keys[i] for i in plan.new if i not in bad], stored_at
        )
        if plan.conflicts:
            await asyncio.to_thread(
                insert_conflicts,
                client,
                self.conflicts_table,
                self._conflict_rows(batch),
                f"{token}#conflicts",
            )
        m.INSERT_SECONDS.observe(time.perf_counter() - t0)
        letters = [
            dead_letter(
                *batch.sources[plan.new[r.index]],
                batch.values[plan.new[r.index]],
                "clickhouse_bad_data",
                r.error,
            )
            for r in rejected
        ]
        if letters:
            log(logger, logging.WARNING, "rows rejected by ClickHouse", rows=len(letters))
            await self._dead_letters(letters)
        for i, s in plan.conflicts:
            k = batch.keys[i]
            log(
                logger,
                logging.WARNING,
                "conflicting record kept aside: its event_id is stored with other content",
                event_id=k.event_id,
                org_id=k.org_id,
                content_hash=k.content_hash[:64],
                stored_org_id=s.org_id,
                stored_content_hash=s.content_hash,
                source=f"{batch.sources[i][0]}/{batch.sources[i][1]}/{batch.sources[i][2]}",
            )
        m.ROWS_INSERTED.inc(inserted)
        m.REDELIVERED.inc(len(plan.redelivered))
        m.CONFLICTS.inc(len(plan.conflicts))
        self.inserted_total += inserted
        batch.values, batch.keys = [], []  # written: a retry (of the commit) must not write again

    @staticmethod
    def _conflict_rows(batch: Batch) -> list[list[Any]]:
        assert batch.plan is not None and batch.stored_at is not None
        rows = []
        for i, s in batch.plan.conflicts:
            k = batch.keys[i]
            topic, partition, offset = batch.sources[i]
            stored_occ = s.occurred_at if isinstance(s.occurred_at, datetime) else parse_time(s.occurred_at)
            rows.append(
                [
                    k.event_id,
                    k.org_id,
                    parse_time(k.occurred_at) or _EPOCH,
                    k.content_hash,
                    s.org_id,
                    stored_occ or _EPOCH,
                    s.content_hash,
                    s.inserted_at or batch.stored_at,
                    batch.values[i],
                    topic,
                    partition,
                    offset,
                ]
            )
        return rows

    async def _commit(self, batch: Batch) -> None:
        assert self.consumer is not None
        assigned = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        offsets = {
            TopicPartition(t, p): OffsetAndMetadata(o, "")
            for (t, p), o in batch.commit_offsets().items()
            if (t, p) in assigned and (t, p) not in self._revoked_during_flush
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except Exception as e:  # noqa: BLE001 - rows are durable; the next owner re-reads, reads de-duplicate
            log(
                logger, logging.WARNING, "commit failed after insert; rows will be redelivered", error=repr(e)
            )

    async def flush(self, batch: Batch, give_up_on_stop: bool = True) -> bool:
        """Write and commit ``batch``; True when done, False when abandoned because of stop.

        Transient failures pause every assigned partition and retry the same batch (same plan, same
        tokens) with exponential backoff and full jitter, for as long as it takes.
        """
        if batch.empty:
            return True
        self._revoked_during_flush = set()
        backoff = Backoff(self.cfg.retry_initial_backoff_s, self.cfg.retry_max_backoff_s, jitter="full")
        paused: list[TopicPartition] = []
        try:
            while True:
                try:
                    await self._write_once(batch)
                    break
                except Exception as e:  # noqa: BLE001 - transient: pause, back off, retry the same batch
                    m.RETRIES.inc()
                    if not paused and self.consumer is not None:
                        paused = list(self.consumer.assignment())
                        self.consumer.pause(*paused)
                        m.PAUSED.set(1)
                    self._client = None  # reconnect on the next attempt
                    delay = backoff.next_delay()
                    log(
                        logger,
                        logging.WARNING,
                        "insert failed; retrying",
                        attempt=backoff.attempt,
                        delay_s=round(delay, 2),
                        error=" ".join(str(e).split())[:300],
                    )
                    if give_up_on_stop and self.stop.is_set():
                        return False
                    if await sleep_unless_stopped(delay, self.stop) and give_up_on_stop:
                        return False
            await self._commit(batch)
            m.BATCHES.inc()
            m.LAST_SUCCESS.set(time.time())
            return True
        finally:
            if paused and self.consumer is not None:
                still = set(self.consumer.assignment())
                self.consumer.resume(*[tp for tp in paused if tp in still])
                m.PAUSED.set(0)
            if self._revoked_during_flush:
                log(
                    logger,
                    logging.INFO,
                    "partitions revoked during flush",
                    partitions=len(self._revoked_during_flush),
                )
            self._revoked_during_flush = set()

    async def _await_inflight(self) -> bool:
        """Wait for the batch being written; False when it was abandoned (stop during an outage)."""
        task, self._inflight = self._inflight, None
        return True if task is None else await task

    async def run(self) -> None:
        """Consume until ``stop`` is set; then finish (or abandon) what is in flight and exit.

        One batch is written while the next one fills (at most two batches in memory, arroyo-style);
        batches are written and committed strictly in order, so a commit never skips an unwritten batch,
        and a batch's lookup always sees the ids of every batch before it.
        """
        assert self.consumer is not None
        abandoned = False
        while not self.stop.is_set():
            now = time.monotonic()
            wait_s = self.cfg.batch_max_seconds
            if self.batch.started is not None:
                wait_s = max(0.0, self.cfg.batch_max_seconds - (now - self.batch.started))
            records = await self.consumer.getmany(
                timeout_ms=int(min(wait_s, 1.0) * 1000), max_records=max(1, min(self.batch.room, 10_000))
            )
            self.consume(records)
            if self.batch.due():
                if not await self._await_inflight():  # back-pressure: one batch in flight at most
                    abandoned = True
                    break
                batch, self.batch = self.batch, self._new_batch()
                m.BUFFERED_ROWS.set(0)
                self._inflight = asyncio.create_task(self.flush(batch))
            if now - self._last_lag > 5.0:
                self._last_lag = now
                with contextlib.suppress(Exception):
                    from services.common.kafka import update_lag

                    await update_lag(self.consumer, "sink", self.cfg.consumer_group)
        if not await self._await_inflight():
            abandoned = True
        # Stop: one bounded attempt to write the open batch — never after an abandoned one, whose rows
        # its commit would skip. Otherwise it stays uncommitted and is re-read later.
        if not self.batch.empty and not abandoned:
            try:
                await asyncio.wait_for(self._write_once(self.batch), 10.0)
                await self._commit(self.batch)
            except Exception as e:  # noqa: BLE001
                log(
                    logger, logging.WARNING, "open batch abandoned at stop (uncommitted)", error=repr(e)[:300]
                )
        self.batch = self._new_batch()


async def run_sink(settings: Settings, stop: asyncio.Event | None = None, health: bool = True) -> None:
    """``auditpipe sink``: the pipeline, the health server and the archive schedule (``services.archive``)."""
    from services.common.runtime import install_stop_signals, serve_health, stop_health

    stop = stop or asyncio.Event()
    install_stop_signals(stop)
    sink = Sink(settings, stop)
    server = None
    archive_task = None
    if health:
        server = await serve_health(settings.sink.host, settings.sink.port, sink.ready, "sink")
    try:
        await sink.start()
        if settings.sink.archive_enabled:
            from services.archive.job import archive_loop

            archive_task = asyncio.create_task(archive_loop(settings, stop))
        log(
            logger,
            logging.INFO,
            "sink started",
            topic=settings.sink.topic,
            group=settings.sink.consumer_group,
        )
        await sink.run()
    finally:
        if archive_task is not None:
            archive_task.cancel()
            with contextlib.suppress(BaseException):
                await archive_task
        await sink.close()
        if server is not None:
            await stop_health(server)
        log(logger, logging.INFO, "sink stopped", inserted=sink.inserted_total)
