"""Compose the rules: one raw record (bytes) in, the outcome of each event it holds out.

A record of ``audit.raw.v1`` holds one event or an envelope of events (schemas/events_v1.py
``RawRecord``). Each event is enriched, suppressed (its org has audit off) or dead-lettered on its own.
Pure and deterministic: the same record at the same coordinates always gives the same bytes — the
clock is the record's Kafka timestamp (``enriched_at``; ``received_at`` when the producer gave none),
event ids missing from the raw event derive from the record's coordinates, indicator salts from the
deployment's secret and the event (``sensitive.Hasher``). The faust shell in ``services/enricher/app.py``
only moves bytes.

Validation happens once, from the record's bytes, straight to plain JSON data (``validate.py``: a
validator derived from the model's pydantic-core schema, in Rust, returning what ``model_dump(mode="json")``
would); a record it refuses, or one holding NaN or infinity, goes through the model itself, whose errors
name the field. The event is then scrubbed in place in one walk that also decides how it is
canonicalised, classified, and written as its canonical record (``canonical.py``). No per-event model
is built.
"""

from __future__ import annotations

import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from schemas.events_v1 import MAX_EVENT_BYTES, DeadLetter, RawEvent
from services.common.kafka import encode_original
from services.common.settings import EnricherSettings
from services.enricher.rules.canonical import record_bytes
from services.enricher.rules.classify import (
    actor_type_for,
    event_type_for,
    is_webhook,
    source_from,
    target_type_for,
    ua_kind,
)
from services.enricher.rules.client_ip import TrustedProxies, resolve_client_ip
from services.enricher.rules.sensitive import RECORD_PREFILTER, Hasher, Scrubber, UnsafeInteger, Walk
from services.enricher.rules.switch import suppressed
from services.enricher.rules.validate import NonFiniteNumber, event_from_json, events_from_json

# Namespace of event ids the enricher derives (uuid5 of "topic/partition/offset[/index]"): fixed forever.
EVENT_ID_NAMESPACE = uuid.UUID("5b0c6f0e-6c1a-4d7e-9f55-8a7c0e0a1e11")
STAGE = "enricher"
MAX_ERRORS_REPORTED = 5
CACHE_MAX = 50_000  # bounded memo sizes (client IPs, user agents, actions)

_ONE = TypeAdapter(RawEvent)
_MANY = TypeAdapter(list[RawEvent])


def derive_event_id(topic: str, partition: int, offset: int, index: int | None = None) -> uuid.UUID:
    """Deterministic id for a raw event without one: reprocessing after a crash yields the same id."""
    tail = "" if index is None else f"/{index}"
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{topic}/{partition}/{offset}{tail}")


def format_time(ts_ms: int) -> str:
    """A Kafka timestamp as the contract writes times (RFC 3339, UTC, ``Z``; pydantic's JSON form)."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def describe_validation(err: ValidationError, prefix: str = "") -> str:
    """Field locations and messages only: pydantic's default text would quote the (secret) input."""
    parts = []
    errors = err.errors(include_input=False, include_url=False)
    for e in errors[:MAX_ERRORS_REPORTED]:
        loc = ".".join(str(x) for x in e.get("loc", ())) or "(root)"
        parts.append(f"{prefix}{loc}: {e.get('msg', 'invalid')}")
    more = len(errors) - MAX_ERRORS_REPORTED
    if more > 0:
        parts.append(f"(and {more} more)")
    return "; ".join(parts)


def where(exc: BaseException) -> str:
    """``Type at file:line`` of the innermost frame: a bug's location without its message, which could
    quote the event (and so a secret)."""
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return type(exc).__name__
    f = tb[-1]
    return f"{type(exc).__name__} at {f.filename.rsplit('/', 1)[-1]}:{f.lineno}"


@dataclass
class Results:
    """Outcomes of a batch of records, in record order (what the shell produces, then acks).

    ``events``: (key, value) of each enriched record for ``audit.events.v1`` (key = event id);
    ``dead``: dead letters; ``suppressed``: (org, day, source partition) -> events not stored.
    """

    events: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    suppressed: Counter[tuple[str, str, int]] = field(default_factory=Counter)

    @property
    def suppressed_total(self) -> int:
        return sum(self.suppressed.values())

    def extend(self, other: Results) -> None:
        self.events += other.events
        self.dead += other.dead
        self.suppressed.update(other.suppressed)


# Single-event outcomes, for callers and tests that look at one event at a time.
@dataclass(frozen=True)
class Enriched:
    key: bytes
    value: bytes  # the canonical record, content_hash included

    @property
    def doc(self) -> dict[str, Any]:
        return orjson.loads(self.value)


@dataclass(frozen=True)
class Suppressed:
    """The org has audit switched off: not stored, only counted per day."""

    org_id: str
    day: str  # YYYY-MM-DD of occurred_at (UTC)


@dataclass(frozen=True)
class Dead:
    letter: DeadLetter


Outcome = Enriched | Suppressed | Dead


@dataclass
class Enricher:
    trusted: TrustedProxies
    scrubber: Scrubber
    disabled_orgs: frozenset[str]
    # Validate straight to JSON data (rules/validate.py); False: through the model and its dump, the
    # reference the fast path is tested against (and the path a record with NaN or infinity takes).
    fast_validation: bool = True
    _ips: dict[tuple[str | None, str | None], str | None] = field(default_factory=dict, repr=False)
    _uas: dict[str | None, str | None] = field(default_factory=dict, repr=False)
    _actions: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, s: EnricherSettings) -> Enricher:
        key = s.hmac_key.get_secret_value().encode() if s.hmac_key is not None else None
        hasher = Hasher(
            mode=s.hash_mode,
            key=key if s.hash_mode == "hmac" else None,
            secret=s.indicator_secret.get_secret_value().encode(),
        )
        return cls(
            trusted=TrustedProxies.parse(s.trusted_proxies),
            scrubber=Scrubber.build(hasher, s.sensitive_key_patterns, s.sensitive_paths),
            disabled_orgs=frozenset(s.audit_disabled_orgs),
        )

    # -- records --------------------------------------------------------------------------------
    def process_record(
        self,
        value: bytes | None,
        out: Results,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
    ) -> None:
        """Every event of one raw record into ``out``; never raises."""
        try:
            self._record(value, out, topic, partition, offset, timestamp_ms)
        except Exception as e:  # noqa: BLE001 - a rule bug must dead-letter the record, not stop the stream
            out.dead.append(self._dead("enrichment_error", where(e), value, None, topic, partition, offset))

    def process(
        self,
        value: bytes | None,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
    ) -> list[Outcome]:
        """The outcome of each event of one record (a convenience over :meth:`process_record`)."""
        r = Results()
        self.process_record(
            value, r, topic=topic, partition=partition, offset=offset, timestamp_ms=timestamp_ms
        )
        outs: list[Outcome] = [Enriched(k, v) for k, v in r.events]
        outs += [Dead(x) for x in r.dead]
        for (org, day, _), n in r.suppressed.items():
            outs += [Suppressed(org, day)] * n
        return outs

    def _record(
        self,
        value: bytes | None,
        out: Results,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
    ) -> None:
        coords = (topic, partition, offset)
        if value is None:
            out.dead.append(self._dead("empty_message", "message has no value", None, None, *coords))
            return
        head = value[:1]
        if head in (b" ", b"\t", b"\r", b"\n"):
            head = value.lstrip()[:1]
        stamp = format_time(timestamp_ms) if timestamp_ms is not None and timestamp_ms >= 0 else None
        detect = RECORD_PREFILTER.search(value) is not None
        if head == b"[":
            self._envelope(value, out, coords, stamp, detect)
            return
        if len(value) > MAX_EVENT_BYTES:
            error = f"(root): event is {len(value)} bytes, more than the contract's {MAX_EVENT_BYTES}"
            out.dead.append(self._dead("validation_error", error, value, _loads(value), *coords))
            return
        if self.fast_validation:
            try:
                doc = event_from_json(value)
            except ValidationError:
                pass  # the model names what is wrong, below
            else:
                if self._fast([doc], out, coords, stamp, detect, value, single=True):
                    return
        try:
            raw = _ONE.validate_json(value)
        except ValidationError as e:
            parsed = _loads(value)
            if parsed is None:
                out.dead.append(self._dead("invalid_json", "not JSON", value, None, *coords))
            else:
                error = (
                    describe_validation(e) if isinstance(parsed, dict) else "(root): must be a JSON object"
                )
                out.dead.append(self._dead("validation_error", error, value, parsed, *coords))
            return
        doc = raw.model_dump(mode="json")
        self._event(doc, out, coords, None, stamp, detect, value)

    def _envelope(
        self, value: bytes, out: Results, coords: tuple[str, int, int], stamp: str | None, detect: bool
    ) -> None:
        if self.fast_validation and len(value) <= MAX_EVENT_BYTES:
            try:
                fast = events_from_json(value)
            except ValidationError:
                fast = None  # some event is invalid: the model names it, below
            if fast and self._fast(fast, out, coords, stamp, detect, None, single=False):
                return
        try:
            docs = _MANY.dump_python(_MANY.validate_json(value), mode="json")
        except ValidationError:
            docs = None
        if docs is not None and len(value) <= MAX_EVENT_BYTES:
            if not docs:
                out.dead.append(self._dead("validation_error", "(root): empty envelope", value, [], *coords))
            for i, doc in enumerate(docs):
                self._event(doc, out, coords, i, stamp, detect, None)
            return
        # Some event is invalid (or the envelope is big): validate item by item, each on its own.
        parsed = _loads(value)
        if not isinstance(parsed, list):
            reason = "invalid_json" if parsed is None else "validation_error"
            out.dead.append(self._dead(reason, "not a JSON array of events", value, parsed, *coords))
            return
        if not parsed:
            out.dead.append(self._dead("validation_error", "(root): empty envelope", value, parsed, *coords))
        for i, item in enumerate(parsed):
            item_bytes = orjson.dumps(item)
            if len(item_bytes) > MAX_EVENT_BYTES:
                error = f"[{i}]: event is {len(item_bytes)} bytes, more than the contract's {MAX_EVENT_BYTES}"
                out.dead.append(self._dead("validation_error", error, item_bytes, item, *coords))
                continue
            try:
                raw = _ONE.validate_python(item)
            except ValidationError as e:
                error = describe_validation(e, f"[{i}].")
                out.dead.append(self._dead("validation_error", error, item_bytes, item, *coords))
                continue
            self._event(raw.model_dump(mode="json"), out, coords, i, stamp, detect, None)

    def _fast(
        self,
        docs: list[dict[str, Any]],
        out: Results,
        coords: tuple[str, int, int],
        stamp: str | None,
        detect: bool,
        original: bytes | None,
        *,
        single: bool,
    ) -> bool:
        """Enrich the events of one record as validate.py gave them; False, with ``out`` untouched, when
        the record must take the model path (NaN or infinity inside a value replaced by its indicator)."""
        local = Results()
        try:
            for i, doc in enumerate(docs):
                self._event(doc, local, coords, None if single else i, stamp, detect, original, fast=True)
        except NonFiniteNumber:
            return False
        out.extend(local)
        return True

    # -- one event ------------------------------------------------------------------------------
    def _event(
        self,
        doc: dict[str, Any],
        out: Results,
        coords: tuple[str, int, int],
        index: int | None,
        stamp: str | None,
        detect: bool,
        original: bytes | None,
        *,
        fast: bool = False,
    ) -> None:
        """Enrich one validated event (its plain JSON data, modified in place) into ``out``.

        ``fast``: the data came from rules/validate.py, and a NaN or infinite number in it raises
        :class:`NonFiniteNumber` for the caller to take the model path (never otherwise)."""
        try:
            org = doc["org_id"]
            action = doc["action"]
            if self.disabled_orgs and suppressed(org, action, doc.get("producer"), self.disabled_orgs):
                out.suppressed[(org, doc["occurred_at"][:10], coords[1])] += 1
                return
            if doc["event_id"] is None:
                doc["event_id"] = str(derive_event_id(*coords, index))
            out.events.append(self.enrich_doc(doc, stamp, detect))
        except UnsafeInteger as e:
            prefix = "" if index is None else f"[{index}]."
            letter = self._dead(
                "validation_error", f"{prefix}{e}", original, doc, *coords, event_id=doc.get("event_id")
            )
            out.dead.append(letter)
        except Exception as e:  # noqa: BLE001 - a rule bug must dead-letter the event, not stop the stream
            if fast and isinstance(e, NonFiniteNumber):
                raise
            letter = self._dead("enrichment_error", where(e), original, doc, *coords)
            out.dead.append(letter)

    def enrich_doc(self, doc: dict[str, Any], stamp: str | None, detect: bool = True) -> tuple[bytes, bytes]:
        """(key, canonical record) of one validated raw event given as plain JSON data with its
        ``event_id`` set; ``doc`` is scrubbed and enriched in place. Raises :class:`UnsafeInteger`."""
        event_id: str = doc["event_id"]
        req = doc["request"]
        raw_actor = doc["actor"]
        if req is not None:
            ua, headers, path = req["user_agent"], req["headers"], req["path"]
            peer, xff = req["peer_ip"], req["x_forwarded_for"]
        else:
            ua = headers = path = peer = xff = None
        webhook = doc["source"] == "webhook" or is_webhook(headers, path)

        w = Walk(event_id=event_id, detect=detect)
        self.scrubber.scrub_event(doc, w)

        actor = doc["actor"] or {"type": None, "id": None, "name": None, "email": None}
        if actor["type"] is None:
            actor["type"] = actor_type_for(actor["id"], actor["name"], actor["email"], webhook)
        if actor["type"] == "system" and not actor["name"]:
            actor["name"] = "system"
        doc["actor"] = actor
        target = doc["target"] or {"type": None, "id": None, "name": None}
        action = doc["action"]
        cached = self._actions.get(action)
        if cached is None:
            cached = (event_type_for(action), target_type_for(action))
            if len(self._actions) < CACHE_MAX:
                self._actions[action] = cached
        if not target["type"]:
            target["type"] = cached[1]
        doc["target"] = target
        if not doc["event_type"]:  # absent or empty: the producer said nothing
            doc["event_type"] = cached[0]
        if not doc["source"]:
            kind = self._uas.get(ua, "?")
            if kind == "?":
                kind = ua_kind(ua)
                if len(self._uas) >= CACHE_MAX:
                    self._uas.clear()
                self._uas[ua] = kind
            doc["source"] = source_from(kind, webhook, headers, path, req is not None, raw_actor is not None)
        doc["client_ip"] = self._client_ip(peer, xff) if req is not None else None
        doc["sensitive_paths"] = sorted(set(w.found))
        received = doc["received_at"] or stamp or doc["occurred_at"]
        doc["received_at"] = received
        doc["enriched_at"] = stamp or received
        value, _ = record_bytes(doc)
        return event_id.encode(), value

    def _client_ip(self, peer: str | None, xff: str | None) -> str | None:
        k = (peer, xff)
        ip = self._ips.get(k, "?")
        if ip == "?":
            ip = resolve_client_ip(peer, xff, self.trusted)
            if len(self._ips) >= CACHE_MAX:
                self._ips.clear()
            self._ips[k] = ip
        return ip

    # -- dead letters ---------------------------------------------------------------------------
    def scrub_original(self, value: bytes | None, parsed: Any, event_id: str = "") -> str | None:
        """The original bytes with every secret we can find replaced."""
        if parsed is not None:
            try:
                return orjson.dumps(self.scrubber.scrub_any(parsed, event_id)[0]).decode()
            except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits: scrub the text instead
                if value is None:
                    value = repr(parsed).encode()
        if value is None:
            return None
        text = encode_original(value)
        if text is None or text.startswith("base64:"):
            # not UTF-8: decode leniently to find secrets, keep it readable
            text = value.decode("utf-8", errors="replace")
        return self.scrubber.scrub_text(text, event_id)

    def _dead(
        self,
        reason: str,
        error: str,
        value: bytes | None,
        parsed: Any,
        topic: str,
        partition: int,
        offset: int,
        event_id: Any = None,
    ) -> DeadLetter:
        """A dead letter with every secret we can find scrubbed; never raises."""
        org_id = None
        if isinstance(parsed, dict):
            eid, org = parsed.get("event_id"), parsed.get("org_id")
            event_id = event_id or (str(eid)[:256] if isinstance(eid, str) else None)
            org_id = str(org)[:256] if isinstance(org, str) else None
        event_id = str(event_id)[:256] if event_id is not None else None
        try:
            original = self.scrub_original(value, parsed, event_id or "")
            error = self.scrubber.scrub_text(error, event_id or "")
        except Exception as e:  # noqa: BLE001 - the letter must go out even when its content cannot be scrubbed
            original = None
            error = f"{reason}; original withheld (could not be scrubbed: {where(e)})"
        return DeadLetter(
            stage=STAGE,
            reason=reason,
            error=error,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            event_id=event_id,
            org_id=org_id,
            original=original,
        )


def _loads(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


__all__ = [
    "Dead",
    "Enriched",
    "Enricher",
    "Outcome",
    "Results",
    "Suppressed",
    "derive_event_id",
    "describe_validation",
    "format_time",
]
