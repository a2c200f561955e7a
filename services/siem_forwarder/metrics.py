"""Forwarder metrics, per destination (label ``destination``)."""

from __future__ import annotations

from services.common.metrics import counter, gauge, histogram

SENT = counter("forwarder", "sent_events_total", "Events confirmed by the destination", ("destination",))
RETRIED = counter(
    "forwarder", "retried_events_total", "Events re-sent after a transient failure", ("destination",)
)
DEAD_LETTERED = counter(
    "forwarder",
    "dead_lettered_events_total",
    "Events written to the destination's dead-letter topic",
    ("destination", "reason"),
)
FILTERED = counter("forwarder", "filtered_events_total", "Events skipped by the filter", ("destination",))
LAG = gauge("forwarder", "consumer_lag_messages", "Messages not yet confirmed", ("destination",))
LAST_SUCCESS = gauge(
    "forwarder", "last_success_timestamp_seconds", "Unix time of the last confirmed batch", ("destination",)
)
PAUSED = gauge(
    "forwarder", "paused", "1 while the destination is failing and consumption is paused", ("destination",)
)
DELIVERY_SECONDS = histogram(
    "forwarder", "delivery_seconds", "Time to confirm a batch, retries included", ("destination",)
)
