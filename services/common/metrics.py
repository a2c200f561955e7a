"""The one metrics registry and the helpers every metric is declared with.

``counter`` / ``gauge`` / ``histogram`` build the name ``auditpipe_<service>_<what>`` (``what`` ends with
the unit) on the shared :data:`REGISTRY`; each service declares its metrics once, as module constants
of its own ``metrics.py`` (``services/ingest/metrics.py`` …; the query API in ``main.py``), so a typo is
an AttributeError, not a silently new series, and the deploy test checks every registered name. The
consumer-lag gauge shared by every Kafka consumer lives here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)


def counter(service: str, what: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
    return Counter(f"auditpipe_{service}_{what}", doc, labels, registry=REGISTRY)


def gauge(service: str, what: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return Gauge(f"auditpipe_{service}_{what}", doc, labels, registry=REGISTRY)


def histogram(
    service: str, what: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] | None = None
) -> Histogram:
    kw = {"buckets": buckets} if buckets else {}
    return Histogram(f"auditpipe_{service}_{what}", doc, labels, registry=REGISTRY, **kw)


# Shared by every Kafka consumer in auditpipe: lag per group/topic/partition.
CONSUMER_LAG = Gauge(
    "auditpipe_consumer_lag_messages",
    "Messages between the committed/consumed position and the partition end",
    ("service", "group", "topic", "partition"),
    registry=REGISTRY,
)


def render() -> tuple[bytes, str]:
    """Prometheus exposition of the registry: (body, content type)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
