"""Pure rules and types of retention and archives: no I/O here."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any
from urllib.parse import quote

from services.common.settings import Settings

FILE_RE = re.compile(r"^events-(\d{4}-\d{2}-\d{2})(?:\.(\d+))?\.jsonl(\.gz)?$")
MASK64 = (1 << 64) - 1


class ArchiveError(Exception):
    """A refused or failed archive operation; ``code`` is machine-readable."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(msg)
        self.code = code


@dataclass
class ArchiveFile:
    """The manifest of one archive file (``<file>.manifest.json``)."""

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
    expired_conflicts: int = 0  # rows of event_conflicts older than the longest retention, deleted
    errors: list[str] = field(default_factory=list)


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
    """Per-line term of the verification checksum (mirrors the ClickHouse expression in store.checksum)."""
    return int.from_bytes(hashlib.sha256(line).digest()[:8], "little")


def org_dir_name(org_id: str) -> str:
    """A safe folder name for an org id (percent-encoded; never '.' or '..')."""
    name = quote(org_id, safe="-_@")
    return name.replace(".", "%2E")


def file_name(day: date, part: int, gz: bool) -> str:
    return f"events-{day.isoformat()}" + (f".{part}" if part else "") + ".jsonl" + (".gz" if gz else "")
