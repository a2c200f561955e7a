"""Enricher metrics (``auditpipe_enricher_*``), registered in the one shared registry."""

from __future__ import annotations

from services.common.metrics import counter, gauge, histogram

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
PROCESS_SECONDS = histogram(
    SERVICE,
    "process_seconds",
    "Time from taking a raw event to the broker's ack of its output",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
IN_FLIGHT = gauge(SERVICE, "in_flight_messages", "Outputs sent and not yet acknowledged by the broker")
