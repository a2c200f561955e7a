"""Archive metrics. Their names keep the ``auditpipe_sink_`` prefix they had when the job lived in the
sink, so existing dashboards and alerts (deploy/) keep working."""

from __future__ import annotations

from services.common.metrics import counter

ARCHIVED_ROWS = counter("sink", "archived_rows_total", "Rows written to verified archives and deleted")
ARCHIVE_RUNS = counter("sink", "archive_runs_total", "Archive runs", labels=("outcome",))
