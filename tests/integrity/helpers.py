"""Builders shared by the integrity tests: canonical enriched records (schemas.integrity.event_record),
written to ClickHouse exactly as the sink writes them, with a chosen storage time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.integrity import event_record
from services.common.clickhouse import make_client
from services.common.settings import Settings
from services.sink.rows import COLUMNS, row_from_json

ACTIONS = ["deployment:create", "environment:delete", "service:update", "variable:update"]


def record(i: int = 0, org: str = "org-a", occurred_at: datetime | None = None, **kw: Any) -> bytes:
    """A canonical enriched record (the bytes of audit.events.v1 / events.event_json)."""
    occ = occurred_at or datetime.now(UTC) - timedelta(seconds=i)
    t = occ.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    action = ACTIONS[i % len(ACTIONS)]
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "occurred_at": t,
        "received_at": t,
        "enriched_at": t,
        "org_id": org,
        "project_id": f"proj-{i % 3}",
        "actor": {"type": "user", "id": f"u-{i % 5}", "name": f"User {i % 5}"},
        "action": action,
        "event_type": action.split(":")[1],
        "target": {"type": action.split(":")[0], "id": f"t-{i}", "name": f"Target {i}"},
        "source": "console",
        "status": 200,
        "change": f"change {i}",
        "client_ip": f"203.0.113.{i % 250}",
        "request": {"method": "POST", "path": f"/api/things/{i}", "payload": {"n": i}},
        "metadata": {"i": str(i)},
    }
    ev.update(kw)
    return event_record(ev)


def insert(settings: Settings, values: list[bytes], inserted_at: datetime | None = None) -> None:
    """Rows as the sink writes them (event_json = the record bytes), optionally with a storage time."""
    rows = [row_from_json(v) for v in values]
    cols = list(COLUMNS)
    if inserted_at is not None:
        rows = [r + [inserted_at] for r in rows]
        cols.append("inserted_at")
    make_client(settings).insert(f"{settings.clickhouse_database}.events", rows, column_names=cols)


def integrity_settings(ch_settings: Settings, topics: dict[str, str], tmp_path, **kw: Any) -> Settings:  # noqa: ANN001
    """Settings of one test: its database, its topics, its folders, a fresh signing key, short windows."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key_file = tmp_path / "signing.key"
    if not key_file.exists():
        key_file.write_bytes(
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    integ = {
        "window_s": 60,
        "grace_s": 1.0,
        "interval_s": 1.0,
        "verify_publication_wait_s": 2.0,  # a deleted newest digest is reported 2 s after the first read
        "signing_key_file": key_file,
        "digest_topic": topics["audit.digests.v1"],
        "audit_topic": topics["audit.raw.v1"],
        **kw,
    }
    return ch_settings.model_copy(
        update={
            "integrity": ch_settings.integrity.model_copy(update=integ),
            "retention": ch_settings.retention.model_copy(
                update={"archive_dir": tmp_path / "archives", "audit_topic": topics["audit.raw.v1"]}
            ),
            "sink": ch_settings.sink.model_copy(
                update={
                    "topic": topics.get("audit.events.v1", "test.none"),
                    "consumer_group": f"test-sink-{uuid.uuid4().hex[:8]}",
                }
            ),
        }
    )
