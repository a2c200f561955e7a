"""Digest files beside the day's archives: ``<root>/<org dir>/digests-YYYY-MM-DD.jsonl``, one published
digest record (RFC 8785 JSON) per line, by the UTC day of the window's start, appended and fsync'ed.
``root`` is ``integrity.digest_dir``, by default the archive folder."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from services.archive.files import org_folder
from services.common.settings import Settings

DIGEST_FILE_RE = re.compile(r"^digests-(\d{4}-\d{2}-\d{2})\.jsonl$")


def root(settings: Settings) -> Path:
    return Path(settings.integrity.digest_dir or settings.retention.archive_dir)


def path_for(base: Path, org_id: str, window_start: datetime) -> Path:
    return org_folder(base, org_id) / f"digests-{window_start.date().isoformat()}.jsonl"


def append(base: Path, org_id: str, window_start: datetime, record: bytes, if_absent: bool = False) -> None:
    """Append one record; with ``if_absent`` (republishing after a crash), only when not already there."""
    p = path_for(base, org_id, window_start)
    p.parent.mkdir(parents=True, exist_ok=True)
    if if_absent and p.exists() and record in p.read_bytes().split(b"\n"):
        return
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, record + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_all(base: Path, org_id: str | None = None) -> Iterator[tuple[Path, bytes]]:
    """(file, line) for every digest line under ``base`` (of one org when given)."""
    base = Path(base)
    if not base.is_dir():
        return
    folders = (
        [org_folder(base, org_id)] if org_id is not None else sorted(p for p in base.iterdir() if p.is_dir())
    )
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if DIGEST_FILE_RE.match(p.name) and p.is_file():
                for line in p.read_bytes().split(b"\n"):
                    if line.strip():
                        yield p, line
