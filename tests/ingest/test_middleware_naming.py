"""AuditMiddleware names events from the route the app matched: FastAPI and plain Starlette apps, nested
routers with prefixes, mounted sub-apps; overrides per route; the URL heuristic only without a route.
Also: repeated X-Forwarded-For lines are joined in order, and a failure never logs the event.

Delivery to Kafka is covered by test_middleware.py; here the client is a recorder of what was buffered.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from auditpipe import BufferFull
from auditpipe.middleware import (
    XFF_MAX,
    AuditMiddleware,
    audit_action,
    audit_context,
    default_action,
    full_template,
    name_from_route,
    singular,
)
from schemas.events_v1 import RawEvent


class Recorder:
    """Stands in for AsyncAuditClient: keeps what the middleware buffered; can be made to fail."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.events: list[RawEvent] = []
        self.fail = fail

    def prepare(self, ev: RawEvent) -> RawEvent:
        return ev

    async def emit_prepared(self, ev: RawEvent) -> None:
        if self.fail is not None:
            raise self.fail
        self.events.append(ev)


def audited(app: Any, rec: Recorder, **kw: Any) -> Any:
    app.add_middleware(AuditMiddleware, client=rec, org_id="org-acme", **kw)
    return app


async def call(app: Any, method: str, path: str, **kw: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, client=("10.0.3.2", 4444))
    async with httpx.AsyncClient(transport=transport, base_url="http://platform") as http:
        return await http.request(method, path, **kw)


# -- pure rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,template,params,want",
    [
        (
            "PATCH",
            "/api/projects/{project_id}/environments/{environment_id}",
            {"project_id": "p1", "environment_id": "env-dev"},
            ("environment:update", "environment", "env-dev", "p1", "env-dev"),
        ),
        ("POST", "/api/projects/{project_id}/deployments", {"project_id": "p1"},
         ("deployment:create", "deployment", None, "p1", None)),
        (
            "POST",
            "/api/projects/{project_id}/deployments/{deployment_id}/cancel",
            {"project_id": "p1", "deployment_id": "dep-7"},
            ("deployment:cancel", "deployment", "dep-7", "p1", None),
        ),
        ("DELETE", "/api/projects/{project_id}", {"project_id": "p1"},
         ("project:delete", "project", "p1", "p1", None)),
        (
            "PUT",
            "/api/projects/{project_id}/variables/{name}",
            {"project_id": "p1", "name": "API_TOKEN"},
            ("variable:update", "variable", "API_TOKEN", "p1", None),
        ),
        ("PUT", "/v1/api-keys/{key_id}", {"key_id": "k1"}, ("api_key:update", "api_key", "k1", None, None)),
        ("POST", "/policies", {}, ("policy:create", "policy", None, None, None)),
        ("POST", "/", {}, ("http:create", "http", None, None, None)),
    ],
)  # fmt: skip
def test_name_from_route(method: str, template: str, params: dict, want: tuple) -> None:
    n = name_from_route(method, template, params)
    assert (n.action, n.target_type, n.target_id, n.project_id, n.environment_id) == want
    RawEvent.model_validate({"occurred_at": "2026-01-01T00:00:00Z", "org_id": "o", "action": n.action})


@pytest.mark.parametrize(
    "plural,one",
    [("environments", "environment"), ("deployments", "deployment"), ("policies", "policy"),
     ("api_keys", "api_key"), ("services", "service"), ("statuses", "status"), ("branches", "branch"),
     ("addresses", "address"), ("people", "person"), ("boxes", "box"), ("access", "access"),
     ("status", "status"), ("cancel", "cancel")],
)  # fmt: skip
def test_singular(plural: str, one: str) -> None:
    assert singular(plural) == one


def test_url_heuristic_is_singular_too() -> None:
    assert default_action("POST", "/api/projects/7/deployments") == "deployment:create"
    assert default_action("DELETE", "/api/projects/p-7") == "project:delete"
    assert default_action("PATCH", "/") == "http:update"
    assert default_action("PUT", "/v1/a b/0f8fad5b-d9cb-469f-a165-70867728950e") == "a_b:update"


def test_full_template_restores_outer_parameters() -> None:
    params = {"project_id": "p1", "environment_id": "env-dev"}
    assert (
        full_template("/api/projects/p1/environments/env-dev", "/environments/{environment_id}", params)
        == "/api/projects/{project_id}/environments/{environment_id}"
    )
    # a literal segment equal to a value is left alone when the value appears further right
    assert full_template("/projects/projects/x", "/x", {"pid": "projects"}) == "/projects/{pid}/x"
    # the path does not end with the leaf (a redirect, a rewritten path): the leaf alone
    assert full_template("/elsewhere", "/environments/{environment_id}", {"environment_id": "e"}) == (
        "/environments/{environment_id}"
    )


_lit = st.text("abcdefghij", min_size=1, max_size=8)


@given(
    segs=st.lists(st.one_of(_lit.map(lambda s: ("lit", s)), st.just(("param", ""))), min_size=1, max_size=8),
    split=st.integers(min_value=0, max_value=8),
)
def test_full_template_round_trip(segs: list[tuple[str, str]], split: int) -> None:
    """Whatever part of the template a router or mount resolved, the whole template comes back."""
    params: dict[str, str] = {}
    tpl, path = [], []
    for i, (kind, text) in enumerate(segs):
        if kind == "lit":
            tpl.append(text)
            path.append(text)
        else:
            name, value = f"p{i}", f"v-{i}-0"  # values never equal a literal nor each other
            params[name] = value
            tpl.append("{" + name + "}")
            path.append(value)
    split = min(split, len(segs) - 1)
    leaf = "/" + "/".join(tpl[split:])
    whole = "/" + "/".join(tpl)
    assert full_template("/" + "/".join(path), leaf, params) == whole


# -- apps ------------------------------------------------------------------------------------------


async def test_fastapi_nested_routers_and_include_prefixes() -> None:
    rec = Recorder()
    app = FastAPI()
    envs = APIRouter()  # no prefix of its own: the include gives it one

    @envs.patch("/{environment_id}")
    async def patch_env(project_id: str, environment_id: str) -> dict:
        return {"id": environment_id}

    @envs.post("", status_code=201)
    async def create_env(project_id: str) -> dict:
        return {}

    @envs.post("/{environment_id}/redeploy")
    async def redeploy(project_id: str, environment_id: str) -> dict:
        return {}

    projects = APIRouter(prefix="/projects/{project_id}")
    projects.include_router(envs, prefix="/environments")

    @projects.post("/deployments", status_code=201)
    async def create_dep(project_id: str, request: Request) -> dict:
        audit_context(request, target={"id": "dep-42", "name": "web 3.0.0"})
        return {"id": "dep-42"}

    app.include_router(projects, prefix="/api")
    audited(app, rec)

    assert (
        await call(app, "PATCH", "/api/projects/p1/environments/env-dev", json={"name": "Dev"})
    ).status_code == 200
    assert (
        await call(app, "POST", "/api/projects/p1/deployments", json={"release": "3.0.0"})
    ).status_code == 201
    assert (await call(app, "POST", "/api/projects/p1/environments/env-dev/redeploy")).status_code == 200
    assert (await call(app, "POST", "/api/projects/p1/environments", json={})).status_code == 201
    a, b, c, d = rec.events
    assert (a.action, a.target.type, a.target.id, a.project_id, a.environment_id) == (
        "environment:update", "environment", "env-dev", "p1", "env-dev"
    )  # fmt: skip
    assert a.event_type == "update"
    assert a.metadata["route"] == "/api/projects/{project_id}/environments/{environment_id}"
    assert (b.action, b.target.id, b.target.name, b.project_id) == (
        "deployment:create",
        "dep-42",
        "web 3.0.0",
        "p1",
    )
    assert (c.action, c.target.id, c.event_type) == ("environment:redeploy", "env-dev", None)
    assert (d.action, d.project_id, d.metadata["route"]) == (
        "environment:create", "p1", "/api/projects/{project_id}/environments"
    )  # fmt: skip


async def test_starlette_routes_and_nested_mounts() -> None:
    rec = Recorder()

    async def ok(_: Any) -> Response:
        return JSONResponse({})

    app = Starlette(
        routes=[
            Mount(
                "/api/projects/{project_id}",
                routes=[
                    Route("/services/{service_id}", ok, methods=["DELETE", "PUT"]),
                    Mount("/variables", routes=[Route("/{name}", ok, methods=["PUT"])]),
                ],
            ),
            Route("/api/things", ok, methods=["POST"]),
        ]
    )
    audited(app, rec)
    assert (await call(app, "DELETE", "/api/projects/proj-web/services/svc-search")).status_code == 200
    assert (
        await call(app, "PUT", "/api/projects/proj-web/variables/API_TOKEN", json={"value": "x"})
    ).status_code == 200
    assert (await call(app, "POST", "/api/things")).status_code == 200
    d, v, t = rec.events
    assert (d.action, d.target.id, d.project_id) == ("service:delete", "svc-search", "proj-web")
    assert d.metadata["route"] == "/api/projects/{project_id}/services/{service_id}"
    assert (v.action, v.target.id, v.project_id) == ("variable:update", "API_TOKEN", "proj-web")
    assert v.metadata["route"] == "/api/projects/{project_id}/variables/{name}"
    assert (t.action, t.target.type, t.target.id, t.metadata["route"]) == (
        "thing:create",
        "thing",
        None,
        "/api/things",
    )


async def test_mounted_fastapi_sub_app() -> None:
    rec = Recorder()
    sub = FastAPI()

    @sub.put("/clusters/{cluster_id}")
    async def put_cluster(cluster_id: str) -> dict:
        return {}

    root = Starlette(routes=[Mount("/orgs/{org}/infra", app=sub)])
    audited(root, rec)
    assert (await call(root, "PUT", "/orgs/acme/infra/clusters/c-1", json={})).status_code == 200
    (e,) = rec.events
    assert (e.action, e.target.id) == ("cluster:update", "c-1")
    assert e.metadata["route"] == "/orgs/{org}/infra/clusters/{cluster_id}"


async def test_no_route_falls_back_to_the_url_and_bare_mounts_too() -> None:
    rec = Recorder()

    async def raw_asgi(scope: Any, receive: Any, send: Any) -> None:
        await Response(status_code=202)(scope, receive, send)

    app = Starlette(routes=[Mount("/legacy", app=raw_asgi)])
    audited(app, rec)
    assert (await call(app, "POST", "/nowhere/7/widgets")).status_code == 404
    assert (await call(app, "DELETE", "/legacy/reports/r-9")).status_code == 202
    a, b = rec.events
    assert (a.action, a.status, "route" in a.metadata) == ("widget:create", 404, False)
    assert (b.action, "route" in b.metadata) == ("report:delete", False)


async def test_overrides_decorator_mapping_callable_and_handler() -> None:
    rec = Recorder()
    app = FastAPI()

    @app.post("/api/deployments/{deployment_id}/approvals")
    @audit_action("deployment:approve", target="deployment_id")
    async def approve(deployment_id: str) -> dict:
        return {}

    @app.post("/api/hooks/{hook}")
    async def hook(hook: str) -> dict:
        return {}

    @app.patch("/api/services/{service_id}")
    async def patch_service(service_id: str, request: Request) -> dict:
        audit_context(
            request,
            changes=[{"field": "replicas", "before": 2, "after": 3}],
            change="Scaled to 3",
            environment_id="env-production",
            metadata={"ticket": "OPS-1"},
        )
        return {}

    audited(app, rec, actions={"POST /api/hooks/{hook}": "webhook:receive"}, action=lambda r: "ignored:call")
    await call(app, "POST", "/api/deployments/dep-1/approvals")
    await call(app, "POST", "/api/hooks/github")
    await call(app, "PATCH", "/api/services/svc-cart", json={"replicas": 3})
    a, h, s = rec.events
    assert (a.action, a.target.type, a.target.id, a.event_type) == (
        "deployment:approve",
        "deployment",
        "dep-1",
        None,
    )
    assert (h.action, h.target.type) == ("webhook:receive", "webhook")
    assert s.action == "ignored:call"  # the app-wide callable wins over the route's own name
    assert s.changes[0].after == 3 and s.change == "Scaled to 3" and s.environment_id == "env-production"
    assert s.metadata["ticket"] == "OPS-1"


async def test_repeated_forwarded_for_lines_are_joined_in_order() -> None:
    rec = Recorder()

    async def ok(_: Any) -> Response:
        return Response(status_code=204)

    app = audited(Starlette(routes=[Route("/api/things/{thing_id}", ok, methods=["DELETE"])]), rec)
    hdrs = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-for", "198.51.100.1, 10.0.0.7"),
        ("user-agent", "a/1"),
    ]
    await call(app, "DELETE", "/api/things/t1", headers=hdrs)
    long_chain = ", ".join(f"10.1.{i // 250}.{i % 250}" for i in range(2000))
    await call(
        app,
        "DELETE",
        "/api/things/t2",
        headers=[("x-forwarded-for", long_chain), ("x-forwarded-for", "10.0.0.7")],
    )
    a, b = rec.events
    assert a.request.x_forwarded_for == "203.0.113.9, 198.51.100.1, 10.0.0.7"
    assert len(b.request.x_forwarded_for) <= XFF_MAX and b.request.x_forwarded_for.endswith(", 10.0.0.7")
    assert b.request.x_forwarded_for.split(", ")[0].startswith("10.1.")  # cut at an entry boundary
    assert b.metadata["x_forwarded_for_truncated"] == "true"


async def test_a_failure_logs_ids_and_action_never_the_event(caplog: pytest.LogCaptureFixture) -> None:
    """Regression: buffering failed -> the whole unscrubbed event (payload password included) went to the
    ERROR log."""
    secret = "hunter2-correct-horse"

    async def ok(_: Any) -> Response:
        return JSONResponse({}, status_code=201)

    rec = Recorder(fail=BufferFull("audit buffer full (10 events)"))
    app = audited(Starlette(routes=[Route("/api/users/{user_id}/password", ok, methods=["PUT"])]), rec)
    caplog.set_level(logging.ERROR, logger="auditpipe.middleware")
    r = await call(app, "PUT", f"/api/users/u-1/password?token={secret}", json={"password": secret})
    assert r.status_code == 201  # the host app's response is untouched
    mw = app.middleware_stack
    while not isinstance(mw, AuditMiddleware):
        mw = mw.app
    assert mw.errors == 1
    text = caplog.text
    assert secret not in text
    assert "BufferFull" in text and "event_id=" in text and "action=password:update" in text

    # building failed (the app's actor callable returned garbage): the fields, not their values
    caplog.clear()
    bad = audited(
        Starlette(routes=[Route("/api/users/{user_id}/password", ok, methods=["PUT"])]),
        Recorder(),
        actor=lambda r: {"type": "robot", "name": secret},
    )
    await call(bad, "PUT", "/api/users/u-1/password", json={"password": secret})
    assert secret not in caplog.text
    assert "invalid actor.type" in caplog.text and "/api/users/{user_id}/password" in caplog.text
