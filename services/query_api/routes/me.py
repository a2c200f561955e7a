"""``/api/me``: who the token belongs to (the viewer shows Manager panels from this)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.query_api.deps import API_ERRORS, CurrentPrincipal, known_query_params

router = APIRouter(
    prefix="/api", tags=["me"], responses=API_ERRORS, dependencies=[Depends(known_query_params)]
)


@router.get("/me", summary="The principal of the bearer token, its roles and scope")
def me(principal: CurrentPrincipal) -> dict:
    s = principal.scope
    return {
        "principal": principal.name,
        "roles": sorted(principal.roles),
        "scope": {"org": s.org, "projects": list(s.projects), "environments": list(s.environments)},
    }
