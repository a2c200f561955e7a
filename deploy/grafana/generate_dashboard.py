"""Writes deploy/grafana/dashboards/auditpipe.json (the Grafana dashboard) from the panel list below.

Edit this file, not the JSON, then run ``python deploy/grafana/generate_dashboard.py``;
tests/deploy checks that the committed JSON equals this output and that every metric it names exists
in services/*/metrics.py (or the shared registry).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "auditpipe.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
panels: list[dict[str, Any]] = []
pid = 0
y = 0


def hq(q: float, metric: str, by: str = "") -> str:
    """histogram_quantile over a histogram's buckets, grouped by ``by`` (plus le)."""
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[5m])))"


def row(title: str) -> None:
    global pid, y
    pid += 1
    panels.append(
        {
            "type": "row",
            "title": title,
            "id": pid,
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "panels": [],
        }
    )
    y += 1


def ts(
    title: str,
    targets: list[tuple[str, str]],
    unit: str = "short",
    w: int = 12,
    x: int = 0,
    h: int = 8,
    desc: str = "",
) -> None:
    global pid
    pid += 1
    panels.append(
        {
            "type": "timeseries",
            "title": title,
            "id": pid,
            "datasource": DS,
            "description": desc,
            "gridPos": {"h": h, "w": w, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {
                "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                "tooltip": {"mode": "multi"},
            },
            "targets": [
                {"datasource": DS, "expr": e, "legendFormat": legend, "refId": chr(65 + i)}
                for i, (e, legend) in enumerate(targets)
            ],
        }
    )


def table(
    title: str, targets: list[tuple[str, str]], w: int = 24, x: int = 0, h: int = 8, desc: str = ""
) -> None:
    global pid
    pid += 1
    panels.append(
        {
            "type": "table",
            "title": title,
            "id": pid,
            "datasource": DS,
            "description": desc,
            "gridPos": {"h": h, "w": w, "x": x, "y": y},
            "targets": [
                {
                    "datasource": DS,
                    "expr": e,
                    "legendFormat": legend,
                    "refId": chr(65 + i),
                    "instant": True,
                    "format": "table",
                }
                for i, (e, legend) in enumerate(targets)
            ],
            "transformations": [{"id": "merge", "options": {}}],
            "fieldConfig": {"defaults": {}, "overrides": []},
            "options": {"showHeader": True},
        }
    )


def stat(title: str, expr: str, unit: str = "short", w: int = 6, x: int = 0, h: int = 4) -> None:
    global pid
    pid += 1
    panels.append(
        {
            "type": "stat",
            "title": title,
            "id": pid,
            "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
            "targets": [{"datasource": DS, "expr": expr, "refId": "A"}],
        }
    )


row("Overview")
stat("Services up", 'sum(up{job=~"auditpipe-.*"})', x=0)
stat("Ingested events/s", "sum(rate(auditpipe_ingest_events_accepted_total[5m]))", "ops", x=6)
stat("Stored rows/s", "sum(rate(auditpipe_sink_rows_inserted_total[5m]))", "ops", x=12)
stat("Total consumer lag", "sum(auditpipe_consumer_lag_messages)", x=18)
y += 4
row("Throughput per stage")
ts(
    "Events per second through each stage",
    [
        ("sum(rate(auditpipe_ingest_events_accepted_total[1m]))", "ingest accepted"),
        ("sum by (outcome) (rate(auditpipe_enricher_events_total[1m]))", "enricher {{outcome}}"),
        ("sum(rate(auditpipe_sink_rows_inserted_total[1m]))", "sink rows inserted"),
        (
            "sum by (destination) (rate(auditpipe_forwarder_sent_events_total[1m]))",
            "forwarded to {{destination}}",
        ),
    ],
    "ops",
    x=0,
    desc="Ingest accepted (Kafka acknowledged), enricher outcomes, rows stored in ClickHouse, "
    "events confirmed per SIEM destination.",
)
ts(
    "Ingest requests and rejections",
    [
        ("sum by (endpoint, code) (rate(auditpipe_ingest_requests_total[1m]))", "{{endpoint}} {{code}}"),
        ("sum by (reason) (rate(auditpipe_ingest_events_rejected_total[1m]))", "rejected: {{reason}}"),
    ],
    "reqps",
    x=12,
)
y += 8
ts(
    "Ingest publish latency (Kafka acknowledgement)",
    [
        (
            hq(0.5, "auditpipe_ingest_publish_latency_seconds"),
            "p50",
        ),
        (
            hq(0.99, "auditpipe_ingest_publish_latency_seconds"),
            "p99",
        ),
    ],
    "s",
    x=0,
)
ts(
    "Sink batches per second",
    [
        ("sum(rate(auditpipe_sink_batches_total[1m]))", "batches"),
        ("max(auditpipe_sink_buffered_rows)", "rows buffered (max)"),
    ],
    "short",
    x=12,
)
y += 8
row("Consumer lag")
ts(
    "Lag per consumer group",
    [
        ("sum by (service, group) (auditpipe_consumer_lag_messages)", "{{service}} / {{group}}"),
    ],
    "short",
    x=0,
    desc="Messages between each group's position and the end of the partitions it consumes.",
)
ts(
    "Lag per partition",
    [
        (
            "sum by (group, topic, partition) (auditpipe_consumer_lag_messages)",
            "{{group}} {{topic}}[{{partition}}]",
        ),
    ],
    "short",
    x=12,
)
y += 8
row("Dead letters")
ts(
    "Dead-lettered events per second",
    [
        ("sum by (reason) (rate(auditpipe_enricher_dead_letters_total[5m]))", "enricher: {{reason}}"),
        ("sum by (reason) (rate(auditpipe_sink_dead_lettered_total[5m]))", "sink: {{reason}}"),
        (
            "sum by (destination, reason) (rate(auditpipe_forwarder_dead_lettered_events_total[5m]))",
            "forwarder {{destination}}: {{reason}}",
        ),
    ],
    "ops",
    w=24,
    x=0,
)
y += 8
row("Enricher and query API")
ts(
    "Enricher outputs in flight and send retries",
    [
        ("sum(auditpipe_enricher_in_flight_messages)", "outputs awaiting broker ack"),
        ("sum by (topic) (rate(auditpipe_enricher_send_retries_total[5m]))", "send retries/s {{topic}}"),
    ],
    "short",
    x=0,
)
ts(
    "Query API latency p99 and server errors",
    [
        (
            hq(0.99, "auditpipe_query_api_request_seconds", "route"),
            "p99 {{route}}",
        ),
        ("sum by (route) (rate(auditpipe_query_api_errors_total[5m]))", "errors/s {{route}}"),
    ],
    "s",
    x=12,
)
y += 8
row("ClickHouse inserts (sink)")
ts(
    "Insert latency",
    [
        (
            hq(0.5, "auditpipe_sink_insert_duration_seconds"),
            "p50",
        ),
        (
            hq(0.99, "auditpipe_sink_insert_duration_seconds"),
            "p99",
        ),
    ],
    "s",
    x=0,
)
ts(
    "Insert retries and pauses",
    [
        ("sum(rate(auditpipe_sink_insert_retries_total[5m]))", "retries/s"),
        ("max(auditpipe_sink_paused)", "paused"),
        ("time() - max(auditpipe_sink_last_success_timestamp_seconds)", "seconds since last committed batch"),
    ],
    "short",
    x=12,
)
y += 8
row("SIEM destinations (forwarder)")
ts(
    "Sent / retried / dead-lettered per destination",
    [
        ("sum by (destination) (rate(auditpipe_forwarder_sent_events_total[1m]))", "{{destination}} sent"),
        (
            "sum by (destination) (rate(auditpipe_forwarder_retried_events_total[1m]))",
            "{{destination}} retried",
        ),
        (
            "sum by (destination) (rate(auditpipe_forwarder_dead_lettered_events_total[1m]))",
            "{{destination}} dead-lettered",
        ),
    ],
    "ops",
    x=0,
)
ts(
    "Delivery latency per destination (p99)",
    [
        (
            hq(0.99, "auditpipe_forwarder_delivery_seconds", "destination"),
            "{{destination}}",
        ),
    ],
    "s",
    x=12,
)
y += 8
table(
    "Destinations now",
    [
        (
            "time() - max by (destination) (auditpipe_forwarder_last_success_timestamp_seconds)",
            "seconds since last success",
        ),
        ("max by (destination) (auditpipe_forwarder_consumer_lag_messages)", "waiting"),
        ("max by (destination) (auditpipe_forwarder_paused)", "paused"),
        ("sum by (destination) (increase(auditpipe_forwarder_sent_events_total[1h]))", "sent (1h)"),
        (
            "sum by (destination) (increase(auditpipe_forwarder_dead_lettered_events_total[1h]))",
            "dead-lettered (1h)",
        ),
    ],
    w=24,
    x=0,
)
y += 8

dash = {
    "uid": "auditpipe-overview",
    "title": "auditpipe",
    "description": "auditpipe pipeline: throughput per stage, consumer lag, dead letters, "
    "ClickHouse inserts, SIEM destinations",
    "tags": ["auditpipe"],
    "timezone": "utc",
    "schemaVersion": 39,
    "version": 1,
    "editable": False,
    "refresh": "30s",
    "time": {"from": "now-3h", "to": "now"},
    "templating": {
        "list": [
            {
                "name": "datasource",
                "label": "Prometheus",
                "type": "datasource",
                "query": "prometheus",
                "current": {"text": "Prometheus", "value": "auditpipe-prometheus"},
                "hide": 0,
            }
        ]
    },
    "annotations": {"list": []},
    "panels": panels,
}


def render() -> str:
    return json.dumps(dash, indent=2) + "\n"


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.write_text(render())
    print(f"wrote {out}")
