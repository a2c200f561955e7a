"""Compose the rules: bytes from ``audit.raw.v1`` in, one outcome out (enriched, suppressed or dead).

Pure apart from the random salt of ``indicator`` mode: the clock (``now``) and the Kafka coordinates are
arguments, so the faust shell in ``services/enricher/app.py`` only moves bytes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.events_v1 import DeadLetter, EnrichedEvent, OrgSwitch, RawEvent
from services.common.kafka import encode_original
from services.common.settings import EnricherSettings
from tests.enricher.legacy.canonical import fast_content_hash
from tests.enricher.legacy.classify import (
    actor_type_for,
    event_type_for,
    is_webhook,
    source_for,
    target_type_for,
)
from tests.enricher.legacy.client_ip import TrustedProxies, resolve_client_ip
from tests.enricher.legacy.sensitive import Hasher, Scrubber

# Namespace of event ids the enricher derives (uuid5 of "topic/partition/offset"): fixed forever.
EVENT_ID_NAMESPACE = uuid.UUID("5b0c6f0e-6c1a-4d7e-9f55-8a7c0e0a1e11")
STAGE = "enricher"
MAX_ERRORS_REPORTED = 5


def derive_event_id(topic: str, partition: int, offset: int) -> uuid.UUID:
    """Deterministic id for a raw event without one: reprocessing after a crash yields the same id."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{topic}/{partition}/{offset}")


@dataclass(frozen=True)
class Enriched:
    event: EnrichedEvent
    value: bytes  # JSON of the event, content_hash included


@dataclass(frozen=True)
class Suppressed:
    """The org has audit switched off: not stored, only counted per day."""

    org_id: str
    day: str  # YYYY-MM-DD of occurred_at (UTC)
    event_id: str


@dataclass(frozen=True)
class Dead:
    letter: DeadLetter


Outcome = Enriched | Suppressed | Dead


def describe_validation(err: ValidationError) -> str:
    """Field locations and messages only: pydantic's default text would quote the (secret) input."""
    parts = []
    for e in err.errors(include_input=False, include_url=False)[:MAX_ERRORS_REPORTED]:
        loc = ".".join(str(x) for x in e.get("loc", ())) or "(root)"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = len(err.errors()) - MAX_ERRORS_REPORTED
    if more > 0:
        parts.append(f"(and {more} more)")
    return "; ".join(parts)


@dataclass
class Enricher:
    trusted: TrustedProxies
    scrubber: Scrubber
    disabled_orgs: frozenset[str]

    @classmethod
    def from_settings(cls, s: EnricherSettings) -> Enricher:
        key = s.hmac_key.get_secret_value().encode() if s.hmac_key is not None else None
        hasher = Hasher(mode=s.hash_mode, key=key if s.hash_mode == "hmac" else None)
        return cls(
            trusted=TrustedProxies.parse(s.trusted_proxies),
            scrubber=Scrubber.build(hasher, s.sensitive_key_patterns, s.sensitive_paths),
            disabled_orgs=frozenset(s.audit_disabled_orgs),
        )

    # -- one event ------------------------------------------------------------------------------
    def enrich(
        self, raw: RawEvent, *, fallback_event_id: uuid.UUID, fallback_received_at: datetime, now: datetime
    ) -> EnrichedEvent:
        """The enriched event, content hash set."""
        return self.enrich_doc(
            raw, fallback_event_id=fallback_event_id, fallback_received_at=fallback_received_at, now=now
        )[0]

    def enrich_doc(
        self, raw: RawEvent, *, fallback_event_id: uuid.UUID, fallback_received_at: datetime, now: datetime
    ) -> tuple[EnrichedEvent, dict[str, Any]]:
        """The enriched event and its JSON form (what is produced and hashed)."""
        data, paths = self.scrubber.scrub_event(raw.model_dump(mode="json"))
        req = raw.request
        headers = req.headers if req else None
        webhook = is_webhook(headers, req.path if req else None) or raw.source == "webhook"

        actor = dict(data.get("actor") or {})
        if actor.get("type") is None:
            actor["type"] = actor_type_for(actor.get("id"), actor.get("name"), actor.get("email"), webhook)
        if actor["type"] == "system" and not actor.get("name"):
            actor["name"] = "system"
        target = dict(data.get("target") or {})
        if not target.get("type"):
            target["type"] = target_type_for(raw.action)

        data.update(
            event_id=str(raw.event_id or fallback_event_id),
            received_at=(raw.received_at or fallback_received_at).isoformat(),
            actor=actor,
            target=target,
            event_type=raw.event_type or event_type_for(raw.action),
            source=raw.source
            or source_for(
                req.user_agent if req else None,
                headers,
                req.path if req else None,
                has_request=req is not None,
                has_actor=raw.actor is not None,
            ),
            client_ip=resolve_client_ip(req.peer_ip, req.x_forwarded_for, self.trusted) if req else None,
            sensitive_paths=paths,
            enriched_at=now.isoformat(),
            content_hash="0" * 64,
        )
        event = EnrichedEvent.model_validate(data)
        doc = event.model_dump(mode="json")
        doc["content_hash"] = fast_content_hash(doc)
        return event.model_copy(update={"content_hash": doc["content_hash"]}), doc

    def process(
        self,
        value: bytes | None,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        now: datetime,
    ) -> Outcome:
        """Decode, validate, switch, enrich; any failure becomes a dead letter (never an exception)."""
        parsed: Any = None
        try:
            if value is None:
                return self._dead(
                    "empty_message", "message has no value", None, None, topic, partition, offset
                )
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError as e:
                return self._dead("invalid_json", f"not JSON: {e}", value, None, topic, partition, offset)
            if not isinstance(parsed, dict):
                return self._dead(
                    "validation_error",
                    "(root): must be a JSON object",
                    value,
                    parsed,
                    topic,
                    partition,
                    offset,
                )
            try:
                raw = RawEvent.model_validate(parsed)
            except ValidationError as e:
                return self._dead(
                    "validation_error", describe_validation(e), value, parsed, topic, partition, offset
                )
            event_id = raw.event_id or derive_event_id(topic, partition, offset)
            if raw.org_id in self.disabled_orgs:
                return Suppressed(raw.org_id, raw.occurred_at.date().isoformat(), str(event_id))
            received = datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms is not None else now
            event, doc = self.enrich_doc(
                raw, fallback_event_id=event_id, fallback_received_at=received, now=now
            )
            return Enriched(event, orjson.dumps(doc))
        except Exception as e:  # noqa: BLE001 - a rule bug must dead-letter the event, not stop the stream
            detail = f"{type(e).__name__}: {self.scrubber.scrub_text(str(e))[:2000]}"
            return self._dead("enrichment_error", detail, value, parsed, topic, partition, offset)

    # -- dead letters ---------------------------------------------------------------------------
    def scrub_original(self, value: bytes | None, parsed: Any) -> str | None:
        """The original bytes with every secret we can find replaced."""
        if value is None:
            return None
        if parsed is not None:
            clean, _ = self.scrubber.scrub_any(parsed)
            return orjson.dumps(clean).decode()
        text = encode_original(value)
        if text is None or text.startswith("base64:"):
            # not UTF-8: decode leniently to find secrets, keep it readable
            text = value.decode("utf-8", errors="replace")
        return self.scrubber.scrub_text(text)

    def _dead(
        self,
        reason: str,
        error: str,
        value: bytes | None,
        parsed: Any,
        topic: str,
        partition: int,
        offset: int,
    ) -> Dead:
        event_id = org_id = None
        if isinstance(parsed, dict):
            eid, org = parsed.get("event_id"), parsed.get("org_id")
            event_id = str(eid)[:256] if isinstance(eid, str) else None
            org_id = str(org)[:256] if isinstance(org, str) else None
        return Dead(
            DeadLetter(
                stage=STAGE,
                reason=reason,
                error=self.scrubber.scrub_text(error),
                source_topic=topic,
                source_partition=partition,
                source_offset=offset,
                event_id=event_id,
                org_id=org_id,
                original=self.scrub_original(value, parsed),
            )
        )


def finalize(event: EnrichedEvent) -> EnrichedEvent:
    """Set ``content_hash`` over the event's JSON form (``schemas.integrity.content_hash_of``, computed
    by its byte-identical fast path)."""
    body = event.model_dump(mode="json")
    return event.model_copy(update={"content_hash": fast_content_hash(body)})


# -- the per-organisation switch ----------------------------------------------------------------
SWITCH_ACTION = "organization:audit_config_update"


def switch_event_id(org_id: str, enabled: bool, previous_offset: int) -> uuid.UUID:
    """Same id if the same transition is emitted twice (crash between emit and state write)."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"switch/{org_id}/{enabled}/{previous_offset}")


def switch_transitions(
    known: dict[str, bool], disabled: frozenset[str]
) -> dict[str, tuple[bool | None, bool]]:
    """org -> (audit_enabled before, after) for every org whose switch differs from the last known state.

    ``known`` holds the last recorded state (org -> audit_enabled). An org never recorded counts as
    enabled (the default), so only switching it off is a transition.
    """
    out: dict[str, tuple[bool | None, bool]] = {}
    for org in disabled:
        if known.get(org, True):
            out[org] = (known.get(org), False)
    for org, enabled in known.items():
        if not enabled and org not in disabled:
            out[org] = (False, True)
    return out


def parse_org_switch(key: bytes | None, value: bytes | None) -> OrgSwitch | None:
    """A record of the API's switch topic, or None when it is not one (wrong key, bad JSON, a tombstone)."""
    if key is None or value is None:
        return None
    try:
        rec = OrgSwitch.model_validate_json(value)
    except ValueError:
        return None
    return rec if rec.org_id == key.decode("utf-8", "replace") else None


def effective_disabled(settings_off: frozenset[str], api_state: dict[str, bool]) -> frozenset[str]:
    """Orgs whose events are not stored: listed in settings (an operator override the API cannot lift)
    or switched off through the query API (the latest record per org)."""
    return settings_off | frozenset(org for org, enabled in api_state.items() if not enabled)


def switch_event(
    org_id: str, before: bool | None, after: bool, *, event_id: uuid.UUID, now: datetime
) -> EnrichedEvent:
    """The audited record of turning audit logging on or off for an org (a system event)."""
    state = "on" if after else "off"
    event = EnrichedEvent(
        event_id=event_id,
        occurred_at=now,
        received_at=now,
        enriched_at=now,
        org_id=org_id,
        actor={"type": "system", "name": "system"},
        action=SWITCH_ACTION,
        event_type="update",
        target={"type": "organization", "id": org_id},
        source="system",
        change=f"Audit logging turned {state}",
        changes=[{"field": "audit_enabled", "before": True if before is None else before, "after": after}],
        metadata={"audit_enabled": str(after).lower(), "set_by": "settings:enricher.audit_disabled_orgs"},
        content_hash="0" * 64,
    )
    return finalize(event)
