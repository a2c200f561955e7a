"""Every SQL example in docs/analysts.md runs on the real ClickHouse with bound parameters and answers."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from services.common.clickhouse import make_client
from tests.sink.helpers import enriched, insert_events

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
pytestmark = pytest.mark.clickhouse


def _blocks() -> list[str]:
    return re.findall(r"```sql\n(.*?)```", DOC.read_text(), flags=re.S)


def test_every_example_runs_and_the_seed_questions_find_their_events(ch_settings) -> None:
    now = datetime.now(UTC)
    monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    last_week = monday - timedelta(minutes=1)  # last Sunday 23:59 UTC: last week, and within 7 days
    env_delete = enriched(
        1,
        org="org-acme",
        occurred_at=now - timedelta(days=2),
        action="environment:delete",
        event_type="delete",
        target={"type": "environment", "id": "env-9", "name": "Staging"},
        client_ip="198.51.100.1",
    )
    token_call = enriched(
        2,
        org="org-acme",
        occurred_at=now - timedelta(hours=3),
        actor={"type": "api_token", "id": "tok-1", "name": "ci token"},
        client_ip="2001:db8::7",
    )
    project_update = enriched(
        3,
        org="org-acme",
        occurred_at=last_week,
        project_id="proj-web",
        event_type="update",
        changes=[{"field": "replicas", "before": 1, "after": 3}],
        client_ip="203.0.113.77",
    )
    other_org = enriched(4, org="org-other", occurred_at=now - timedelta(days=2), action="environment:delete")
    values = [env_delete, token_call, project_update, other_org]
    insert_events(ch_settings, values)
    insert_events(ch_settings, [env_delete])  # a duplicate: never shown twice
    db = ch_settings.clickhouse_database
    client = make_client(ch_settings)
    params = {
        "org": "org-acme",
        "project": "proj-web",
        "token_id": "tok-1",
        "since": now - timedelta(days=1),
        "env_id": "env-9",
        "cidr": "203.0.113.0/24",
        "net": "::ffff:203.0.113.0",
        "bits": 120,
        "id": uuid.UUID(orjson.loads(token_call)["event_id"]),
        "q": "STAGING",
    }
    results = []
    blocks = _blocks()
    assert len(blocks) >= 10
    for sql in blocks:
        sql = sql.replace("audit.", f"{db}.").strip().rstrip(";")
        used = set(re.findall(r"\{(\w+):", re.sub(r"--[^\n]*", "", sql)))
        results.append(
            client.query(sql, parameters={k: v for k, v in params.items() if k in used}).result_rows
        )
    who_changed, unrolled, token, deletions, before_delete, ip_range, ip_range_fast = results[:7]
    assert [r[5] for r in who_changed] == ["Target 3"]
    assert [r[4] for r in unrolled] == ["replicas"]
    assert [r[6] for r in token] == ["2001:db8::7"]
    assert len(deletions) == 1 and deletions[0][3] == "env-9"  # once, despite the duplicate; not org-other
    assert before_delete[0][1] == "environment:delete"
    assert [r[4] for r in ip_range] == ["203.0.113.77"]
    assert [r[3] for r in ip_range_fast] == ["203.0.113.77"]
    details = results[7]
    assert orjson.loads(details[0][0])["actor"]["id"] == "tok-1"
    search = results[-1]
    assert [r[3] for r in search] == ["Staging"]
