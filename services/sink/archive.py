"""Retention and daily JSONL archives (``auditpipe archive run|list|delete``; also scheduled in the sink).

For every org, every UTC day older than the org's retention is written to
``<archive_dir>/<org>/events-YYYY-MM-DD.jsonl[.gz]`` (one enriched event per line, exactly the stored
``event_json``, de-duplicated by ``event_id``, ordered by ``occurred_at, event_id``) with a manifest
``<file>.manifest.json`` beside it (rows, sha256 of the JSONL content, sha256 of the file, ...).

A day's rows are deleted from ClickHouse only after the file was read back from disk and matched
ClickHouse on the same de-duplicated rows: row count and a checksum (64-bit wrapping sum of the first
8 bytes, little-endian, of each line's SHA-256) computed independently on both sides. Anything failing
before that point leaves the rows in place and no manifest (a ``.partial`` file at most).

Snapshot: a run only considers rows inserted more than :data:`SNAPSHOT_LAG_S` before it started
(``inserted_at <= snapshot``), so rows being inserted while it runs are neither archived nor deleted;
they are picked up by the next run (in a file ``events-YYYY-MM-DD.N.jsonl``).

Every archived day and every deleted archive file is itself an audit event on ``audit.raw.v1``
(actor ``system``, or the person who asked), enriched and stored like any other event.

The functions take settings and ``requested_by`` so the query API can call them too.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from services.common.clickhouse import make_client
from services.common.logging import log
from services.common.settings import Settings
from services.sink import metrics as m

logger = logging.getLogger("auditpipe.sink.archive")

SNAPSHOT_LAG_S = 300
FILE_RE = re.compile(r"^events-(\d{4}-\d{2}-\d{2})(?:\.(\d+))?\.jsonl(\.gz)?$")
MASK64 = (1 << 64) - 1


class ArchiveError(Exception):
    """A refused or failed archive operation; ``code`` is machine-readable."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code


@dataclass
class ArchiveFile:
    org_id: str
    file: str  # "<org dir>/<name>", relative to archive_dir: the id used by list/delete
    day: str
    rows: int
    sha256: str  # of the uncompressed JSONL content
    file_sha256: str  # of the bytes on disk
    bytes: int
    created_at: str
    gzip: bool
    checksum64: str = ""
    snapshot: str = ""
    requested_by: str = "system"
    deletable_after: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ArchiveReport:
    files: list[ArchiveFile] = field(default_factory=list)
    deleted_rows: int = 0
    errors: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- pure rules
def clamp_retention(days: int | None, settings: Settings) -> int:
    """Per-org retention in days within 1..365 (1..3650 self-hosted); default when unset."""
    r = settings.retention
    if days is None or days <= 0:
        days = r.default_days
    return max(1, min(int(days), r.max_days))


def days_to_archive(days_with_data: list[date], retention_days: int, today: date) -> list[date]:
    """Every UTC day strictly older than ``today - retention_days``."""
    cutoff = today - timedelta(days=retention_days)
    return sorted(d for d in days_with_data if d < cutoff)


def line_checksum(line: bytes) -> int:
    """Per-line term of the verification checksum (mirrors the ClickHouse expression in _ch_checksum)."""
    return int.from_bytes(hashlib.sha256(line).digest()[:8], "little")


def org_dir_name(org_id: str) -> str:
    """A safe folder name for an org id (percent-encoded; never '.' or '..')."""
    name = quote(org_id, safe="-_@")
    return name.replace(".", "%2E")


def file_name(day: date, part: int, gz: bool) -> str:
    return f"events-{day.isoformat()}" + (f".{part}" if part else "") + ".jsonl" + (".gz" if gz else "")


# ------------------------------------------------------------------------------------------- ClickHouse
_DAY_FILTER = (
    "org_id = {org:String} AND occurred_at >= {start:DateTime64(3, 'UTC')} "
    "AND occurred_at < {end:DateTime64(3, 'UTC')} AND inserted_at <= {snap:DateTime64(3, 'UTC')}"
)


def _params(org: str, day: date, snap: datetime) -> dict[str, Any]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return {"org": org, "start": start, "end": start + timedelta(days=1), "snap": snap}


def org_retentions(client: Any, db: str) -> dict[str, int]:
    """Per-org retention days as written by the query API (last write wins)."""
    rows = client.query(
        f"SELECT org_id, argMax(retention_days, updated_at) FROM {db}.org_settings GROUP BY org_id"  # noqa: S608 - db from settings
    ).result_rows
    return {str(o): int(d) for o, d in rows}


def _candidate_days(
    client: Any, db: str, before: datetime, snap: datetime, org: str | None
) -> dict[str, list[date]]:
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
        f"SELECT {cols} FROM {db}.events WHERE {_DAY_FILTER} "  # noqa: S608 - db from settings
        "ORDER BY occurred_at, event_id LIMIT 1 BY event_id"
    )


def _export_lines(client: Any, db: str, params: dict[str, Any]) -> Iterator[bytes]:
    with client.query_column_block_stream(
        _dedup_select(db, "occurred_at, event_id, event_json"), parameters=params
    ) as stream:
        for block in stream:
            for s in block[2]:
                yield (s if isinstance(s, bytes) else s.encode()) + b"\n"


_CHECKSUM_SQL = "sumWithOverflow(reinterpretAsUInt64(substring(SHA256(concat(event_json, '\\n')), 1, 8)))"


def _ch_checksum(client: Any, db: str, params: dict[str, Any]) -> tuple[int, int]:
    """(rows, checksum) of the de-duplicated rows, computed by ClickHouse."""
    inner = _dedup_select(db, "occurred_at, event_id, event_json")
    q = f"SELECT count(), {_CHECKSUM_SQL} FROM ({inner})"  # noqa: S608 - db from settings; values bound
    n, s = client.query(q, parameters=params).result_rows[0]
    return int(n), int(s) & MASK64


# Tables holding whole listing rows of events, deleted from with it (0011 events_by_time: free-text search
# across orgs answers from there alone). events_by_target (0010) holds keys only and is not cleaned: its
# stale keys match nothing in events.
_COPIES = ("events_by_time",)


def _delete_rows(client: Any, db: str, params: dict[str, Any]) -> None:
    """Delete exactly the archived rows (same filter) from the copies, then from events.

    Copies first: if the job dies in between, events still holds the day, the next run archives and
    deletes it again, and no search shows an event whose row is gone.
    """
    for table in (*_COPIES, "events"):
        _delete_from(client, db, table, params)


def _delete_from(client: Any, db: str, table: str, params: dict[str, Any]) -> None:
    """Lightweight DELETE; ALTER ... DELETE (a synchronous mutation) when refused."""
    try:
        client.command(
            f"DELETE FROM {db}.{table} WHERE {_DAY_FILTER}",  # noqa: S608 - names are constants; values bound
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
            f"ALTER TABLE {db}.{table} DELETE WHERE {_DAY_FILTER}",  # noqa: S608
            parameters=params,
            settings={"mutations_sync": 2},
        )


# ------------------------------------------------------------------------------------------- files
def _read_back(path: Path, gz: bool) -> tuple[int, int, str]:
    """(rows, checksum, sha256 of content) of a written archive, read from disk."""
    h = hashlib.sha256()
    n = 0
    s = 0
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        for line in f:
            h.update(line)
            n += 1
            s = (s + line_checksum(line)) & MASK64
    return n, s, h.hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def _next_free(folder: Path, day: date, gz: bool) -> Path:
    part = 0
    while True:
        p = folder / file_name(day, part, gz)
        if not p.exists() and not _manifest_path(p).exists():
            return p
        part += 1


# ------------------------------------------------------------------------------------------- audit events
def audit_event(
    org_id: str, action: str, requested_by: str, target_id: str, change: str, metadata: dict[str, str]
) -> dict[str, Any]:
    """A RawEvent (dict) describing an archive operation; actor ``system`` or the person who asked."""
    actor: dict[str, Any] = (
        {"type": "system"}
        if requested_by == "system"
        else {"type": "user", "id": requested_by, "name": requested_by}
    )
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "org_id": org_id,
        "actor": actor,
        "action": action,
        "event_type": action.split(":", 1)[1],
        "target": {
            "type": "audit_archive",
            "id": target_id[:256],
            "name": target_id.rsplit("/", 1)[-1][:1024],
        },
        "source": "system" if requested_by == "system" else "auditpipe",
        "change": change[:4096],
        "metadata": metadata,
        "producer": "auditpipe-archive",
    }


async def _publish(settings: Settings, events: list[dict[str, Any]]) -> None:
    from services.common.kafka import JSON_HEADERS, make_producer

    producer = make_producer(settings)
    await producer.start()
    try:
        for ev in events:
            fut = await producer.send(
                settings.retention.audit_topic,
                value=orjson.dumps(ev),
                key=ev["org_id"].encode(),
                headers=JSON_HEADERS,
            )
            await fut
    finally:
        await producer.stop()


def publish_audit(settings: Settings, events: list[dict[str, Any]]) -> None:
    """Publish audit events and wait for Kafka's acknowledgement; callable from sync or async code."""
    if not events:
        return
    err: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(_publish(settings, events))
        except BaseException as e:  # noqa: BLE001
            err.append(e)

    t = threading.Thread(target=target, name="archive-audit")
    t.start()
    t.join()
    if err:
        raise ArchiveError("audit_failed", f"could not publish the audit event: {err[0]!r}")


# ------------------------------------------------------------------------------------------- operations
def archive_day(
    settings: Settings,
    client: Any,
    org_id: str,
    day: date,
    snap: datetime,
    requested_by: str = "system",
    before_verify: Callable[[Path], None] | None = None,
    now: datetime | None = None,
) -> tuple[ArchiveFile, int]:
    """Write, verify, record and delete one org-day; returns (file, rows deleted)."""
    db = settings.clickhouse_database
    r = settings.retention
    gz = r.archive_gzip
    folder = Path(r.archive_dir) / org_dir_name(org_id)
    folder.mkdir(parents=True, exist_ok=True)
    final = _next_free(folder, day, gz)
    partial = final.with_name(final.name + ".partial")
    params = _params(org_id, day, snap)
    created = now or datetime.now(UTC)
    try:
        # 1. write
        with gzip.open(partial, "wb", compresslevel=6) if gz else open(partial, "wb") as f:  # type: ignore[operator]
            for line in _export_lines(client, db, params):
                f.write(line)
            f.flush()
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        if before_verify is not None:
            before_verify(partial)
        # 2. verify the file on disk against ClickHouse (same de-duplicated rows)
        n_file, sum_file, sha = _read_back(partial, gz)
        n_ch, sum_ch = _ch_checksum(client, db, params)
        if n_file != n_ch or sum_file != sum_ch:
            raise ArchiveError(
                "verify_failed",
                f"{org_id} {day}: file has {n_file} rows (checksum {sum_file:016x}), "
                f"ClickHouse {n_ch} ({sum_ch:016x})",
            )
        partial.replace(final)
        rel = f"{folder.name}/{final.name}"
        af = ArchiveFile(
            org_id=org_id,
            file=rel,
            day=day.isoformat(),
            rows=n_file,
            sha256=sha,
            file_sha256=_sha256_file(final),
            bytes=final.stat().st_size,
            created_at=created.isoformat(),
            gzip=gz,
            checksum64=f"{sum_file:016x}",
            snapshot=snap.isoformat(),
            requested_by=requested_by,
            deletable_after=(created + timedelta(days=r.delete_min_age_days)).isoformat(),
        )
        _atomic_write(_manifest_path(final), orjson.dumps(af.to_dict(), option=orjson.OPT_INDENT_2))
        # 3. audit, then delete exactly the verified rows
        publish_audit(
            settings,
            [
                audit_event(
                    org_id,
                    "audit_archive:create",
                    requested_by,
                    rel,
                    f"Archived {n_file} events of {day} to {rel} and deleted them from ClickHouse",
                    {"rows": str(n_file), "sha256": sha, "day": day.isoformat()},
                )
            ],
        )
    except BaseException:
        partial.unlink(missing_ok=True)
        if final.exists() and not _manifest_path(final).exists():
            final.unlink(missing_ok=True)
        raise
    _delete_rows(client, db, params)
    m.ARCHIVED_ROWS.inc(n_file)
    return af, n_file


def run_archive(
    settings: Settings,
    requested_by: str = "system",
    now: datetime | None = None,
    org_id: str | None = None,
    before_verify: Callable[[Path], None] | None = None,
) -> ArchiveReport:
    """Archive and delete every org-day older than its retention. Errors of one day do not stop the others."""
    db = settings.clickhouse_database
    client = make_client(settings, send_receive_timeout=600)
    now = now or datetime.now(UTC)
    server_now = client.query("SELECT now64(3, 'UTC')").result_rows[0][0]
    if server_now.tzinfo is None:
        server_now = server_now.replace(tzinfo=UTC)
    snap = server_now - timedelta(seconds=SNAPSHOT_LAG_S)
    today = now.astimezone(UTC).date()
    retentions = {o: clamp_retention(d, settings) for o, d in org_retentions(client, db).items()}
    shortest = min([clamp_retention(None, settings), *retentions.values()])
    before = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=shortest)
    report = ArchiveReport()
    for org, days in sorted(_candidate_days(client, db, before, snap, org_id).items()):
        keep = retentions.get(org, clamp_retention(None, settings))
        for day in days_to_archive(days, keep, today):
            try:
                af, n = archive_day(settings, client, org, day, snap, requested_by, before_verify, now)
                report.files.append(af)
                report.deleted_rows += n
                log(logger, logging.INFO, "archived day", org_id=org, day=str(day), rows=n, file=af.file)
            except Exception as e:  # noqa: BLE001 - report, keep rows, continue with the next day
                report.errors.append(f"{org} {day}: {e}")
                log(
                    logger,
                    logging.ERROR,
                    "archive of day failed; rows kept",
                    org_id=org,
                    day=str(day),
                    error=str(e)[:300],
                )
    m.ARCHIVE_RUNS.labels("error" if report.errors else "ok").inc()
    return report


def _load_manifest(p: Path) -> ArchiveFile | None:
    try:
        d = orjson.loads(p.read_bytes())
        return ArchiveFile(**{k: d[k] for k in ArchiveFile.__dataclass_fields__ if k in d})
    except Exception:  # noqa: BLE001 - a broken manifest is listed as missing
        return None


def list_archives(settings: Settings, org_id: str | None = None) -> list[ArchiveFile]:
    """Archive files with a manifest, oldest day first (``org_id`` restricts to one org)."""
    root = Path(settings.retention.archive_dir)
    if not root.is_dir():
        return []
    folders = (
        [root / org_dir_name(org_id)]
        if org_id is not None
        else sorted(p for p in root.iterdir() if p.is_dir())
    )
    out = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if FILE_RE.match(p.name) and p.is_file():
                af = _load_manifest(_manifest_path(p))
                if af is not None and (org_id is None or af.org_id == org_id):
                    out.append(af)
    return sorted(out, key=lambda a: (a.org_id, a.day, a.file))


def resolve(settings: Settings, name: str) -> Path:
    """``<org dir>/<file>`` (as listed) -> its path; refuses anything else (no traversal)."""
    parts = name.strip("/").split("/")
    if len(parts) != 2 or not FILE_RE.match(parts[1]) or parts[0] in ("", ".", "..") or "\\" in name:
        raise ArchiveError(
            "invalid_name", f"not an archive file name: {name!r} (expected <org>/events-YYYY-MM-DD.jsonl)"
        )
    p = Path(settings.retention.archive_dir) / parts[0] / parts[1]
    if not p.is_file() or not _manifest_path(p).is_file():
        raise ArchiveError("not_found", f"no such archive: {name}")
    return p


def get_archive(settings: Settings, name: str, org_id: str | None = None) -> tuple[ArchiveFile, Path]:
    """One archive by ``<org dir>/<file>``, or by bare ``<file>`` together with ``org_id`` (API paths)."""
    if org_id is not None and "/" not in name:
        name = f"{org_dir_name(org_id)}/{name}"
    p = resolve(settings, name)
    af = _load_manifest(_manifest_path(p))
    if af is None or (org_id is not None and af.org_id != org_id):
        raise ArchiveError("not_found", f"no such archive: {name}")
    return af, p


def delete_archive(
    settings: Settings, name: str, requested_by: str, now: datetime | None = None, org_id: str | None = None
) -> ArchiveFile:
    """Delete one archive file and its manifest; refused while younger than ``delete_min_age_days``.

    The deletion is audited first (actor = ``requested_by``); if the audit event cannot be published,
    nothing is deleted.
    """
    af, p = get_archive(settings, name, org_id)
    now = now or datetime.now(UTC)
    created = datetime.fromisoformat(af.created_at)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    min_age = timedelta(days=settings.retention.delete_min_age_days)
    if now - created < min_age:
        raise ArchiveError(
            "too_young",
            f"{name} was created {created.date()}: archives younger than "
            f"{settings.retention.delete_min_age_days} days cannot be deleted "
            f"(allowed from {(created + min_age).date()})",
        )
    publish_audit(
        settings,
        [
            audit_event(
                af.org_id,
                "audit_archive:delete",
                requested_by,
                af.file,
                f"Deleted archive {af.file} ({af.rows} events of {af.day})",
                {"rows": str(af.rows), "sha256": af.sha256, "day": af.day},
            )
        ],
    )
    p.unlink()
    _manifest_path(p).unlink(missing_ok=True)
    log(logger, logging.INFO, "archive deleted", file=af.file, requested_by=requested_by)
    return af


async def archive_loop(settings: Settings, stop: asyncio.Event) -> None:
    """The scheduled job inside the sink: one run every ``sink.archive_interval_s``."""
    while not stop.is_set():
        try:
            rep = await asyncio.to_thread(run_archive, settings)
            if rep.files or rep.errors:
                log(
                    logger,
                    logging.INFO,
                    "archive run",
                    files=len(rep.files),
                    rows=rep.deleted_rows,
                    errors=rep.errors[:5],
                )
        except Exception as e:  # noqa: BLE001 - next run retries
            m.ARCHIVE_RUNS.labels("error").inc()
            log(logger, logging.ERROR, "archive run failed", error=str(e)[:300])
        try:
            await asyncio.wait_for(stop.wait(), settings.sink.archive_interval_s)
        except TimeoutError:
            pass
