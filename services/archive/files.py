"""Archive files on disk: ``<archive_dir>/<org dir>/events-YYYY-MM-DD[.N].jsonl[.gz]``, each with a
manifest ``<file>.manifest.json`` beside it. Writing is atomic (``.partial`` / ``.tmp`` then rename);
names given by callers are resolved without traversal."""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import IO

import orjson

from services.archive.rules import (
    FILE_RE,
    MASK64,
    ArchiveError,
    ArchiveFile,
    file_name,
    line_checksum,
    org_dir_name,
)
from services.common.settings import Settings


def is_gzip(path: Path) -> bool:
    return path.name.endswith((".gz", ".gz.partial"))


def open_read(path: Path) -> IO[bytes]:
    """An archive file's content (gunzipped for ``.gz``, also while it is still a ``.partial``)."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # noqa: SIM115


def iter_lines(path: Path) -> Iterator[bytes]:
    """Each line of an archive file, without its newline."""
    with open_read(path) as f:
        for line in f:
            yield line.rstrip(b"\n")


def write_lines(path: Path, lines: Iterable[bytes], gz: bool) -> None:
    """Write ``lines`` (each ending in a newline) to ``path`` and fsync it."""
    with gzip.open(path, "wb", compresslevel=6) if gz else open(path, "wb") as f:  # type: ignore[operator]
        for line in lines:
            f.write(line)
        f.flush()
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def read_back(path: Path) -> tuple[int, int, str]:
    """(rows, checksum, sha256 of content) of a written archive, read from disk."""
    h = hashlib.sha256()
    n = 0
    s = 0
    with open_read(path) as f:
        for line in f:
            h.update(line)
            n += 1
            s = (s + line_checksum(line)) & MASK64
    return n, s, h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def org_folder(root: Path, org_id: str) -> Path:
    return Path(root) / org_dir_name(org_id)


def next_free(folder: Path, day: date, gz: bool) -> Path:
    """The first unused ``events-<day>[.N]`` name (rows that arrived late get ``.1``, ``.2``, ...)."""
    part = 0
    while True:
        p = folder / file_name(day, part, gz)
        if not p.exists() and not manifest_path(p).exists():
            return p
        part += 1


def write_manifest(path: Path, af: ArchiveFile) -> None:
    atomic_write(manifest_path(path), orjson.dumps(af.to_dict(), option=orjson.OPT_INDENT_2))


def load_manifest(p: Path) -> ArchiveFile | None:
    try:
        d = orjson.loads(p.read_bytes())
        return ArchiveFile(**{k: d[k] for k in ArchiveFile.__dataclass_fields__ if k in d})
    except Exception:  # noqa: BLE001 - a broken manifest is listed as missing
        return None


def archive_paths(root: Path, org_id: str | None = None) -> Iterator[Path]:
    """Every archive file under ``root`` (of one org when given), manifest or not, in name order."""
    root = Path(root)
    if not root.is_dir():
        return
    folders = (
        [org_folder(root, org_id)] if org_id is not None else sorted(p for p in root.iterdir() if p.is_dir())
    )
    for folder in folders:
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if FILE_RE.match(p.name) and p.is_file():
                    yield p


def list_archives(settings: Settings, org_id: str | None = None) -> list[ArchiveFile]:
    """Archive files with a manifest, oldest day first (``org_id`` restricts to one org)."""
    out = []
    for p in archive_paths(settings.retention.archive_dir, org_id):
        af = load_manifest(manifest_path(p))
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
    if not p.is_file() or not manifest_path(p).is_file():
        raise ArchiveError("not_found", f"no such archive: {name}")
    return p


def get_archive(settings: Settings, name: str, org_id: str | None = None) -> tuple[ArchiveFile, Path]:
    """One archive by ``<org dir>/<file>``, or by bare ``<file>`` together with ``org_id`` (API paths)."""
    if org_id is not None and "/" not in name:
        name = f"{org_dir_name(org_id)}/{name}"
    p = resolve(settings, name)
    af = load_manifest(manifest_path(p))
    if af is None or (org_id is not None and af.org_id != org_id):
        raise ArchiveError("not_found", f"no such archive: {name}")
    return af, p
