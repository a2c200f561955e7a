"""BulkDelivery: a batch's records are acked only after every output of it was acknowledged, batches in
the order taken, memory bounded, failed groups resent, a broken idempotent producer replaced.

A fake producer stands in for aiokafka's (create_batch / send_batch / partitions_for) so the order of
acknowledgements can be chosen; the real broker is used by test_worker_integration.py and test_kill9.py.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.enricher.delivery import BulkDelivery, partition_for


class FakeBatch:
    def __init__(self, limit: int) -> None:
        self.items: list[tuple[bytes | None, bytes]] = []
        self.limit = limit
        self.closed = False

    def append(self, *, key: bytes | None, value: bytes, timestamp: Any, headers: Any) -> object | None:
        if self.closed or len(self.items) >= self.limit:
            self.closed = True
            return None
        self.items.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeProducer:
    partitions: int = 3
    batch_limit: int = 100
    fail_sends: int = 0  # the first N futures fail
    fail_with: type[Exception] = ConnectionError
    sent: list[tuple[str, int, list, asyncio.Future]] = field(default_factory=list)
    started: int = 0
    stopped: int = 0

    async def start(self) -> None:
        self.started += 1

    async def stop(self) -> None:
        self.stopped += 1

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_limit)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if self.fail_sends > 0:
            self.fail_sends -= 1
            fut.set_exception(self.fail_with("broker down"))
        self.sent.append((topic, partition, list(batch.items), fut))
        return fut

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    def ack_all(self) -> None:
        for *_, f in self.sent:
            if not f.done():
                f.set_result(None)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def make(producer: FakeProducer, limit: int = 1000) -> tuple[BulkDelivery, list[str], asyncio.Task]:
    acked: list[str] = []

    async def ack(records: Any) -> None:
        acked.extend(records)

    d = BulkDelivery(lambda: producer, ack, limit)
    return d, acked, asyncio.ensure_future(d.run())


def outputs(*keys: str) -> list[tuple[str, bytes | None, bytes]]:
    return [("events", k.encode(), b"v-" + k.encode()) for k in keys]


async def test_records_are_acked_after_all_their_outputs_and_in_order() -> None:
    p = FakeProducer()
    d, acked, task = make(p)
    await d.submit(["a1", "a2"], outputs("e1", "e2", "e3", "e4"), 4)
    await d.submit(["b1"], outputs("e5"), 1)
    await settle()
    assert acked == []
    for *_, f in p.sent[len(p.sent) - 1 :]:  # b's output acknowledged first
        f.set_result(None)
    await settle()
    assert acked == []  # a batch never overtakes an earlier one
    for *_, f in p.sent[:-1]:
        f.set_result(None)
    await settle()
    assert acked == ["a1", "a2", "b1"] and d.pending == 0
    task.cancel()


async def test_outputs_go_to_the_partition_of_their_key_in_one_batch_per_partition() -> None:
    p = FakeProducer(partitions=4)
    d, acked, task = make(p)
    keys = [f"k{i}" for i in range(40)]
    await d.submit(["r"], outputs(*keys), 40)
    by_partition = {part: items for _, part, items, _ in p.sent}
    assert len(p.sent) == len(by_partition) <= 4  # one send per partition for the whole batch
    for part, items in by_partition.items():
        assert all(zlib.crc32(k) % 4 == part for k, _ in items)
    assert sorted(k for items in by_partition.values() for k, _ in items) == sorted(k.encode() for k in keys)
    p.ack_all()
    await settle()
    assert acked == ["r"]
    task.cancel()


async def test_a_full_batch_continues_in_the_next_one() -> None:
    p = FakeProducer(partitions=1, batch_limit=3)
    d, acked, task = make(p)
    await d.submit(["r"], outputs(*[f"k{i}" for i in range(8)]), 8)
    assert [len(items) for _, _, items, _ in p.sent] == [3, 3, 2]
    p.sent[0][3].set_result(None)
    p.sent[1][3].set_result(None)
    await settle()
    assert acked == []
    p.sent[2][3].set_result(None)
    await settle()
    assert acked == ["r"]
    task.cancel()


async def test_a_failed_group_is_sent_again_until_the_broker_has_it() -> None:
    p = FakeProducer(partitions=1, fail_sends=2)
    d, acked, task = make(p)
    await d.submit(["r"], outputs("a", "b"), 2)
    for _ in range(100):
        await asyncio.sleep(0.05)
        p.ack_all()  # acknowledges the resend once it exists
        if acked:
            break
    assert acked == ["r"]
    assert len(p.sent) == 3 and p.sent[-1][2] == p.sent[0][2]  # the same outputs, sent again
    task.cancel()


async def test_a_broken_idempotent_producer_is_replaced() -> None:
    class OutOfOrderSequenceNumber(Exception):
        pass

    first = FakeProducer(partitions=1, fail_sends=1, fail_with=OutOfOrderSequenceNumber)
    second = FakeProducer(partitions=1)
    made = iter([first, second])
    acked: list[str] = []

    async def ack(records: Any) -> None:
        acked.extend(records)

    d = BulkDelivery(lambda: next(made), ack, 100)
    task = asyncio.ensure_future(d.run())
    await d.submit(["r"], outputs("a"), 1)
    for _ in range(100):
        await asyncio.sleep(0.05)
        second.ack_all()
        if acked:
            break
    assert acked == ["r"] and first.stopped == 1 and second.started == 1 and len(second.sent) == 1
    task.cancel()


async def test_back_pressure_bounds_the_events_in_flight() -> None:
    p = FakeProducer()
    d, acked, task = make(p, limit=5)
    await d.submit(["r1"], outputs("a", "b", "c"), 3)
    blocked = asyncio.ensure_future(d.submit(["r2"], outputs("d", "e", "f"), 3))
    await settle()
    assert not blocked.done() and d.pending == 6  # queued, but the agent waits before taking more
    p.ack_all()
    await asyncio.wait_for(blocked, 2)
    p.ack_all()
    await settle()
    assert acked == ["r1", "r2"] and d.pending == 0
    task.cancel()


async def test_suppressed_only_batches_are_acked_in_their_turn() -> None:
    p = FakeProducer()
    d, acked, task = make(p)
    await d.submit(["a"], outputs("x"), 1)
    await d.submit(["s"], [], 5)  # every event of it suppressed: nothing to produce
    await settle()
    assert acked == []
    p.ack_all()
    await settle()
    assert acked == ["a", "s"]
    task.cancel()


@pytest.mark.parametrize("n", [1, 6, 12])
def test_partition_for_is_stable_and_spreads(n: int) -> None:
    keys = [f"{i:08x}-0000-4000-8000-000000000000".encode() for i in range(3000)]
    parts = [partition_for(k, n) for k in keys]
    assert parts == [partition_for(k, n) for k in keys]
    counts = [parts.count(i) for i in range(n)]
    assert min(counts) > 0.7 * len(keys) / n  # one big tenant's events spread over every partition
    assert partition_for(None, n, 7) == 7 % n
