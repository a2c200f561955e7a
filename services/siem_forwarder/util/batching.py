"""Batching written once: collect Kafka records until the destination's ``batch`` limits (events, bytes,
seconds) are reached. The batch is the unit of delivery and of offset commit: at most one is in flight
per destination, so memory is bounded by ``max_events``/``max_bytes``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from services.siem_forwarder.util.config import BatchConfig


@dataclass
class Batch:
    records: list[ConsumerRecord] = field(default_factory=list)
    nbytes: int = 0

    def full(self, cfg: BatchConfig) -> bool:
        return len(self.records) >= cfg.max_events or self.nbytes >= cfg.max_bytes

    def add(self, rec: ConsumerRecord) -> None:
        self.records.append(rec)
        self.nbytes += len(rec.value or b"")

    def commit_offsets(self) -> dict[TopicPartition, int]:
        """Next offset to read per partition: the offsets this batch makes committable."""
        out: dict[TopicPartition, int] = {}
        for r in self.records:
            tp = TopicPartition(r.topic, r.partition)
            out[tp] = max(out.get(tp, 0), r.offset + 1)
        return out


async def collect(consumer: AIOKafkaConsumer, cfg: BatchConfig, stop: asyncio.Event) -> Batch:
    """Wait up to ``max_seconds`` after the first record (or until full / stop) and return the batch."""
    loop = asyncio.get_running_loop()
    batch = Batch()
    deadline: float | None = None
    while not stop.is_set() and not batch.full(cfg):
        if deadline is None:
            timeout = 0.5
        else:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
        got: dict[Any, list[ConsumerRecord]] = await consumer.getmany(
            timeout_ms=int(timeout * 1000), max_records=cfg.max_events - len(batch.records)
        )
        for recs in got.values():
            for r in recs:
                batch.add(r)
        if batch.records and deadline is None:
            deadline = loop.time() + cfg.max_seconds
        if not got and deadline is None:
            return batch  # idle: let the caller refresh lag / check stop
    return batch
