"""The insert step: one batch -> ClickHouse (Native format, lz4), idempotent by de-duplication token.

When ClickHouse refuses the batch as bad data, the batch is bisected until the poison rows are isolated;
the good halves are inserted (each half with its own derived token, so a retry stays idempotent) and the
poison rows are returned with the server's error, for the dead-letter topic. Transient errors propagate
to the caller, which retries the whole batch with the same tokens.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, ProgrammingError

from services.common.clickhouse import BAD_DATA_CODES, error_code
from services.sink.rows import COLUMNS

# Besides the shared bad-data codes: 469 VIOLATED_CONSTRAINT (0004's plausible-time check).
SINK_BAD_DATA_CODES = BAD_DATA_CODES | {469}


@dataclass(frozen=True)
class Rejected:
    index: int  # row index in the batch
    error: str


def is_bad_row_error(exc: BaseException) -> bool:
    """Errors that a retry can never fix: server-side bad data, or rows the client cannot serialise."""
    if isinstance(exc, DatabaseError) and not isinstance(exc, DataError | ProgrammingError):
        return error_code(exc) in SINK_BAD_DATA_CODES
    return isinstance(
        exc, DataError | ProgrammingError | ValueError | TypeError | OverflowError | struct.error
    )


def _short(exc: BaseException, limit: int = 2000) -> str:
    text = " ".join(str(exc).split())
    return text[:limit]


def insert_batch(client: Client, table: str, rows: list[list[Any]], token: str) -> tuple[int, list[Rejected]]:
    """Insert ``rows``; returns (rows inserted, rows rejected as bad data). Raises on transient errors."""
    rejected: list[Rejected] = []
    inserted = 0

    def go(lo: int, hi: int, tok: str) -> None:
        nonlocal inserted
        try:
            client.insert(
                table,
                rows[lo:hi],
                column_names=COLUMNS,
                # a retried batch (same token) reaches events and every view's table exactly once
                settings={
                    "insert_deduplication_token": tok,
                    "insert_deduplicate": 1,
                    "deduplicate_blocks_in_dependent_materialized_views": 1,
                },
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

    if rows:
        go(0, len(rows), token)
    return inserted, rejected
