"""``AuditClient`` / ``AsyncAuditClient``: hand audit events to the pipeline without losing them.

Two modes:

- ``"http"``: batches are POSTed to the ingest (``/v1/events/batch``); a 202 means Kafka acknowledged them.
- ``"kafka"``: batches go straight to ``audit.raw.v1`` with an aiokafka producer (acks=all, idempotent), in
  the wire format of docs/wire-format.md.

Events are validated against the raw contract in :meth:`emit` (a bad event raises ``ValueError`` there, at
the caller, naming the field — including what a schema cannot say: nesting deeper than ``max_depth``, an
event larger than ``max_event_bytes``, numbers outside the contract's range), given an ``event_id`` (so
every retry is idempotent downstream), encoded once, and put in a bounded buffer. Overflow is
explicit: ``"block"`` waits for room, ``"raise"`` raises :class:`BufferFull`; nothing is dropped. A
background task batches by size (``batch_size``) or time (``flush_interval_s``) and retries with
exponential backoff (honouring ``Retry-After``) until delivered. ``close()`` flushes and raises
:class:`DeliveryError` listing anything that could not be delivered; at interpreter exit a client that was
not closed is flushed too.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from auditpipe.backoff import Backoff
from auditpipe.wire import (
    DEFAULT_MAX_DEPTH,
    DEFAULT_MAX_EVENT_BYTES,
    DURABLE_PRODUCER_CONFIG,
    Routing,
    encode_value,
    envelopes,
    free_form_problem,
)
from schemas.events_v1 import RawEvent
from schemas.topics import RAW

logger = logging.getLogger("auditpipe.client")

Mode = Literal["http", "kafka"]
Overflow = Literal["block", "raise"]
EventLike = RawEvent | Mapping[str, Any]


class BufferFull(Exception):
    """The bounded buffer is full and the overflow policy is ``"raise"``: the event was NOT taken."""


class DeliveryError(Exception):
    """Events that could not be delivered (``undelivered``) or were refused for good (``rejected``)."""

    def __init__(self, msg: str, undelivered: list[RawEvent], rejected: list[tuple[RawEvent, str]]) -> None:
        super().__init__(msg)
        self.undelivered = undelivered
        self.rejected = rejected


class PermanentError(Exception):
    """The destination refused the batch in a way retrying cannot fix (e.g. 401, 403, 422)."""


@dataclass
class SendResult:
    accepted: set[str]
    retry_after_s: float | None = None
    error: str | None = None
    refused: dict[int, str] = field(default_factory=dict)  # index in the batch -> why (nothing was sent)


Item = tuple[Routing, bytes]  # what a buffered event is: its routing strings and its encoded value


def _events(items: Sequence[Item]) -> list[RawEvent]:
    """The events of buffered items, decoded from their bytes (for reports: the buffer keeps no models).
    The bytes are a validated event's own JSON; were one ever refused on the way back, it is reported
    unvalidated rather than not at all (a report must never stop the sender)."""
    out = []
    for _, v in items:
        try:
            out.append(RawEvent.model_validate_json(v))
        except ValueError:
            out.append(RawEvent.model_construct(**json.loads(v)))
    return out


# --------------------------------------------------------------------------------- transports
class HttpTransport:
    """POST /v1/events/batch to the ingest. 202 = all durable; 503 lists what was; 4xx other = permanent."""

    RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})

    def __init__(
        self, url: str, token: str, timeout_s: float, client: httpx.AsyncClient | None = None
    ) -> None:
        self.url = url.rstrip("/") + "/v1/events/batch"
        self.token = token
        self.timeout_s = timeout_s
        self._client = client
        self._own = client is None

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)

    async def send(self, items: Sequence[Item]) -> SendResult:
        assert self._client is not None
        body = b"[" + b",".join(v for _, v in items) + b"]"
        try:
            r = await self._client.post(
                self.url,
                content=body,
                headers={"authorization": f"Bearer {self.token}", "content-type": "application/json"},
            )
        except httpx.HTTPError as e:
            return SendResult(set(), None, f"{type(e).__name__}: {e}")
        if r.status_code == 202:
            return SendResult({e.event_id for e, _ in items})
        retry_after = _retry_after(r.headers.get("retry-after"))
        if r.status_code == 422:
            refused = _refused_items(r, len(items))
            if refused:  # the batch was refused whole: resend the others, report these
                return SendResult(set(), None, f"HTTP 422: {len(refused)} events refused", refused)
        if r.status_code in self.RETRY_STATUS:
            accepted: set[str] = set()
            with contextlib.suppress(Exception):
                accepted = set(r.json().get("accepted", []))
            return SendResult(accepted, retry_after, f"HTTP {r.status_code}")
        raise PermanentError(f"HTTP {r.status_code}: {r.text[:500]}")

    async def close(self) -> None:
        if self._client is not None and self._own:
            await self._client.aclose()
        self._client = None


class KafkaTransport:
    """Produce straight to the raw topic (acks=all, idempotence); an event is delivered when acked."""

    def __init__(self, bootstrap_servers: str | list[str], topic: str, options: Mapping[str, Any]) -> None:
        self.bootstrap = bootstrap_servers
        self.topic = topic
        self.options = dict(options)
        self._producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        if self._producer is not None:
            return
        kw: dict[str, Any] = {"bootstrap_servers": self.bootstrap, **DURABLE_PRODUCER_CONFIG}
        kw.update(self.options)
        p = AIOKafkaProducer(**kw)
        try:
            await p.start()
        except Exception:
            with contextlib.suppress(Exception):
                await p.stop()
            raise
        self._producer = p

    async def send(self, items: Sequence[Item]) -> SendResult:
        """One envelope per org (docs/wire-format.md): an event is delivered when its record is acked."""
        try:
            await self.start()
        except Exception as e:  # noqa: BLE001 - broker unreachable: retry later
            return SendResult(set(), None, f"kafka start: {type(e).__name__}: {e}")
        records = envelopes(items)
        futs = []
        error = None
        try:
            for (key, value, hdrs), _ in records:
                futs.append(await self._producer.send(self.topic, value=value, key=key, headers=hdrs))
        except Exception as e:  # noqa: BLE001
            error = f"kafka send: {type(e).__name__}: {e}"
        results = await asyncio.gather(*futs, return_exceptions=True)
        accepted = {
            items[i][0].event_id
            for (_, indexes), r in zip(records, results, strict=False)
            if not isinstance(r, BaseException)
            for i in indexes
        }
        bad = [r for r in results if isinstance(r, BaseException)]
        if bad and error is None:
            error = f"kafka ack: {type(bad[0]).__name__}: {bad[0]}"
        return SendResult(accepted, None, error)

    async def close(self) -> None:
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        self._producer = None


def _refused_items(r: httpx.Response, n: int) -> dict[int, str]:
    """{index: reason} of a 422 that names the refused items of a batch (empty when it names none)."""
    out: dict[int, str] = {}
    with contextlib.suppress(Exception):
        for err in r.json().get("errors", []):
            i = err.get("index")
            if isinstance(i, int) and 0 <= i < n:
                msg = f"{err.get('field', '')}: {err.get('message', '')}".strip(": ")
                out[i] = f"{out[i]}; {msg}" if i in out else msg
    return out


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


# --------------------------------------------------------------------------------- async client
@dataclass
class _Options:
    mode: Mode
    url: str | None
    token: str | None
    bootstrap_servers: str | list[str] | None
    topic: str
    producer: str
    kafka_options: Mapping[str, Any] = field(default_factory=dict)
    request_timeout_s: float = 30.0


class AsyncAuditClient:
    """Asyncio audit client. Use ``async with AsyncAuditClient(...) as c: await c.emit(event)``.

    The buffer holds at most ``max_buffer`` queued events plus the batch in flight (``batch_size``).
    """

    def __init__(
        self,
        mode: Mode = "http",
        *,
        url: str | None = None,
        token: str | None = None,
        bootstrap_servers: str | list[str] | None = None,
        topic: str = RAW,
        producer: str = "auditpipe-client",
        max_buffer: int = 10_000,
        overflow: Overflow = "block",
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        max_retries: int | None = None,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 10.0,
        request_timeout_s: float = 30.0,
        kafka_options: Mapping[str, Any] | None = None,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        on_rejected: Callable[[list[RawEvent], str], None] | None = None,
        http_client: httpx.AsyncClient | None = None,
        flush_at_exit: bool = True,
        exit_timeout_s: float = 10.0,
    ) -> None:
        if mode == "http" and (not url or not token):
            raise ValueError("mode='http' needs url= and token=")
        if mode == "kafka" and not bootstrap_servers:
            raise ValueError("mode='kafka' needs bootstrap_servers=")
        if mode not in ("http", "kafka"):
            raise ValueError(f"mode must be 'http' or 'kafka', not {mode!r}")
        if overflow not in ("block", "raise"):
            raise ValueError(f"overflow must be 'block' or 'raise', not {overflow!r}")
        if max_buffer < 1 or batch_size < 1:
            raise ValueError("max_buffer and batch_size must be >= 1")
        self._opts = _Options(
            mode, url, token, bootstrap_servers, topic, producer, dict(kafka_options or {}), request_timeout_s
        )
        self.max_buffer = max_buffer
        self.overflow = overflow
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_retries = max_retries
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.on_rejected = on_rejected
        self.max_depth = max_depth
        self.max_event_bytes = max_event_bytes
        self.exit_timeout_s = exit_timeout_s
        self._http_client = http_client
        self._queue: asyncio.Queue[Item] | None = None
        self._flush_now: asyncio.Event = asyncio.Event()
        self._inflight: list[Item] = []
        self._sender: asyncio.Task[None] | None = None
        self._transport: HttpTransport | KafkaTransport | None = None
        self._closed = False
        self.delivered = 0
        self.retries = 0
        self.rejected: list[tuple[RawEvent, str]] = []
        self.failed: list[RawEvent] = []
        if flush_at_exit:
            _register_exit(self)

    # ----------------------------------------------------------------------------- public API
    def prepare(self, event: EventLike) -> RawEvent:
        """Validate against the raw contract and assign ``event_id`` / ``producer`` when absent."""
        return self._prepare(event)[0]

    def _item(self, event: EventLike) -> Item:
        """What the buffer keeps of a validated event: its routing and its bytes, not the model."""
        ev, value = self._prepare(event)
        return Routing.of(ev), value

    def _prepare(self, event: EventLike) -> tuple[RawEvent, bytes]:
        """The event, validated and completed, and its encoded value; ``ValueError`` naming the field."""
        if not isinstance(event, RawEvent):
            d = dict(event)
            if d.get("event_id") is None:
                d["event_id"] = uuid.uuid4()
            if d.get("producer") is None:
                d["producer"] = self._opts.producer
            ev = RawEvent.model_validate(d)
        else:
            ev = event
            update: dict[str, Any] = {}
            if ev.event_id is None:
                update["event_id"] = uuid.uuid4()
            if ev.producer is None:
                update["producer"] = self._opts.producer
            ev = ev.model_copy(update=update) if update else ev
        problem = free_form_problem(ev, self.max_depth)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        value = encode_value(ev)
        if len(value) > self.max_event_bytes:
            raise ValueError(f"event is {len(value)} bytes as sent, more than {self.max_event_bytes}")
        return ev, value

    async def emit(self, event: EventLike) -> str:
        """Buffer one event; returns its event_id. Raises on an invalid event or BufferFull (raise)."""
        item = self._item(event)
        await self._put(item)
        return item[0].event_id

    async def emit_prepared(self, ev: RawEvent) -> None:
        """Buffer an event returned by :meth:`prepare` (checked and encoded here, not validated again)."""
        await self._put(self._item(ev))

    async def _put(self, ev: Item) -> None:
        if self._closed:
            raise RuntimeError("client is closed")
        q = self._ensure_started()
        if self.overflow == "raise":
            try:
                q.put_nowait(ev)
            except asyncio.QueueFull:
                raise BufferFull(f"audit buffer full ({self.max_buffer} events)") from None
        else:
            await q.put(ev)

    @property
    def pending(self) -> int:
        """Events buffered or in flight, not yet delivered."""
        return (self._queue.qsize() if self._queue else 0) + len(self._inflight)

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until everything emitted so far is delivered or refused; TimeoutError past ``timeout_s``."""
        if self._queue is None:
            return
        self._flush_now.set()
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        finally:
            self._flush_now.clear()

    async def close(self, timeout_s: float = 30.0) -> None:
        """Flush, stop the sender and the transport. Raises DeliveryError if anything was not delivered."""
        if self._closed:
            return
        self._closed = True
        _unregister_exit(self)
        if self._queue is not None:
            self._flush_now.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        if self._transport is not None:
            await self._transport.close()
        self._raise_if_lost()

    async def __aenter__(self) -> AsyncAuditClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ----------------------------------------------------------------------------- internals
    def _raise_if_lost(self) -> None:
        left = _events(self._inflight) + _events(self._drain_queue())
        self._inflight = []
        undelivered = self.failed + left
        if undelivered or self.rejected:
            raise DeliveryError(
                f"{len(undelivered)} audit events undelivered, {len(self.rejected)} refused",
                undelivered,
                list(self.rejected),
            )

    def _drain_queue(self) -> list[Item]:
        out: list[Item] = []
        if self._queue is not None:
            while not self._queue.empty():
                out.append(self._queue.get_nowait())
                self._queue.task_done()
        return out

    def _make_transport(self) -> HttpTransport | KafkaTransport:
        o = self._opts
        if o.mode == "http":
            assert o.url and o.token
            return HttpTransport(o.url, o.token, o.request_timeout_s, self._http_client)
        assert o.bootstrap_servers
        return KafkaTransport(o.bootstrap_servers, o.topic, o.kafka_options)

    def _ensure_started(self) -> asyncio.Queue[Item]:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=self.max_buffer)
            self._flush_now = asyncio.Event()
            self._transport = self._make_transport()
            self._sender = asyncio.create_task(self._run(), name="auditpipe-client-sender")
        return self._queue

    async def _run(self) -> None:
        assert self._queue is not None and self._transport is not None
        await self._transport.start()
        loop = asyncio.get_running_loop()
        q = self._queue
        while True:
            first = await q.get()
            # the batch being gathered is already "in flight": a cancel (close/exit) still reports it
            batch = self._inflight = [first]
            deadline = loop.time() + self.flush_interval_s
            while len(batch) < self.batch_size:
                try:
                    batch.append(q.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0 or self._flush_now.is_set():
                    break
                item = await self._next_or_flush(q, left)
                if item is None:
                    break
                batch.append(item)
            # cancelled (close timed out): the batch stays in _inflight and is reported undelivered
            await self._deliver(self._transport, batch)
            self._inflight = []
            for _ in batch:
                q.task_done()

    async def _next_or_flush(self, q: asyncio.Queue[Item], timeout_s: float) -> Item | None:
        """The next event, or None when ``timeout_s`` passed or a flush was requested."""
        getter = asyncio.ensure_future(q.get())
        flusher = asyncio.ensure_future(self._flush_now.wait())
        try:
            await asyncio.wait({getter, flusher}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            flusher.cancel()
            getter.cancel()
        try:
            return await getter  # a get that completed before the cancel keeps its event
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return None

    async def _deliver(self, transport: HttpTransport | KafkaTransport, batch: list[Item]) -> None:
        pending = batch
        attempt = 0
        backoff = Backoff(
            initial_s=self.backoff_initial_s, cap_s=self.backoff_max_s, max_retry_after_s=self.backoff_max_s
        )
        while pending:
            try:
                res = await transport.send(pending)
            except PermanentError as e:
                self._reject(pending, str(e))
                return
            if res.refused:
                # one bad event must not cost the others: report the refused ones, send the rest now
                for i, reason in sorted(res.refused.items()):
                    self._reject([pending[i]], reason)
                pending = [it for i, it in enumerate(pending) if i not in res.refused]
                self._inflight = pending
                continue
            left = [it for it in pending if it[0].event_id not in res.accepted]
            self.delivered += len(pending) - len(left)
            pending = left
            self._inflight = pending
            if not pending:
                return
            attempt += 1
            self.retries += 1
            if self.max_retries is not None and attempt > self.max_retries:
                logger.error("audit events undelivered after %d retries: %s", self.max_retries, res.error)
                self.failed.extend(_events(pending))
                return
            delay = backoff.next_delay(res.retry_after_s)
            logger.warning("audit delivery retry %d in %.2fs: %s", attempt, delay, res.error)
            await asyncio.sleep(delay)

    def _reject(self, items: Sequence[Item], reason: str) -> None:
        # ids only: an event may carry what its producer did not mean to log
        logger.error(
            "audit events refused by the destination (%d, first %s): %s",
            len(items),
            items[0][0].event_id if items else "-",
            reason[:500],
        )
        events = _events(items)
        self.rejected.extend((e, reason) for e in events)
        if self.on_rejected is not None:
            try:
                self.on_rejected(events, reason)
            except Exception:  # noqa: BLE001
                logger.exception("on_rejected callback failed")

    def _exit_flush(self) -> None:
        """At interpreter exit: deliver what is left through a fresh transport on a fresh loop."""
        if self._closed:
            return
        self._closed = True
        left: list[Item] = list(self._inflight) + self._drain_queue()
        if not left:
            return

        async def go() -> None:
            o = self._opts
            t: HttpTransport | KafkaTransport = (
                HttpTransport(o.url or "", o.token or "", o.request_timeout_s)
                if o.mode == "http"
                else KafkaTransport(o.bootstrap_servers or "", o.topic, o.kafka_options)
            )
            await t.start()
            try:
                await self._deliver(t, left)
            finally:
                await t.close()

        try:
            asyncio.run(asyncio.wait_for(go(), self.exit_timeout_s))
        except Exception as e:  # noqa: BLE001 - report, never raise at exit
            logger.error("audit events undelivered at exit (%d): %s", len(left), type(e).__name__)


_LIVE: weakref.WeakSet[AsyncAuditClient] = weakref.WeakSet()
_EXIT_LOCK = threading.Lock()
_EXIT_REGISTERED = False


def _register_exit(c: AsyncAuditClient) -> None:
    global _EXIT_REGISTERED
    with _EXIT_LOCK:
        _LIVE.add(c)
        if not _EXIT_REGISTERED:
            atexit.register(_flush_all_at_exit)
            _EXIT_REGISTERED = True


def _unregister_exit(c: AsyncAuditClient) -> None:
    with _EXIT_LOCK:
        _LIVE.discard(c)


def _flush_all_at_exit() -> None:
    for c in list(_LIVE):
        c._exit_flush()


# --------------------------------------------------------------------------------- sync client
class AuditClient:
    """Thread-safe synchronous client: an :class:`AsyncAuditClient` on an asyncio loop in a daemon thread.

    ``emit()`` blocks while the buffer is full (overflow ``"block"``) or raises :class:`BufferFull`
    (``"raise"``). ``close()`` flushes; a client not closed is flushed at interpreter exit.
    """

    def __init__(self, mode: Mode = "http", **kwargs: Any) -> None:
        flush_at_exit = kwargs.pop("flush_at_exit", True)
        self.exit_timeout_s = float(kwargs.get("exit_timeout_s", 10.0))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="auditpipe-client", daemon=True)
        self._thread.start()
        self._async = AsyncAuditClient(mode, flush_at_exit=False, **kwargs)
        self._closed = False
        if flush_at_exit:
            atexit.register(self._at_exit)

    def _call(self, coro: Any, timeout_s: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    def emit(self, event: EventLike) -> str:
        """Validate and buffer one event (validation errors raise here); returns its event_id."""
        item = self._async._item(event)
        self._call(self._async._put(item))
        return item[0].event_id

    def flush(self, timeout_s: float | None = None) -> None:
        self._call(self._async.flush(timeout_s))

    @property
    def pending(self) -> int:
        return self._async.pending

    @property
    def stats(self) -> dict[str, int]:
        a = self._async
        return {
            "delivered": a.delivered,
            "retries": a.retries,
            "rejected": len(a.rejected),
            "pending": a.pending,
        }

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush and stop. Raises DeliveryError if any event could not be delivered."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self._at_exit)
        try:
            self._call(self._async.close(timeout_s))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._loop.is_running():
                self._loop.close()

    def _at_exit(self) -> None:
        try:
            self.close(self.exit_timeout_s)
        except DeliveryError as e:
            logger.error("audit client at exit: %s", e)
        except Exception as e:  # noqa: BLE001
            logger.error("audit client at exit: %r", e)

    def __enter__(self) -> AuditClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "AsyncAuditClient",
    "AuditClient",
    "BufferFull",
    "DeliveryError",
    "HttpTransport",
    "KafkaTransport",
    "PermanentError",
]
