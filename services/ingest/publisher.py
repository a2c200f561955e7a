"""The one Kafka producer of an ingest process, and "publish these events, tell me which were acked".

The producer comes from :func:`services.common.kafka.make_producer` (acks=all, idempotence, lz4,
batching). If the broker is unreachable at start-up, the producer is (re)started in the background and
requests are answered 503 meanwhile; the process never crashes for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from auditpipe.backoff import Backoff
from services.common.kafka import make_producer
from services.common.logging import log
from services.common.settings import Settings
from services.ingest.metrics import PUBLISH_LATENCY
from services.ingest.validation import Message

logger = logging.getLogger("auditpipe.ingest.publisher")


@dataclass
class Outcome:
    accepted: list[str]
    not_accepted: list[str]
    error: str | None = None

    @property
    def complete(self) -> bool:
        return not self.not_accepted


def _retrieve(f: asyncio.Future) -> None:
    """Mark a late failure as seen (it is reported through the request's outcome, not the loop)."""
    if not f.cancelled():
        f.exception()


# Producer states an idempotent aiokafka producer does not recover from by itself.
FATAL_PRODUCER_ERRORS = (
    "OutOfOrderSequenceNumber",
    "UnknownProducerId",
    "InvalidProducerEpoch",
    "ProducerFenced",
)


class Publisher:
    def __init__(self, settings: Settings, topic: str) -> None:
        self.settings = settings
        self.topic = topic
        self._producer: AIOKafkaProducer | None = None
        self._starter: asyncio.Task[None] | None = None
        self._closing = False
        self._stalled: set[asyncio.Future] = set()  # unacknowledged sends of requests answered 503
        self._background: set[asyncio.Task] = set()

    @property
    def started(self) -> bool:
        return self._producer is not None

    @property
    def stalled(self) -> int:
        """Sends of earlier (503-answered) requests still waiting for Kafka."""
        return len(self._stalled)

    async def start(self, wait_s: float = 10.0) -> None:
        """Start the producer; if Kafka does not answer within ``wait_s``, keep trying in the background."""
        self._starter = asyncio.create_task(self._start_loop())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._starter), wait_s)

    async def _start_loop(self) -> None:
        backoff = Backoff(initial_s=0.5, cap_s=10.0)
        while not self._closing:
            p = make_producer(self.settings, request_timeout_ms=max(5000, int(self._deadline_ms() * 2)))
            try:
                await p.start()
                self._producer = p
                log(logger, logging.INFO, "kafka producer started", bootstrap=self.settings.kafka_bootstrap)
                return
            except Exception as e:  # noqa: BLE001 - broker unreachable: retry with backoff
                with contextlib.suppress(Exception):
                    await p.stop()
                log(logger, logging.WARNING, "kafka producer start failed; retrying", error=repr(e))
                await asyncio.sleep(backoff.next_delay())

    def _deadline_ms(self) -> float:
        return self.settings.ingest.publish_deadline_s * 1000

    async def publish(
        self, ids: Sequence[str], records: Sequence[tuple[Message, list[int]]], deadline_s: float
    ) -> Outcome:
        """Send every record (an envelope holds the events at its indexes) and wait for all
        acknowledgements until ``deadline_s``.

        An event counts as accepted only when the acknowledgement of its record arrived in time; the rest
        are reported as not accepted (they may still arrive later: resending them with the same event_id
        is harmless).
        """
        ids = list(ids)
        producer = self._producer
        if producer is None:
            return Outcome([], ids, "kafka producer not connected")
        if self._stalled:
            # Sends of an earlier request are still unacknowledged (Kafka down or slow): answer at once
            # instead of piling more copies into the producer's buffer, each of which would be delivered
            # later as a duplicate of the client's resend. Cleared as soon as those sends resolve.
            return Outcome([], ids, f"kafka unavailable ({len(self._stalled)} earlier sends unacknowledged)")
        t0 = time.perf_counter()
        futures: list[asyncio.Future] = []

        async def send_all() -> None:
            for (key, value, hdrs), _ in records:
                fut = await producer.send(self.topic, value=value, key=key, headers=hdrs)
                fut.add_done_callback(_retrieve)
                futures.append(fut)
            await asyncio.gather(*(asyncio.shield(f) for f in futures), return_exceptions=True)

        sender = asyncio.create_task(send_all())
        error: str | None = None
        try:
            await asyncio.wait_for(asyncio.shield(sender), deadline_s)
        except TimeoutError:
            error = f"kafka did not acknowledge within {deadline_s:g}s"
            sender.cancel()
        except Exception as e:  # noqa: BLE001 - send() itself failed (e.g. metadata timeout)
            error = f"kafka send failed: {type(e).__name__}"
        acked: set[int] = set()
        for r, (_, indexes) in enumerate(records):
            f = futures[r] if r < len(futures) else None
            if f is not None and f.done() and not f.cancelled() and f.exception() is None:
                acked.update(indexes)
            elif f is not None and f.done() and not f.cancelled() and error is None:
                error = f"kafka send failed: {type(f.exception()).__name__}"
        accepted = [eid for i, eid in enumerate(ids) if i in acked]
        rejected = [eid for i, eid in enumerate(ids) if i not in acked]
        if not rejected:
            PUBLISH_LATENCY.observe(time.perf_counter() - t0)
        for f in futures:
            if not f.done():
                self._stalled.add(f)
                f.add_done_callback(self._stalled.discard)
        if error is not None and any(name in error for name in FATAL_PRODUCER_ERRORS):
            self._replace_producer(producer, error)
        return Outcome(accepted, rejected, error)

    def _replace_producer(self, old: AIOKafkaProducer, reason: str) -> None:
        """An idempotent producer whose sequence state broke (e.g. OutOfOrderSequenceNumber after a broker
        restart, aio-libs/aiokafka#1017) never recovers by itself: start a new one (new producer id, fresh
        sequences). The events it did not deliver were answered 503; clients resend them."""
        if self._producer is not old or self._closing:
            return
        self._producer = None
        log(logger, logging.WARNING, "kafka producer reset after a fatal send error", reason=reason)

        async def stop_old() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.stop(), 10)

        self._background = {t for t in self._background if not t.done()}
        self._background.add(asyncio.create_task(stop_old()))
        self._starter = asyncio.create_task(self._start_loop())

    async def close(self) -> None:
        self._closing = True
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
            with contextlib.suppress(BaseException):
                await self._starter
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), 30)
            self._producer = None
