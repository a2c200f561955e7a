"""Enricher metrics (``auditpipe_enricher_*``), registered in the one shared registry."""

from __future__ import annotations

from services.common.metrics import counter, gauge

SERVICE = "enricher"

EVENTS = counter(SERVICE, "events_total", "Raw events handled, by outcome", ("outcome",))
DEAD_LETTERS = counter(SERVICE, "dead_letters_total", "Raw events sent to the dead-letter topic", ("reason",))
SUPPRESSED = gauge(
    SERVICE,
    "suppressed_events",
    "Events not stored because the org has audit switched off, per org and day (occurred_at, UTC)",
    ("org_id", "day"),
)
SEND_RETRIES = counter(SERVICE, "send_retries_total", "Kafka sends retried after an error", ("topic",))
IN_FLIGHT = gauge(SERVICE, "in_flight_messages", "Outputs sent and not yet acknowledged by the broker")
