"""The shipped users/grants examples parse on the real ClickHouse and keep events immutable."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from services.common.clickhouse import make_client

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "clickhouse"
WRITES = re.compile(r"\b(ALTER UPDATE|ALTER TABLE|TRUNCATE|DROP|ALL|ALTER DELETE|INSERT)\b")


def _statements() -> list[str]:
    text = "\n".join(line.split("--", 1)[0] for line in (DEPLOY / "grants.sql").read_text().splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


@pytest.mark.clickhouse
def test_every_grants_statement_is_valid_clickhouse_sql(clickhouse_settings) -> None:
    client = make_client(clickhouse_settings)
    stmts = _statements()
    assert len(stmts) > 20
    for s in stmts:
        client.query("SELECT formatQuery({q:String})", parameters={"q": s})  # raises on a syntax error


def _grants_by_role() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in _statements():
        m = re.match(r"GRANT (.+) ON (\S+) TO (\w+)", " ".join(s.split()))
        if m:
            out.setdefault(m.group(3), []).append(f"{m.group(1)} ON {m.group(2)}")
    return out


def test_only_admin_can_change_events_and_analysts_are_read_only() -> None:
    g = _grants_by_role()
    assert g["auditpipe_writer"] == [
        "INSERT ON audit.events",
        "INSERT ON audit.events_input",
        "SELECT, INSERT ON audit.event_ids",
        "INSERT ON audit.event_conflicts",
    ]
    assert g["auditpipe_archiver"] == [
        "SELECT ON audit.events",
        "SELECT ON audit.org_settings",
        "ALTER DELETE ON audit.events",
        "ALTER DELETE ON audit.events_by_time",
        "SELECT ON audit.seal_runs",
        "SELECT, ALTER DELETE ON audit.event_conflicts",
    ]
    assert not any(WRITES.search(x) and "audit.events" in x for x in g["auditpipe_sealer"])
    assert all(x.startswith(("SELECT ON", "SELECT, INSERT ON")) for x in g["auditpipe_sealer"])
    assert all(x.startswith("SELECT ON") for x in g["auditpipe_analyst"])
    assert not any(WRITES.search(x) and "audit.events" in x for x in g["auditpipe_query_api"])
    assert not any("UPDATE" in x or "TRUNCATE" in x or "DROP" in x for r, xs in g.items() for x in xs)


def test_users_xml_matches_the_same_rules() -> None:
    root = ET.parse(DEPLOY / "users.xml").getroot()  # noqa: S314 - our own file
    users = {u.tag: [q.text or "" for q in u.iter("query")] for u in root.find("users")}
    assert set(users) == {
        "auditpipe_sink",
        "auditpipe_seal",
        "auditpipe_api",
        "analyst_ada",
        "auditpipe_admin",
    }
    assert all(q.startswith("GRANT SELECT") for q in users["analyst_ada"])
    assert root.find("profiles/auditpipe_readonly/readonly").text == "2"
    for name, qs in users.items():
        if name == "auditpipe_admin":
            continue
        for q in qs:
            assert "UPDATE" not in q and "DROP" not in q and "TRUNCATE" not in q and " ALL " not in q, (
                name,
                q,
            )
    assert [q for q in users["auditpipe_sink"] if "DELETE" in q] == [
        "GRANT ALTER DELETE ON audit.events",
        "GRANT ALTER DELETE ON audit.events_by_time",
        "GRANT SELECT, ALTER DELETE ON audit.event_conflicts",
    ]
