"""auditpipe producer SDK: send audit events to the pipeline.

    from auditpipe import AuditClient
    client = AuditClient(mode="http", url="http://127.0.0.1:8080", token="...")
    client.emit({"org_id": "org-acme", "action": "deployment:create", "occurred_at": "2026-11-22T10:00:00Z"})
    client.close()

See docs/ingest.md (client, middleware) and docs/wire-format.md (producers in other languages).
"""

from __future__ import annotations

from auditpipe.client import AsyncAuditClient, AuditClient, BufferFull, DeliveryError
from auditpipe.middleware import AuditMiddleware, audit_action, audit_context

__all__ = [
    "AsyncAuditClient",
    "AuditClient",
    "AuditMiddleware",
    "BufferFull",
    "DeliveryError",
    "audit_action",
    "audit_context",
]
