"""Archived audit files, as the query API sees them: list, open, delete (30-day rule).

Layout (written by the sink's retention job): ``<archive_dir>/<org_id>/events-YYYY-MM-DD.jsonl[.gz]``,
optionally with a manifest beside each file (``<file>.manifest.json``) holding ``created_at``.

This is a small interface of our own until ``services/sink/archive.py`` lands; the rules that matter
(file-name validation, no path traversal, "only files at least N days old since creation may be
deleted") are pure functions here and tested without I/O.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import orjson

FILENAME = re.compile(r"^events-(\d{4}-\d{2}-\d{2})\.jsonl(\.gz)?$")
ORG = re.compile(r"^[A-Za-z0-9_.\-]{1,256}$")


class ArchiveError(Exception):
    """``kind``: not_found | too_recent | bad_name."""

    def __init__(self, kind: str, msg: str) -> None:
        super().__init__(msg)
        self.kind = kind


@dataclass(frozen=True)
class ArchiveFile:
    org_id: str
    filename: str
    day: str
    size: int
    created_at: datetime
    gzip: bool

    def as_dict(self, now: datetime, min_age_days: int) -> dict:
        return {
            "org_id": self.org_id,
            "filename": self.filename,
            "day": self.day,
            "size": self.size,
            "created_at": self.created_at.isoformat(timespec="seconds"),
            "gzip": self.gzip,
            "deletable": deletable(self.created_at, now, min_age_days),
        }


def valid_name(filename: str) -> bool:
    return bool(FILENAME.match(filename))


def deletable(created_at: datetime, now: datetime, min_age_days: int) -> bool:
    """Octopus's safeguard: only files at least ``min_age_days`` old since they were created."""
    return now - created_at >= timedelta(days=min_age_days)


class ArchiveStore:
    """Archive files under one directory; every org id and file name is validated before touching disk."""

    def __init__(self, root: Path, min_age_days: int = 30) -> None:
        self.root = root
        self.min_age_days = min_age_days

    def _path(self, org_id: str, filename: str) -> Path:
        if not ORG.match(org_id) or org_id in (".", ".."):
            raise ArchiveError("bad_name", "invalid org id")
        if not valid_name(filename):
            raise ArchiveError("bad_name", "file name must be events-YYYY-MM-DD.jsonl[.gz]")
        return self.root / org_id / filename

    def _info(self, org_id: str, path: Path) -> ArchiveFile:
        st = path.stat()
        created = datetime.fromtimestamp(st.st_mtime, UTC)
        manifest = path.with_name(path.name + ".manifest.json")
        if manifest.is_file():
            try:
                created = datetime.fromisoformat(
                    orjson.loads(manifest.read_bytes())["created_at"].replace("Z", "+00:00")
                )
            except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
                pass
        m = FILENAME.match(path.name)
        assert m is not None
        return ArchiveFile(org_id, path.name, m.group(1), st.st_size, created, bool(m.group(2)))

    def list(self, org_id: str | None) -> list[ArchiveFile]:
        """Files of one org (or every org), newest day first."""
        if not self.root.is_dir():
            return []
        orgs = [org_id] if org_id is not None else sorted(os.listdir(self.root))
        out = []
        for org in orgs:
            if not ORG.match(org):
                continue
            d = self.root / org
            if not d.is_dir():
                continue
            for name in os.listdir(d):
                if valid_name(name) and (d / name).is_file():
                    out.append(self._info(org, d / name))
        out.sort(key=lambda f: (f.day, f.org_id), reverse=True)
        return out

    def get(self, org_id: str, filename: str) -> ArchiveFile:
        p = self._path(org_id, filename)
        if not p.is_file():
            raise ArchiveError("not_found", "no such archive file")
        return self._info(org_id, p)

    def open(self, org_id: str, filename: str) -> BinaryIO:
        self.get(org_id, filename)
        return self._path(org_id, filename).open("rb")

    def delete(self, org_id: str, filename: str, now: datetime | None = None) -> ArchiveFile:
        info = self.get(org_id, filename)
        now = now or datetime.now(UTC)
        if not deletable(info.created_at, now, self.min_age_days):
            raise ArchiveError(
                "too_recent", f"archive files can be deleted only {self.min_age_days} days after creation"
            )
        p = self._path(org_id, filename)
        p.unlink()
        manifest = p.with_name(p.name + ".manifest.json")
        if manifest.exists():
            manifest.unlink()
        return info
