"""The wire format of ``audit.raw.v1`` (see docs/wire-format.md), written once for the ingest and the client.

A record holds one event or an *envelope* of events (schemas/events_v1.py ``RawRecord``):

key     = the first event's ``event_id`` (UTF-8): one org's traffic spreads over every partition; the
          enricher does not read the key (other producers may key by ``org_id``)
value   = UTF-8 JSON: one RawEvent (``model_dump_json(exclude_none=True)``) when a batch holds one event
          of an org, else a JSON array of them — one envelope per org and at most
          :data:`ENVELOPE_MAX_BYTES`, so the per-record cost of Kafka and faust is paid per envelope
headers = content-type: application/json, schema-version: 1, producer: <name>

Also the checks every producer makes before an event leaves (validate once, at the edge): nesting depth
and the contract's integer range in the free-form parts (:func:`free_form_problem`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from pydantic import TypeAdapter

from schemas.events_v1 import SCHEMA_VERSION, RawEvent, is_unsafe_number

CONTENT_TYPE = b"application/json"
ENVELOPE_MAX_BYTES = 1024 * 1024
DEFAULT_MAX_DEPTH = 32
DEFAULT_MAX_EVENT_BYTES = 256 * 1024

# How every auditpipe producer talks to Kafka (ingest, services, the client in Kafka mode): durable
# (acks=all, idempotent), compressed, batched. Written once; callers add bootstrap servers and overrides.
DURABLE_PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    # measured: cheaper than aiokafka's lz4 (which runs at level 9) and smaller (docs/operations.md)
    "compression_type": "zstd",
    "linger_ms": 5,
    "max_batch_size": 1024 * 1024,
    "max_request_size": 8 * 1024 * 1024,
    "request_timeout_ms": 30_000,
}

Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


def encode_value(event: RawEvent) -> bytes:
    """One event's JSON: compact UTF-8 without null fields (pydantic JSON mode, in Rust)."""
    return event.model_dump_json(exclude_none=True).encode()


def headers(producer: str | None) -> list[tuple[str, bytes]]:
    out = [("content-type", CONTENT_TYPE), ("schema-version", str(SCHEMA_VERSION).encode())]
    if producer:
        out.append(("producer", producer.encode("utf-8")))
    return out


def encode(event: RawEvent) -> Message:
    """(key, value, headers) of a record holding one event."""
    return str(event.event_id or event.org_id).encode(), encode_value(event), headers(event.producer)


class Routing(NamedTuple):
    """What a record needs of an event besides its bytes (key, envelope per org, producer header): what a
    producer keeps of an event while it waits in a buffer, instead of the validated model (a few strings
    instead of a tree of objects the garbage collector would walk again and again)."""

    event_id: str
    org_id: str
    producer: str | None

    @classmethod
    def of(cls, event: RawEvent) -> Routing:
        return cls(str(event.event_id or event.org_id), event.org_id, event.producer)


def envelopes(
    items: Iterable[tuple[RawEvent | Routing, bytes]], max_bytes: int = ENVELOPE_MAX_BYTES
) -> list[tuple[Message, list[int]]]:
    """Records for a batch of (event, its encoded value), one or more per org, each at most ``max_bytes``
    (an event larger than that travels alone); with the indexes of the events each record holds, so a
    caller can tell which events a failed record held. Order within an org is kept."""
    by_org: dict[str, list[tuple[int, RawEvent | Routing, bytes]]] = {}
    for i, (ev, value) in enumerate(items):
        by_org.setdefault(ev.org_id, []).append((i, ev, value))
    out: list[tuple[Message, list[int]]] = []
    for group in by_org.values():
        chunk: list[tuple[int, RawEvent | Routing, bytes]] = []
        size = 2
        for entry in group:
            n = len(entry[2]) + 1
            if chunk and size + n > max_bytes:
                out.append(_record(chunk))
                chunk, size = [], 2
            chunk.append(entry)
            size += n
        if chunk:
            out.append(_record(chunk))
    return out


class EventTooLarge(ValueError):
    """An event whose JSON is larger than the limit (``index`` in the batch, ``size`` in bytes)."""

    def __init__(self, index: int, size: int) -> None:
        super().__init__(f"event {index} is {size} bytes")
        self.index, self.size = index, size


_LIST = TypeAdapter(list[RawEvent])


def envelope_records(
    events: Sequence[RawEvent],
    max_bytes: int = ENVELOPE_MAX_BYTES,
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
) -> list[tuple[Message, list[int]]]:
    """The records of a batch of validated events, as :func:`envelopes` makes them from encoded values,
    but an org's events are encoded in one call when their envelope is small enough to hold them all
    (the usual case: every event is then smaller than ``max_event_bytes`` too). Otherwise each event is
    encoded on its own, checked against ``max_event_bytes`` (:class:`EventTooLarge`) and chunked."""
    by_org: dict[str, list[int]] = {}
    for i, ev in enumerate(events):
        by_org.setdefault(ev.org_id, []).append(i)
    out: list[tuple[Message, list[int]]] = []
    for idxs in by_org.values():
        group = [events[i] for i in idxs]
        if len(group) > 1:
            value = _LIST.dump_json(group, exclude_none=True)
            if len(value) < min(max_bytes, max_event_bytes):  # (envelopes() counts one byte more)
                out.append(((_key(group[0]), value, headers(group[0].producer)), idxs))
                continue
        values = [encode_value(e) for e in group]
        for i, v in zip(idxs, values, strict=True):
            if len(v) > max_event_bytes:
                raise EventTooLarge(i, len(v))
        for msg, local in envelopes(zip(group, values, strict=True), max_bytes):
            out.append((msg, [idxs[j] for j in local]))
    return out


def _key(first: RawEvent | Routing) -> bytes:
    return str(first.event_id or first.org_id).encode()


def _record(chunk: Sequence[tuple[int, RawEvent | Routing, bytes]]) -> tuple[Message, list[int]]:
    first = chunk[0][1]
    key = _key(first)
    if len(chunk) == 1:
        value = chunk[0][2]
    else:
        value = b"[" + b",".join(v for _, _, v in chunk) + b"]"
    return (key, value, headers(first.producer)), [i for i, _, _ in chunk]


def decode_value(value: bytes | str | dict[str, Any]) -> RawEvent:
    if isinstance(value, dict):
        return RawEvent.model_validate(value)
    return RawEvent.model_validate_json(value)


def _fine(value: Any, depth: int, max_depth: int) -> bool:
    """No container nested deeper than ``max_depth`` and no unsafe number: :func:`_walk`'s conditions
    without building a path for every value (paths are only needed when something is wrong)."""
    stack: list[tuple[Any, int]] = [(value, depth)]
    while stack:
        v, d = stack.pop()
        if d > max_depth:
            return False
        for x in v.values() if type(v) is dict else v:
            t = type(x)
            if t is dict or t is list:
                stack.append((x, d + 1))
            elif (t is int or t is float) and is_unsafe_number(x):
                return False
    return True


def _problem(value: Any, depth: int, max_depth: int, path: str) -> tuple[str, str] | None:
    t = type(value)
    if t is dict or t is list:
        if _fine(value, depth, max_depth):
            return None
    elif not ((t is int or t is float) and is_unsafe_number(value)):
        return None
    return _walk(value, depth, max_depth, path)


def _walk(value: Any, depth: int, max_depth: int, path: str) -> tuple[str, str] | None:
    stack: list[tuple[Any, int, str]] = [(value, depth, path)]
    while stack:
        v, d, p = stack.pop()
        t = type(v)
        if t is dict:
            if d > max_depth:
                return p, f"nested deeper than {max_depth} levels"
            stack.extend((x, d + 1, f"{p}.{k}") for k, x in v.items())
        elif t is list:
            if d > max_depth:
                return p, f"nested deeper than {max_depth} levels"
            stack.extend((x, d + 1, f"{p}.{i}") for i, x in enumerate(v))
        elif (t is int or t is float) and is_unsafe_number(v):
            return p, "number without fraction outside ±(2**53-1), which RFC 8785 cannot represent exactly"
    return None


def free_form_problem(event: RawEvent, max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[str, str] | None:
    """(dotted field path, message) of the first free-form value nested deeper than ``max_depth`` (the
    event itself is level 1) or holding an integer outside the contract's range; None when fine."""
    req = event.request
    if req is not None:
        for name, v in (("query", req.query), ("payload", req.payload)):
            if v is not None:
                got = _problem(v, 3, max_depth, f"request.{name}")
                if got:
                    return got
    if event.snapshot is not None:
        got = _problem(event.snapshot, 2, max_depth, "snapshot")
        if got:
            return got
    for i, ch in enumerate(event.changes):
        for name, v in (("before", ch.before), ("after", ch.after)):
            if v is not None:
                got = _problem(v, 4, max_depth, f"changes.{i}.{name}")
                if got:
                    return got
    return None
