"""The tokens file: ingest and query tokens made by ``auditpipe token``, stored as SHA-256 only.

One JSON file (``Settings.tokens_file``, mode 0600) holds every token the command made::

    {"version": 1, "tokens": [
      {"kind": "ingest", "id": "tok_…", "producer": "billing", "orgs": ["org-acme"], "sha256": "…",
       "created_at": "…", "created_by": "alice", "expires_at": null, "description": ""},
      {"kind": "query", "id": "tok_…", "principal": "bob", "roles": ["EventView"], "org": "org-acme",
       "projects": [], "environments": [], "sha256": "…", …}]}

- Writers (the CLI) hold an exclusive ``flock`` on ``<file>.lock`` for the read-modify-write, write a
  temporary file in the same directory and ``os.replace`` it over the old one: a reader sees the old or
  the new file, never half of one.
- Readers (the ingest, the query API) call :meth:`TokenStore.ingest` / :meth:`TokenStore.query` per
  request. Each call costs one ``stat``; the file is parsed again only when its inode, size or
  modification time changed, so a created or revoked token takes effect on the next request, without a
  restart. Tokens from the settings (``ingest.tokens``, ``query_api.tokens``) are always included.
- An expired token is left out at the moment of the call. A file that cannot be read or parsed gives no
  tokens at all (fail closed) and is logged once per change; a missing file is simply empty.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from services.common.settings import IngestToken, QueryToken, Settings

logger = logging.getLogger("auditpipe.tokens")

FILE_VERSION = 1
SECRET_PREFIX = {"ingest": "api_ing_", "query": "apq_"}


class _Stored(BaseModel):
    id: str = Field(pattern=r"^tok_[0-9a-f]{12}$", description="Public id, used to revoke")
    created_at: datetime
    created_by: str = Field(min_length=1, max_length=256)
    expires_at: datetime | None = None
    description: str = Field(default="", max_length=1024)

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class StoredIngestToken(IngestToken, _Stored):
    kind: Literal["ingest"] = "ingest"


class StoredQueryToken(QueryToken, _Stored):
    kind: Literal["query"] = "query"


StoredToken = Annotated[StoredIngestToken | StoredQueryToken, Field(discriminator="kind")]


class TokenFile(BaseModel):
    version: Literal[1] = FILE_VERSION
    tokens: list[StoredToken] = Field(default_factory=list)


_FILE = TypeAdapter(TokenFile)


class TokenFileError(Exception):
    """The tokens file cannot be read, parsed or written; ``str()`` is one line."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret(kind: Literal["ingest", "query"]) -> str:
    """A fresh token: a recognisable prefix (secret scanners, people) and 256 random bits."""
    return SECRET_PREFIX[kind] + secrets.token_urlsafe(32)


def new_id() -> str:
    return "tok_" + secrets.token_hex(6)


def read_file(path: Path) -> TokenFile:
    """The tokens file's content (empty when the file does not exist); TokenFileError when unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return TokenFile()
    except OSError as e:
        raise TokenFileError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return _FILE.validate_json(data)
    except ValidationError as e:
        first = e.errors(include_input=False, include_url=False)[0]
        loc = ".".join(str(x) for x in first.get("loc", ())) or "(file)"
        raise TokenFileError(f"{path} is not a valid tokens file: {loc}: {first.get('msg')}") from None


def write_file(path: Path, content: TokenFile) -> None:
    """Replace the file atomically (temporary file in the same directory, fsync, rename), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = orjson.dumps(content.model_dump(mode="json"), option=orjson.OPT_INDENT_2) + b"\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[TokenFile]:
    """Read-modify-write under an exclusive lock: yields the current content; what the caller changed
    in it is written back when the block ends without an exception."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        content = read_file(path)
        yield content
        write_file(path, content)
    except OSError as e:
        raise TokenFileError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def loose_permissions(path: Path) -> bool:
    """True when group or others may read or write the file."""
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


class TokenStore:
    """The tokens a service accepts: the settings' lists plus the tokens file, reloaded on change.

    Per call: one ``stat`` and a comparison with the earliest expiry; the lists are rebuilt only when the
    file changed or a token expired (measured by ``python -m benchmarks.tools``)."""

    def __init__(self, settings: Settings) -> None:
        self.path = Path(settings.tokens_file).expanduser()
        self._static_ingest = list(settings.ingest.tokens)
        self._static_query = list(settings.query_api.tokens)
        self._sig: tuple[int, int, int, int] | None = None
        self._file = TokenFile()
        self._ingest: list[IngestToken] = list(self._static_ingest)
        self._query: list[QueryToken] = list(self._static_query)
        self._valid_until: datetime | None = None  # the earliest expiry among the current lists
        self.reloads = 0

    def _signature(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError:
            return (-1, -1, -1, -1)
        return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)

    def _refresh(self, now: datetime) -> None:
        sig = self._signature()
        if sig != self._sig:
            self._sig = sig
            self.reloads += 1
            try:
                self._file = read_file(self.path)
            except TokenFileError as e:
                self._file = TokenFile()  # fail closed: no file token is accepted until it is fixed
                logger.error("tokens file ignored: %s", e)
        elif self._valid_until is None or now < self._valid_until:
            return
        live = [t for t in self._file.tokens if not t.expired(now)]
        self._ingest = [*self._static_ingest, *(t for t in live if isinstance(t, StoredIngestToken))]
        self._query = [*self._static_query, *(t for t in live if isinstance(t, StoredQueryToken))]
        self._valid_until = min((t.expires_at for t in live if t.expires_at is not None), default=None)

    def ingest(self, now: datetime | None = None) -> list[IngestToken]:
        self._refresh(now or datetime.now(UTC))
        return self._ingest

    def query(self, now: datetime | None = None) -> list[QueryToken]:
        self._refresh(now or datetime.now(UTC))
        return self._query
