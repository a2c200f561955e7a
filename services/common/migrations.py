"""ClickHouse migrations: numbered ``schemas/clickhouse/NNNN_name.sql`` files, each applied once.

Applied versions are recorded in ``<db>.schema_migrations`` with the file's checksum; a changed file
that was already applied is reported, never re-run. ``${db}`` in a file is the configured database
(validated as an identifier in settings, never user input).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from clickhouse_connect.driver.client import Client

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "schemas" / "clickhouse"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def statements(self, db: str) -> list[str]:
        body = "\n".join(
            line for line in self.text.replace("${db}", db).splitlines() if not line.strip().startswith("--")
        )
        return [s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip()]


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    out = []
    for p in sorted(directory.glob("*.sql")):
        m = _NAME.match(p.name)
        if not m:
            raise ValueError(f"migration file name must be NNNN_name.sql: {p.name}")
        out.append(Migration(int(m.group(1)), m.group(2), p))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise ValueError("two migrations share a version number")
    return out


def applied(client: Client, db: str) -> dict[int, str]:
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String, "
        "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = MergeTree ORDER BY version"
    )
    # db is a settings identifier, validated in Settings (never user input).
    rows = client.query(f"SELECT version, checksum FROM {db}.schema_migrations").result_rows  # noqa: S608
    return {int(v): str(c) for v, c in rows}


def migrate(client: Client, db: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply pending migrations in order; returns those applied (empty when up to date)."""
    done = applied(client, db)
    ran = []
    for m in discover(directory):
        if m.version in done:
            continue
        for stmt in m.statements(db):
            client.command(stmt)
        client.insert(
            f"{db}.schema_migrations",
            [[m.version, m.name, m.checksum]],
            column_names=["version", "name", "checksum"],
        )
        ran.append(m)
    return ran


def drifted(client: Client, db: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Applied migrations whose file changed since (should never happen; add a new migration instead)."""
    done = applied(client, db)
    return [m for m in discover(directory) if m.version in done and done[m.version] != m.checksum]


# ------------------------------------------------------------------------------------- cluster mode
# How each table of schemas/clickhouse is spread over the shards of a cluster: the Distributed table under
# the name the services use shards by this expression. Every copy of an event (same org_id) and every row
# of an org's views land on one shard, so FINAL de-duplicates per shard; the input table shards by the
# org inside the record, which is the same value, so the view writes each row on the shard that owns it.
# The first-content-wins tables shard by event_id: an id lives on one shard whatever its org.
SHARD_KEYS: dict[str, str] = {
    "events": "cityHash64(org_id)",
    "events_by_target": "cityHash64(org_id)",
    "events_by_time": "cityHash64(org_id)",
    "events_input": "cityHash64(JSONExtractString(record, 'org_id'))",
    "org_settings": "cityHash64(org_id)",
    "event_ids": "cityHash64(event_id)",
    "event_conflicts": "cityHash64(event_id)",
    # tamper evidence: by org like events, so the sealer's INSERT … SELECT from events and its "not yet
    # sealed" subquery stay on one shard (distributed_product_mode=local)
    "sealed_events": "cityHash64(org_id)",
    "digests": "cityHash64(org_id)",
    "digest_published": "cityHash64(org_id)",
    "integrity_checks": "cityHash64(org_id)",
    "seal_runs": "rand()",  # a few rows a day, read whole
}
LOCAL_SUFFIX = "_local"
_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\$\{db\}|\w+)\.(\w+)\s*\(", re.S)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w+)(\(([^)]*)\))?")
_CREATE_VIEW = re.compile(r"^CREATE (MATERIALIZED )?VIEW IF NOT EXISTS (\S+)\.(\w+)", re.S)
_ALTER = re.compile(r"^ALTER TABLE (\S+)\.(\w+)\s+(.*)$", re.S)
_REPLICABLE = ("MergeTree", "ReplacingMergeTree", "SummingMergeTree", "AggregatingMergeTree")


class ClusterDDLError(ValueError):
    """A migration statement the cluster mode does not know how to spread (one line)."""


@dataclass(frozen=True)
class ClusterStatement:
    sql: str
    every_node: (
        bool  # DDL: on every node (or once with ON CLUSTER); data (backfills): once, through Distributed
    )


def cluster_statements(
    m: Migration, db: str, cluster: str, *, replicated: bool = True, on_cluster: bool = True
) -> list[ClusterStatement]:
    """The statements of migration ``m`` for a cluster named ``cluster``.

    - a table becomes ``<name>_local`` on every node (``Replicated…MergeTree`` with the ``{shard}`` and
      ``{replica}`` macros when ``replicated``; ``EmbeddedRocksDB`` and ``Null`` stay as they are: per
      server) plus a ``Distributed`` table under its own name, sharded by :data:`SHARD_KEYS`;
    - a materialized view reads and writes the local tables (it fires on each shard's own inserts);
    - ``ALTER TABLE`` applies to the local table (``non_replicated_deduplication_window`` stays: replicated
      tables accept and ignore it, they keep ``replicated_deduplication_window`` blocks);
    - ``INSERT … SELECT`` backfills run once, through the Distributed tables;
    - with ``on_cluster``, every DDL statement carries ``ON CLUSTER <cluster>`` (ClickHouse runs it on
      every node through Keeper); without it the caller runs it on each node.
    """
    on = f" ON CLUSTER {cluster}" if on_cluster else ""
    out: list[ClusterStatement] = []
    for stmt in m.statements(db):
        head = stmt.lstrip()
        if (t := _CREATE_TABLE.match(head)) is not None:
            out.extend(_cluster_table(head, t.group(1), t.group(2), cluster, on, replicated))
        elif (v := _CREATE_VIEW.match(head)) is not None:
            body = _to_local(head[v.end() :], db)
            kind = "MATERIALIZED VIEW" if v.group(1) else "VIEW"
            if not v.group(1):
                body = head[v.end() :]  # a plain view reads the Distributed tables
            out.append(
                ClusterStatement(f"CREATE {kind} IF NOT EXISTS {v.group(2)}.{v.group(3)}{on}{body}", True)
            )
        elif (a := _ALTER.match(head)) is not None:
            rest = a.group(3)
            out.append(ClusterStatement(f"ALTER TABLE {a.group(1)}.{_local(a.group(2))}{on} {rest}", True))
        elif head.startswith("INSERT INTO"):
            out.append(ClusterStatement(head, False))
        else:
            raise ClusterDDLError(f"{m.version:04d}_{m.name}: no cluster form for: {head[:60]!r}")
    return out


def _local(table: str) -> str:
    if table not in SHARD_KEYS:
        raise ClusterDDLError(f"table {table!r} has no sharding key in migrations.SHARD_KEYS")
    return table + LOCAL_SUFFIX


def _to_local(sql: str, db: str) -> str:
    """``db.table`` -> ``db.table_local`` for every sharded table named in ``sql``."""
    names = "|".join(sorted(SHARD_KEYS, key=len, reverse=True))
    return re.sub(rf"\b{re.escape(db)}\.({names})\b", lambda x: f"{db}.{x.group(1)}{LOCAL_SUFFIX}", sql)


def _cluster_table(
    stmt: str, db: str, table: str, cluster: str, on: str, replicated: bool
) -> list[ClusterStatement]:
    local = _local(table)
    e = _ENGINE.search(stmt)
    if e is None:
        raise ClusterDDLError(f"table {table!r}: no ENGINE")
    engine, args = e.group(1), (e.group(3) or "").strip()
    engine_sql = e.group(0).split("=", 1)[1].strip()
    if replicated and engine in _REPLICABLE:
        path = f"'/clickhouse/tables/{{shard}}/{db}/{local}', '{{replica}}'"
        engine_sql = f"Replicated{engine}({path}{', ' + args if args else ''})"
    rest = stmt[e.end() :]
    head = stmt[: e.start()].replace(f"{db}.{table}", f"{db}.{local}{on}", 1)
    create_local = f"{head}ENGINE = {engine_sql}{rest}"
    create_dist = (
        f"CREATE TABLE IF NOT EXISTS {db}.{table}{on} AS {db}.{local} "
        f"ENGINE = Distributed({cluster}, {db}, {local}, {SHARD_KEYS[table]})"
    )
    return [ClusterStatement(create_local, True), ClusterStatement(create_dist, True)]


def cluster_migrate(
    clients: list[Client],
    db: str,
    cluster: str,
    *,
    replicated: bool = True,
    on_cluster: bool = True,
    directory: Path = MIGRATIONS_DIR,
) -> list[Migration]:
    """Apply pending migrations in their cluster form. With ``on_cluster`` ``clients`` is one node and
    ClickHouse spreads the DDL; without, DDL runs on every node of ``clients`` in turn. Backfills run once
    through the first node. Applied versions are recorded on every node given (``schema_migrations``
    is per node), so the command resumes where it stopped."""
    if on_cluster:
        clients[0].command(f"CREATE DATABASE IF NOT EXISTS {db} ON CLUSTER {cluster}")
    done = [applied(c, db) for c in clients]
    ran = []
    for m in discover(directory):
        if all(m.version in d for d in done):
            continue
        for st in cluster_statements(m, db, cluster, replicated=replicated, on_cluster=on_cluster):
            if st.every_node and not on_cluster:
                for c, d in zip(clients, done, strict=True):
                    if m.version not in d:
                        c.command(st.sql)
            else:
                clients[0].command(st.sql)
        for c, d in zip(clients, done, strict=True):
            if m.version not in d:
                c.insert(
                    f"{db}.schema_migrations",
                    [[m.version, m.name, m.checksum]],
                    column_names=["version", "name", "checksum"],
                )
        ran.append(m)
    return ran
