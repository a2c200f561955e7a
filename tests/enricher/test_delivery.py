"""Delivery: acks only after the broker's ack, in offset order per partition, bounded, retried."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.enricher.app import Delivery


@dataclass(frozen=True)
class Msg:
    tp: str
    offset: int


@dataclass(frozen=True)
class Ev:
    message: Msg


@dataclass
class FakeBroker:
    futures: list[asyncio.Future] = field(default_factory=list)
    fail_first: int = 0

    async def send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        if self.fail_first > 0:
            self.fail_first -= 1
            fut.set_exception(ConnectionError("broker down"))
        self.futures.append(fut)
        return fut


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_acks_wait_for_the_broker_and_keep_offset_order() -> None:
    broker = FakeBroker()
    acked: list[tuple[str, int]] = []

    async def ack(ev: Ev) -> None:
        acked.append((ev.message.tp, ev.message.offset))

    d = Delivery(100, broker.send)
    d.ack = ack
    events = [Ev(Msg("p0", i)) for i in range(3)] + [Ev(Msg("p1", 0))]
    for ev in events:
        await d.submit(ev, "out", None, b"x")
    await _settle()
    assert acked == []  # nothing acked before the broker answers
    broker.futures[2].set_result("ok")  # p0/2 done first: must wait for p0/0 and p0/1
    broker.futures[3].set_result("ok")  # p1/0: independent partition
    await _settle()
    assert acked == [("p1", 0)]
    broker.futures[0].set_result("ok")
    await _settle()
    assert acked == [("p1", 0), ("p0", 0)]
    broker.futures[1].set_result("ok")
    await _settle()
    assert acked == [("p1", 0), ("p0", 0), ("p0", 1), ("p0", 2)]
    assert d.pending == 0


async def test_window_is_bounded_and_suppressed_events_take_their_turn() -> None:
    broker = FakeBroker()
    acked: list[int] = []

    async def ack(ev: Ev) -> None:
        acked.append(ev.message.offset)

    d = Delivery(2, broker.send)
    d.ack = ack
    await d.submit(Ev(Msg("p", 0)), "out", None, b"x")
    await d.done_without_output(Ev(Msg("p", 1)))
    third = asyncio.ensure_future(d.submit(Ev(Msg("p", 2)), "out", None, b"x"))
    await _settle()
    assert not third.done() and d.pending == 2  # back-pressure: the agent waits
    broker.futures[0].set_result("ok")
    await _settle()
    assert acked == [0, 1]
    await asyncio.wait_for(third, 1)
    broker.futures[1].set_result("ok")
    await _settle()
    assert acked == [0, 1, 2]


async def test_failed_send_is_retried_then_acked() -> None:
    broker = FakeBroker(fail_first=1)
    acked: list[int] = []

    async def ack(ev: Ev) -> None:
        acked.append(ev.message.offset)

    d = Delivery(10, broker.send)
    d.ack = ack
    await d.submit(Ev(Msg("p", 0)), "out", None, b"x")
    await asyncio.sleep(0.3)  # first back-off is 0.1 s
    assert acked == [] and len(broker.futures) == 2
    broker.futures[1].set_result("ok")
    await _settle()
    await asyncio.sleep(0.05)
    assert acked == [0]
