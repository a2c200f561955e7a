"""Sink metrics (``auditpipe_sink_*``), declared once; the consumer lag gauge is the shared CONSUMER_LAG."""

from __future__ import annotations

from services.common.metrics import counter, gauge, histogram

ROWS_INSERTED = counter("sink", "rows_inserted_total", "Rows inserted into ClickHouse")
BATCHES = counter("sink", "batches_total", "Batches inserted and committed")
INSERT_SECONDS = histogram(
    "sink",
    "insert_duration_seconds",
    "Duration of one successful write of a batch: records (splits included), event ids, conflicts",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
REDELIVERED = counter(
    "sink",
    "redelivered_total",
    "Records skipped because their event_id is already stored with the same content (exact redeliveries)",
)
CONFLICTS = counter(
    "sink",
    "conflicts_total",
    "Records whose event_id is already stored with other content: kept in event_conflicts, never stored",
)
RETRIES = counter("sink", "insert_retries_total", "Insert attempts that failed transiently and were retried")
DEAD_LETTERED = counter(
    "sink", "dead_lettered_total", "Messages sent to the dead-letter topic", labels=("reason",)
)
LAST_SUCCESS = gauge("sink", "last_success_timestamp_seconds", "Unix time of the last committed batch")
PAUSED = gauge("sink", "paused", "1 while fetching is paused (buffer full or ClickHouse unavailable)")
BUFFERED_ROWS = gauge("sink", "buffered_rows", "Rows held in the current batch")
