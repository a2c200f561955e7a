"""Archive operations: archive one org-day, a whole run, delete a file, and the schedule.

For every org, every UTC day older than the org's retention is written to
``<archive_dir>/<org>/events-YYYY-MM-DD.jsonl[.gz]`` (one enriched event per line, exactly the stored
``event_json``, de-duplicated by ``event_id``, ordered by ``occurred_at, event_id``) with a manifest beside
it. A day's rows are deleted from ClickHouse only after the file was read back from disk and matched
ClickHouse on the same de-duplicated rows (row count and a checksum computed independently on both
sides) and the day's audit event was acknowledged by Kafka. Anything failing before that point leaves the
rows in place and no manifest (a ``.partial`` file at most).

Snapshot: a run only considers rows inserted at least ``retention.snapshot_lag_s`` (5 minutes) before it
started, so rows being inserted while it runs are neither archived nor deleted (the next run takes them),
and, once sealing runs (services/integrity), only rows already sealed into a signed
digest, so no event ever leaves ClickHouse before its digest exists.

Audit events (``audit_archive:create`` per archived day, ``audit_archive:delete`` per deleted file) are built
by :mod:`services.common.audit_events`. The functions here are synchronous (ClickHouse and files); they
publish through a :data:`Publish` callable: :func:`cli_publish` for the CLI (:func:`publish_now`),
:func:`loop_publish` for callers that run them in a worker thread beside an event loop that owns an
:class:`AuditPublisher` (the sink's schedule, the query API).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from schemas.events_v1 import RawEvent
from services.archive import files, store
from services.archive import metrics as m
from services.archive.rules import (
    ArchiveError,
    ArchiveFile,
    ArchiveReport,
    clamp_retention,
    days_to_archive,
)
from services.common.audit_events import (
    PRODUCER_ARCHIVE,
    SYSTEM,
    AuditPublisher,
    AuditUnavailable,
    person,
    publish_now,
    system_event,
)
from services.common.clickhouse import make_client
from services.common.logging import log
from services.common.settings import Settings

logger = logging.getLogger("auditpipe.archive")

Publish = Callable[[Sequence[RawEvent]], None]
"""Publishes audit events and returns once Kafka acknowledged them; raises on failure."""

Progress = Callable[[int, int], None]
"""Called with (org-days done, org-days in total) as a run advances."""


def cli_publish(settings: Settings) -> Publish:
    """For synchronous callers that own no event loop (a CLI command)."""
    return lambda events: publish_now(settings, settings.retention.audit_topic, events)


def loop_publish(publisher: AuditPublisher, loop: asyncio.AbstractEventLoop) -> Publish:
    """For code running in a worker thread beside ``loop``: publishes through the loop's publisher."""

    def publish(events: Sequence[RawEvent]) -> None:
        asyncio.run_coroutine_threadsafe(publisher.publish_all(events), loop).result()

    return publish


def _audited(publish: Publish, events: Sequence[RawEvent]) -> None:
    try:
        publish(events)
    except AuditUnavailable as e:
        raise ArchiveError("audit_failed", f"could not publish the audit event: {e}") from None
    except Exception as e:  # noqa: BLE001 - any failure means "not audited": the action must not happen
        raise ArchiveError("audit_failed", f"could not publish the audit event: {e!r}") from None


def audit_event(
    org_id: str, action: str, requested_by: str, target_id: str, change: str, metadata: dict[str, str]
) -> RawEvent:
    """The audit record of an archive operation; actor ``system`` or the person who asked."""
    return system_event(
        org_id=org_id,
        actor=SYSTEM if requested_by == "system" else person(requested_by),
        action=action,
        target_type="audit_archive",
        target_id=target_id,
        target_name=target_id.rsplit("/", 1)[-1],
        change=change,
        metadata=metadata,
        producer=PRODUCER_ARCHIVE,
    )


def archive_day(
    settings: Settings,
    client: object,
    org_id: str,
    day: date,
    snap: datetime,
    publish: Publish,
    requested_by: str = "system",
    before_verify: Callable[[Path], None] | None = None,
    now: datetime | None = None,
) -> tuple[ArchiveFile, int]:
    """Write, verify, record, audit and delete one org-day; returns (file, rows deleted)."""
    db = settings.clickhouse_database
    r = settings.retention
    gz = r.archive_gzip
    folder = files.org_folder(r.archive_dir, org_id)
    folder.mkdir(parents=True, exist_ok=True)
    final = files.next_free(folder, day, gz)
    partial = final.with_name(final.name + ".partial")
    params = store.day_params(org_id, day, snap)
    created = now or datetime.now(UTC)
    try:
        # 1. write
        files.write_lines(partial, store.export_lines(client, db, params), gz)
        if before_verify is not None:
            before_verify(partial)
        # 2. verify the file on disk against ClickHouse (same de-duplicated rows)
        n_file, sum_file, sha = files.read_back(partial)
        n_ch, sum_ch = store.checksum(client, db, params)
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
            file_sha256=files.sha256_file(final),
            bytes=final.stat().st_size,
            created_at=created.isoformat(),
            gzip=gz,
            checksum64=f"{sum_file:016x}",
            snapshot=snap.isoformat(),
            requested_by=requested_by,
            deletable_after=(created + timedelta(days=r.delete_min_age_days)).isoformat(),
        )
        files.write_manifest(final, af)
        # 3. audit, then delete exactly the verified rows
        _audited(
            publish,
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
        if final.exists() and not files.manifest_path(final).exists():
            final.unlink(missing_ok=True)
        raise
    store.delete_rows(client, db, params)
    m.ARCHIVED_ROWS.inc(n_file)
    return af, n_file


def snapshot(settings: Settings, client: object) -> datetime:
    """Rows stored up to this instant are considered: 5 minutes ago, and never past what is sealed."""
    snap = store.server_now(client) - timedelta(seconds=settings.retention.snapshot_lag_s)
    if settings.integrity.enabled:
        horizon = store.sealed_horizon(client, settings.clickhouse_database)
        if horizon is not None:
            # inserted_at <= snap: a row stored exactly at the horizon belongs to the next window
            snap = min(snap, horizon - timedelta(milliseconds=1))
    return snap


def run_archive(
    settings: Settings,
    requested_by: str = "system",
    now: datetime | None = None,
    org_id: str | None = None,
    before_verify: Callable[[Path], None] | None = None,
    publish: Publish | None = None,
    progress: Progress | None = None,
) -> ArchiveReport:
    """Archive and delete every org-day older than its retention. Errors of one day do not stop the others."""
    db = settings.clickhouse_database
    publish = publish or cli_publish(settings)
    client = make_client(settings, send_receive_timeout=600)
    now = now or datetime.now(UTC)
    snap = snapshot(settings, client)
    today = now.astimezone(UTC).date()
    retentions = {o: clamp_retention(d, settings) for o, d in store.org_retentions(client, db).items()}
    shortest = min([clamp_retention(None, settings), *retentions.values()])
    before = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=shortest)
    todo = []
    for org, days in sorted(store.candidate_days(client, db, before, snap, org_id).items()):
        keep = retentions.get(org, clamp_retention(None, settings))
        todo.extend((org, day) for day in days_to_archive(days, keep, today))
    report = ArchiveReport()
    if progress is not None:
        progress(0, len(todo))
    for i, (org, day) in enumerate(todo, 1):
        try:
            af, n = archive_day(settings, client, org, day, snap, publish, requested_by, before_verify, now)
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
        if progress is not None:
            progress(i, len(todo))
    expire_conflicts(settings, client, today, org_id, publish, requested_by, report)
    m.ARCHIVE_RUNS.labels("error" if report.errors else "ok").inc()
    return report


def expire_conflicts(
    settings: Settings,
    client: object,
    today: date,
    org_id: str | None,
    publish: Publish,
    requested_by: str,
    report: ArchiveReport,
) -> None:
    """Delete conflicting records (``event_conflicts``) seen more than ``retention.max_days`` ago — longer
    than any event they contradict may be kept — org by org (the stored event's org), each deletion
    audited first (``audit_archive:expire_conflicts``; no audit event, nothing deleted)."""
    db = settings.clickhouse_database
    days = settings.retention.max_days
    before = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=days)
    try:
        due = store.expired_conflicts(client, db, before, org_id)
    except Exception as e:  # noqa: BLE001 - a failed lookup is reported like a failed day, the run goes on
        report.errors.append(f"event_conflicts: {e}")
        return
    for org, n in sorted(due.items()):
        try:
            change = f"Deleted {n} conflicting record(s) seen before {before.date()} (kept {days} days)"
            meta = {"rows": str(n), "before": before.date().isoformat()}
            ev = audit_event(
                org, "audit_archive:expire_conflicts", requested_by, "event_conflicts", change, meta
            )
            _audited(publish, [ev])
            store.delete_conflicts(client, db, org, before)
            report.expired_conflicts += n
            log(logger, logging.INFO, "expired conflicts", org_id=org, rows=n, before=str(before.date()))
        except Exception as e:  # noqa: BLE001 - report, keep the rows, continue with the next org
            report.errors.append(f"{org} event_conflicts: {e}")
            log(logger, logging.ERROR, "expiring conflicts failed; rows kept", org_id=org, error=str(e)[:300])


def delete_archive(
    settings: Settings,
    name: str,
    requested_by: str,
    now: datetime | None = None,
    org_id: str | None = None,
    publish: Publish | None = None,
) -> ArchiveFile:
    """Delete one archive file and its manifest; refused while younger than ``delete_min_age_days``.

    The deletion is audited first (actor = ``requested_by``); if the audit event cannot be published,
    nothing is deleted.
    """
    af, p = files.get_archive(settings, name, org_id)
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
    _audited(
        publish or cli_publish(settings),
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
    files.manifest_path(p).unlink(missing_ok=True)
    log(logger, logging.INFO, "archive deleted", file=af.file, requested_by=requested_by)
    return af


async def archive_loop(settings: Settings, stop: asyncio.Event) -> None:
    """The scheduled job (run by the sink's process): one run every ``sink.archive_interval_s``.

    Runs in a worker thread; its audit events go through one publisher owned by this loop.
    """
    publisher = AuditPublisher(settings, settings.retention.audit_topic)
    publish = loop_publish(publisher, asyncio.get_running_loop())
    try:
        while not stop.is_set():
            try:
                rep = await asyncio.to_thread(run_archive, settings, publish=publish)
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
    finally:
        await publisher.close()
