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
