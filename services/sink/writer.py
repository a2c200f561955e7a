"""The sink's ClickHouse I/O: look up a batch's ids, insert records as bytes, remember ids, keep conflicts.

- :func:`lookup` — the ids of a batch that ``event_ids`` (0013) knows, in one query: the ids travel as
  external data (``WHERE event_id IN (SELECT id FROM ids)``; a 50k-id IN list is too long for a query
  parameter); the key-value table answers with key lookups.
- :func:`insert_records` — ``INSERT INTO events_input FORMAT JSONAsString`` of the record bytes exactly as
  they came from Kafka; ClickHouse parses them (0012). Idempotent by ``insert_deduplication_token``: a
  retried batch reaches ``events`` and every view's table once. When ClickHouse refuses the block as bad
  data, it is bisected until the poison records are isolated; the good halves are inserted (each with a
  derived token, so a retry stays idempotent) and the poison records are returned with the server's
  error, for the dead-letter topic. Transient errors propagate; the caller retries with the same tokens.
- :func:`remember` — the ``event_ids`` entries of records just inserted (after the insert succeeded, so
  the table never names an id that ``events`` lacks; rewriting an entry with the same values is harmless).
- :func:`insert_conflicts` — rows of ``event_conflicts`` (0014).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, ProgrammingError
from clickhouse_connect.driver.external import ExternalData

from services.common.clickhouse import BAD_DATA_CODES, error_code
from services.sink.records import Key, Stored

# Besides the shared bad-data codes (41 an unreadable time, 117 not a JSON object, 131 a content_hash
# longer than 64, ...): 469 VIOLATED_CONSTRAINT (0004's plausible-time check) and 376 CANNOT_PARSE_UUID.
SINK_BAD_DATA_CODES = BAD_DATA_CODES | {376, 469}

DEDUP = {
    "insert_deduplicate": 1,
    # a retried batch (same token) reaches events and every view's table exactly once
    "deduplicate_blocks_in_dependent_materialized_views": 1,
}


@dataclass(frozen=True)
class Rejected:
    index: int  # index in the sequence of records given to insert_records
    error: str


def is_bad_row_error(exc: BaseException) -> bool:
    """Errors that a retry can never fix: server-side bad data, or rows the client cannot serialise."""
    if isinstance(exc, DatabaseError) and not isinstance(exc, DataError | ProgrammingError):
        return error_code(exc) in SINK_BAD_DATA_CODES
    return isinstance(
        exc, DataError | ProgrammingError | ValueError | TypeError | OverflowError | struct.error
    )


def _short(exc: BaseException, limit: int = 2000) -> str:
    return " ".join(str(exc).split())[:limit]


def insert_records(
    client: Client, table: str, records: Sequence[bytes], token: str
) -> tuple[int, list[Rejected]]:
    """Insert ``records`` (JSON bytes) into the Null input ``table``; (inserted, rejected as bad data)."""
    rejected: list[Rejected] = []
    inserted = 0

    def go(lo: int, hi: int, tok: str) -> None:
        nonlocal inserted
        try:
            client.raw_insert(
                table,
                None,
                insert_block=b"\n".join(records[lo:hi]),
                settings={"insert_deduplication_token": tok, **DEDUP},
                fmt="JSONAsString",
            )
            inserted += hi - lo
        except Exception as e:
            if not is_bad_row_error(e):
                raise
            if hi - lo == 1:
                rejected.append(Rejected(lo, _short(e)))
                return
            mid = (lo + hi) // 2
            go(lo, mid, f"{token}#{lo}:{mid}")
            go(mid, hi, f"{token}#{mid}:{hi}")

    if records:
        go(0, len(records), token)
    return inserted, rejected


def lookup(client: Client, table: str, ids: Iterable[str]) -> dict[str, Stored]:
    """{event_id: first stored content} for those of ``ids`` that ``table`` (event_ids) knows."""
    data = "\n".join(ids).encode()
    if not data:
        return {}
    ext = ExternalData(file_name="ids", data=data + b"\n", structure=["id UUID"], fmt="TabSeparated")
    rows = client.query(
        f"SELECT toString(event_id), toString(content_hash), org_id, occurred_at, inserted_at FROM {table} "  # noqa: S608 - table from settings
        "WHERE event_id IN (SELECT id FROM ids)",
        external_data=ext,
    ).result_rows
    # FixedString(64) pads a shorter hash with NUL bytes (the record carries it without); times come
    # back naive in UTC and must not be read as local time when written again (conflicts)
    return {r[0]: Stored(r[1].rstrip("\x00"), r[2], _utc(r[3]), _utc(r[4])) for r in rows}


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _ms(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _tsv(s: str) -> str:
    """A TabSeparated field (ClickHouse's escapes)."""
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
        return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return s


def remember(client: Client, table: str, keys: Iterable[Key], stored_at: datetime) -> None:
    """Write the ``event_ids`` entries of records that were just inserted into events.

    TabSeparated text (50k entries: ~0.1 s, less than half of JSONEachRow's time); the time is parsed as
    the input view parsed it, and a value it cannot read becomes 0 rather than refusing the entries (a
    refusal here would be retried forever: the rows are already in events).
    """
    at = _ms(stored_at)
    body = "".join(
        f"{k.event_id}\t{_tsv(k.content_hash)}\t{_tsv(k.org_id)}\t{_tsv(k.occurred_at)}\t{at}\n" for k in keys
    ).encode()
    if body:
        client.command(
            f"INSERT INTO {table} (event_id, content_hash, org_id, occurred_at, inserted_at) "  # noqa: S608
            "SELECT toUUID(id), h, org, parseDateTime64BestEffortOrZero(occ, 3, 'UTC'), "
            "toDateTime64(at, 3, 'UTC') FROM input('id String, h String, org String, occ String, at String') "
            "FORMAT TabSeparated",
            data=body,
        )


CONFLICT_COLUMNS = [
    "event_id",
    "org_id",
    "occurred_at",
    "content_hash",
    "stored_org_id",
    "stored_occurred_at",
    "stored_content_hash",
    "stored_inserted_at",
    "record",
    "topic",
    "partition",
    "offset",
]


def insert_conflicts(client: Client, table: str, rows: Sequence[Sequence[Any]], token: str) -> None:
    """Rows in :data:`CONFLICT_COLUMNS` order; idempotent by ``token``."""
    if rows:
        client.insert(
            table,
            rows,
            column_names=CONFLICT_COLUMNS,
            settings={"insert_deduplication_token": token, "insert_deduplicate": 1},
        )
