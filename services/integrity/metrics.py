"""Sealer metrics (``auditpipe_integrity_*``)."""

from __future__ import annotations

from services.common.metrics import counter, gauge, histogram

SEAL_RUNS = counter("integrity", "seal_runs_total", "Seal runs", labels=("outcome",))
DIGESTS = counter("integrity", "digests_total", "Digests signed and published")
SEALED_EVENTS = counter("integrity", "sealed_events_total", "Events added to sealed windows")
SEALED_HORIZON = gauge(
    "integrity", "sealed_horizon_timestamp_seconds", "Every row stored before this time is sealed"
)
SEAL_SECONDS = histogram(
    "integrity",
    "seal_duration_seconds",
    "Duration of one seal run",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
