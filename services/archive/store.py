"""The ClickHouse side of archiving: which org-days are due, the de-duplicated rows of one org-day, the
checksum ClickHouse computes over them, and the delete. Every value is a bound parameter; the database
name comes from settings (validated as an identifier there)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from services.archive.rules import MASK64
from services.common.logging import log

logger = logging.getLogger("auditpipe.archive")

DAY_FILTER = (
    "org_id = {org:String} AND occurred_at >= {start:DateTime64(3, 'UTC')} "
    "AND occurred_at < {end:DateTime64(3, 'UTC')} AND inserted_at <= {snap:DateTime64(3, 'UTC')}"
)

# Tables holding whole listing rows of events, deleted from with it (0011 events_by_time: free-text search
# across orgs answers from there alone). events_by_target (0010) holds keys only and is not cleaned: its
# stale keys match nothing in events.
COPIES = ("events_by_time",)

# The per-line checksum of rules.line_checksum, computed by ClickHouse over the same rows.
CHECKSUM_SQL = "sumWithOverflow(reinterpretAsUInt64(substring(SHA256(concat(event_json, '\\n')), 1, 8)))"


def day_params(org: str, day: date, snap: datetime) -> dict[str, Any]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return {"org": org, "start": start, "end": start + timedelta(days=1), "snap": snap}


def server_now(client: Any) -> datetime:
    t = client.query("SELECT now64(3, 'UTC')").result_rows[0][0]
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def sealed_horizon(client: Any, db: str) -> datetime | None:
    """Where sealing has reached (every row stored before it is in a signed digest); None before the
    first seal run or when the integrity tables do not exist (migration 0015)."""
    try:
        rows = client.query(
            f"SELECT max(horizon), count() FROM {db}.seal_runs"  # noqa: S608 - db from settings
        ).result_rows
    except Exception:  # noqa: BLE001 - no integrity tables: nothing to wait for
        return None
    h, n = rows[0]
    if not n:
        return None
    return h if h.tzinfo is not None else h.replace(tzinfo=UTC)


def org_retentions(client: Any, db: str) -> dict[str, int]:
    """Per-org retention days as written by the query API (last write wins)."""
    rows = client.query(
        f"SELECT org_id, argMax(retention_days, updated_at) FROM {db}.org_settings GROUP BY org_id"  # noqa: S608 - db from settings
    ).result_rows
    return {str(o): int(d) for o, d in rows}


def candidate_days(
    client: Any, db: str, before: datetime, snap: datetime, org: str | None
) -> dict[str, list[date]]:
    """{org: [UTC days with rows older than ``before``, stored before ``snap``]}."""
    where = "occurred_at < {before:DateTime64(3, 'UTC')} AND inserted_at <= {snap:DateTime64(3, 'UTC')}"
    params: dict[str, Any] = {"before": before, "snap": snap}
    if org is not None:
        where += " AND org_id = {org:String}"
        params["org"] = org
    rows = client.query(
        f"SELECT org_id, toDate(occurred_at) AS d FROM {db}.events WHERE {where} GROUP BY org_id, d",  # noqa: S608
        parameters=params,
    ).result_rows
    out: dict[str, list[date]] = {}
    for o, d in rows:
        out.setdefault(str(o), []).append(d)
    return out


def _dedup_select(db: str, cols: str) -> str:
    return (
        f"SELECT {cols} FROM {db}.events WHERE {DAY_FILTER} "  # noqa: S608 - db from settings
        "ORDER BY occurred_at, event_id LIMIT 1 BY event_id"
    )


def export_lines(client: Any, db: str, params: dict[str, Any]) -> Iterator[bytes]:
    """The org-day's rows, de-duplicated by event_id, ordered by (occurred_at, event_id): each stored
    ``event_json`` verbatim plus a newline (the archive's lines are the record bytes of audit.events.v1)."""
    with client.query_column_block_stream(
        _dedup_select(db, "occurred_at, event_id, event_json"), parameters=params
    ) as stream:
        for block in stream:
            for s in block[2]:
                yield (s if isinstance(s, bytes) else s.encode()) + b"\n"


def checksum(client: Any, db: str, params: dict[str, Any]) -> tuple[int, int]:
    """(rows, checksum) of the de-duplicated rows, computed by ClickHouse."""
    inner = _dedup_select(db, "occurred_at, event_id, event_json")
    q = f"SELECT count(), {CHECKSUM_SQL} FROM ({inner})"  # noqa: S608 - db from settings; values bound
    n, s = client.query(q, parameters=params).result_rows[0]
    return int(n), int(s) & MASK64


def delete_rows(client: Any, db: str, params: dict[str, Any]) -> None:
    """Delete exactly the archived rows (same filter) from the copies, then from events.

    Copies first: if the job dies in between, events still holds the day, the next run archives and
    deletes it again, and no search shows an event whose row is gone.
    """
    for table in (*COPIES, "events"):
        _delete_from(client, db, table, params)


def _delete_from(client: Any, db: str, table: str, params: dict[str, Any], where: str = DAY_FILTER) -> None:
    """Lightweight DELETE; ALTER ... DELETE (a synchronous mutation) when refused."""
    try:
        client.command(
            f"DELETE FROM {db}.{table} WHERE {where}",  # noqa: S608 - names are constants; values bound
            parameters=params,
            settings={"lightweight_deletes_sync": 2, "lightweight_mutation_projection_mode": "rebuild"},
        )
    except Exception as e:  # noqa: BLE001 - e.g. projections on older servers: fall back to a mutation
        log(
            logger,
            logging.WARNING,
            "lightweight delete refused; using ALTER DELETE",
            table=table,
            error=str(e)[:200],
        )
        client.command(
            f"ALTER TABLE {db}.{table} DELETE WHERE {where}",  # noqa: S608
            parameters=params,
            settings={"mutations_sync": 2},
        )


# Conflicting records (0014) are kept as long as the longest retention any event may have
# (retention.max_days), then deleted per org of the stored event they contradicted.
CONFLICT_FILTER = "stored_org_id = {org:String} AND seen_at < {before:DateTime64(3, 'UTC')}"


def expired_conflicts(client: Any, db: str, before: datetime, org: str | None) -> dict[str, int]:
    """{stored org: conflict rows seen before ``before``}."""
    where = "seen_at < {before:DateTime64(3, 'UTC')}"
    params: dict[str, Any] = {"before": before}
    if org is not None:
        where += " AND stored_org_id = {org:String}"
        params["org"] = org
    rows = client.query(
        f"SELECT stored_org_id, count() FROM {db}.event_conflicts WHERE {where} GROUP BY stored_org_id",  # noqa: S608
        parameters=params,
    ).result_rows
    return {str(o): int(n) for o, n in rows}


def delete_conflicts(client: Any, db: str, org: str, before: datetime) -> None:
    _delete_from(client, db, "event_conflicts", {"org": org, "before": before}, CONFLICT_FILTER)
