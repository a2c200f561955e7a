"""Bearer-token authentication (pure): tokens are stored as sha256 hex and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from services.common.settings import IngestToken


def hash_token(token: str) -> str:
    """sha256 hex of a token, the form stored in AUDITPIPE_INGEST__TOKENS."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate(token: str | None, tokens: Sequence[IngestToken]) -> IngestToken | None:
    """The configured token matching ``token``. Every stored hash is compared (no early exit)."""
    if token is None:
        return None
    digest = hash_token(token).encode()
    found: IngestToken | None = None
    for t in tokens:
        if hmac.compare_digest(digest, t.sha256.encode()) and found is None:
            found = t
    return found


def may_write(tok: IngestToken, org_id: str) -> bool:
    return "*" in tok.orgs or org_id in tok.orgs
