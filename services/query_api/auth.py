"""Bearer tokens -> principals (pure). Tokens are stored as sha256 hex; comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from services.common.settings import QueryToken
from services.query_api.query import Scope


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[str]
    scope: Scope

    @property
    def is_manager(self) -> bool:
        return "Manager" in self.roles

    @property
    def restricted(self) -> bool:
        """Scoped to projects or environments (narrower than a whole org)."""
        return bool(self.scope.projects or self.scope.environments)

    def may_see_org(self, org_id: str) -> bool:
        return self.scope.org is None or self.scope.org == org_id


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(tokens: list[QueryToken], bearer: str | None) -> Principal | None:
    """The principal of a bearer token, or None (unknown or empty)."""
    if not bearer:
        return None
    digest = token_sha256(bearer)
    found: QueryToken | None = None
    for t in tokens:  # compare with every entry: timing does not reveal which one matched
        if hmac.compare_digest(t.sha256, digest):
            found = t
    if found is None:
        return None
    return Principal(
        found.principal,
        frozenset(found.roles),
        Scope(found.org, tuple(found.projects), tuple(found.environments)),
    )
