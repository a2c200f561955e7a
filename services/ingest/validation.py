"""Pure request rules of the ingest: parse a body, bound it, validate it against the raw contract, stamp it.

No I/O here; :mod:`services.ingest.app` is the thin HTTP shell around these functions.
Every refusal is a :class:`Refusal` carrying the HTTP status and the machine-readable body.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from auditpipe.wire import ENVELOPE_MAX_BYTES, EventTooLarge, envelope_records, free_form_problem
from schemas.events_v1 import RawEvent, Request

JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines")
MAX_REPORTED_ERRORS = 100


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


def _utf8_refusal(raw: bytes, where: dict[str, Any]) -> Refusal | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as u:
        return Refusal(
            400,
            "invalid_utf8",
            "body is not valid UTF-8",
            [{**where, "field": "", "message": f"invalid UTF-8 at byte {u.start}"}],
        )
    return None


def _json_refusal(err: dict[str, Any], raw: bytes, where: dict[str, Any]) -> Refusal:
    """The refusal for a body the JSON parser could not read (bad UTF-8, too deep, malformed)."""
    utf8 = _utf8_refusal(raw, where)
    if utf8 is not None:
        return utf8
    msg = str(err.get("msg", "invalid JSON"))
    if "recursion" in msg.lower() or "depth" in msg.lower():
        return Refusal(
            422,
            "too_deep",
            "JSON nested too deeply",
            [{**where, "field": "", "message": "nesting exceeds the parser limit"}],
        )
    return Refusal(400, "malformed_json", "body is not valid JSON", [{**where, "field": "", "message": msg}])


def _validation_refusal(e: ValidationError, batch: bool, index: int | None = None) -> Refusal:
    errors = []
    for err in e.errors(include_url=False, include_input=False)[:MAX_REPORTED_ERRORS]:
        loc = list(err.get("loc", ()))
        i = index
        if batch and index is None:
            i = loc.pop(0) if loc and isinstance(loc[0], int) else None
        out: dict[str, Any] = {
            "field": ".".join(str(x) for x in loc),
            "message": err["msg"],
            "type": err["type"],
        }
        if batch:
            out = {"index": i, **out}
        errors.append(out)
    return Refusal(422, "validation_error", "events do not match the raw event contract v1", errors)


_ONE = TypeAdapter(RawEvent)
_MANY = TypeAdapter(list[RawEvent])


def parse_events(body: bytes, kind: str, batch: bool, limits: Limits) -> list[RawEvent]:
    """The request's events, validated against the contract straight from the body's bytes (one
    pydantic-core call for a JSON batch), then checked where the contract cannot say it in a schema:
    nesting depth and the integer range of free-form values. All or nothing: any problem refuses it."""
    if len(body) > limits.max_body_bytes:
        raise Refusal(413, "body_too_large", f"body exceeds {limits.max_body_bytes} bytes")
    if not body.strip():
        raise Refusal(400, "malformed_json", "body is empty")
    if kind == "ndjson":
        events = _ndjson(body, limits)
    elif batch:
        try:
            events = _MANY.validate_json(body)
        except ValidationError as e:
            first = e.errors(include_url=False, include_input=False)[0]
            if first["type"] == "json_invalid":
                raise _json_refusal(first, body, {}) from None
            if first["type"] == "list_type" and not first.get("loc"):
                raise Refusal(
                    422,
                    "validation_error",
                    "batch body must be a JSON array or NDJSON",
                    [{"field": "", "message": "expected a JSON array of event objects"}],
                ) from None
            raise _validation_refusal(e, True) from None
        if len(events) > limits.max_batch_events:
            raise Refusal(413, "too_many_events", f"batch exceeds {limits.max_batch_events} events")
        if not events:
            raise Refusal(422, "validation_error", "batch is empty", [{"field": "", "message": "no events"}])
    else:
        try:
            events = [_ONE.validate_json(body)]
        except ValidationError as e:
            first = e.errors(include_url=False, include_input=False)[0]
            if first["type"] == "json_invalid":
                raise _json_refusal(first, body, {}) from None
            if first["type"] == "model_type" and not first.get("loc"):
                raise Refusal(
                    422,
                    "validation_error",
                    "body must be one JSON object",
                    [{"field": "", "message": "expected a JSON object (use /v1/events/batch for lists)"}],
                ) from None
            raise _validation_refusal(e, False) from None
    check_free_form(events, limits, batch)
    return events


def _ndjson(body: bytes, limits: Limits) -> list[RawEvent]:
    events: list[RawEvent] = []
    errors: list[dict[str, Any]] = []
    for i, line in enumerate(x for x in body.split(b"\n") if x.strip()):
        if len(events) + len(errors) >= limits.max_batch_events:
            raise Refusal(413, "too_many_events", f"batch exceeds {limits.max_batch_events} events")
        try:
            events.append(_ONE.validate_json(line))
        except ValidationError as e:
            first = e.errors(include_url=False, include_input=False)[0]
            if first["type"] == "json_invalid":
                raise _json_refusal(first, line, {"index": i}) from None
            errors.extend(_validation_refusal(e, True, i).errors)
    if errors:
        raise Refusal(
            422,
            "validation_error",
            "events do not match the raw event contract v1",
            errors[:MAX_REPORTED_ERRORS],
        )
    if not events:
        raise Refusal(422, "validation_error", "batch is empty", [{"field": "", "message": "no events"}])
    return events


def check_free_form(events: list[RawEvent], limits: Limits, batch: bool) -> None:
    """Depth limit (422 too_deep) and the contract's integer range (422 validation_error), naming the
    item index and the field."""
    deep: list[dict[str, Any]] = []
    unsafe: list[dict[str, Any]] = []
    for i, ev in enumerate(events):
        got = free_form_problem(ev, limits.max_json_depth)
        if got is not None:
            field_path, message = got
            item = {**({"index": i} if batch else {}), "field": field_path, "message": message}
            (deep if message.startswith("nested") else unsafe).append(item)
    if deep:
        raise Refusal(422, "too_deep", "JSON nested too deeply", deep[:MAX_REPORTED_ERRORS])
    if unsafe:
        raise Refusal(
            422,
            "validation_error",
            "events do not match the raw event contract v1",
            unsafe[:MAX_REPORTED_ERRORS],
        )


Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


def encode_all(
    events: list[RawEvent], limits: Limits, envelope_max_bytes: int = ENVELOPE_MAX_BYTES
) -> list[tuple[Message, list[int]]]:
    """Kafka records of the stamped events (envelopes per org, with the indexes of the events each
    holds); an event larger than ``max_event_bytes`` as stored is refused (413 event_too_large, naming
    its index)."""
    try:
        return envelope_records(events, envelope_max_bytes, limits.max_event_bytes)
    except EventTooLarge as e:
        raise Refusal(
            413,
            "event_too_large",
            f"event exceeds {limits.max_event_bytes} bytes",
            [{"index": e.index, "field": "", "message": f"{e.size} bytes as stored"}],
        ) from None


def stamp(
    ev: RawEvent, *, producer: str, peer_ip: str | None, x_forwarded_for: str | None, now: datetime
) -> RawEvent:
    """What the ingest adds, in place: event_id (when absent), received_at, producer, the call's peer.

    - ``producer`` is the authenticated token's producer; a different self-declared value is kept in
      ``metadata.producer_claimed`` (never dropped).
    - If the event carries no ``request.peer_ip`` and no ``request.x_forwarded_for``, the ingest's own TCP
      peer and raw X-Forwarded-For header are the call's peer and are written there. If the producer
      described its own caller's peer, that wins (the ingest's TCP peer is the producer itself) and the
      ingest's view goes to ``metadata.ingest_peer_ip`` / ``metadata.ingest_x_forwarded_for``.

    The event was validated a moment ago and is owned by this request: its fields are set directly
    (what is set is of the contract's types and within its limits).
    """
    ev.received_at = now
    if ev.event_id is None:
        ev.event_id = uuid.uuid4()
    meta = ev.metadata
    if ev.producer and ev.producer != producer:
        meta["producer_claimed"] = ev.producer[:8192]
    ev.producer = producer
    req = ev.request
    xff = x_forwarded_for[:16384] if x_forwarded_for else None
    if req is None:
        ev.request = Request(peer_ip=peer_ip, x_forwarded_for=xff)
    elif req.peer_ip is None and req.x_forwarded_for is None:
        req.peer_ip = peer_ip
        req.x_forwarded_for = xff
    if peer_ip is not None:
        meta["ingest_peer_ip"] = peer_ip
    if x_forwarded_for is not None:
        meta["ingest_x_forwarded_for"] = x_forwarded_for[:8192]
        if len(x_forwarded_for) > 8192:  # said, not silent
            meta["ingest_x_forwarded_for_truncated"] = str(len(x_forwarded_for))
    return ev


def forwarded_for(header_lines: list[str]) -> str | None:
    """Repeated X-Forwarded-For lines as one list (RFC 9110: lines of a list header join with commas), so
    a proxy that appends its own line is read like one that extends the first."""
    lines = [x.strip() for x in header_lines if x.strip()]
    return ", ".join(lines) if lines else None
