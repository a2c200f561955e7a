"""Pure query building for ``audit.events``: filters -> parameterised SQL, sort orders, keyset cursors.

No I/O here. Every value that comes from a request is sent as a server-side parameter (``{name:Type}``);
the SQL text is assembled only from constants in this module and the database name (an identifier
validated by the settings). Reads never show a duplicate: ``FINAL`` (default) or ``LIMIT 1 BY event_id``.
"""

from __future__ import annotations

import base64
import ipaddress
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

SortField = Literal["occurred_at", "action", "target_type", "actor"]
Order = Literal["asc", "desc"]
Dedup = Literal["final", "limit_by"]
DedupSetting = Literal["auto", "final", "limit_by"]

# Sort field -> leading column (ties are broken by occurred_at, then event_id: a total, stable order).
_SORT_COLUMN: dict[str, tuple[str, str]] = {
    "action": ("action", "String"),
    "target_type": ("target_type", "String"),
    "actor": ("actor_name", "String"),
}

SUMMARY_COLUMNS = [
    "event_id",
    "occurred_at",
    "org_id",
    "project_id",
    "environment_id",
    "action",
    "event_type",
    "target_type",
    "target_id",
    "target_name",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_email",
    "source",
    "status",
    "change",
    "client_ip",
]

EXPORT_COLUMNS = SUMMARY_COLUMNS + [
    "received_at",
    "request_method",
    "request_path",
    "request_query",
    "request_payload",
    "user_agent",
    "changes",
    "snapshot",
    "producer",
    "content_hash",
]

# Free text: the same expression as the ngram index of 0001 (idx_text), so the index applies.
TEXT_EXPR = "lower(concat(target_id, ' ', target_name, ' ', action, ' ', change))"


class FilterError(ValueError):
    """A request value that cannot be used; ``field`` names the query parameter."""

    def __init__(self, field: str, msg: str) -> None:
        super().__init__(f"{field}: {msg}")
        self.field = field
        self.msg = msg


@dataclass(frozen=True)
class Scope:
    """What a principal may see: one org (None = all), projects and environments (empty = all)."""

    org: str | None = None
    projects: tuple[str, ...] = ()
    environments: tuple[str, ...] = ()

    def allows(self, org_id: str, project_id: str, environment_id: str) -> bool:
        if self.org is not None and org_id != self.org:
            return False
        if self.projects and project_id not in self.projects:
            return False
        return not (self.environments and environment_id not in self.environments)


@dataclass
class Filters:
    """The analyst's filters, as parsed from the query string (lists mean "any of")."""

    since: datetime | None = None
    until: datetime | None = None
    org: str | None = None
    action: list[str] = field(default_factory=list)
    event_type: list[str] = field(default_factory=list)
    target_type: list[str] = field(default_factory=list)
    target_id: str | None = None
    actor: str | None = None
    actor_type: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    project: list[str] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    ip: str | None = None
    q: str | None = None
    triggers: bool = False  # only what no person started: the system acted, or a webhook called


def ip_range(value: str) -> tuple[str, str]:
    """An IP or CIDR (v4 or v6) -> inclusive (low, high) in the IPv6 space of ``client_ip_v6``.

    IPv4 is mapped to ``::ffff:a.b.c.d`` exactly as the sink maps it (rows._v6).
    """
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise FilterError("ip", "not an IP address or CIDR range") from None
    if isinstance(net, ipaddress.IPv4Network):
        lo = ipaddress.IPv6Address("::ffff:" + str(net.network_address))
        hi = ipaddress.IPv6Address("::ffff:" + str(net.broadcast_address))
    else:
        lo, hi = net.network_address, net.broadcast_address
    return str(lo), str(hi)


def like_pattern(q: str) -> str:
    """Case-insensitive substring pattern for LIKE over :data:`TEXT_EXPR` (wildcards in q are literal)."""
    esc = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{esc}%"


def where_clause(f: Filters, scope: Scope) -> tuple[list[str], dict[str, Any]]:
    """Conditions (AND-ed) and their parameters for filters plus the principal's scope."""
    conds: list[str] = []
    p: dict[str, Any] = {}

    def eq_any(col: str, name: str, values: list[Any], typ: str = "String") -> None:
        if values:
            conds.append(f"{col} IN {{{name}:Array({typ})}}")
            p[name] = list(values)

    if scope.org is not None:
        conds.append("org_id = {scope_org:String}")
        p["scope_org"] = scope.org
    if scope.projects:
        conds.append("project_id IN {scope_projects:Array(String)}")
        p["scope_projects"] = list(scope.projects)
    if scope.environments:
        conds.append("environment_id IN {scope_envs:Array(String)}")
        p["scope_envs"] = list(scope.environments)

    if f.org is not None:
        conds.append("org_id = {org:String}")
        p["org"] = f.org
    if f.since is not None:
        conds.append("occurred_at >= {since:DateTime64(3, 'UTC')}")
        p["since"] = f.since
    if f.until is not None:
        conds.append("occurred_at < {until:DateTime64(3, 'UTC')}")
        p["until"] = f.until
    eq_any("action", "action", f.action)
    eq_any("event_type", "event_type", f.event_type)
    eq_any("target_type", "target_type", f.target_type)
    eq_any("actor_type", "actor_type", f.actor_type)
    eq_any("source", "source", f.source)
    eq_any("project_id", "project", f.project)
    eq_any("environment_id", "environment", f.environment)
    eq_any("status", "status", f.status, "UInt16")
    if f.target_id is not None:
        conds.append("target_id = {target_id:String}")
        p["target_id"] = f.target_id
    if f.actor is not None:
        if f.actor.lower() == "system":
            conds.append("actor_type = 'system'")
        else:
            conds.append("(actor_id = {actor:String} OR actor_name = {actor:String})")
            p["actor"] = f.actor
    if f.ip is not None:
        lo, hi = ip_range(f.ip)
        conds.append("client_ip_v6 BETWEEN {ip_lo:IPv6} AND {ip_hi:IPv6}")
        p["ip_lo"], p["ip_hi"] = lo, hi
    if f.q:
        conds.append(f"{TEXT_EXPR} LIKE {{q:String}}")
        p["q"] = like_pattern(f.q)
    if f.triggers:
        conds.append("(actor_type = 'system' OR source = 'webhook')")
    return conds, p


# -- sort and cursor ------------------------------------------------------------------------------


def sort_columns(sort: SortField) -> list[tuple[str, str]]:
    """(column, ClickHouse type) of the total order for ``sort``."""
    cols = [("occurred_at", "DateTime64(3, 'UTC')"), ("event_id", "UUID")]
    if sort in _SORT_COLUMN:
        cols.insert(0, _SORT_COLUMN[sort])
    return cols


def encode_cursor(sort: SortField, order: Order, key: list[Any]) -> str:
    """Opaque cursor: base64url of (sort, order, values of the sort tuple of the last row)."""
    vals: list[Any] = []
    for v in key:
        if isinstance(v, datetime):
            vals.append(v.astimezone(UTC).isoformat(timespec="milliseconds"))
        else:
            vals.append(str(v))
    raw = orjson.dumps({"s": sort, "o": order, "k": vals})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: SortField, order: Order) -> list[Any]:
    """The sort-tuple values of a cursor; FilterError('cursor') when malformed or made for another sort."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
        if data["s"] != sort or data["o"] != order:
            raise FilterError("cursor", "cursor was issued for a different sort or order")
        vals = data["k"]
        cols = sort_columns(sort)
        if not isinstance(vals, list) or len(vals) != len(cols):
            raise ValueError
        out: list[Any] = []
        for (_, typ), v in zip(cols, vals, strict=True):
            if not isinstance(v, str):
                raise ValueError
            if typ.startswith("DateTime64"):
                dt = datetime.fromisoformat(v)
                out.append(dt if dt.tzinfo else dt.replace(tzinfo=UTC))
            elif typ == "UUID":
                out.append(str(uuid.UUID(v)))
            else:
                out.append(v)
        return out
    except FilterError:
        raise
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise FilterError("cursor", "malformed cursor") from None


def keyset_condition(sort: SortField, order: Order, key: list[Any]) -> tuple[list[str], dict[str, Any]]:
    """Rows strictly after ``key`` in the page order (tuple comparison), plus a time bound for pruning."""
    cols = sort_columns(sort)
    op = "<" if order == "desc" else ">"
    names = ", ".join(c for c, _ in cols)
    ph = ", ".join(f"{{k{i}:{t}}}" for i, (_, t) in enumerate(cols))
    conds = [f"({names}) {op} ({ph})"]
    params = {f"k{i}": v for i, v in enumerate(key)}
    if sort == "occurred_at":  # lets the primary key prune granules (org_id, occurred_at, ...)
        conds.append(f"occurred_at {op}= {{k0:DateTime64(3, 'UTC')}}")
    return conds, params


def order_by(sort: SortField, order: Order) -> str:
    d = "DESC" if order == "desc" else "ASC"
    return ", ".join(f"{c} {d}" for c, _ in sort_columns(sort))


def probe_windows(f: Filters, anchor: datetime, first_s: int = 3600, factor: int = 24) -> list[Filters]:
    """``f`` narrowed to [anchor - 1 h, …), [anchor - 1 day, …), [anchor - 24 days, …), then ``f`` itself.

    Each window is a superset of the previous one, so the first window holding a full page has the true
    newest rows (everything newer than its lower bound is in it).
    """
    out: list[Filters] = []
    span = timedelta(seconds=first_s)
    while span < timedelta(days=400):
        lo = anchor - span
        if f.since is not None and lo <= f.since:
            break
        out.append(replace(f, since=lo))
        span *= factor
    out.append(f)
    return out


def choose_dedup(setting: str, f: Filters) -> Dedup:
    """FINAL keeps read-in-order on (org_id, occurred_at) but disables data-skipping indexes; LIMIT 1 BY
    event_id keeps the bloom/ngram indexes. Measured on 10M rows (benchmarks/query): org + time range is
    fastest with FINAL, target id and free text with LIMIT 1 BY."""
    if setting in ("final", "limit_by"):
        return setting  # type: ignore[return-value]
    return "limit_by" if (f.target_id is not None or f.q) else "final"


def source_table(db: str, dedup: Dedup) -> str:
    return f"{db}.events FINAL" if dedup == "final" else f"{db}.events"


def _dedup_tail(dedup: Dedup) -> str:
    return " LIMIT 1 BY event_id" if dedup == "limit_by" else ""


def _select(columns: list[str], db: str, dedup: Dedup, conds: list[str]) -> str:
    where = " AND ".join(conds) if conds else "1"
    cols = ", ".join(columns)
    if dedup == "final":
        return f"SELECT {cols} FROM {db}.events FINAL WHERE {where}"  # noqa: S608 - constants only
    # duplicates carry the same event (redelivery), so any one copy is the event
    return f"SELECT {cols} FROM (SELECT {cols} FROM {db}.events WHERE {where} LIMIT 1 BY event_id)"  # noqa: S608


TARGET_TABLE = "events_by_target"  # 0010: (target_id, occurred_at, org_id, event_id) sorted by target


def target_windows(
    f: Filters, sort: SortField, limit: int, candidates: int | None = None, factor: int = 16
) -> list[int | None]:
    """Candidate windows for a target-id page: the newest ``limit``, ``limit * factor``, then all.

    A window of n takes the first n keys of the target in page order from ``events_by_target``; the
    page read from ``events`` within it is the true page as soon as it is full (every matching event
    before the window's last key is in the window). ``None`` = every key of the target: complete by
    itself. Only the occurred_at sort can take a prefix (the side table is in that order).
    ``candidates`` (from :func:`target_count_query`, capped at ``limit * factor + 1``): windows that
    would already hold every key are skipped, so a target with few events costs one query on events.
    """
    if f.target_id is None:
        return []
    if sort != "occurred_at":
        return [None]
    out: list[int | None] = [w for w in (limit, limit * factor) if candidates is None or candidates > w]
    return [*out, None]


def _target_where(
    f: Filters, scope: Scope, order: Order, cursor_key: list[Any] | None
) -> tuple[list[str], dict[str, Any]]:
    """The target plus the org, scope org, time and cursor conditions of the page (same parameter names
    as :func:`where_clause`), for the keys in ``events_by_target`` (which has no other columns)."""
    conds, params = where_clause(Filters(since=f.since, until=f.until, org=f.org), Scope(org=scope.org))
    conds.insert(0, "target_id = {target_id:String}")
    params["target_id"] = f.target_id
    if cursor_key is not None:
        kc, kp = keyset_condition("occurred_at", order, cursor_key)
        conds += kc
        params.update(kp)
    return conds, params


def target_count_query(
    db: str, f: Filters, scope: Scope, order: Order, cursor_key: list[Any] | None, cap: int
) -> tuple[str, dict[str, Any]]:
    """How many distinct candidate keys the target has (stops counting at ``cap``); occurred_at sort."""
    conds, params = _target_where(f, scope, order, cursor_key)
    params["target_cap"] = cap
    where = " AND ".join(conds)
    sub = f"SELECT DISTINCT event_id FROM {db}.{TARGET_TABLE} WHERE {where} LIMIT {{target_cap:UInt32}}"  # noqa: S608
    return f"SELECT count() FROM ({sub})", params  # noqa: S608 - constants only


def target_condition(
    db: str,
    f: Filters,
    scope: Scope,
    order: Order,
    cursor_key: list[Any] | None,
    window: int | None,
) -> tuple[str, dict[str, Any]]:
    """``(org_id, occurred_at, event_id) IN`` the target's keys from ``events_by_target``.

    It only narrows: the caller keeps every filter and the scope on ``events``, and the primary key of
    ``events`` prunes the read to the granules holding those keys. The org, time and cursor conditions
    are repeated inside (same parameter names and types as :func:`where_clause` / :func:`keyset_condition`)
    so a window holds only keys that can be on the page. Keys of rows deleted from ``events`` (archives,
    retention) may remain in the side table; they match nothing, and a short window falls through.
    ``cursor_key`` must be an occurred_at-sort key (occurred_at, event_id) when a window is given.
    """
    conds, params = _target_where(f, scope, order, cursor_key if window is not None else None)
    tail = ""
    if window is not None:
        d = "DESC" if order == "desc" else "ASC"
        tail = f" ORDER BY occurred_at {d}, event_id {d} LIMIT 1 BY event_id LIMIT {{target_window:UInt32}}"
        params["target_window"] = window
    sub = f"SELECT org_id, occurred_at, event_id FROM {db}.{TARGET_TABLE} WHERE {' AND '.join(conds)}{tail}"  # noqa: S608 - constants only
    return f"(org_id, occurred_at, event_id) IN ({sub})", params


TIME_TABLE = "events_by_time"  # 0011: listing columns sorted by (occurred_at, event_id), 3-gram text index


def use_time_table(f: Filters, scope: Scope, sort: SortField) -> bool:
    """Free text across organisations in time order: answered from ``events_by_time`` alone.

    With an org (filter or the token's scope) the sort key of ``events`` narrows to that org and is used
    instead; other sorts stay on ``events`` (only the time order can stop after one page here).
    """
    return bool(f.q) and sort == "occurred_at" and f.org is None and scope.org is None


def time_table_query(
    db: str,
    f: Filters,
    scope: Scope,
    order: Order,
    fetch: int,
    cursor_key: list[Any] | None,
    columns: list[str],
) -> tuple[str, dict[str, Any]]:
    """The first ``fetch`` matching rows of ``events_by_time`` in page order, duplicates included.

    No de-duplication in SQL: ``LIMIT 1 BY`` or ``FINAL`` would stop ClickHouse from reading in order and
    stopping early. Copies of one event share (occurred_at, event_id), so they are adjacent in this
    order and the caller drops repeats (:func:`distinct_rows`), fetching more when they cost it a row.
    Every filter and the scope apply unchanged (the table has every column they use).
    """
    conds, params = where_clause(f, scope)
    if cursor_key is not None:
        kc, kp = keyset_condition("occurred_at", order, cursor_key)
        conds += kc
        params.update(kp)
    where = " AND ".join(conds) if conds else "1"
    params["fetch"] = fetch
    sql = (
        f"SELECT {', '.join(columns)} FROM {db}.{TIME_TABLE} WHERE {where} "  # noqa: S608 - constants only
        f"ORDER BY {order_by('occurred_at', order)} LIMIT {{fetch:UInt32}}"
    )
    return sql, params


def distinct_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` without repeated event ids, first copy kept, order unchanged."""
    seen: set[Any] = set()
    out = []
    for r in rows:
        if r["event_id"] not in seen:
            seen.add(r["event_id"])
            out.append(r)
    return out


def page_query(
    db: str,
    f: Filters,
    scope: Scope,
    sort: SortField,
    order: Order,
    limit: int,
    cursor_key: list[Any] | None,
    dedup: Dedup = "final",
    columns: list[str] | None = None,
    target_window: int | None | Literal["off"] = "off",
) -> tuple[str, dict[str, Any]]:
    """One page (``limit`` rows; fetch limit+1 to know whether there is a next page).

    ``target_window`` (with a target_id filter): narrow through ``events_by_target`` to that many
    candidate keys (``None``: all of the target's keys); ``"off"``: plain query.
    """
    conds, params = where_clause(f, scope)
    if cursor_key is not None:
        kc, kp = keyset_condition(sort, order, cursor_key)
        conds += kc
        params.update(kp)
    if target_window != "off" and f.target_id is not None:
        window = target_window if sort == "occurred_at" else None
        tc, tp = target_condition(db, f, scope, order, cursor_key, window)
        conds.append(tc)
        params.update(tp)
    cols = columns or SUMMARY_COLUMNS
    sql = f"{_select(cols, db, dedup, conds)} ORDER BY {order_by(sort, order)} LIMIT {{limit:UInt32}}"
    params["limit"] = limit
    return sql, params


def export_query(
    db: str,
    f: Filters,
    scope: Scope,
    sort: SortField,
    order: Order,
    columns: list[str],
    dedup: Dedup = "final",
) -> tuple[str, dict[str, Any]]:
    """Every matching row in page order, for streaming (no LIMIT)."""
    conds, params = where_clause(f, scope)
    return f"{_select(columns, db, dedup, conds)} ORDER BY {order_by(sort, order)}", params


def _csv_expr(c: str) -> str:
    if c in ("occurred_at", "received_at"):
        return f"concat(replaceOne(toString(e.{c}), ' ', 'T'), 'Z')"  # 2026-01-02T03:04:05.678Z
    if c == "event_id":
        return "toString(e.event_id)"
    if c == "status":
        return "e.status"
    # a cell starting with = + - @ tab or CR is a formula to a spreadsheet: prefix a quote
    return f"if(match(e.{c}, '^[-=+@\\\\t\\\\r]'), concat('\\'', e.{c}), toString(e.{c}))"


def csv_export_query(
    db: str, f: Filters, scope: Scope, sort: SortField, order: Order, dedup: Dedup = "final"
) -> tuple[str, dict[str, Any]]:
    """Every matching row as CSV columns, formatted by ClickHouse itself (FORMAT CSVWithNames)."""
    conds, params = where_clause(f, scope)
    inner = _select(EXPORT_COLUMNS, db, dedup, conds)
    d = "DESC" if order == "desc" else "ASC"
    keys = ", ".join(f"e.{c} {d}" for c, _ in sort_columns(sort))
    cols = ", ".join(f"{_csv_expr(c)} AS {c}" for c in EXPORT_COLUMNS)
    return f"SELECT {cols} FROM ({inner}) AS e ORDER BY {keys}", params  # noqa: S608 - constants only


def detail_query(db: str, event_id: str, scope: Scope, dedup: Dedup = "final") -> tuple[str, dict[str, Any]]:
    conds, params = where_clause(Filters(), scope)
    conds.append("event_id = {event_id:UUID}")
    params["event_id"] = event_id
    cols = ["event_json", "org_id", "project_id", "environment_id"]
    return f"{_select(cols, db, dedup, conds)} LIMIT 1", params


FACETS = {"action": "action", "actor": "actor_name", "source": "source", "target_type": "target_type"}


def facets_query(db: str, f: Filters, scope: Scope, dedup: Dedup = "final") -> tuple[str, dict[str, Any]]:
    """Counts per action, actor, source and target type in one scan (GROUPING SETS).

    Rows: (facet name, value, count); the caller keeps the top N of each facet.
    """
    conds, params = where_clause(f, scope)
    cols = list(FACETS.values())
    inner = _select(cols, db, dedup, conds)
    names = list(FACETS)
    # grouping(a, b, c, d) is a bitmask with 1 for each column that is part of the grouping set
    case = " ".join(f"WHEN {1 << (len(cols) - 1 - i)} THEN '{names[i]}'" for i in range(len(cols)))
    value = " ".join(f"WHEN {1 << (len(cols) - 1 - i)} THEN {c}" for i, c in enumerate(cols))
    # column names are constants of this module
    sql = (
        f"SELECT CASE grouping({', '.join(cols)}) {case} END AS facet, "  # noqa: S608
        f"CASE grouping({', '.join(cols)}) {value} END AS value, count() AS n "
        f"FROM ({inner}) GROUP BY GROUPING SETS ({', '.join(f'({c})' for c in cols)}) "
        f"SETTINGS force_grouping_standard_compatibility = 0"
    )
    return sql, params


def parse_time(field_name: str, value: str) -> datetime:
    """RFC 3339 / ISO 8601 -> aware UTC datetime; FilterError naming the field otherwise."""
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise FilterError(field_name, "not an ISO 8601 / RFC 3339 timestamp") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# -- timeline ------------------------------------------------------------------------------------

# Bucket widths the timeline may use (seconds): round numbers a person reads at a glance.
TIMELINE_STEPS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800,
    604800, 2592000,
)  # fmt: skip


def timeline_step(since: datetime, until: datetime, buckets: int) -> int:
    """The smallest round bucket width (seconds) that covers [since, until) in at most ``buckets``."""
    span = max(1.0, (until - since).total_seconds())
    for step in TIMELINE_STEPS:
        if span / step <= buckets:
            return step
    return TIMELINE_STEPS[-1]


def timeline_bounds_query(
    db: str, f: Filters, scope: Scope, dedup: Dedup = "final"
) -> tuple[str, dict[str, Any]]:
    """First and last occurred_at of the matching events (for a timeline without a time filter)."""
    conds, params = where_clause(f, scope)
    inner = _select(["occurred_at"], db, dedup, conds)
    return f"SELECT min(occurred_at), max(occurred_at), count() FROM ({inner})", params  # noqa: S608


def timeline_query(
    db: str, f: Filters, scope: Scope, step_s: int, dedup: Dedup = "final"
) -> tuple[str, dict[str, Any]]:
    """Events per bucket of ``step_s`` seconds (buckets aligned to the Unix epoch, UTC), for the filters
    and the principal's scope; rows (bucket start, count), empty buckets absent."""
    conds, params = where_clause(f, scope)
    inner = _select(["occurred_at"], db, dedup, conds)
    params["tl_step"] = step_s
    sql = (
        "SELECT toStartOfInterval(occurred_at, toIntervalSecond({tl_step:UInt32})) AS t, count() AS n "  # noqa: S608
        f"FROM ({inner}) GROUP BY t ORDER BY t"
    )
    return sql, params


def timeline_buckets(
    since: datetime, until: datetime, step_s: int, counts: dict[datetime, int]
) -> list[tuple[datetime, int]]:
    """Every bucket from the one holding ``since`` to the one holding the last instant before ``until``,
    with its count (0 when absent); the same epoch alignment as ClickHouse's toStartOfInterval."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    width = timedelta(seconds=step_s)
    first = (since - epoch) // width * step_s
    last = max(first, (until - epoch - timedelta(microseconds=1)) // width * step_s)
    norm = {int((t.replace(tzinfo=UTC) if t.tzinfo is None else t).timestamp()): n for t, n in counts.items()}
    out = []
    for sec in range(first, last + step_s, step_s):
        out.append((epoch + timedelta(seconds=sec), norm.get(sec, 0)))
    return out
