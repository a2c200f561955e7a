"""Fixtures for the query API: tokens, an app over a fresh migrated database, and row insertion exactly as
the sink writes rows (services.sink.rows)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from schemas.events_v1 import EnrichedEvent
from services.common.clickhouse import make_client
from services.common.migrations import MIGRATIONS_DIR, migrate
from services.common.settings import QueryToken, Settings
from services.query_api.auth import token_sha256
from services.query_api.main import create_app
from services.sink.rows import COLUMNS, row_from_event

TOKENS = {
    "viewer": ("viewer-token-0123456789", dict(roles=["EventView"])),
    "manager": ("manager-token-0123456789", dict(roles=["EventView", "Manager"])),
    "acme": ("acme-token-0123456789", dict(roles=["EventView"], org="org-acme")),
    "acme_mgr": ("acme-mgr-token-0123456789", dict(roles=["Manager"], org="org-acme")),
    "acme_web_prod": (
        "acme-web-prod-token-0123456789",
        dict(roles=["EventView"], org="org-acme", projects=["proj-web"], environments=["env-production"]),
    ),
    # projects/environments without an org (a platform-wide "production web" reader)
    "web_prod": (
        "web-prod-token-0123456789",
        dict(roles=["EventView"], projects=["proj-web"], environments=["env-production"]),
    ),
    "norole": ("norole-token-0123456789", dict(roles=[])),
    # a Manager narrowed to one project of org-acme; a Manager of another org
    "acme_web_mgr": (
        "acme-web-mgr-token-0123456789",
        dict(roles=["Manager"], org="org-acme", projects=["proj-web"]),
    ),
    "other_mgr": ("other-mgr-token-0123456789", dict(roles=["EventView", "Manager"], org="org-other")),
}

NOW = datetime.now(UTC).replace(microsecond=0)


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name][0]}"}


def query_tokens() -> list[QueryToken]:
    return [QueryToken(principal=k, sha256=token_sha256(t), **kw) for k, (t, kw) in TOKENS.items()]


def make_event(i: int = 0, **over: Any) -> EnrichedEvent:
    """A realistic enriched event; ``over`` replaces top-level fields (actor/target/request as dicts)."""
    t = over.pop("occurred_at", NOW - timedelta(minutes=i))
    ev: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": t,
        "received_at": t + timedelta(milliseconds=50),
        "enriched_at": t + timedelta(milliseconds=80),
        "org_id": "org-acme",
        "project_id": "proj-web",
        "environment_id": "env-production",
        "actor": {"type": "user", "id": "u-42", "name": "Ada Lovelace", "email": "ada@acme.test"},
        "action": "deployment:create",
        "event_type": "create",
        "target": {"type": "deployment", "id": f"dep-{i}", "name": f"web v1.{i} to production"},
        "source": "console",
        "status": 201,
        "change": f"Deployed release 1.{i} to Production",
        "client_ip": "203.0.113.7",
        "request": {
            "method": "POST",
            "path": "/api/projects/proj-web/deployments",
            "query": {"dry_run": "false"},
            "payload": {"release": f"1.{i}", "environment": "env-production"},
            "user_agent": "Mozilla/5.0",
            "peer_ip": "10.0.0.5",
        },
        "metadata": {"release": f"1.{i}"},
        "changes": [{"field": "release", "before": f"1.{i - 1}", "after": f"1.{i}"}],
        "snapshot": {"id": f"dep-{i}", "state": "Queued"},
        "producer": "console-backend",
        "content_hash": "a" * 64,
    }
    ev.update(over)
    return EnrichedEvent.model_validate(ev)


@pytest.fixture
def api_settings(ch_settings: Settings, tmp_path) -> Settings:  # noqa: ANN001
    qa = ch_settings.query_api.model_copy(update={"tokens": query_tokens(), "audit_topic": "unused"})
    ret = ch_settings.retention.model_copy(update={"archive_dir": tmp_path / "archives"})
    return ch_settings.model_copy(update={"query_api": qa, "retention": ret})


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as c:
        yield c


@pytest.fixture
def insert(api_settings: Settings) -> Callable[[list[EnrichedEvent]], None]:
    ch = make_client(api_settings)
    table = f"{api_settings.clickhouse_database}.events"

    def do(events: list[EnrichedEvent]) -> None:
        # insert_deduplicate=0: a re-inserted block (a redelivery in tests) must really land twice
        ch.insert(
            table,
            [row_from_event(e) for e in events],
            column_names=COLUMNS,
            settings={"insert_deduplicate": 0},
        )

    return do


@pytest.fixture(scope="module")
def plain_client(clickhouse_settings: Settings) -> Iterator[TestClient]:
    """An app with tokens but no per-test database: for requests refused before any query runs."""
    qa = clickhouse_settings.query_api.model_copy(update={"tokens": query_tokens(), "audit_topic": "unused"})
    s = clickhouse_settings.model_copy(update={"query_api": qa, "clickhouse_database": "qa_no_such_db"})
    with TestClient(create_app(s)) as c:
        yield c


@contextmanager
def database_before(
    settings: Settings, version: int, tmp_path: Path, events: list[EnrichedEvent]
) -> Iterator[tuple[Any, str]]:
    """A fresh database migrated up to (not including) migration ``version``, holding ``events``, for
    testing that migration's backfill; dropped afterwards. Yields (client, database name)."""
    early = tmp_path / f"before-{version:04d}"
    early.mkdir()
    for p in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(p.name[:4]) < version:
            shutil.copy(p, early / p.name)
    db = f"test_before_{version:04d}_{uuid.uuid4().hex[:10]}"
    ch = make_client(settings)
    try:
        migrate(ch, db, early)
        ch.insert(f"{db}.events", [row_from_event(e) for e in events], column_names=COLUMNS)
        yield ch, db
    finally:
        ch.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def copy_and_events(settings: Settings, table: str, cols: str) -> tuple[list[str], list[str]]:
    """The distinct ``cols`` of a view-fed copy table and of events, each sorted (as strings)."""
    db = settings.clickhouse_database
    ch = make_client(settings)
    side = ch.query(f"SELECT DISTINCT {cols} FROM {db}.{table}").result_rows
    main = ch.query(f"SELECT DISTINCT {cols} FROM {db}.events").result_rows
    return sorted(map(str, side)), sorted(map(str, main))


def archive_day(settings: Settings, org: str, when: datetime, events: list[EnrichedEvent]) -> set[str]:
    """Delete the org-day holding ``when`` with the archive job's own delete; the ids it removed."""
    from services.archive.store import delete_rows

    day = when.replace(hour=0, minute=0, second=0, microsecond=0)
    end = day + timedelta(days=1)
    params = {"org": org, "start": day, "end": end, "snap": NOW + timedelta(days=1)}
    delete_rows(make_client(settings), settings.clickhouse_database, params)
    return {str(e.event_id) for e in events if e.org_id == org and day <= e.occurred_at < end}
