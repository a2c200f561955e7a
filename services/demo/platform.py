"""The simulated platform's own API (FastAPI), with auditpipe's ASGI middleware in front of it.

A small deployment platform: projects hold environments, deployments, variables and services. Its
routers are nested the way real apps nest them (a project router with a path prefix, an environments
router included under it with a prefix of its own), so the middleware names every call from the
matched route: ``PATCH /api/projects/{project_id}/environments/{environment_id}`` is
``environment:update`` of target ``env-dev`` in project ``proj-web``. Handlers add what only they know
with :func:`auditpipe.audit_context`: the id of a deployment they created, the before/after of a
change.

Members are the scenario's people (header ``x-demo-user``) of their own organisation (header
``x-demo-org``); somebody from another organisation is refused (403), and creating an environment
that exists is a conflict (409): the live calls include both on purpose, so the viewer's status filter
has something to show.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict

from auditpipe import AsyncAuditClient, AuditMiddleware, audit_context
from services.demo import scenario


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class NewDeployment(_Body):
    release: str
    environment: str


class NewEnvironment(_Body):
    id: str
    name: str


class EnvironmentPatch(_Body):
    name: str


class VariableValue(_Body):
    value: str
    is_sensitive: bool = False


class Platform:
    """The platform's state: environments and variables per project, deployment ids."""

    def __init__(self) -> None:
        self.environments: dict[tuple[str, str], dict[str, str]] = {}
        self.variables: dict[tuple[str, str], dict[str, str]] = {}
        self._ids = itertools.count(5000)

    def envs(self, org: str, project: str) -> dict[str, str]:
        return self.environments.setdefault((org, project), dict(scenario.ENV_NAMES))

    def deployment_id(self) -> str:
        return f"dep-{next(self._ids)}"


def member(request: Request) -> tuple[str, scenario.Person]:
    """The caller and the org it acts in; 403 for somebody outside that org, 401 for nobody."""
    org = request.headers.get("x-demo-org", "")
    person = next((p for p in scenario.PEOPLE if p.id == request.headers.get("x-demo-user")), None)
    if person is None:
        raise HTTPException(401, "sign in first")
    if person.org != org:
        raise HTTPException(403, f"{person.name} is not a member of {org}")
    return org, person


def make_routers(state: Platform) -> APIRouter:
    environments = APIRouter()

    @environments.post("", status_code=201)
    async def create_environment(project_id: str, body: NewEnvironment, request: Request) -> dict[str, Any]:
        audit_context(request, target={"id": body.id, "name": body.name}, environment_id=body.id)
        org, _ = member(request)
        envs = state.envs(org, project_id)
        if body.id in envs:
            raise HTTPException(409, f"environment {body.id} already exists in {project_id}")
        envs[body.id] = body.name
        audit_context(request, change=f"Created environment {body.name}")
        return {"id": body.id, "name": body.name}

    @environments.patch("/{environment_id}")
    async def rename_environment(
        project_id: str, environment_id: str, body: EnvironmentPatch, request: Request
    ) -> dict[str, Any]:
        org, _ = member(request)
        envs = state.envs(org, project_id)
        if environment_id not in envs:
            raise HTTPException(404, f"no environment {environment_id}")
        before, envs[environment_id] = envs[environment_id], body.name
        if before == body.name:
            audit_context(request, target={"name": body.name}, change=f"Saved environment {before} unchanged")
        else:
            audit_context(
                request,
                target={"name": body.name},
                change=f"Renamed environment {before} to {body.name}",
                changes=[{"field": "name", "before": before, "after": body.name}],
            )
        return {"id": environment_id, "name": body.name}

    project = APIRouter(prefix="/projects/{project_id}")
    project.include_router(environments, prefix="/environments")

    @project.post("/deployments", status_code=201)
    async def create_deployment(project_id: str, body: NewDeployment, request: Request) -> dict[str, Any]:
        member(request)
        dep = state.deployment_id()
        audit_context(
            request,
            target={"id": dep, "name": f"{project_id} {body.release} to {body.environment}"},
            environment_id=body.environment,
            change=f"Deployed release {body.release} to {body.environment}",
            snapshot={"id": dep, "release": body.release, "state": "Queued"},
        )
        return {"id": dep, "state": "Queued"}

    @project.post("/deployments/{deployment_id}/cancel")
    async def cancel_deployment(project_id: str, deployment_id: str, request: Request) -> dict[str, Any]:
        member(request)
        audit_context(
            request,
            change=f"Cancelled deployment {deployment_id}",
            changes=[{"field": "state", "before": "Queued", "after": "Cancelled"}],
        )
        return {"id": deployment_id, "state": "Cancelled"}

    @project.put("/variables/{variable_name}")
    async def set_variable(
        project_id: str, variable_name: str, body: VariableValue, request: Request
    ) -> dict[str, Any]:
        org, _ = member(request)
        values = state.variables.setdefault((org, project_id), {})
        before = values.get(variable_name)
        values[variable_name] = body.value
        audit_context(
            request,
            target={"name": variable_name},
            change=f"Changed {'sensitive ' if body.is_sensitive else ''}value of {variable_name}",
            changes=[{"field": "value", "before": before, "after": body.value}],
        )
        return {"name": variable_name, "is_sensitive": body.is_sensitive}

    @project.delete("/services/{service_id}", status_code=204)
    async def delete_service(project_id: str, service_id: str, request: Request) -> Response:
        member(request)
        audit_context(
            request, target={"name": service_id.removeprefix("svc-")}, change=f"Deleted {service_id}"
        )
        return Response(status_code=204)

    @project.post("/services/{service_id}/restart", status_code=202)
    async def restart_service(project_id: str, service_id: str, request: Request) -> dict[str, Any]:
        member(request)
        audit_context(
            request, target={"name": service_id.removeprefix("svc-")}, change=f"Restarted {service_id}"
        )
        return {"id": service_id, "state": "Restarting"}

    api = APIRouter(prefix="/api")
    api.include_router(project)
    return api


def platform_app(ingest_url: str, token: str, client: Any = None) -> FastAPI:
    """The platform's API; its middleware sends every mutating call to the ingest over HTTP
    (``client`` replaces that client, e.g. to capture events in a test)."""
    client = client or AsyncAuditClient(
        "http", url=ingest_url, token=token, producer="platform-api-middleware", flush_interval_s=0.1
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if hasattr(client, "close"):
            await client.close()

    app = FastAPI(title="simulated platform", lifespan=lifespan)
    app.include_router(make_routers(Platform()))

    def actor(request: Request) -> dict[str, Any] | None:
        uid = request.headers.get("x-demo-user")
        person = next((p for p in scenario.PEOPLE if p.id == uid), None)
        return (
            {"type": "user", "id": person.id, "name": person.name, "email": person.email} if person else None
        )

    app.add_middleware(
        AuditMiddleware,
        client=client,
        org_id=lambda r: r.headers.get("x-demo-org"),
        actor=actor,
        source="console",
    )
    return app
