"""Ingest metrics (``auditpipe_ingest_*``)."""

from __future__ import annotations

from services.common.metrics import counter, histogram

REQUESTS = counter(
    "ingest", "requests_total", "HTTP requests by endpoint and status code", ("endpoint", "code")
)
EVENTS_ACCEPTED = counter("ingest", "events_accepted_total", "Events acknowledged by Kafka")
EVENTS_REJECTED = counter(
    "ingest", "events_rejected_total", "Events refused or not acknowledged, by reason", ("reason",)
)
PUBLISH_LATENCY = histogram(
    "ingest",
    "publish_latency_seconds",
    "Time from the first send to the last acknowledgement of one request",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
