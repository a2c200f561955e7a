"""The faust shell: audit.raw.v1 -> rules.enrich -> audit.events.v1 (or the dead-letter topic).

Source -> steps -> sink:

- source: one agent on the raw topic, ``concurrency=1`` (faust-streaming #606 commits past in-flight
  messages with more) and a ``noack()`` stream: faust's default stream acks an event when the agent
  body asks for the next one *or when the body is interrupted* (exception, cancellation on shutdown),
  so an event could be committed without its output. Here an event is acked only from the callback of
  its output's send future, i.e. after the broker acknowledged it (:class:`Delivery`, a bounded
  in-flight window); faust commits the consecutive acked prefix every ``commit_interval_s``.
- steps: :class:`services.enricher.rules.enrich.Enricher` (pure) decides Enriched / Suppressed / Dead.
- sink: the events topic (key = org_id), the dead-letter topic, or the ``suppressed_daily`` table
  (key = ``org_id|YYYY-MM-DD``, changelog-backed) when the org has audit switched off (in settings, or
  through the query API: :class:`services.enricher.switch.SwitchFollower` follows that topic live).

A failing send is retried with back-off until it succeeds or the worker stops; the event is not acked
meanwhile, so a stop leaves it uncommitted and it is processed again after restart (at least once).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
import orjson

from schemas.events_v1 import DeadLetter
from services.common.kafka import JSON_HEADERS
from services.common.logging import get_logger, log
from services.common.settings import Settings
from services.enricher import metrics
from services.enricher.rules.enrich import Dead, Enriched, Enricher, Suppressed
from services.enricher.switch import SwitchFollower

logger = get_logger("services.enricher")

MAX_BACKOFF_S = 10.0


class Delivery:
    """Outputs in flight; each raw event is acked only after the broker acked its output, and in order.

    ``submit`` hands the output to the producer and returns at once; completion comes from the send
    future's callback. Acks are released per source partition strictly in offset order (a done event
    waits for the earlier ones of its partition): faust 0.15.3 commits the first consecutive run of
    acked offsets but checks the gap before it with an off-by-one (``Consumer._new_offset``:
    ``min(acked) - committed > 1``, and no check at all while nothing was committed yet), so
    out-of-order acks could commit past an event whose output is not on the broker. At most ``limit``
    events wait between consumption and ack; beyond that ``submit`` waits (back-pressure pauses the
    agent, memory stays bounded). A failed send is retried with back-off until it succeeds.
    """

    def __init__(self, limit: int, send: Callable[[str, bytes | None, bytes], Awaitable[Any]]) -> None:
        self.limit = limit
        self.send = send
        self.pending = 0
        self.ack: Callable[[Any], Awaitable[Any]] | None = None
        self._queues: dict[Any, deque[list[Any]]] = defaultdict(deque)  # tp -> [[event, done], ...]
        self._space = asyncio.Event()
        self._space.set()
        self._tasks: set[asyncio.Task] = set()

    async def _reserve(self, event: Any, done: bool) -> list[Any]:
        while self.pending >= self.limit:
            self._space.clear()
            await self._space.wait()
        self.pending += 1
        metrics.IN_FLIGHT.set(self.pending)
        entry = [event, done]
        self._queues[event.message.tp].append(entry)
        return entry

    async def submit(self, event: Any, topic: str, key: bytes | None, value: bytes) -> None:
        """Produce ``value`` for ``event``; ``event`` is acked once the broker acked it."""
        entry = await self._reserve(event, False)
        try:
            fut = await self.send(topic, key, value)
        except Exception:  # noqa: BLE001 - producer refused at once: retry inline (pauses the agent)
            await self._resend(entry, topic, key, value)
            return
        fut.add_done_callback(partial(self._done, entry, topic, key, value))

    async def done_without_output(self, event: Any) -> None:
        """An event with nothing to produce (suppressed): acked in its turn."""
        entry = await self._reserve(event, True)
        self._complete(entry)

    def _done(
        self, entry: list[Any], topic: str, key: bytes | None, value: bytes, fut: asyncio.Future
    ) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._spawn(self._resend(entry, topic, key, value))
        else:
            self._complete(entry)

    async def _resend(self, entry: list[Any], topic: str, key: bytes | None, value: bytes) -> None:
        delay = 0.1
        while True:
            metrics.SEND_RETRIES.labels(topic).inc()
            log(logger, logging.WARNING, "send failed, retrying", topic=topic, retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(MAX_BACKOFF_S, delay * 2)
            try:
                fut = await self.send(topic, key, value)
                await fut
                break
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001, S112 - broker trouble: keep trying, never skip
                continue
        self._complete(entry)

    def _complete(self, entry: list[Any]) -> None:
        entry[1] = True
        queue = self._queues[entry[0].message.tp]
        assert self.ack is not None
        while queue and queue[0][1]:
            event = queue.popleft()[0]
            self.pending -= 1
            self._spawn(self.ack(event))  # tasks run in creation order: acks stay in offset order
        metrics.IN_FLIGHT.set(self.pending)
        self._space.set()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """The same Kafka security settings as ``services.common.kafka`` clients use."""
    proto = settings.kafka_security_protocol
    ctx = ssl.create_default_context() if proto in ("SSL", "SASL_SSL") else None
    if settings.kafka_sasl_mechanism:
        pw = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=pw,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ctx,
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def create_app(settings: Settings, raw_partitions: int) -> faust.App:
    """Build the faust app (never at module level: a faust App binds to the first event loop)."""
    es = settings.enricher
    app = faust.App(
        es.consumer_group,
        broker=[f"kafka://{b}" for b in settings.bootstrap_servers],
        broker_credentials=broker_credentials(settings),
        broker_session_timeout=es.session_timeout_s,
        broker_heartbeat_interval=max(1.0, es.session_timeout_s / 5),
        broker_commit_interval=es.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_compression_type="lz4",
        producer_linger_ms=5,
        topic_partitions=raw_partitions,
        topic_replication_factor=1,
        store="memory://",
        datadir=str(es.data_dir),
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    raw_topic = app.topic(es.raw_topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    suppressed = app.Table("suppressed_daily", default=int, partitions=raw_partitions)
    enricher = Enricher.from_settings(es)
    # the org switch set through the query API, followed live (settings-listed orgs stay off regardless)
    follower = SwitchFollower(settings, lambda off: setattr(enricher, "disabled_orgs", off))

    @app.task
    async def follow_switch() -> None:
        await follower.run()

    async def produce(topic: str, key: bytes | None, value: bytes) -> Any:
        """faust's producer directly: Topic.send's PendingMessage/FutureMessage/sensor layers cost
        a large share of the per-event time (profile in docs/enricher.md)."""
        return await app.producer.send(topic, key, value, None, None, JSON_HEADERS)

    delivery = Delivery(es.max_in_flight, produce)

    @app.agent(raw_topic, concurrency=1)
    async def enrich_raw(stream: faust.StreamT) -> None:
        manual = stream.noack()
        delivery.ack = manual.ack
        await follower.ready.wait()  # no event before the switch state this worker restarts with
        async for event in manual.events():
            msg = event.message
            outcome = enricher.process(
                msg.value,
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                timestamp_ms=int(msg.timestamp * 1000) if msg.timestamp else None,
                now=datetime.now(UTC),
            )
            if isinstance(outcome, Enriched):
                await delivery.submit(event, es.events_topic, outcome.event.org_id.encode(), outcome.value)
                metrics.EVENTS.labels("enriched").inc()
            elif isinstance(outcome, Suppressed):
                key = f"{outcome.org_id}|{outcome.day}"
                suppressed[key] += 1
                metrics.SUPPRESSED.labels(outcome.org_id, outcome.day).set(suppressed[key])
                metrics.EVENTS.labels("suppressed").inc()
                await delivery.done_without_output(event)
            else:
                await dead_letter(event, outcome)

    async def dead_letter(event: Any, outcome: Dead) -> None:
        letter: DeadLetter = outcome.letter
        key = letter.org_id.encode() if letter.org_id else None
        await delivery.submit(event, es.deadletter_topic, key, orjson.dumps(letter.model_dump(mode="json")))
        metrics.DEAD_LETTERS.labels(letter.reason).inc()
        metrics.EVENTS.labels("dead_letter").inc()
        # error text and coordinates only: the letter's original is never logged
        log(
            logger,
            logging.WARNING,
            "dead letter",
            reason=letter.reason,
            error=letter.error[:500],
            topic=letter.source_topic,
            partition=letter.source_partition,
            offset=letter.source_offset,
        )

    @app.timer(interval=60.0)
    async def report_suppressed() -> None:
        """Log the daily not-stored counts this worker holds (its partitions of the table)."""
        for key, count in list(suppressed.items()):
            org, _, day = key.partition("|")
            metrics.SUPPRESSED.labels(org, day).set(count)
            log(logger, logging.INFO, "events not stored (audit off)", org_id=org, day=day, count=count)

    app.enrich_raw = enrich_raw  # type: ignore[attr-defined]
    app.suppressed_daily = suppressed  # type: ignore[attr-defined]
    app.switch_follower = follower  # type: ignore[attr-defined]
    return app
