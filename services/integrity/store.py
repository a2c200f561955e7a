"""The ClickHouse side of tamper evidence. Every per-event computation is a ClickHouse query (hashing,
Merkle roots, comparisons); Python only sees aggregates and the rows that are wrong.

Expressions shared by sealing and verification:

- :data:`REHASH` — the content hash re-derived from the stored bytes: SHA-256 of ``event_json`` with its
  ``,"content_hash":"<hex>"`` member removed (schemas/integrity.py); it equals ``content_hash`` for every
  record the enricher wrote, and changes with any byte of ``event_json`` or of the ``content_hash`` column.
- :data:`COLUMNS_HASH` / :data:`COLUMNS_HASH_JSON` — a fingerprint of the flattened columns (what
  listings, filters and CSV exports show), from the columns or from the values in ``event_json``; sealing
  records the latter (one JSON parse per event, once), verification compares the former (no parse), and
  :data:`COLUMNS_BAD` names the columns for the few rows that differ.
- :func:`merkle_sql` — RFC 6962 Merkle Tree Hash of a window, bottom-up with ``arrayFold`` (pair
  neighbours per level, carry a lone last node), leaves ordered by ``toString(event_id)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

REHASH = "lower(hex(SHA256(replaceOne(event_json, concat(',\"content_hash\":\"', content_hash, '\"'), ''))))"

_J = (
    "JSONExtract(event_json, 'Tuple(event_id String, org_id String, occurred_at String, "
    "received_at Nullable(String), project_id Nullable(String), environment_id Nullable(String), "
    "actor Tuple(type String, id Nullable(String), name Nullable(String), email Nullable(String)), "
    "action String, event_type String, "
    "target Tuple(type String, id Nullable(String), name Nullable(String)), "
    "source String, status Nullable(UInt16), change Nullable(String), client_ip Nullable(String), "
    "request Nullable(Tuple(method Nullable(String), path Nullable(String), user_agent Nullable(String))), "
    "producer Nullable(String))')"
)

# (column, its value, the same value read from event_json `j`): both sides of one type, so a column's
# fingerprint (COLUMNS_HASH: SHA-256 of the values in RowBinary, i.e. length-prefixed strings and fixed-size
# numbers, unambiguous) is the same from the columns and from the record when they agree.
_ZERO_T = "toDateTime64(0, 3, 'UTC')"
_COLUMNS = [
    ("event_id", "toString(event_id)", "j.event_id"),
    ("org_id", "toString(org_id)", "j.org_id"),
    (
        "occurred_at",
        "occurred_at",
        f"ifNull(parseDateTime64BestEffortOrNull(j.occurred_at, 3, 'UTC'), {_ZERO_T})",
    ),
    (
        "received_at",
        "received_at",
        f"ifNull(parseDateTime64BestEffortOrNull(j.received_at, 3, 'UTC'), {_ZERO_T})",
    ),
    ("project_id", "project_id", "ifNull(j.project_id, '')"),
    ("environment_id", "environment_id", "ifNull(j.environment_id, '')"),
    ("actor_type", "toString(actor_type)", "j.actor.type"),
    ("actor_id", "actor_id", "ifNull(j.actor.id, '')"),
    ("actor_name", "actor_name", "ifNull(j.actor.name, '')"),
    ("actor_email", "actor_email", "ifNull(j.actor.email, '')"),
    ("action", "toString(action)", "j.action"),
    ("event_type", "toString(event_type)", "j.event_type"),
    ("target_type", "toString(target_type)", "j.target.type"),
    ("target_id", "target_id", "ifNull(j.target.id, '')"),
    ("target_name", "target_name", "ifNull(j.target.name, '')"),
    ("source", "toString(source)", "j.source"),
    ("status", "toUInt16(status)", "toUInt16(ifNull(j.status, 0))"),
    ("change", "change", "ifNull(j.change, '')"),
    ("client_ip", "client_ip", "ifNull(j.client_ip, '')"),
    ("request_method", "toString(request_method)", "ifNull(j.request.method, '')"),
    ("request_path", "request_path", "ifNull(j.request.path, '')"),
    ("user_agent", "user_agent", "ifNull(j.request.user_agent, '')"),
    ("producer", "toString(producer)", "ifNull(j.producer, '')"),
]
COLUMNS_CHECKED = [c for c, _, _ in _COLUMNS]
WITH_J = f"WITH {_J} AS j"
"""Put before a SELECT that uses :data:`COLUMNS_HASH_JSON` or :data:`COLUMNS_BAD` (one JSON parse per row)."""
COLUMNS_HASH = (
    "lower(hex(SHA256(formatRowNoNewline('RowBinary', " + ", ".join(c for _, c, _ in _COLUMNS) + "))))"
)
"""Fingerprint of the flattened columns as stored (no JSON parse: what verification computes)."""
COLUMNS_HASH_JSON = (
    "lower(hex(SHA256(formatRowNoNewline('RowBinary', " + ", ".join(x for _, _, x in _COLUMNS) + "))))"
)
"""The same fingerprint of the values the record's bytes hold (what sealing records)."""
COLUMNS_BAD = (
    "arrayFilter(x -> x != '', ["
    + ", ".join(f"if(ifNull({c} = {x}, false), '', '{n}')" for n, c, x in _COLUMNS)
    + "])"
)
"""Names of the columns that disagree with the record (for the few rows whose fingerprint differs)."""

_LEVEL = (
    "arrayMap(i -> if(2 * i + 2 <= length(acc), SHA256(concat(char(1), acc[2 * i + 1], acc[2 * i + 2])), "
    "acc[2 * i + 1]), range(toUInt64(intDiv(length(acc) + 1, 2))))"
)


def merkle_sql(id_col: str, hash_col: str) -> str:
    """Aggregate expression: the hex RFC 6962 root over the group's (event id, content hash hex) pairs."""
    leaves = (
        f"arrayMap(p -> SHA256(concat(char(0), unhex(p.2))), "
        f"arraySort(p -> p.1, groupArray((toString({id_col}), {hash_col}))))"
    )
    return f"lower(hex(arrayFold((acc, x) -> if(length(acc) <= 1, acc, {_LEVEL}), range(64), {leaves})[1]))"


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = "DateTime64(3, 'UTC')"


# ------------------------------------------------------------------------------------------- sealing
def server_now(client: Any) -> datetime:
    return _utc(client.query("SELECT now64(3, 'UTC')").result_rows[0][0])


def last_horizon(client: Any, db: str) -> datetime | None:
    n, h = client.query(f"SELECT count(), max(horizon) FROM {db}.seal_runs").result_rows[0]  # noqa: S608
    return _utc(h) if n else None


def record_run(client: Any, db: str, horizon: datetime, digests: int, events: int) -> None:
    client.insert(
        f"{db}.seal_runs", [[horizon, digests, events]], column_names=["horizon", "digests", "events"]
    )


def seal_membership(client: Any, db: str, lo: datetime | None, hi: datetime, window_s: int) -> int:
    """Record which window every event stored in ``[lo, hi)`` belongs to (ids already sealed excluded).

    One INSERT ... SELECT: an event's window is the one holding its first stored copy (``min(inserted_at)``
    among copies in the range), its leaf the re-derived hash of that copy, its columns' fingerprint the
    one its bytes give (one JSON parse per event, here and never again). Returns the rows added.
    """
    lo = lo or EPOCH
    rng = f"inserted_at >= {{lo:{T}}} AND inserted_at < {{hi:{T}}}"
    before = _count_sealed(client, db)
    client.command(
        f"""
INSERT INTO {db}.sealed_events (org_id, window_start, event_id, occurred_at, content_hash, columns_hash)
{WITH_J}
SELECT org_id,
       greatest(toStartOfInterval(min(inserted_at), toIntervalSecond({{w:UInt32}}), 'UTC'), {{lo:{T}}}),
       event_id,
       argMin(occurred_at, inserted_at),
       argMin({REHASH}, inserted_at),
       argMin({COLUMNS_HASH_JSON}, inserted_at)
FROM {db}.events
WHERE {rng}
  AND (org_id, event_id) NOT IN (
      SELECT org_id, event_id FROM {db}.sealed_events
      WHERE event_id IN (SELECT event_id FROM {db}.events WHERE {rng}))
GROUP BY org_id, event_id
""",  # noqa: S608 - db from settings; values bound
        parameters={"lo": lo, "hi": hi, "w": window_s},
    )
    return _count_sealed(client, db) - before


def _count_sealed(client: Any, db: str) -> int:
    return int(client.query(f"SELECT count() FROM {db}.sealed_events").result_rows[0][0])  # noqa: S608


@dataclass(frozen=True)
class WindowRoot:
    org_id: str
    window_start: datetime
    count: int
    root: str


def window_roots(
    client: Any, db: str, org: str | None, lo: datetime | None, hi: datetime | None
) -> dict[tuple[str, datetime], WindowRoot]:
    """{(org, window_start): count and Merkle root} of sealed_events for windows starting in [lo, hi)."""
    where, params = _scope("window_start", org, lo, hi)
    q = f"""
SELECT org_id, window_start, count(), {merkle_sql("event_id", "content_hash")}
FROM (SELECT DISTINCT org_id, window_start, event_id, content_hash FROM {db}.sealed_events WHERE {where})
GROUP BY org_id, window_start
"""  # noqa: S608 - db from settings; values bound
    out = {}
    for o, ws, n, root in client.query(q, parameters=params).result_rows:
        out[(str(o), _utc(ws))] = WindowRoot(str(o), _utc(ws), int(n), str(root))
    return out


def _scope(col: str, org: str | None, lo: datetime | None, hi: datetime | None) -> tuple[str, dict]:
    conds, params = ["1"], {}
    if org is not None:
        conds.append("org_id = {org:String}")
        params["org"] = org
    if lo is not None:
        conds.append(f"{col} >= {{lo:{T}}}")
        params["lo"] = lo
    if hi is not None:
        conds.append(f"{col} < {{hi:{T}}}")
        params["hi"] = hi
    return " AND ".join(conds), params


def sealed_orgs(client: Any, db: str) -> set[str]:
    return {str(r[0]) for r in client.query(f"SELECT DISTINCT org_id FROM {db}.sealed_events").result_rows}  # noqa: S608


def stored_orgs(client: Any, db: str) -> set[str]:
    return {str(r[0]) for r in client.query(f"SELECT DISTINCT org_id FROM {db}.events").result_rows}  # noqa: S608


# ------------------------------------------------------------------------------------------- digests table
def store_digests(client: Any, db: str, rows: list[dict[str, Any]]) -> None:
    """rows: {org_id, sequence, window_start, window_end, event_count, digest_hash, record (bytes)}."""
    if not rows:
        return
    cols = ["org_id", "sequence", "window_start", "window_end", "event_count", "digest_hash", "record"]
    client.insert(f"{db}.digests", [[r[c] for c in cols] for r in rows], column_names=cols)


def mark_published(client: Any, db: str, rows: list[tuple[str, datetime, str]]) -> None:
    if rows:
        client.insert(
            f"{db}.digest_published",
            [list(r) for r in rows],
            column_names=["org_id", "window_start", "digest_hash"],
        )


def digest_records(client: Any, db: str, org: str | None = None) -> list[bytes]:
    """Every stored digest record (of one org), in (org, window) order."""
    where, params = _scope("window_start", org, None, None)
    rows = client.query(
        f"SELECT record FROM {db}.digests WHERE {where} ORDER BY org_id, window_start, sequence",  # noqa: S608
        parameters=params,
    ).result_rows
    return [r[0] if isinstance(r[0], bytes) else r[0].encode() for r in rows]


def unpublished(client: Any, db: str) -> list[bytes]:
    """Stored digests whose publication did not complete (a crash or an outage in between)."""
    rows = client.query(
        f"""SELECT record FROM {db}.digests
        WHERE (org_id, window_start, digest_hash) NOT IN
              (SELECT org_id, window_start, digest_hash FROM {db}.digest_published)
        ORDER BY org_id, window_start, sequence"""  # noqa: S608
    ).result_rows
    return [r[0] if isinstance(r[0], bytes) else r[0].encode() for r in rows]


# ------------------------------------------------------------------------------------------- verification
@dataclass(frozen=True)
class EventProblem:
    org_id: str
    event_id: str
    sealed: bool
    in_range: bool
    sealed_hash: str
    window_start: datetime | None
    occurred_at: datetime | None
    copies: int
    stored_hashes: tuple[str, ...]
    first_stored: datetime | None
    columns_changed: bool
    sealed_variants: int


def event_problems(
    client: Any,
    db: str,
    org: str,
    lo: datetime | None,
    hi: datetime | None,
    stored_from: datetime | None,
    sealed_end: datetime | None,
    limit: int = 100_000,
) -> Iterator[EventProblem]:
    """Every event of ``org`` that is wrong, in one pass over events and sealed_events (no JSON parse):

    sealed in a window starting in [lo, hi) and (gone from events, or a stored copy whose bytes re-hash
    to another value, or whose columns' fingerprint differs from the one its bytes gave at sealing, or
    sealed twice with different hashes); or stored in [stored_from, sealed_end) without being sealed.
    Copies stored before ``stored_from`` are not read (a sealed event's copies are never stored before
    its window).
    """
    lo_ = lo or EPOCH
    hi_ = hi or datetime(2200, 1, 1, tzinfo=UTC)
    from_ = min(stored_from or EPOCH, lo_)
    end_ = sealed_end or EPOCH
    q = f"""
SELECT org_id, event_id,
       max(src) AS sealed,
       maxIf(rng, src = 1) AS in_range,
       anyIf(h, src = 1) AS sealed_hash,
       anyIf(t, src = 1) AS window_start,
       anyIf(occ, src = 1) AS occurred_at,
       countIf(src = 0) AS copies,
       arrayDistinct(groupArrayIf(h, src = 0)) AS stored_hashes,
       minIf(t, src = 0) AS first_stored,
       anyIf(ch, src = 1) AS sealed_columns,
       arrayDistinct(groupArrayIf(ch, src = 0)) AS stored_columns,
       uniqExactIf(h, src = 1) AS sealed_variants
FROM (
    SELECT org_id, event_id, 1 AS src,
           toUInt8(window_start >= {{lo:{T}}} AND window_start < {{hi:{T}}}) AS rng,
           toString(content_hash) AS h, window_start AS t, occurred_at AS occ, toString(columns_hash) AS ch
    FROM {db}.sealed_events WHERE org_id = {{org:String}}
    UNION ALL
    SELECT org_id, event_id, 0, 0, {REHASH}, inserted_at, occurred_at, {COLUMNS_HASH}
    FROM {db}.events WHERE org_id = {{org:String}} AND inserted_at >= {{from:{T}}}
)
GROUP BY org_id, event_id
HAVING (in_range = 1 AND (copies = 0 OR arrayExists(x -> x != sealed_hash, stored_hashes)
                          OR arrayExists(x -> x != sealed_columns, stored_columns) OR sealed_variants > 1))
    OR (sealed = 0 AND first_stored >= {{from:{T}}} AND first_stored < {{end:{T}}})
LIMIT {{limit:UInt32}}
SETTINGS max_bytes_before_external_group_by = 500000000
"""  # noqa: S608 - db from settings; values bound
    params = {"org": org, "lo": lo_, "hi": hi_, "from": from_, "end": end_, "limit": limit}
    with client.query_rows_stream(q, parameters=params) as stream:
        for r in stream:
            yield EventProblem(
                org_id=str(r[0]),
                event_id=str(r[1]),
                sealed=bool(r[2]),
                in_range=bool(r[3]),
                sealed_hash=str(r[4]),
                window_start=_utc(r[5]) if r[2] else None,
                occurred_at=_utc(r[6]) if r[2] else None,
                copies=int(r[7]),
                stored_hashes=tuple(str(x) for x in r[8]),
                first_stored=_utc(r[9]) if r[7] else None,
                columns_changed=any(str(x) != str(r[10]) for x in r[11]),
                sealed_variants=int(r[12]),
            )


def changed_columns(client: Any, db: str, org: str, event_ids: list[str]) -> dict[str, list[str]]:
    """{event_id: names of the columns that disagree with the stored record}, for a few events."""
    if not event_ids:
        return {}
    rows = client.query(
        f"{WITH_J} SELECT toString(event_id), {COLUMNS_BAD} FROM {db}.events "  # noqa: S608
        "WHERE org_id = {org:String} AND event_id IN {ids:Array(UUID)}",
        parameters={"org": org, "ids": event_ids},
    ).result_rows
    out: dict[str, list[str]] = {}
    for e, bad in rows:
        out.setdefault(str(e), [])
        out[str(e)] += [str(x) for x in bad if str(x) not in out[str(e)]]
    return out


def pending(
    client: Any, db: str, org: str, sealed_end: datetime | None, overdue_before: datetime
) -> tuple[int, int]:
    """(rows stored at/after ``sealed_end``, of which stored before ``overdue_before``) of ``org``."""
    n, late = client.query(
        f"SELECT count(), countIf(inserted_at < {{od:{T}}}) FROM {db}.events "  # noqa: S608
        f"WHERE org_id = {{org:String}} AND inserted_at >= {{end:{T}}}",
        parameters={"org": org, "end": sealed_end or EPOCH, "od": overdue_before},
    ).result_rows[0]
    return int(n), int(late)
