"""Archived audit files for the query API: a thin layer over ``services.archive``.

The archive job writes ``<archive_dir>/<org dir>/events-YYYY-MM-DD[.N].jsonl[.gz]`` with a manifest beside
each file; it also owns the rules (file-name validation without traversal, "only files at least
``retention.delete_min_age_days`` old since creation may be deleted", the audit event of a deletion).
This module only adapts them to the API's shapes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.archive import files as archive_files
from services.archive.job import Publish, delete_archive
from services.archive.rules import ArchiveError, ArchiveFile, org_dir_name
from services.common.settings import Settings

__all__ = ["ArchiveError", "ArchiveFile", "as_dict", "delete", "deletable", "get", "listing"]


def _created(af: ArchiveFile) -> datetime:
    t = datetime.fromisoformat(af.created_at.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def deletable(created_at: datetime, now: datetime, min_age_days: int) -> bool:
    """Octopus's safeguard (services.archive enforces it on delete): ``min_age_days`` since creation."""
    return now - created_at >= timedelta(days=min_age_days)


def as_dict(af: ArchiveFile, now: datetime, min_age_days: int) -> dict[str, Any]:
    return {
        "org_id": af.org_id,
        "filename": af.file.rsplit("/", 1)[-1],
        "day": af.day,
        "size": af.bytes,
        "rows": af.rows,
        "sha256": af.sha256,
        "created_at": af.created_at,
        "gzip": af.gzip,
        "deletable": deletable(_created(af), now, min_age_days),
    }


def _nameable(org_id: str | None) -> bool:
    """Whether an org's archive folder name fits a file name (255 bytes): an org id of 256 characters
    percent-encodes to up to 3 KB, and asking the file system about it fails (ENAMETOOLONG), which
    means "no archive", not a server error."""
    return org_id is None or len(org_dir_name(org_id).encode()) <= 255


def listing(settings: Settings, org_id: str | None) -> list[ArchiveFile]:
    """Files of one org (or all), newest day first."""
    if not _nameable(org_id):
        return []
    files = archive_files.list_archives(settings, org_id)
    return sorted(files, key=lambda a: (a.day, a.org_id, a.file), reverse=True)


def get(settings: Settings, filename: str, org_id: str) -> tuple[ArchiveFile, Path]:
    if "/" in filename or "\\" in filename:
        raise ArchiveError("invalid_name", "file name must be events-YYYY-MM-DD[.N].jsonl[.gz]")
    if not _nameable(org_id):
        raise ArchiveError("not_found", "archive not found")
    return archive_files.get_archive(settings, filename, org_id)


def delete(
    settings: Settings, filename: str, org_id: str, requested_by: str, publish: Publish
) -> ArchiveFile:
    """Deletes after publishing the audit event (actor = ``requested_by``); see services.archive.job."""
    if "/" in filename or "\\" in filename:
        raise ArchiveError("invalid_name", "file name must be events-YYYY-MM-DD[.N].jsonl[.gz]")
    if not _nameable(org_id):
        raise ArchiveError("not_found", "archive not found")
    return delete_archive(settings, filename, requested_by, org_id=org_id, publish=publish)
