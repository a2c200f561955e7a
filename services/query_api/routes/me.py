"""``/api/me``: who the token belongs to (the viewer shows Manager panels from this)."""

from __future__ import annotations

from fastapi import APIRouter

from services.query_api.deps import CurrentPrincipal

router = APIRouter(prefix="/api", tags=["me"])


@router.get("/me", summary="The principal of the bearer token, its roles and scope")
def me(principal: CurrentPrincipal) -> dict:
    s = principal.scope
    return {
        "principal": principal.name,
        "roles": sorted(principal.roles),
        "scope": {"org": s.org, "projects": list(s.projects), "environments": list(s.environments)},
    }
