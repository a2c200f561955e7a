"""The sink: ``audit.events.v1`` -> ClickHouse ``events``, as a chain of steps.

    source (aiokafka consumer group, manual commits)
      -> parse (rows.row_from_json; invalid -> dead letter, offset still advances)
      -> batch (rows / bytes / seconds; batch.Batch)
      -> insert (writer.insert_batch: Native + lz4, insert_deduplication_token, bisect bad rows)
      -> dead letters (acknowledged by Kafka)
      -> commit (exactly the offsets of that batch)

Nothing is lost: offsets are committed only after the insert and the dead letters of the batch succeeded.
Memory is bounded: one batch at most (``batch_max_rows`` / ``batch_max_bytes``); while a batch cannot be
written the assigned partitions are paused and the insert retried with exponential backoff and full jitter,
forever (never a crash loop), until ClickHouse accepts it or the process is asked to stop — then the batch
is abandoned uncommitted and re-read by whoever owns the partitions next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from schemas.events_v1 import DeadLetter
from services.common.clickhouse import make_client
from services.common.kafka import encode_original, kafka_ready, make_consumer, make_producer, send_dead_letter
from services.common.logging import log
from services.common.settings import Settings
from services.sink import metrics as m
from services.sink.batch import TP, Batch
from services.sink.rows import row_from_json
from services.sink.writer import insert_batch

logger = logging.getLogger("auditpipe.sink")


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, initial * 2**attempt))."""
    r = rng or random
    return r.uniform(0, min(cap, initial * (2 ** min(attempt, 30))))


def parse_message(topic: str, partition: int, offset: int, value: bytes | None) -> list[Any] | DeadLetter:
    """One Kafka message -> a row, or a dead letter naming why it cannot be stored."""
    try:
        if value is None:
            raise ValueError("empty message (tombstone)")
        return row_from_json(value)
    except Exception as e:  # noqa: BLE001 - every failure becomes a dead letter with the reason
        reason = "invalid_message"
        if isinstance(e, ValidationError):
            first = e.errors()[0].get("type", "") if e.errors() else ""
            reason = "invalid_json" if first == "json_invalid" else "validation_error"
        org = event_id = None
        with contextlib.suppress(Exception):
            import orjson

            d = orjson.loads(value or b"")
            if isinstance(d, dict):
                org = d.get("org_id") if isinstance(d.get("org_id"), str) else None
                event_id = str(d.get("event_id")) if d.get("event_id") is not None else None
        return DeadLetter(
            stage="sink",
            reason=reason,
            error=" ".join(str(e).split())[:2000],
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
        self.table = f"{settings.clickhouse_database}.{self.cfg.table}"
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
        for tp, msgs in records.items():
            for msg in msgs:
                parsed = parse_message(tp.topic, tp.partition, msg.offset, msg.value)
                if isinstance(parsed, DeadLetter):
                    self.batch.add_dead(tp.topic, tp.partition, msg.offset, parsed)
                else:
                    self.batch.add(tp.topic, tp.partition, msg.offset, msg.value, parsed)
        m.BUFFERED_ROWS.set(len(self.batch))

    async def _dead_letters(self, letters: list[DeadLetter]) -> None:
        assert self.producer is not None
        for letter in letters:
            await send_dead_letter(self.producer, letter, topic=self.cfg.deadletter_topic)
            m.DEAD_LETTERED.labels(letter.reason).inc()

    async def _write_once(self, batch: Batch) -> None:
        """Parse letters -> insert (bisecting bad rows) -> bad-row letters. Raises on transient failure."""
        if batch.letters:
            await self._dead_letters(batch.letters)
            batch.letters = []  # acknowledged: not re-sent on a retry
        if batch.rows:
            t0 = time.perf_counter()
            inserted, rejected = await asyncio.to_thread(
                lambda: insert_batch(self.client(), self.table, batch.rows, batch.token())
            )
            m.INSERT_SECONDS.observe(time.perf_counter() - t0)
            m.ROWS_INSERTED.inc(inserted)
            self.inserted_total += inserted
            letters = []
            for r in rejected:
                topic, part, off = batch.sources[r.index]
                row = batch.rows[r.index]
                letters.append(
                    DeadLetter(
                        stage="sink",
                        reason="clickhouse_bad_data",
                        error=r.error,
                        source_topic=topic,
                        source_partition=part,
                        source_offset=off,
                        event_id=str(row[0]),
                        org_id=row[1],
                        original=encode_original(batch.values[r.index]),
                    )
                )
            if letters:
                log(logger, logging.WARNING, "rows rejected by ClickHouse", rows=len(letters))
                await self._dead_letters(letters)
            batch.rows = []  # inserted: a retry (of the commit) must not insert again

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

        Transient failures pause every assigned partition and retry the same batch (same dedup tokens)
        with exponential backoff and full jitter, for as long as it takes.
        """
        if batch.empty:
            return True
        self._revoked_during_flush = set()
        attempt = 0
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
                    delay = backoff_delay(
                        attempt, self.cfg.retry_initial_backoff_s, self.cfg.retry_max_backoff_s
                    )
                    attempt += 1
                    log(
                        logger,
                        logging.WARNING,
                        "insert failed; retrying",
                        attempt=attempt,
                        delay_s=round(delay, 2),
                        error=" ".join(str(e).split())[:300],
                    )
                    if give_up_on_stop and self.stop.is_set():
                        return False
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), delay)
                    if give_up_on_stop and self.stop.is_set():
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
        batches are written and committed strictly in order, so a commit never skips an unwritten batch.
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
