"""Pure request rules of the ingest: parse a body, bound it, validate it against the raw contract, stamp it.

No I/O here; :mod:`services.ingest.app` is the thin HTTP shell around these functions.
Every refusal is a :class:`Refusal` carrying the HTTP status and the machine-readable body.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from auditpipe.wire import encode
from schemas.events_v1 import RawEvent, Request

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")
MAX_REPORTED_ERRORS = 100

_EVENTS = TypeAdapter(list[RawEvent])


@dataclass
class Refusal(Exception):
    """A refused request: ``status`` and a JSON body ``{"error": code, "message": ..., "errors": [...]}``."""

    status: int
    code: str
    message: str
    errors: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.errors:
            out["errors"] = self.errors
        return out


@dataclass(frozen=True)
class Limits:
    max_batch_events: int = 1000
    max_body_bytes: int = 5 * 1024 * 1024
    max_event_bytes: int = 256 * 1024
    max_json_depth: int = 32


def media_type(content_type: str | None, batch: bool) -> str:
    """'json' or 'ndjson'; refuses anything else (415). A charset other than UTF-8 is refused too."""
    if not content_type:
        raise Refusal(415, "unsupported_media_type", "Content-Type is required: application/json")
    main, *params = [p.strip().lower() for p in content_type.split(";")]
    for p in params:
        k, _, v = p.partition("=")
        if k.strip() == "charset" and v.strip().strip('"') not in ("utf-8", "utf8"):
            raise Refusal(415, "unsupported_media_type", f"charset {v.strip()} is not supported: use utf-8")
    if main in JSON_TYPES:
        return "json"
    if batch and main in NDJSON_TYPES:
        return "ndjson"
    allowed = "application/json" + (" or application/x-ndjson" if batch else "")
    raise Refusal(415, "unsupported_media_type", f"Content-Type {main!r} is not supported: use {allowed}")


def _loads(raw: bytes, index: int | None) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        where = {"index": index} if index is not None else {}
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as u:
            raise Refusal(
                400,
                "invalid_utf8",
                "body is not valid UTF-8",
                [{**where, "field": "", "message": f"invalid UTF-8 at byte {u.start}"}],
            ) from None
        if "recursion" in str(e).lower() or "depth limit" in str(e).lower():
            raise Refusal(
                422,
                "too_deep",
                "JSON nested too deeply",
                [{**where, "field": "", "message": "nesting exceeds the parser limit"}],
            ) from None
        raise Refusal(
            400, "malformed_json", "body is not valid JSON", [{**where, "field": "", "message": str(e)}]
        ) from None


def parse_body(body: bytes, kind: str, batch: bool, limits: Limits) -> list[Any]:
    """Decoded JSON items of a request (one for the single endpoint)."""
    if len(body) > limits.max_body_bytes:
        raise Refusal(413, "body_too_large", f"body exceeds {limits.max_body_bytes} bytes")
    if not body.strip():
        raise Refusal(400, "malformed_json", "body is empty")
    if kind == "ndjson":
        items = []
        for i, line in enumerate(x for x in body.split(b"\n") if x.strip()):
            if len(items) >= limits.max_batch_events:
                raise Refusal(413, "too_many_events", f"batch exceeds {limits.max_batch_events} events")
            items.append(_loads(line, i))
        return items
    data = _loads(body, None)
    if not batch:
        if not isinstance(data, dict):
            raise Refusal(
                422,
                "validation_error",
                "body must be one JSON object",
                [{"field": "", "message": "expected a JSON object (use /v1/events/batch for lists)"}],
            )
        return [data]
    if not isinstance(data, list):
        raise Refusal(
            422,
            "validation_error",
            "batch body must be a JSON array or NDJSON",
            [{"field": "", "message": "expected a JSON array of event objects"}],
        )
    if len(data) > limits.max_batch_events:
        raise Refusal(413, "too_many_events", f"batch exceeds {limits.max_batch_events} events")
    if not data:
        raise Refusal(422, "validation_error", "batch is empty", [{"field": "", "message": "no events"}])
    return data


def too_deep(obj: Any, max_depth: int) -> str | None:
    """Dotted path of the first container nested deeper than ``max_depth`` (the event itself is 1)."""
    stack: list[tuple[Any, int, str]] = [(obj, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                return path
            for k, v in node.items():
                if isinstance(v, dict | list):
                    stack.append((v, depth + 1, f"{path}.{k}" if path else str(k)))
        elif isinstance(node, list):
            if depth > max_depth:
                return path
            for i, v in enumerate(node):
                if isinstance(v, dict | list):
                    stack.append((v, depth + 1, f"{path}.{i}" if path else str(i)))
    return None


def _free_form(item: Any) -> list[tuple[Any, int, str]]:
    """The parts of an event that may nest freely, with their depth (the event is 1).

    Everything else in the contract has a fixed shape that validation bounds; a container where the
    contract wants a scalar is refused by validation anyway, so walking it is not needed.
    """
    if not isinstance(item, dict):
        return [(item, 1, "")]
    out: list[tuple[Any, int, str]] = []
    for k, v in item.items():
        if not isinstance(v, dict | list):
            continue
        if k == "request" and isinstance(v, dict):
            out.extend((x, 3, f"request.{kk}") for kk, x in v.items() if isinstance(x, dict | list))
        elif k == "changes" and isinstance(v, list):
            for i, ch in enumerate(v):
                if isinstance(ch, dict):
                    out.extend(
                        (x, 4, f"changes.{i}.{kk}") for kk, x in ch.items() if isinstance(x, dict | list)
                    )
                else:
                    out.append((ch, 3, f"changes.{i}"))
        else:
            out.append((v, 2, str(k)))
    return out


def event_too_deep(item: Any, max_depth: int) -> str | None:
    """Like :func:`too_deep` for one event, walking only its free-form parts."""
    for node, depth, path in _free_form(item):
        p = too_deep(node, max_depth - depth + 1)
        if p is not None:
            return f"{path}.{p}" if p else path
    return None


def check_depth(items: list[Any], limits: Limits) -> None:
    """Depth limit (422 too_deep), naming the item index and the path."""
    errors = []
    for i, item in enumerate(items):
        p = event_too_deep(item, limits.max_json_depth)
        if p is not None:
            errors.append(
                {"index": i, "field": p, "message": f"nested deeper than {limits.max_json_depth} levels"}
            )
    if errors:
        raise Refusal(422, "too_deep", "JSON nested too deeply", errors[:MAX_REPORTED_ERRORS])


Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


def encode_all(events: list[RawEvent], limits: Limits) -> list[Message]:
    """Kafka messages of the stamped events; an event larger than ``max_event_bytes`` as stored is
    refused (413 event_too_large, naming its index)."""
    out = [encode(e) for e in events]
    for i, (_, value, _) in enumerate(out):
        if len(value) > limits.max_event_bytes:
            raise Refusal(
                413,
                "event_too_large",
                f"event exceeds {limits.max_event_bytes} bytes",
                [{"index": i, "field": "", "message": f"{len(value)} bytes as stored"}],
            )
    return out


def validate(items: list[Any], batch: bool) -> list[RawEvent]:
    """Contract validation, all or nothing: any invalid item refuses the whole request (422)."""
    try:
        return _EVENTS.validate_python(items)
    except ValidationError as e:
        errors = []
        for err in e.errors(include_url=False)[:MAX_REPORTED_ERRORS]:
            loc = list(err.get("loc", ()))
            index = loc.pop(0) if loc and isinstance(loc[0], int) else None
            out: dict[str, Any] = {"field": ".".join(str(x) for x in loc), "message": err["msg"]}
            out["type"] = err["type"]
            if batch:
                out = {"index": index, **out}
            errors.append(out)
        raise Refusal(
            422, "validation_error", "events do not match the raw event contract v1", errors
        ) from None


def stamp(
    ev: RawEvent, *, producer: str, peer_ip: str | None, x_forwarded_for: str | None, now: datetime
) -> RawEvent:
    """What the ingest adds: event_id (when absent), received_at, producer, and the call's peer.

    - ``producer`` is the authenticated token's producer; a different self-declared value is kept in
      ``metadata.producer_claimed`` (never dropped).
    - If the event carries no ``request.peer_ip`` and no ``request.x_forwarded_for``, the ingest's own TCP
      peer and raw X-Forwarded-For header are the call's peer and are written there. If the producer
      described its own caller's peer, that wins (the ingest's TCP peer is the producer itself) and the
      ingest's view goes to ``metadata.ingest_peer_ip`` / ``metadata.ingest_x_forwarded_for``.
    """
    update: dict[str, Any] = {"received_at": now, "producer": producer}
    if ev.event_id is None:
        update["event_id"] = uuid.uuid4()
    meta = dict(ev.metadata)
    if ev.producer and ev.producer != producer:
        meta["producer_claimed"] = ev.producer
    req = ev.request
    if req is None or (req.peer_ip is None and req.x_forwarded_for is None):
        base = req if req is not None else Request()
        update["request"] = base.model_copy(
            update={
                "peer_ip": peer_ip,
                "x_forwarded_for": x_forwarded_for[:16384] if x_forwarded_for else None,
            }
        )
    if peer_ip is not None:
        meta["ingest_peer_ip"] = peer_ip
    if x_forwarded_for is not None:
        meta["ingest_x_forwarded_for"] = x_forwarded_for[:8192]
        if len(x_forwarded_for) > 8192:  # said, not silent
            meta["ingest_x_forwarded_for_truncated"] = str(len(x_forwarded_for))
    update["metadata"] = meta
    return ev.model_copy(update=update)
